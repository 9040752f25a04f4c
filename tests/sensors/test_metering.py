"""Metering: stored readings count against the plan's monthly allowance; those over it are kept and flagged."""

from __future__ import annotations

import json
from datetime import timedelta

from sqlalchemy import func, select

from app.billing import services as billing
from app.billing.models import UsageCounter
from app.billing.plans import REPO_ROOT
from app.core.jobs import OutboxMessage, run_tenant_job
from app.core.tenancy import control_session, tenant_transaction
from app.sensors import services
from app.sensors.jobs import process_ingest
from app.sensors.models import SensorIngest, SensorReading
from tests.sensors.conftest import T0, readings_json, settle


def _small_plan(app, monkeypatch, tmp_path, allowance: int) -> None:
    """Billing on (no Stripe call is made) with a Starter plan of `allowance` readings a month."""
    monkeypatch.setitem(app.config, "STRIPE_SECRET_KEY", "sk_test_unused")
    monkeypatch.setitem(app.config, "STRIPE_WEBHOOK_SECRET", "whsec_unused")
    raw = json.loads((REPO_ROOT / "tenants" / "plans.json").read_text())
    raw["plans"]["starter"]["entitlements"]["readings_per_month"] = allowance
    plans = tmp_path / "plans.json"
    plans.write_text(json.dumps(raw))
    monkeypatch.setitem(app.config, "PLANS_FILE", str(plans))


def _used(tenant_id: int) -> tuple[int, int]:
    with control_session() as session:
        row = session.scalar(select(UsageCounter).where(UsageCounter.tenant_id == tenant_id,
                                                        UsageCounter.metric == "readings_per_month"))
        return (row.used, row.over_allowance) if row else (0, 0)


def test_readings_over_the_allowance_are_stored_flagged_and_counted_once(app, make_plant, gateway_for,
                                                                         monkeypatch, tmp_path) -> None:
    _small_plan(app, monkeypatch, tmp_path, allowance=100)
    plant = make_plant()
    with control_session() as session:
        billing.start_trial(session, tenant_id=plant.ref.id, plan="starter")
    gateway = gateway_for(plant)
    machine = app.test_client()
    token = machine.post("/oauth/token", data={"grant_type": "client_credentials", "scope": "ingest"},
                         auth=(gateway.client_id, gateway.secret)).get_json()["access_token"]
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    tag = plant.tag("TT")

    def push(values: list[float], start=T0) -> dict:
        posted = machine.post("/api/v1/ingest", data=readings_json(tag, values, start=start), headers=headers)
        assert posted.status_code == 202, posted.get_data(as_text=True)
        settle(plant.ref)
        return machine.get(posted.headers["Location"], headers=headers).get_json()

    within = push([37.0 + 0.01 * (i % 7) for i in range(80)])
    assert within["readings"]["stored"] == 80 and within.get("over_allowance") is None
    beyond = push([37.0 + 0.01 * (i % 5) for i in range(50)], start=T0 + timedelta(seconds=80))
    # Over the plan: every reading is stored all the same, and the status says how many were over and what to do.
    assert beyond["readings"] == {"total": 50, "stored": 50, "duplicate": 0, "rejected": 0}
    assert beyond["over_allowance"]["readings"] == 30
    assert f"/t/{plant.ref.slug}/billing" in beyond["over_allowance"]["detail"]
    # Only readings stored count: a resent overlap (10 duplicates) adds its 5 new readings.
    resent = push([37.0] * 15, start=T0 + timedelta(seconds=120))
    assert resent["readings"]["duplicate"] == 10 and resent["over_allowance"]["readings"] == 5
    assert _used(plant.ref.id) == (135, 35)
    with tenant_transaction(plant.ref) as session:
        assert session.scalar(select(func.count()).select_from(SensorReading)) == 135

    # A job delivered again, or processing an ingest again, counts nothing more.
    with tenant_transaction(plant.ref) as session:
        outbox_ids = session.scalars(select(OutboxMessage.id).where(
            OutboxMessage.func == "app.sensors.jobs:process_ingest")).all()
        ingest_ids = session.scalars(select(SensorIngest.id)).all()
    for outbox_id in outbox_ids:
        run_tenant_job(tenant_id=plant.ref.id, outbox_id=outbox_id)
    for ingest_id in ingest_ids:
        with tenant_transaction(plant.ref) as session:
            process_ingest(session, ingest_id=ingest_id)
    assert _used(plant.ref.id) == (135, 35)



def test_payloads_processed_together_are_metered_as_if_one_after_the_other(app, make_plant, monkeypatch,
                                                                            tmp_path) -> None:
    """A job that takes payloads queued behind its own counts them at once; which of their readings went over the
    allowance is told apart in order, as separate jobs would have."""
    _small_plan(app, monkeypatch, tmp_path, allowance=100)
    plant = make_plant()
    with control_session() as session:
        billing.start_trial(session, tenant_id=plant.ref.id, plan="starter")
    tag = plant.tag("TT")
    ids = []
    for count, start in ((80, 0), (50, 80), (15, 130)):
        with tenant_transaction(plant.ref) as session:
            ids.append(services.accept_payload(
                session, body=readings_json(tag, [37.0] * count, start=T0 + timedelta(seconds=start)), kind="json",
                source="client:metered", max_bytes=1 << 20).ingest.id)
    with tenant_transaction(plant.ref) as session:
        process_ingest(session, ingest_id=ids[0])
    with tenant_transaction(plant.ref) as session:
        rows = [session.get(SensorIngest, i) for i in ids]
        assert [(r.status, r.readings_stored, r.readings_over_allowance) for r in rows] == [
            ("processed", 80, 0), ("processed", 50, 30), ("processed", 15, 15)]
    assert _used(plant.ref.id) == (145, 45)
