"""Gateways over HTTP: registration, OAuth2 client credentials, POST /api/v1/ingest, status polling, pages."""

from __future__ import annotations

import base64
import re

from app.api import services as api_services
from app.core.tenancy import control_session, tenant_transaction
from app.sensors import services
from tests.conftest import csrf_token, sign_in
from tests.sensors.conftest import burst, readings_json, settle


def _register_gateway(client, plant) -> tuple[str, str, int]:
    sign_in(client, plant.tenant.admin_email)
    page = f"/t/{plant.ref.slug}/sensors/gateways"
    made = client.post(page, data={"name": "Suite 2 gateway", "csrf_token": csrf_token(client, page)})
    assert made.status_code == 201
    html = made.get_data(as_text=True)
    client_id = re.search(r'id="issued-client-id">([^<]+)<', html).group(1)
    secret = re.search(r'id="issued-secret">([^<]+)<', html).group(1)
    row_id = int(re.search(r'/sensors/gateways/(\d+)/rotate', html).group(1))
    return client_id, secret, row_id


def _token(machine, client_id: str, secret: str) -> tuple[int, str]:
    basic = base64.b64encode(f"{client_id}:{secret}".encode()).decode()
    issued = machine.post("/oauth/token", data={"grant_type": "client_credentials", "scope": "ingest"},
                          headers={"Authorization": f"Basic {basic}"})
    return issued.status_code, (issued.get_json() or {}).get("access_token", "")


def _auth(token: str, **extra: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}", **extra}


def test_gateway_pushes_json_and_csv_and_polls_the_status(app, client, make_plant) -> None:
    plant = make_plant()
    client_id, secret, _ = _register_gateway(client, plant)
    machine = app.test_client()
    status, token = _token(machine, client_id, secret)
    assert status == 200 and token
    body = readings_json(plant.tag("TT"), [37.0, 37.1, 37.2], message_id="m-1")
    posted = machine.post("/api/v1/ingest", data=body, headers=_auth(token, **{"Content-Type": "application/json"}))
    assert posted.status_code == 202, posted.get_data(as_text=True)
    doc = posted.get_json()
    assert doc["status"] == "queued" and not doc["duplicate"]
    assert posted.headers["Location"] == f"/api/v1/ingest/{doc['id']}"
    again = machine.post("/api/v1/ingest", data=body, headers=_auth(token, **{"Content-Type": "application/json"}))
    assert again.status_code == 202 and again.get_json()["id"] == doc["id"] and again.get_json()["duplicate"]
    csv_body = f"sensor,ts,value\n{plant.tag('PH')},2026-11-02T08:00:00Z,7.01\nGHOST,2026-11-02T08:00:00Z,1\n"
    posted_csv = machine.post("/api/v1/ingest", data=csv_body, headers=_auth(token, **{"Content-Type": "text/csv"}))
    assert posted_csv.status_code == 202
    burst()
    done = machine.get(posted.headers["Location"], headers=_auth(token)).get_json()
    assert done["status"] == "processed" and done["readings"]["stored"] == 3
    done_csv = machine.get(posted_csv.headers["Location"], headers=_auth(token)).get_json()
    assert done_csv["readings"] == {"total": 2, "stored": 1, "duplicate": 0, "rejected": 1}
    assert done_csv["errors"][0]["sensor"] == "GHOST"
    assert machine.get("/api/v1/ingest/999999", headers=_auth(token)).status_code == 404


def test_bad_requests_get_clear_4xx_and_store_nothing(app, client, make_plant, monkeypatch) -> None:
    plant = make_plant()
    client_id, secret, _ = _register_gateway(client, plant)
    machine = app.test_client()
    _, token = _token(machine, client_id, secret)
    json_type = {"Content-Type": "application/json"}
    assert machine.post("/api/v1/ingest", data=b"{}", headers=json_type).status_code == 401
    cases = [
        (b"hello", {"Content-Type": "text/plain"}, 415, "text/csv"),
        (b'{"readings": []}', json_type, 422, "readings"),
        (b'{"readings": [1, 2]}', json_type, 422, "readings"),
        (b"not json", json_type, 422, "JSON"),
        (b"a,b\n", {"Content-Type": "text/csv"}, 422, "sensor,ts,value"),
    ]
    for body, headers, code, hint in cases:
        answer = machine.post("/api/v1/ingest", data=body, headers=_auth(token, **headers))
        assert answer.status_code == code, (body, answer.get_data(as_text=True))
        assert hint in answer.get_json()["detail"]
    monkeypatch.setitem(app.config, "INGEST_MAX_BYTES", 200)
    big = readings_json(plant.tag("TT"), [37.0] * 20)
    too_big = machine.post("/api/v1/ingest", data=big, headers=_auth(token, **json_type))
    assert too_big.status_code == 413 and "split" in too_big.get_json()["detail"]
    with tenant_transaction(plant.ref) as session:
        assert session.execute(services.select(services.SensorIngest)).first() is None


