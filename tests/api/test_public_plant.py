"""Plant through the public API: sites, lines, equipment (status, readiness, logbook) and sensors."""

from __future__ import annotations

from app.core.tenancy import tenant_transaction
from app.plant import services as plant
from tests.api.conftest import admin_token, all_pages, audit_events, bearer, make_read_only
from tests.factories import admin_actor, make_equipment, make_line


def test_plant_records_read_with_a_token(client, world) -> None:
    token, seeded = world.token_a, world.seeded_a
    site = client.get(f"/api/v1/sites/{seeded.site_id}", headers=bearer(token)).get_json()
    assert site["timezone"] == "Europe/Zurich"
    line = client.get(f"/api/v1/lines/{seeded.line_id}", headers=bearer(token)).get_json()
    assert line["site_id"] == seeded.site_id
    equipment = client.get(f"/api/v1/equipment/{seeded.equipment_id}", headers=bearer(token)).get_json()
    assert equipment["line_id"] == seeded.line_id and equipment["status"] == "clean"
    assert equipment["readiness"]["ready"] is True and equipment["readiness"]["reasons"] == []
    readiness = client.get(f"/api/v1/equipment/{seeded.equipment_id}/readiness", headers=bearer(token)).get_json()
    assert readiness["ready"] is True
    logbook = client.get(f"/api/v1/equipment/{seeded.equipment_id}/logbook", headers=bearer(token)).get_json()
    assert [e["kind"] for e in logbook["items"]] == ["created"]
    sensor = client.get(f"/api/v1/sensors/{seeded.sensor_id}", headers=bearer(token)).get_json()
    assert sensor["equipment_id"] == seeded.equipment_id and sensor["unit"] == "degC"
    assert sensor["range_high"] == "100.000000"  # exact decimals travel as strings
    missing = client.get("/api/v1/equipment/999999", headers=bearer(token))
    assert missing.status_code == 404 and missing.mimetype == "application/problem+json"
    assert "no equipment 999999" in missing.get_json()["detail"]


def test_a_token_never_sees_another_tenants_plant(client, world) -> None:
    with tenant_transaction(world.b.ref, actor=admin_actor(world.b)) as session:  # ids only B has
        site = plant.create_site(session, code="B-ONLY", name="B only", timezone="UTC")
        line = plant.create_line(session, site_id=site.id, code="B-ONLY-L", name="B only line")
        b_ids = {"sites": site.id, "lines": line.id}
    token = world.token_a
    for resource, b_id in b_ids.items():
        assert client.get(f"/api/v1/{resource}/{b_id}", headers=bearer(token)).status_code == 404
    codes = {s["code"] for s in all_pages(client, "/api/v1/sites", token, limit=50)}
    assert "B-ONLY" not in codes and codes  # A's own sites, never B's
    b_tags = {e["tag"] for e in all_pages(client, "/api/v1/equipment", admin_token(world.b), limit=50)}
    a_tags = {e["tag"] for e in all_pages(client, "/api/v1/equipment", token, limit=50)}
    assert a_tags and b_tags and not a_tags & b_tags


def test_plant_lists_page_and_filter(client, make_tenant, issue_token) -> None:
    tenant = make_tenant()
    with tenant_transaction(tenant.ref, actor=admin_actor(tenant)) as session:
        site = plant.create_site(session, code="S", name="Site", timezone="UTC")
        lines = [plant.create_line(session, site_id=site.id, code=f"L{i}", name=f"Line {i}") for i in range(2)]
        items = [plant.create_equipment(session, tag=f"T-{n}", name=f"Tank {n}", equipment_class="mixer",
                                        line_id=lines[n % 2].id, status=status, qualification_status="qualified")
                 for n, status in enumerate(("clean", "dirty", "clean", "maintenance", "clean"))]
        plant.create_sensor(session, tag="PT-0", equipment_id=items[0].id, quantity_kind="pressure", unit="bar",
                            range_low="0", range_high="10", sampling_period_s="5")
    token = issue_token(tenant, ["plant.read"])
    walked = all_pages(client, "/api/v1/equipment", token, limit=2)
    assert [e["id"] for e in walked] == sorted(e.id for e in items)  # by id, every item once
    clean_on_first = client.get(f"/api/v1/equipment?status=clean&line_id={lines[0].id}",
                                headers=bearer(token)).get_json()["items"]
    assert [e["tag"] for e in clean_on_first] == ["T-0", "T-2", "T-4"]
    second = client.get(f"/api/v1/lines?site_id={site.id}&limit=1&after={lines[0].id}", headers=bearer(token))
    assert [line["code"] for line in second.get_json()["items"]] == ["L1"]
    sensors = client.get(f"/api/v1/sensors?equipment_id={items[1].id}", headers=bearer(token)).get_json()
    assert sensors == {"items": [], "next_after": None}
    dirty = client.get(f"/api/v1/equipment/{items[1].id}/readiness", headers=bearer(token)).get_json()
    assert dirty["ready"] is False and [r["code"] for r in dirty["reasons"]] == ["dirty"]
    for bad in ("status=broken", "line_id=abc", "limit=500", "colour=red"):
        refused = client.get(f"/api/v1/equipment?{bad}", headers=bearer(token))
        assert refused.status_code == 422 and refused.mimetype == "application/problem+json", bad


