"""Over HTTP: planning and release by a supervisor, the floor queue and step screen for operators, the JSON API
the tablet uses (live checks, idempotent entries), bad input refused with clear problems and nothing recorded,
and permissions on every action."""

from __future__ import annotations

import re
import uuid

from sqlalchemy import func, select

from app.audit.models import AuditEvent
from app.batches.models import Batch, StepEntry
from tests.batches.conftest import key
from tests.conftest import TEST_PASSWORD, csrf_token, sign_in


def _api(client, floor, path: str, body=None, method: str = "post"):
    token = csrf_token(client, f"/t/{floor.tenant.ref.slug}/floor/?all=1")
    url = f"/t/{floor.tenant.ref.slug}/api/v1/batches{path}"
    return getattr(client, method)(url, json=body, headers={"X-CSRFToken": token})


def _entries(floor, batch_id) -> int:
    with floor.tx() as s:
        return s.scalar(select(func.count()).select_from(StepEntry).where(StepEntry.batch_id == batch_id))


def test_a_supervisor_plans_and_releases_a_batch_through_the_screens(client, make_floor) -> None:
    floor = make_floor()
    slug = floor.tenant.ref.slug
    sign_in(client, floor.supervisor.email)
    page = client.get(f"/t/{slug}/batches/plan?master_recipe_id={floor.master_recipe_id}&batch_size=15&unit=L"
                      f"&line_id={floor.line_id}").get_data(as_text=True)
    assert "scaled to 15 L" in page and "12 L" in page and floor.reactor_tag in page and "READY" in page
    token = csrf_token(client, f"/t/{slug}/batches/plan")
    response = client.post(f"/t/{slug}/batches/plan", data={
        "csrf_token": token, "confirm": "1", "master_recipe_id": floor.master_recipe_id, "batch_size": "15",
        "unit": "L", "line_id": floor.line_id, "equipment_bioreactor": floor.reactor_id,
        "planned_start": "2026-12-01T08:00"})
    assert response.status_code == 303
    batch_url = response.headers["Location"]
    page = client.get(batch_url).get_data(as_text=True)
    number = re.search(r"Batch (B-\d{4}-\d{5})", page).group(1)
    assert "Sign and release to the floor" in page
    response = client.post(batch_url + "/dispatch", data={
        "csrf_token": csrf_token(client, batch_url), "meaning": "approved", "signature_user_id": floor.supervisor.email,
        "signature_password": TEST_PASSWORD})
    assert response.status_code == 303
    page = client.get(batch_url).get_data(as_text=True)
    assert "Released to the floor" in page and "Control recipe" in page
    with floor.tx() as s:
        assert s.scalar(select(Batch.status).where(Batch.batch_number == number)) == "dispatched"


def test_operators_work_from_the_floor_queue_and_the_tablet_api(client, make_floor) -> None:
    floor = make_floor()
    slug = floor.tenant.ref.slug
    batch_id = floor.new_batch()
    sign_in(client, floor.operator.email)
    queue = client.get(f"/t/{slug}/floor/{floor.line_id}").get_data(as_text=True)
    assert floor.batch(batch_id).batch_number in queue and "Line clearance" in queue and "Ready to start" in queue
    step_id = floor.step(batch_id, "clearance").id
    page = client.get(f"/t/{slug}/batches/{batch_id}/steps/{step_id}").get_data(as_text=True)
    assert "Start step" in page and "Confirm the suite is clear." in page
    assert _api(client, floor, f"/{batch_id}/steps/{step_id}/start").status_code == 200
    charge = floor.step(batch_id, "charge").id
    refused = _api(client, floor, f"/{batch_id}/steps/{charge}/start")
    assert refused.status_code == 409 and refused.get_json()["needs"] == "override"
    body = {"capture": "vessel", "code": f"EQ:{floor.reactor_tag}", "idempotency_key": key(),
            "control_recipe_hash": floor.control_hash(batch_id), "device_time": "2026-11-27T10:00:00Z"}
    first = _api(client, floor, f"/{batch_id}/steps/{step_id}/entries", body)
    assert first.status_code == 201, first.get_json()
    again = _api(client, floor, f"/{batch_id}/steps/{step_id}/entries", body)
    assert again.status_code == 200 and again.get_json()["replayed"] is True
    assert again.get_json()["id"] == first.get_json()["id"]
    assert _entries(floor, batch_id) == 1
    state = _api(client, floor, f"/{batch_id}/steps/{step_id}", method="get").get_json()
    assert state["missing"] == ["Room clear"] and [e["capture_key"] for e in state["entries"]] == ["vessel"]
    assert _api(client, floor, "", {"master_recipe_id": floor.master_recipe_id, "batch_size": 10,
                                    "line_id": floor.line_id, "planned_start": "2026-12-01T08:00:00Z"}
                ).status_code == 403  # operators do not plan
    assert client.get(f"/t/{slug}/batches/plan").status_code == 403


