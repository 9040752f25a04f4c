"""The path `make run` promises, end to end: the demo batch seeded as `batchline run` seeds it, executed on the
floor with the demo bioreactor's gateway feeding its sensors, completed; the RBE job run by a real RQ worker from
the completion's outbox row; QA reviews it on the review page, dispositions what went off-script and releases it;
and a clean batch is released from its review page with one signature within a minute of its completion."""

from __future__ import annotations

import json
import re
from datetime import timedelta
from typing import Any

import numpy as np
from sqlalchemy import select, text

from app.batches import services as batch_services
from app.batches.demo import create_demo_people, seed_demo
from app.batches.models import Batch, StepExecution
from app.core.jobs import OutboxMessage
from app.core.tenancy import tenant_transaction
from app.plant.models import Equipment, Sensor
from app.recipes.models import RecipeVersion
from app.review.models import BatchRelease, RbeRun
from app.sensors import services as sensor_services
from app.sensors.simulate import seed_demo_bioreactor, series, signal_for
from tests.batches.demo_run import execute_demo_steps
from tests.conftest import TEST_PASSWORD, sign_in
from tests.sensors.conftest import burst


def _form(client, page: str) -> dict[str, str]:
    html = client.get(page).get_data(as_text=True)
    return {"csrf_token": re.search(r'name="csrf_token" value="([^"]+)"', html).group(1), "html": html}


def _signed_post(client, page: str, action: str, email: str, fields: dict[str, Any]) -> str:
    """Post a signed form of `page` as its HTML would (password; the user ID too when the form asks for it)."""
    form = _form(client, page)
    data = {"csrf_token": form["csrf_token"], "signature_password": TEST_PASSWORD, **fields}
    if 'name="signature_user_id"' in form["html"]:
        data["signature_user_id"] = email
    response = client.post(action, data=data)
    assert response.status_code == 303, response.status_code
    return client.get(response.headers["Location"]).get_data(as_text=True)


def _feed_gateway(tenant_ref, batch_id: int) -> int:
    """The demo gateway's 1 Hz readings of BR-101's sensors over the batch (the simulator's signals, seeded)."""
    with tenant_transaction(tenant_ref) as s:
        start, end = s.execute(text("SELECT min(started_at), max(ended_at) FROM step_executions "
                                    "WHERE batch_id = :b"), {"b": batch_id}).one()
        sensors = list(s.scalars(select(Sensor).join(Equipment, Equipment.id == Sensor.equipment_id)
                                 .where(Equipment.tag == "BR-101").order_by(Sensor.id)))
        first = start - timedelta(seconds=2)
        n = int((end - first).total_seconds()) + 3
        rng = np.random.default_rng(101)
        readings = []
        for sensor in sensors:
            values = series(signal_for(sensor.quantity_kind, sensor.tag), n, rng)
            readings += [{"sensor": sensor.tag, "ts": (first + timedelta(seconds=i)).isoformat(),
                          "value": float(values[i])} for i in range(n) if not np.isnan(values[i])]
        sensor_services.accept_payload(s, body=json.dumps({"readings": readings}).encode(), kind="json",
                                       source="client:demo-gateway", max_bytes=10**8)
    return len(readings)