def test_creating_plant_records_writes_audit_events_named_after_the_token(client, make_tenant, issue_token) -> None:
    tenant = make_tenant()
    token = issue_token(tenant, ["plant.manage", "plant.read"])
    site = client.post("/api/v1/sites", json={"code": "BSL", "name": "Basel", "timezone": "Europe/Zurich"},
                       headers=bearer(token))
    assert site.status_code == 201, site.get_json()
    line = client.post("/api/v1/lines", json={"site_id": site.get_json()["id"], "code": "L1", "name": "Line 1"},
                       headers=bearer(token)).get_json()
    tank = client.post("/api/v1/equipment", json={"tag": "TK-1", "name": "Tank", "equipment_class": "mixer",
                                                  "line_id": line["id"]}, headers=bearer(token))
    assert tank.status_code == 201 and tank.get_json()["status"] == "dirty"
    sensor = client.post("/api/v1/sensors", json={
        "tag": "TT-1", "equipment_id": tank.get_json()["id"], "quantity_kind": "temperature", "unit": "degC",
        "range_low": "-10", "range_high": "150", "sampling_period_s": "1"}, headers=bearer(token))
    assert sensor.status_code == 201, sensor.get_json()
    for record_type, body in (("site", site), ("equipment", tank), ("sensor", sensor)):
        (event,) = audit_events(tenant, record_type, body.get_json()["id"])
        assert event.action == "create"
        assert event.actor_label.endswith(f"<{tenant.admin_email}> via API token 'test'")
        assert event.actor_member_id is not None and event.request_id
    duplicate = client.post("/api/v1/sites", json={"code": "BSL", "name": "Again", "timezone": "UTC"},
                            headers=bearer(token))
    assert duplicate.status_code == 409 and "already exists" in duplicate.get_json()["detail"]
    bad_zone = client.post("/api/v1/sites", json={"code": "X", "name": "X", "timezone": "Mars/Olympus"},
                           headers=bearer(token))
    assert bad_zone.status_code == 422 and "Mars/Olympus" in bad_zone.get_json()["detail"]
    no_line = client.post("/api/v1/equipment", json={"tag": "TK-2", "name": "Tank", "equipment_class": "mixer",
                                                     "line_id": 99999}, headers=bearer(token))
    assert no_line.status_code == 404
    codes = [s["code"] for s in client.get("/api/v1/sites", headers=bearer(token)).get_json()["items"]]
    assert codes == ["BSL"]  # refused requests stored nothing


def test_plant_scopes_are_enforced(client, make_tenant, issue_token) -> None:
    tenant = make_tenant()
    reader = issue_token(tenant, ["plant.read"])
    refused = client.post("/api/v1/sites", json={"code": "S", "name": "S", "timezone": "UTC"}, headers=bearer(reader))
    assert refused.status_code == 403 and "plant.manage" in refused.get_json()["detail"]
    other = issue_token(tenant, ["materials.read"])
    assert client.get("/api/v1/sensors", headers=bearer(other)).status_code == 403
    assert client.get("/api/v1/sensors", headers=bearer(reader)).status_code == 200


