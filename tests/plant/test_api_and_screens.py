"""Plant API and screens: create, list, get, status change with the screens' permissions; 4xx that say why."""

from __future__ import annotations

import re
from decimal import Decimal

from sqlalchemy import select, update

from app.accounts.models import Membership
from app.audit.models import AuditEvent
from app.core.tenancy import control_session, tenant_transaction
from tests.conftest import sign_in


def _token(client, slug: str) -> str:
    html = client.get(f"/t/{slug}/").get_data(as_text=True)
    return re.search(r'name="csrf_token" value="([^"]+)"', html).group(1)


def _api(client, slug: str):
    token = _token(client, slug)
    base = f"/t/{slug}/api/v1"

    def post(path: str, body: dict):
        return client.post(base + path, json=body, headers={"X-CSRFToken": token})

    def get(path: str):
        return client.get(base + path)

    return post, get


def test_api_onboards_a_line_and_gates_equipment(client, make_tenant) -> None:
    tenant = make_tenant()
    sign_in(client, tenant.admin_email)
    post, get = _api(client, tenant.ref.slug)
    site = post("/plant/sites", {"code": "ZH1", "name": "Zurich", "timezone": "Europe/Zurich",
                                 "sop_references": ["SOP-EQ-001"]})
    assert site.status_code == 201, site.get_json()
    line = post("/plant/lines", {"site_id": site.get_json()["id"], "code": "USP1", "name": "Upstream 1"})
    assert line.status_code == 201
    eq = post("/plant/equipment", {"tag": "BR-101", "name": "Bioreactor 50 L", "equipment_class": "bioreactor",
                                   "line_id": line.get_json()["id"], "capacity": "50", "capacity_unit": "L",
                                   "qualification_status": "qualified", "clean_hold_hours": 72})
    assert eq.status_code == 201 and eq.get_json()["status"] == "dirty" and Decimal(eq.get_json()["capacity"]) == 50
    eq_id = eq.get_json()["id"]
    sensor = post("/plant/sensors", {"tag": "BR-101.TT01", "equipment_id": eq_id, "quantity_kind": "temperature",
                                     "unit": "°C", "range_low": "0", "range_high": "60", "sampling_period_s": "10"})
    assert sensor.status_code == 201
    readiness = get(f"/plant/equipment/{eq_id}/readiness").get_json()
    assert readiness["ready"] is False and [r["code"] for r in readiness["reasons"]] == ["dirty"]
    changed = post(f"/plant/equipment/{eq_id}/status", {"status": "clean", "reason": "Cleaned per SOP-CL-001"})
    assert changed.status_code == 201 and changed.get_json()["to_status"] == "clean"
    assert get(f"/plant/equipment/{eq_id}/readiness").get_json()["ready"] is True
    board = get(f"/plant/lines/{line.get_json()['id']}/board").get_json()
    assert [i["equipment"]["tag"] for i in board["items"]] == ["BR-101"] and board["items"][0]["readiness"]["ready"]
    assert [e["kind"] for e in get(f"/plant/equipment/{eq_id}/logbook").get_json()["items"]] == \
        ["status_change", "created"]
    assert get("/plant/sensors").get_json()["count"] == 1
    assert get("/scan?code=EQ:BR-101").get_json()["kind"] == "equipment"
    assert get("/scan?code=BR-101.TT01").get_json() == {
        "kind": "sensor", "id": sensor.get_json()["id"], "label": "BR-101.TT01",
        "url": f"/t/{tenant.ref.slug}/plant/sensors/{sensor.get_json()['id']}"}
    assert get("/scan?code=EQ:NOPE").status_code == 404


