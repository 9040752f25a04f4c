"""Materials and lots through the public API: lists, status and balance, the ledger, the gate, receiving."""

from __future__ import annotations

from decimal import Decimal

from app.core.tenancy import tenant_transaction
from app.materials import services as materials
from tests.api.conftest import admin_token, all_pages, audit_events, bearer, make_read_only
from tests.factories import admin_actor, make_lot, make_material

RECEIPT = {"lot_number": "API-LOT-1", "quantity": "25.5", "received_on": "2026-11-20", "supplier": "Acme",
           "supplier_lot": "AC-77"}


def test_lots_read_with_status_balance_ledger_and_gate(client, world) -> None:
    token, seeded = world.token_a, world.seeded_a
    lot = client.get(f"/api/v1/lots/{seeded.lot_id}", headers=bearer(token)).get_json()
    assert lot["lot_number"] == seeded.lot_number and lot["status"] == "released"
    assert Decimal(lot["balance"]) == Decimal("100") and lot["expired"] is False
    ledger = client.get(f"/api/v1/lots/{seeded.lot_id}/movements", headers=bearer(token)).get_json()["items"]
    assert [(m["kind"], Decimal(m["balance_after"])) for m in ledger] == [("receive", Decimal("100"))]
    changes = client.get(f"/api/v1/lots/{seeded.lot_id}/status-changes", headers=bearer(token)).get_json()["items"]
    assert [(c["from_status"], c["to_status"]) for c in changes] == [("quarantine", "released")]
    assert changes[0]["signature_id"] is not None
    usable = client.get(f"/api/v1/lots/{seeded.lot_id}/usable?quantity=10", headers=bearer(token)).get_json()
    assert usable["usable"] is True and usable["reasons"] == []
    short = client.get(f"/api/v1/lots/{seeded.lot_id}/usable?quantity=1000", headers=bearer(token)).get_json()
    assert [r["code"] for r in short["reasons"]] == ["insufficient_quantity"]
    zero = client.get(f"/api/v1/lots/{seeded.lot_id}/usable?quantity=0", headers=bearer(token))
    assert zero.status_code == 422 and "greater than zero" in zero.get_json()["detail"]
    material = client.get(f"/api/v1/materials/{seeded.material_id}", headers=bearer(token)).get_json()
    assert material["code"] == "GLC-T" and material["unit"] == "L"


def test_material_and_lot_lists_page_and_filter(client, make_tenant, issue_token) -> None:
    tenant = make_tenant()
    with tenant_transaction(tenant.ref, actor=admin_actor(tenant)) as session:
        salt = make_material(session, code="NACL", name="Sodium chloride")
        water = make_material(session, code="WFI", name="Water for injection", unit="L",
                              material_type="consumable")
        released = [make_lot(session, salt, "5") for _ in range(3)]
        held = make_lot(session, salt, "7", release=False, supplier="Brenntag")
        make_lot(session, water, "100")
    token = issue_token(tenant, ["materials.read"])
    walked = all_pages(client, f"/api/v1/lots?material_id={salt.id}", token, limit=2)
    assert [lot["id"] for lot in walked] == [*(lot.id for lot in released), held.id]
    quarantined = client.get("/api/v1/lots?status=quarantine", headers=bearer(token)).get_json()["items"]
    assert [lot["lot_number"] for lot in quarantined] == [held.lot_number]
    by_supplier = client.get("/api/v1/lots?q=brenn", headers=bearer(token)).get_json()["items"]
    assert [lot["id"] for lot in by_supplier] == [held.id]
    consumables = client.get("/api/v1/materials?material_type=consumable", headers=bearer(token)).get_json()
    assert [m["code"] for m in consumables["items"]] == ["WFI"]
    assert [m["code"] for m in client.get("/api/v1/materials?q=sodium", headers=bearer(token)).get_json()["items"]] \
        == ["NACL"]
    refused = client.get("/api/v1/lots?status=expired", headers=bearer(token))
    assert refused.status_code == 422 and "status" in refused.get_json()["detail"]