def test_read_only_tenant_refuses_plant_creates_but_reads(client, make_tenant, issue_token) -> None:
    tenant = make_tenant()
    token = issue_token(tenant, ["plant.manage", "plant.read"])
    make_read_only(tenant)
    refused = client.post("/api/v1/sites", json={"code": "S", "name": "S", "timezone": "UTC"}, headers=bearer(token))
    assert refused.status_code == 402 and "read-only" in refused.get_json()["detail"]
    assert client.get("/api/v1/sites", headers=bearer(token)).get_json()["items"] == []


def test_values_the_database_cannot_hold_are_a_422_and_store_nothing(client, world) -> None:
    token = world.token_a
    before = all_pages(client, "/api/v1/sites", token, limit=50)
    nul = client.post("/api/v1/sites", json={"code": "NUL", "name": "bad\x00name", "timezone": "UTC"},
                      headers=bearer(token))
    assert nul.status_code == 422 and "NUL" in nul.get_json()["detail"]
    huge = client.post("/api/v1/lines", json={"site_id": 2**63 + 1, "code": "HUGE", "name": "x"},
                       headers=bearer(token))
    assert huge.status_code == 422 and "out of range" in huge.get_json()["detail"]
    assert client.get("/api/v1/equipment", query_string={"status": "clean", "line_id": "0x10"},
                      headers=bearer(token)).status_code == 422
    assert all_pages(client, "/api/v1/sites", token, limit=50) == before


def test_equipment_status_changes_over_the_api_unless_the_site_wants_a_signature(client, make_tenant,
                                                                                 issue_token) -> None:
    tenant = make_tenant()
    with tenant_transaction(tenant.ref, actor=admin_actor(tenant)) as session:
        plain = make_line(session)
        signed = make_line(session, signature_routes=("equipment.status_change",))
        mixer = make_equipment(session, plain, equipment_class="mixer", status="clean")
        guarded = make_equipment(session, signed, equipment_class="mixer", status="clean")
    token = issue_token(tenant, ["plant.manage", "plant.read"])
    moved = client.post(f"/api/v1/equipment/{mixer.id}/status", json={"status": "maintenance",
                                                                     "reason": "Seal replacement, WO-4411"},
                        headers=bearer(token))
    assert moved.status_code == 201, moved.get_json()
    entry = moved.get_json()
    assert (entry["from_status"], entry["to_status"], entry["signature_id"]) == ("clean", "maintenance", None)
    assert entry["actor_label"].endswith("via API token 'test'")
    item = client.get(f"/api/v1/equipment/{mixer.id}", headers=bearer(token)).get_json()
    assert item["status"] == "maintenance" and "under_maintenance" in [r["code"] for r in item["readiness"]["reasons"]]
    (event,) = [e for e in audit_events(tenant, "equipment", mixer.id) if e.action == "status_change"]
    assert event.reason == "Seal replacement, WO-4411" and event.new_values["status"] == "maintenance"
    assert event.actor_label.endswith(f"<{tenant.admin_email}> via API token 'test'")

    not_allowed = client.post(f"/api/v1/equipment/{mixer.id}/status", json={"status": "clean", "reason": "done"},
                              headers=bearer(token))
    assert not_allowed.status_code == 409 and "cannot go from" in not_allowed.get_json()["detail"]
    needs_signature = client.post(f"/api/v1/equipment/{guarded.id}/status",
                                  json={"status": "dirty", "reason": "used"}, headers=bearer(token))
    assert needs_signature.status_code == 409 and "e-signature" in needs_signature.get_json()["detail"]
    assert client.get(f"/api/v1/equipment/{guarded.id}", headers=bearer(token)).get_json()["status"] == "clean"
    reader = issue_token(tenant, ["plant.read"])
    assert client.post(f"/api/v1/equipment/{mixer.id}/status", json={"status": "dirty", "reason": "x"},
                       headers=bearer(reader)).status_code == 403
    make_read_only(tenant)
    assert client.post(f"/api/v1/equipment/{mixer.id}/status", json={"status": "dirty", "reason": "x"},
                       headers=bearer(token)).status_code == 402
    logbook = client.get(f"/api/v1/equipment/{mixer.id}/logbook", headers=bearer(token)).get_json()["items"]
    assert [e["kind"] for e in logbook] == ["created", "status_change"]
