"""A request to delete a GMP record is refused (409) and leaves exactly one `delete_attempt` event in the trail."""

from __future__ import annotations

from sqlalchemy import func, select, text

from app.audit.models import AuditEvent
from app.audit.services import verify_chain
from app.core.tenancy import tenant_transaction
from app.plant.services import create_sensor
from tests.batches.conftest import SHORT_RECIPE, make_recipe_version
from tests.conftest import csrf_token, sign_in
from tests.factories import admin_actor, make_equipment, make_line, make_lot, make_material


def _records(tenant) -> dict[str, tuple[str, int, str]]:
    """record type -> (API path, id, table) of one record of each type the JSON API serves."""
    with tenant_transaction(tenant.ref, actor=admin_actor(tenant)) as session:
        line = make_line(session)
        eq = make_equipment(session, line)
        sensor = create_sensor(session, tag=f"{eq.tag}.PT01", equipment_id=eq.id, quantity_kind="pressure",
                               unit="bar", range_low="0", range_high="3", sampling_period_s="5")
        material = make_material(session)
        lot = make_lot(session, material)
        version = make_recipe_version(session, SHORT_RECIPE)
        return {"site": ("/plant/sites", line.site_id, "sites"), "line": ("/plant/lines", line.id, "lines"),
                "equipment": ("/plant/equipment", eq.id, "equipment"),
                "sensor": ("/plant/sensors", sensor.id, "sensors"),
                "material": ("/materials", material.id, "materials"),
                "lot": ("/materials/lots", lot.id, "lots"),
                "master_recipe": ("/recipes", version.master_recipe_id, "master_recipes"),
                "recipe_version": ("/recipes/versions", version.id, "recipe_versions")}


def _delete(client, slug: str, path: str, body: dict | None = None):
    token = csrf_token(client, f"/t/{slug}/")
    return client.delete(f"/t/{slug}/api/v1{path}", json=body, headers={"X-CSRFToken": token})


def _attempts(tenant) -> list[AuditEvent]:
    with tenant_transaction(tenant.ref) as session:
        return list(session.scalars(select(AuditEvent).where(AuditEvent.action == "delete_attempt")
                                    .order_by(AuditEvent.seq)))


def test_deleting_any_gmp_record_is_refused_and_audited_once(client, make_tenant) -> None:
    tenant = make_tenant()
    records = _records(tenant)
    sign_in(client, tenant.admin_email)
    slug = tenant.ref.slug
    seqs = []
    for record_type, (path, record_id, _) in records.items():
        response = _delete(client, slug, f"{path}/{record_id}", {"reason": f"duplicate {record_type}"})
        problem = response.get_json()
        assert response.status_code == 409, (record_type, problem)
        assert response.mimetype == "application/problem+json"
        assert "never deleted" in problem["detail"] and "with a reason instead" in problem["detail"]
        seqs.append(problem["audit_seq"])
    attempts = _attempts(tenant)
    assert [(e.record_type, e.record_id, e.reason) for e in attempts] == [
        (t, str(i), f"duplicate {t}") for t, (_, i, _) in records.items()]
    assert all(e.actor_member_id == admin_actor(tenant).member_id and e.request_id for e in attempts)
    assert [e.seq for e in attempts] == seqs  # the 409 names the event that recorded the attempt
    with tenant_transaction(tenant.ref) as session:
        for _, record_id, table in records.values():  # every record is still there
            found = session.execute(text(f"SELECT count(*) FROM {table} WHERE id = :id"), {"id": record_id})
            assert found.scalar_one() == 1, table
        assert verify_chain(session).ok


def test_an_attempt_without_a_reason_is_still_recorded(client, make_tenant) -> None:
    tenant = make_tenant()
    path, lot_id, _ = _records(tenant)["lot"]
    sign_in(client, tenant.admin_email)
    response = _delete(client, tenant.ref.slug, f"{path}/{lot_id}")
    assert response.status_code == 409
    [attempt] = _attempts(tenant)
    assert (attempt.record_type, attempt.record_id, attempt.reason) == ("lot", str(lot_id), "(no reason given)")
    assert response.get_json()["audit_seq"] == attempt.seq


def test_unknown_records_and_members_without_the_permission_record_nothing(client, make_tenant, make_member) -> None:
    tenant = make_tenant()
    records = _records(tenant)
    with tenant_transaction(tenant.ref) as session:
        before = session.scalar(select(func.count()).select_from(AuditEvent))
    sign_in(client, tenant.admin_email)
    assert _delete(client, tenant.ref.slug, "/plant/equipment/987654321").status_code == 404
    client.post("/logout", data={"csrf_token": csrf_token(client, f"/t/{tenant.ref.slug}/")})
    operator = make_member(tenant, ["Operator"])
    sign_in(client, operator.email)
    path, record_id, _ = records["equipment"]
    assert _delete(client, tenant.ref.slug, f"{path}/{record_id}").status_code == 403
    with tenant_transaction(tenant.ref) as session:
        assert session.scalar(select(func.count()).select_from(AuditEvent)) == before