def test_api_refuses_bad_input_with_reasons_and_stores_nothing(client, make_tenant) -> None:
    tenant = make_tenant()
    sign_in(client, tenant.admin_email)
    post, get = _api(client, tenant.ref.slug)
    bad_tz = post("/plant/sites", {"code": "ZH1", "name": "Zurich", "timezone": "Mars/Olympus"})
    assert bad_tz.status_code == 422 and "not a known IANA timezone" in bad_tz.get_json()["detail"]
    typo = post("/plant/sites", {"code": "ZH1", "name": "Zurich", "timezone": "UTC", "adress": "x"})
    assert typo.status_code == 422 and typo.get_json()["errors"][0]["field"] == "adress"
    assert client.post(f"/t/{tenant.ref.slug}/api/v1/plant/sites", data="x",
                       headers={"X-CSRFToken": _token(client, tenant.ref.slug)}).status_code == 400
    assert post("/plant/equipment/999/status", {"status": "clean", "reason": "x"}).status_code == 404
    assert get("/plant/sites").get_json() == {"items": [], "count": 0}
    with tenant_transaction(tenant.ref) as session:
        assert session.scalar(select(AuditEvent.seq)) is None


def test_api_needs_the_screens_permissions(client, db, make_tenant) -> None:
    tenant = make_tenant()
    with control_session(db=db) as session:
        session.execute(update(Membership).where(Membership.tenant_id == tenant.ref.id).values(roles=["Operator"]))
    sign_in(client, tenant.admin_email)
    post, get = _api(client, tenant.ref.slug)
    assert get("/plant/sites").status_code == 200  # an operator reads the plant
    refused = post("/plant/sites", {"code": "ZH1", "name": "Zurich", "timezone": "UTC"})
    assert refused.status_code == 403 and "plant.manage" in refused.get_json()["detail"]
    assert client.get(f"/t/{tenant.ref.slug}/plant/sites/new").status_code == 403
    assert client.get(f"/t/{tenant.ref.slug}/api/v1/plant/sites").status_code == 200
    client.post("/logout", data={"csrf_token": _token(client, tenant.ref.slug)})
    assert client.get(f"/t/{tenant.ref.slug}/api/v1/plant/sites").status_code == 401


def test_screens_onboard_equipment_and_show_the_board_and_logbook(client, make_tenant) -> None:
    tenant = make_tenant()
    sign_in(client, tenant.admin_email)
    slug = tenant.ref.slug
    token = _token(client, slug)
    response = client.post(f"/t/{slug}/plant/sites/new", data={
        "csrf_token": token, "code": "ZH1", "name": "Zurich", "timezone": "Europe/Zurich",
        "signature_routes": [], "sop_references": "SOP-1\nSOP-2"})
    assert response.status_code == 302
    site_url = response.headers["Location"]
    response = client.post(site_url + "/lines", data={"csrf_token": token, "code": "USP1", "name": "Upstream"})
    line_url = response.headers["Location"]
    line_id = int(line_url.rsplit("/", 1)[1])
    bad = client.post(f"/t/{slug}/plant/equipment/new", data={
        "csrf_token": token, "line_id": str(line_id), "tag": "BR 101", "name": "x", "equipment_class": "bioreactor"})
    assert bad.status_code == 422 and "no spaces" in bad.get_data(as_text=True)
    assert 'value="x"' in bad.get_data(as_text=True)  # what was typed is kept
    response = client.post(f"/t/{slug}/plant/equipment/new", data={
        "csrf_token": token, "line_id": str(line_id), "tag": "BR-101", "name": "Bioreactor",
        "equipment_class": "bioreactor", "qualification_status": "qualified", "status": "dirty"})
    eq_url = response.headers["Location"]
    board = client.get(line_url).get_data(as_text=True)
    assert "BR-101" in board and "NOT READY" in board and "is dirty" in board
    response = client.post(eq_url + "/status", data={"csrf_token": token, "status": "clean", "reason": ""})
    assert response.status_code == 303 and "reason is required" in client.get(eq_url).get_data(as_text=True)
    client.post(eq_url + "/status", data={"csrf_token": token, "status": "clean", "reason": "Cleaned, SOP-CL-1"})
    page = client.get(eq_url).get_data(as_text=True)
    assert "READY" in page and "Cleaned, SOP-CL-1" in page and "Dirty → Clean" in page
    assert "board-tile ready" in client.get(line_url).get_data(as_text=True)
