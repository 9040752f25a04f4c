"""`DELETE` of a GMP record through the public API: always refused (409), and the attempt is in the audit trail."""

from __future__ import annotations

from sqlalchemy import func, select

from app.audit.models import AuditEvent
from app.core.tenancy import tenant_transaction
from tests.api.conftest import bearer, seed_every_kind


def _attempts(tenant) -> list[AuditEvent]:
    with tenant_transaction(tenant.ref) as session:
        return list(session.scalars(select(AuditEvent).where(AuditEvent.action == "delete_attempt")
                                    .order_by(AuditEvent.seq)))


def test_deleting_plant_and_material_records_is_refused_and_audited(client, make_tenant, issue_token) -> None:
    tenant = make_tenant()
    seeded = seed_every_kind(tenant)
    token = issue_token(tenant, ["plant.manage", "plant.read", "materials.manage", "materials.read"])
    targets = [("sites", seeded.site_id, "site"), ("lines", seeded.line_id, "line"),
               ("equipment", seeded.equipment_id, "equipment"), ("sensors", seeded.sensor_id, "sensor"),
               ("materials", seeded.material_id, "material"), ("lots", seeded.lot_id, "lot")]
    seqs = []
    for collection, record_id, _ in targets:
        response = client.delete(f"/api/v1/{collection}/{record_id}?reason=entered+twice", headers=bearer(token))
        assert response.status_code == 409, response.get_json()
        assert response.mimetype == "application/problem+json"
        assert "never deleted" in response.get_json()["detail"]
        seqs.append(response.get_json()["audit_seq"])
        assert client.get(f"/api/v1/{collection}/{record_id}", headers=bearer(token)).status_code == 200
    attempts = _attempts(tenant)
    assert [(e.seq, e.record_type, e.record_id, e.reason) for e in attempts] == [
        (seq, record_type, str(record_id), "entered twice") for seq, (_, record_id, record_type) in zip(
            seqs, targets, strict=True)]
    assert all(e.actor_label.endswith("via API token 'test'") for e in attempts)


def test_refusals_that_record_nothing(client, make_tenant, issue_token) -> None:
    tenant = make_tenant()
    seeded = seed_every_kind(tenant)
    with tenant_transaction(tenant.ref) as session:
        before = session.scalar(select(func.count()).select_from(AuditEvent))
    manager = issue_token(tenant, ["plant.manage", "plant.read"])
    assert client.delete("/api/v1/equipment/987654321", headers=bearer(manager)).status_code == 404
    reader = issue_token(tenant, ["plant.read"])
    refused = client.delete(f"/api/v1/equipment/{seeded.equipment_id}", headers=bearer(reader))
    assert refused.status_code == 403 and "plant.manage" in refused.get_json()["detail"]
    typo = client.delete(f"/api/v1/lots/{seeded.lot_id}?raeson=x", headers=bearer(issue_token(tenant)))
    assert typo.status_code == 422
    with tenant_transaction(tenant.ref) as session:
        assert session.scalar(select(func.count()).select_from(AuditEvent)) == before


def test_the_refusal_is_documented(client) -> None:
    doc = client.get("/api/openapi.json").get_json()
    delete = doc["paths"]["/api/v1/lots/{lot_id}"]["delete"]
    assert "409" in delete["responses"] and "audit trail" in delete["responses"]["409"]["description"]
    assert delete["x-permission"] == "materials.manage"