def test_live_checks_say_green_amber_red_and_blocked(client, make_floor) -> None:
    floor = make_floor()
    batch_id = floor.new_batch()
    floor.do_clearance(batch_id)
    step_id = floor.start(batch_id, "charge").id
    sign_in(client, floor.operator.email)
    check = lambda body: _api(client, floor, f"/{batch_id}/steps/{step_id}/check", body)  # noqa: E731
    assert check({"capture": "temp", "value": "37.2", "unit": "degC"}).get_json()["state"] == "green"
    assert check({"capture": "temp", "value": "37.6"}).get_json()["state"] == "amber"
    red = check({"capture": "temp", "value": "38.4"}).get_json()
    assert red["state"] == "red" and red["needs_acknowledgement"] is True
    blocked = check({"capture": "medium", "code": f"LOT:{floor.lots['GLC-T']}", "quantity": "8"}).get_json()
    assert blocked["state"] == "blocked" and blocked["needs_override"] is True
    assert _entries(floor, batch_id) == 2  # checks never write


BAD_INPUT = [
    ({"capture": "temp", "value": "abc", "unit": "degC"}, 422, "is not a number"),
    ({"capture": "temp", "value": True}, 422, "must be a number, got bool"),
    ({"capture": "temp", "value": [37]}, 422, "must be a number, got a list"),
    ({"capture": "temp", "value": {"v": 37}}, 422, "must be a number, got an object"),
    ({"capture": "temp", "value": "1e400"}, 422, "out of range"),
    ({"capture": "temp", "value": "37", "unit": "kg"}, 422, "measures mass"),
    ({"capture": "temp", "value": "37", "unit": "blorps"}, 422, "unknown unit"),
    ({"capture": "medium", "code": "LOT:DOES-NOT-EXIST", "quantity": "8"}, 422, "no lot matches"),
    ({"capture": "medium", "code": "XYZZY", "quantity": "8"}, 422, "no lot matches the code 'XYZZY'"),
    ({"capture": "medium", "code": "LOT:{lot}", "quantity": "eight"}, 422, "not a number"),
    ({"capture": "medium", "code": "LOT:{lot}", "quantity": "8", "unit": "kg"}, 422, "does not match"),
    ({"capture": "nope", "value": "1"}, 422, "has no capture 'nope'"),
    ({"capture": "temp", "value": "37", "control_recipe_hash": "0" * 64}, 409, "another control recipe"),
    ({"capture": "temp", "value": "37", "control_recipe_hash": ""}, 422, "control_recipe_hash is required"),
    ({"capture": "temp", "value": "37", "idempotency_key": "bad key!"}, 422, "idempotency_key"),
    ({"capture": "temp", "value": "37", "extra_field": 1}, 422, "extra_field"),
]


def test_bad_input_is_refused_with_a_clear_problem_and_nothing_is_recorded(client, make_floor) -> None:
    floor = make_floor()
    batch_id = floor.new_batch()
    floor.do_clearance(batch_id)
    step_id = floor.start(batch_id, "charge").id
    sign_in(client, floor.operator.email)
    before = _entries(floor, batch_id)
    balance = floor.lot_balance(floor.lots["MED-T"])
    for body, status, message in BAD_INPUT:
        payload = {"idempotency_key": key(), "control_recipe_hash": floor.control_hash(batch_id), **body}
        if "code" in payload:
            payload["code"] = payload["code"].replace("{lot}", floor.lots["MED-T"])
        response = _api(client, floor, f"/{batch_id}/steps/{step_id}/entries", payload)
        problem = response.get_json()
        assert response.status_code == status, (body, problem)
        assert response.mimetype == "application/problem+json"
        assert message in problem["detail"], (body, problem)
    assert _entries(floor, batch_id) == before
    assert floor.lot_balance(floor.lots["MED-T"]) == balance