def test_receiving_a_lot_puts_it_in_quarantine_with_its_audit_event(client, make_tenant, issue_token) -> None:
    tenant = make_tenant()
    with tenant_transaction(tenant.ref, actor=admin_actor(tenant)) as session:
        material = materials.create_material(session, code="GLC", name="Glucose", material_type="raw", unit="kg",
                                             shelf_life_days=365)
    token = issue_token(tenant, ["materials.manage", "materials.read"])
    received = client.post("/api/v1/lots", json={**RECEIPT, "material_id": material.id}, headers=bearer(token))
    assert received.status_code == 201, received.get_json()
    lot = received.get_json()
    assert lot["status"] == "quarantine" and Decimal(lot["balance"]) == Decimal("25.5")
    assert lot["unit"] == "kg" and lot["expiry_date"] == "2027-11-20"  # from the shelf life
    (event,) = audit_events(tenant, "lot", lot["id"])
    assert event.action == "create" and event.new_values["lot_number"] == "API-LOT-1"
    assert event.actor_label.endswith(f"<{tenant.admin_email}> via API token 'test'")
    ledger = client.get(f"/api/v1/lots/{lot['id']}/movements", headers=bearer(token)).get_json()["items"]
    assert [m["kind"] for m in ledger] == ["receive"]
    gate = client.get(f"/api/v1/lots/{lot['id']}/usable?quantity=1", headers=bearer(token)).get_json()
    assert [r["code"] for r in gate["reasons"]] == ["quarantined"]

    again = client.post("/api/v1/lots", json={**RECEIPT, "material_id": material.id}, headers=bearer(token))
    assert again.status_code == 409 and "already exists" in again.get_json()["detail"]
    wrong_unit = client.post("/api/v1/lots", json={**RECEIPT, "lot_number": "API-LOT-2", "unit": "L",
                                                   "material_id": material.id}, headers=bearer(token))
    assert wrong_unit.status_code == 422 and "counted in kg" in wrong_unit.get_json()["detail"]
    no_material = client.post("/api/v1/lots", json={**RECEIPT, "lot_number": "API-LOT-3", "material_id": 9999},
                              headers=bearer(token))
    assert no_material.status_code == 404
    assert len(client.get("/api/v1/lots", headers=bearer(token)).get_json()["items"]) == 1

    made = client.post("/api/v1/materials", json={"code": "NAOH", "name": "Sodium hydroxide",
                                                  "material_type": "raw", "unit": "kg"}, headers=bearer(token))
    assert made.status_code == 201 and len(audit_events(tenant, "material", made.get_json()["id"])) == 1


def test_materials_scopes_read_only_and_isolation(client, world, make_tenant, issue_token) -> None:
    tenant = make_tenant()
    reader = issue_token(tenant, ["materials.read"])
    denied = client.post("/api/v1/lots", json={**RECEIPT, "material_id": 1}, headers=bearer(reader))
    assert denied.status_code == 403 and "materials.manage" in denied.get_json()["detail"]
    assert client.get("/api/v1/lots", headers=bearer(issue_token(tenant, ["plant.read"]))).status_code == 403

    writer = issue_token(tenant, ["materials.manage", "materials.read"])
    make_read_only(tenant)
    refused = client.post("/api/v1/lots", json={**RECEIPT, "material_id": 1}, headers=bearer(writer))
    assert refused.status_code == 402
    assert client.get("/api/v1/lots", headers=bearer(writer)).status_code == 200

    a_lots = {lot["lot_number"] for lot in all_pages(client, "/api/v1/lots", world.token_a, limit=50)}
    b_lots = {lot["lot_number"] for lot in all_pages(client, "/api/v1/lots", admin_token(world.b), limit=50)}
    assert world.seeded_a.lot_number in a_lots and world.seeded_b.lot_number in b_lots
    assert not a_lots & b_lots