def test_gateway_secret_rotation_and_revocation(app, client, make_plant) -> None:
    plant = make_plant()
    client_id, secret, row_id = _register_gateway(client, plant)
    machine = app.test_client()
    _, old_token = _token(machine, client_id, secret)
    page = f"/t/{plant.ref.slug}/sensors/gateways"
    rotated = client.post(f"{page}/{row_id}/rotate", data={"csrf_token": csrf_token(client, page)})
    new_secret = re.search(r'id="issued-secret">([^<]+)<', rotated.get_data(as_text=True)).group(1)
    assert new_secret != secret
    assert _token(machine, client_id, secret)[0] == 401  # the old secret no longer works
    body = readings_json(plant.tag("TT"), [37.0])
    json_type = {"Content-Type": "application/json"}
    assert machine.post("/api/v1/ingest", data=body, headers=_auth(old_token, **json_type)).status_code == 401
    status, new_token = _token(machine, client_id, new_secret)
    assert status == 200
    assert machine.post("/api/v1/ingest", data=body, headers=_auth(new_token, **json_type)).status_code == 202
    client.post(f"{page}/{row_id}/revoke", data={"csrf_token": csrf_token(client, page)})
    assert machine.post("/api/v1/ingest", data=body, headers=_auth(new_token, **json_type)).status_code == 401
    assert _token(machine, client_id, new_secret)[0] == 401


def test_a_token_without_the_ingest_scope_is_refused(app, make_plant) -> None:
    plant = make_plant()
    with control_session() as session:
        token = api_services.create_oauth_client(session, tenant_id=plant.ref.id, name="reader",
                                                 scopes=["plant.read"], created_by_user_id=None)
    basic = base64.b64encode(f"{token.client_id}:{token.secret}".encode()).decode()
    token = app.test_client().post("/oauth/token", data={"grant_type": "client_credentials"},
                                   headers={"Authorization": f"Basic {basic}"}).get_json()["access_token"]
    answer = app.test_client().post("/api/v1/ingest", data=readings_json(plant.tag("TT"), [1.0]),
                                    headers=_auth(token, **{"Content-Type": "application/json"}))
    assert answer.status_code == 403 and "ingest" in answer.get_json()["detail"]


def test_live_tiles_trend_and_episode_pages(app, client, make_plant) -> None:
    plant = make_plant()
    values = [37.0 + 0.01 * (i % 5) for i in range(60)]
    with tenant_transaction(plant.ref) as session:
        services.accept_payload(session, body=readings_json(plant.tag("TT"), values), kind="json",
                                source="test", max_bytes=10**7)
    settle(plant.ref)  # every job done, even if Redis was slow to take it or it had to be retried
    sign_in(client, plant.tenant.admin_email)
    base = f"/t/{plant.ref.slug}/sensors"
    page = client.get(f"{base}/?equipment={plant.equipment_id}")
    assert page.status_code == 200 and plant.tag("TT") in page.get_data(as_text=True)
    live = client.get(f"{base}/live.json?equipment={plant.equipment_id}").get_json()
    tile = next(t for t in live["tiles"] if t["tag"] == plant.tag("TT"))
    assert tile["latest"]["value"] == values[-1] and tile["state"] == "green"
    window = "start=2026-11-02T07:59:00%2B00:00&end=2026-11-02T08:02:00%2B00:00"
    trend = client.get(f"{base}/{plant.sensors['TT']}/trend.json?{window}&points=6").get_json()
    assert sum(b["n"] for b in trend["buckets"]) == 60 and len(trend["buckets"]) <= 6
    assert min(b["min"] for b in trend["buckets"]) == 37.0
    assert client.get(f"{base}/{plant.sensors['TT']}/trend?{window}").status_code == 200
    assert client.get(f"{base}/{plant.sensors['TT']}/trend?start=yesterday").status_code == 400
    assert client.get(f"{base}/episodes").status_code == 200