def test_the_demo_batch_is_completed_reviewed_and_released_by_qa(client, make_tenant) -> None:
    tenant = make_tenant(with_defaults=True)
    people, password = create_demo_people(tenant.ref, domain=f"{tenant.ref.slug}.example.com",
                                          password=TEST_PASSWORD)
    with tenant_transaction(tenant.ref) as s:  # what `batchline run` seeds (app/devserver.py)
        batch_id = seed_demo(s, people=people, password=password).id
        seed_demo_bioreactor(s)
        version = s.get(RecipeVersion, s.get(Batch, batch_id).recipe_version_id)
        lots = {m["code"]: f"{m['code']}-L001" for m in version.document["materials"]}
    steps = execute_demo_steps(tenant.ref, people, password, batch_id, lots)
    fed = _feed_gateway(tenant.ref, batch_id)
    burst()  # the real ingest and analysis jobs
    with tenant_transaction(tenant.ref, actor=people["supervisor"].actor) as s:
        batch_services.record_output(s, batch_id=batch_id, lot_number="HCCF-DEMO-1", quantity="47.5")
        batch_services.complete_batch(s, batch_id=batch_id)
    with tenant_transaction(tenant.ref) as s:
        queued = s.scalars(select(OutboxMessage.func).where(OutboxMessage.finished_at.is_(None))).all()
    assert queued == ["app.review.jobs:run_rbe_job"]  # the completion queued the review, nothing else
    burst()  # a real RQ worker runs it from the reports queue
    with tenant_transaction(tenant.ref) as s:
        run = s.scalar(select(RbeRun).where(RbeRun.batch_id == batch_id))
        assert (run.trigger, run.final, s.get(Batch, batch_id).status) == ("completion", True, "in_review")
        checks = {c["code"]: c for c in run.checks}
        # The gateway's readings cover every critical phase (those just outside them are not the check's).
        assert checks["sensor_coverage"]["passed"], checks["sensor_coverage"]
        assert 0 < checks["sensor_coverage"]["counts"]["readings"] <= fed
        for code in ("steps_complete", "materials_reconciled", "genealogy_complete", "audit_chain"):
            assert checks[code]["passed"], checks[code]
        rows = s.execute(text("SELECT e.id, e.type, e.evidence, st.phase_key FROM batch_exceptions e LEFT JOIN "
                              "step_executions st ON st.id = e.step_execution_id WHERE e.batch_id = :b ORDER BY e.id"),
                         {"b": batch_id}).all()
    skipped = {st.phase_key for st in steps if not st.mandatory}
    found = {(r.type, r.phase_key) for r in rows}
    # What a demo run that goes by the book but fast leaves for QA: the medium conditioned for seconds instead of
    # four hours, and the optional steps it skipped.
    assert ("duration_out_of_range", "condition_medium") in found
    assert {p for t, p in found if t == "skipped_step"} == skipped
    # The template asks no second person to verify some material charges and critical values: 21 CFR 211.101(d)
    # wants it, so the RBE says so (every signature made is valid).
    assert checks["signatures_valid"]["counts"]["invalid"] == 0
    assert all(r.evidence["rule"].startswith("21 CFR 211.101(d)") for r in rows if r.type == "missing_signature")
    assert {t for t, _ in found} <= {"duration_out_of_range", "skipped_step", "missing_signature",
                                     "sensor_excursion", "sensor_limit_breach", "sensor_bad_quality"}, found

    qa, second = people["reviewer"], people["approver"]
    sign_in(client, qa.email)
    base = f"/t/{tenant.ref.slug}"
    with tenant_transaction(tenant.ref) as s:
        number = s.get(Batch, batch_id).batch_number
    assert f'data-batch="{number}"' in client.get(f"{base}/review/").get_data(as_text=True)
    page = f"{base}/review/batches/{batch_id}"
    html = client.get(page).get_data(as_text=True)
    assert "Not ready for release" in html and f"{len(rows)} exceptions not dispositioned" in html
    html = _signed_post(client, page, f"{page}/dispositions", qa.email, {
        "decision": "accepted", "reason": "demo run: conditioning shortened on purpose, optional steps not needed",
        "exception_id": [str(r.id) for r in rows]})
    assert "Disposition signed" in html
    html = _signed_post(client, page, f"{page}/decision", qa.email, {"decision": "released", "reason": ""})
    assert "Batch released." in html, re.findall(r'class="flash[^"]*">([^<]+)', html)
    with tenant_transaction(tenant.ref) as s:
        assert s.get(Batch, batch_id).status == "released"
        assert s.execute(text("SELECT status FROM lots WHERE lot_number = 'HCCF-DEMO-1'")).scalar_one() == "released"
    assert second.email != qa.email  # two QA people in the demo: one could countersign a two-signature class


def test_a_clean_batch_is_released_within_a_minute_of_completion(client, make_review_floor) -> None:
    floor = make_review_floor()
    batch_id = floor.clean_batch()  # completed through the batch services: its outbox row queues the review
    burst()  # the real worker runs the RBE job
    sign_in(client, floor.qa.email)
    page = f"/t/{floor.tenant.ref.slug}/review/batches/{batch_id}"
    html = client.get(page).get_data(as_text=True)
    assert "No exceptions" in html and "Ready for release" in html
    html = _signed_post(client, page, f"{page}/decision", floor.qa.email, {"decision": "released", "reason": ""})
    assert "Batch released." in html
    with floor.tx() as s:
        completed = s.get(Batch, batch_id).ended_at
        release = s.scalar(select(BatchRelease).where(BatchRelease.batch_id == batch_id))
        run = s.get(RbeRun, release.rbe_run_id)
        steps = s.scalars(select(StepExecution).where(StepExecution.batch_id == batch_id)).all()
    assert run.trigger == "completion" and run.counts["total"] == 0 and len(steps) == 4
    assert release.decision == "released"
    assert release.decided_at - completed < timedelta(minutes=1), release.decided_at - completed