def test_the_record_page_and_exports_open(client, make_floor) -> None:
    floor = make_floor()
    batch_id = floor.new_batch()
    floor.do_clearance(batch_id)
    sign_in(client, floor.operator.email)
    slug = floor.tenant.ref.slug
    page = client.get(f"/t/{slug}/batches/{batch_id}/record")
    assert page.status_code == 200 and "Sensor trends" in page.get_data(as_text=True)
    assert "No sensor is registered on this batch's equipment" in page.get_data(as_text=True)
    pdf = client.get(f"/t/{slug}/batches/{batch_id}/record.pdf")
    assert pdf.status_code == 200 and pdf.data.startswith(b"%PDF-")
    exported = client.get(f"/t/{slug}/batches/{batch_id}/record.json")
    assert exported.status_code == 200 and exported.get_json()["batch"]["batch_number"] == \
        floor.batch(batch_id).batch_number
    assert client.get(f"/t/{slug}/batches/{batch_id}/steps/999999").status_code == 404
    assert client.get(f"/t/{slug}/batches/{uuid.uuid4().int % 10**6 + 10**6}").status_code == 404


def test_a_correction_without_a_reason_is_a_422_and_stores_nothing(client, make_floor) -> None:
    floor = make_floor()
    batch_id = floor.new_batch()
    floor.do_clearance(batch_id)
    floor.start(batch_id, "charge")
    first = floor.enter(batch_id, "charge", "temp", {"value": "37.0", "unit": "degC"})
    sign_in(client, floor.operator.email)
    with floor.tx() as s:
        events = s.scalar(select(func.count()).select_from(AuditEvent))
    before = _entries(floor, batch_id)
    for reason in ("", "   "):
        response = _api(client, floor, f"/{batch_id}/entries/{first.entry.id}/corrections", {
            "idempotency_key": key(), "control_recipe_hash": floor.control_hash(batch_id), "value": "37.5",
            "unit": "degC", "reason": reason})
        assert response.status_code == 422, response.get_json()
        assert "reason" in response.get_json()["detail"]
    assert _entries(floor, batch_id) == before
    with floor.tx() as s:
        assert s.scalar(select(func.count()).select_from(AuditEvent)) == events  # not even a refused attempt
    response = _api(client, floor, f"/{batch_id}/entries/{first.entry.id}/corrections", {
        "idempotency_key": key(), "control_recipe_hash": floor.control_hash(batch_id), "value": "37.5",
        "unit": "degC", "reason": "transcription error"})
    assert response.status_code == 201, response.get_json()
    assert _entries(floor, batch_id) == before + 1


def test_the_batch_page_links_to_its_audit_history(client, make_floor) -> None:
    floor = make_floor()
    batch_id = floor.new_batch()
    slug = floor.tenant.ref.slug
    sign_in(client, floor.supervisor.email)
    page = client.get(f"/t/{slug}/batches/{batch_id}").get_data(as_text=True)
    history = f"/t/{slug}/audit/records/batch/{batch_id}"
    assert f'rel="history" href="{history}"' in page
    trail = client.get(history).get_data(as_text=True)
    assert "History of Batch" in trail and "status_change" in trail
    # Deleting the batch is refused and the attempt joins its history.
    refused = _api(client, floor, f"/{batch_id}", {"reason": "planned twice"}, method="delete")
    assert refused.status_code == 409 and "never deleted" in refused.get_json()["detail"]
    assert floor.batch(batch_id) is not None
    assert "delete_attempt" in client.get(history).get_data(as_text=True)
    assert "planned twice" in client.get(history).get_data(as_text=True)
