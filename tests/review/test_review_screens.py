"""Review screens over HTTP: the QA queue, the review page, signed forms, the RBE report (JSON and PDF), deviations
with aging, metrics, rules and permissions."""

from __future__ import annotations

import io
import re

from pypdf import PdfReader
from sqlalchemy import text

from app.review.models import ExceptionDisposition
from tests.conftest import TEST_PASSWORD, csrf_token, sign_in


def _exception_batch(floor) -> int:
    """A batch with an alarm-limit pH (minor) and an out-of-limit temperature (critical), checks run."""
    batch_id = floor.new_batch()
    floor.start(batch_id, "clearance")
    floor.enter(batch_id, "clearance", "room_clear", {"value": True})
    floor.enter(batch_id, "clearance", "vessel", {"code": f"EQ:{floor.reactor_tag}"})
    floor.sign_all(batch_id, "clearance")
    floor.complete(batch_id, "clearance")
    floor.start(batch_id, "charge")
    floor.enter(batch_id, "charge", "medium", {"code": f"LOT:{floor.lots['MED-T']}", "quantity": "8", "unit": "L"})
    floor.enter(batch_id, "charge", "temp", {"value": "38.4", "unit": "degC"}, acknowledgement="heater overshoot")
    floor.sign_all(batch_id, "charge")
    floor.complete(batch_id, "charge")
    step = floor.step(batch_id, "bolus")
    from app.batches import execution

    with floor.tx() as s:
        execution.skip_step(s, batch_id=batch_id, step_id=step.id, reason="glucose in range")
    floor.start(batch_id, "sample")
    floor.enter(batch_id, "sample", "sample_id", {"value": "S-0007"})
    floor.enter(batch_id, "sample", "ph", {"value": "7.14"})
    floor.enter(batch_id, "sample", "appearance", {"value": "Clear"})
    floor.sign_all(batch_id, "sample")
    floor.complete(batch_id, "sample")
    floor.finish(batch_id)
    floor.rbe(batch_id)
    return batch_id


def _signed_form(client, page: str, fields: dict[str, str], email: str) -> dict[str, str]:
    html = client.get(page).get_data(as_text=True)
    data = {"csrf_token": re.search(r'name="csrf_token" value="([^"]+)"', html).group(1),
            "signature_password": TEST_PASSWORD, **fields}
    if 'name="signature_user_id"' in html:
        data["signature_user_id"] = email
    return data


def test_queue_review_page_dispositions_report_and_metrics(client, make_review_floor) -> None:
    floor = make_review_floor()
    batch_id = _exception_batch(floor)
    slug = floor.tenant.ref.slug
    base = f"/t/{slug}"
    rows = {r.type: r.id for r in floor.exception_rows(batch_id)}
    assert set(rows) == {"out_of_limit", "alarm_limit", "skipped_step"}

    sign_in(client, floor.qa.email)
    queue = client.get(f"{base}/review/?sort=critical").get_data(as_text=True)
    batch_number = floor.batch(batch_id).batch_number
    assert f'data-batch="{batch_number}"' in queue and "critical</span> 1" in queue

    page = client.get(f"{base}/review/batches/{batch_id}").get_data(as_text=True)
    for code in ("steps_complete", "signatures_valid", "materials_reconciled", "genealogy_complete",
                 "sensor_coverage", "sensor_episodes", "audit_chain"):
        assert f'data-check="{code}"' in page
    assert "heater overshoot" in page  # who acknowledged it on the floor, and what they said
    assert "3 exceptions not dispositioned (1 critical, 2 minor)" in page
    assert f"/audit/records/batch_exception/{rows['out_of_limit']}" in page

    # Accept the two minor ones in one signed disposition (the form ticks several exceptions).
    review_url = f"{base}/review/batches/{batch_id}"
    data = _signed_form(client, review_url, {"decision": "accepted", "reason": "within the proven range"},
                        floor.qa.email)
    response = client.post(f"{review_url}/dispositions", data={**data, "exception_id": [
        str(rows["alarm_limit"]), str(rows["skipped_step"])]})
    assert response.status_code == 303
    # Accepting the critical one is refused with a message and stores nothing.
    data = _signed_form(client, review_url, {"decision": "accepted", "reason": "fine"}, floor.qa.email)
    response = client.post(f"{review_url}/dispositions", data={**data, "exception_id": str(rows["out_of_limit"])},
                           follow_redirects=True)
    assert "cannot simply be accepted" in response.get_data(as_text=True)
    with floor.tx() as s:
        assert s.execute(text("SELECT count(*) FROM exception_dispositions")).scalar_one() == 1
        assert s.query(ExceptionDisposition).one().status == "complete"

    report = client.get(f"{review_url}/report.json")
    assert report.status_code == 200 and report.mimetype == "application/json"
    body = report.get_json()
    assert body["schema"] == "batchline.rbe-report/1" and len(body["content_hash"]) == 64
    assert body["rbe"]["checks"][0]["code"] == "steps_complete"
    assert body["rbe"]["rule_set_version"] == "2026.1"
    labels = {g["label"] for g in body["exceptions"]}
    assert labels == {"Out-of-limit value", "Alarm-limit value", "Skipped optional step"}
    assert body["audit_review"]["events"] > 10 and body["audit_review"]["chain"]["verified"] is True
    assert any(e["action"] == "sign" for e in body["audit_review"]["listed"])
    assert body["dispositions"][0]["signatures"][0]["valid"] is True

    pdf = client.get(f"{review_url}/report.pdf")
    assert pdf.mimetype == "application/pdf"
    pdf_text = "".join(p.extract_text() for p in PdfReader(io.BytesIO(pdf.data)).pages)
    assert batch_number in pdf_text and "Audit-trail review" in pdf_text and "Checks that ran" in pdf_text
    assert "heater overshoot" in pdf_text

    metrics = client.get(f"{base}/review/metrics?format=json").get_json()
    assert metrics["decided"] == 0 and metrics["right_first_time"] is None
    assert metrics["exceptions_per_batch"] == {"alarm_limit": 1.0, "out_of_limit": 1.0, "skipped_step": 1.0}


def test_deviation_pages_capa_aging_and_closure(client, make_review_floor) -> None:
    floor = make_review_floor()
    batch_id = _exception_batch(floor)
    rows = {r.type: r.id for r in floor.exception_rows(batch_id)}
    disposition = floor.dispose(batch_id, [rows["out_of_limit"]], decision="escalated", justification="critical",
                                new_deviation={"title": "Temperature excursion", "classification": "minor",
                                               "description": "38.4 °C during charge"})
    base = f"/t/{floor.tenant.ref.slug}"
    sign_in(client, floor.qa.email)
    listing = client.get(f"{base}/deviations/").get_data(as_text=True)
    assert 'data-bucket="0-7 days">1<' in listing and "Temperature excursion" in listing
    url = f"{base}/deviations/{disposition.deviation_id}"
    token = csrf_token(client, url)
    client.post(url, data={"csrf_token": token, "investigation": "logger reviewed", "root_cause": "PID tuning",
                           "product_impact": "none", "description": "38.4 °C during charge"})
    data = _signed_form(client, url, {"reason": "root cause found, no impact"}, floor.qa.email)
    page = client.post(f"{url}/close", data=data, follow_redirects=True).get_data(as_text=True)
    assert 'id="deviation-status">closed<' in page and "Closure signature" in page
    assert "valid" in page
    # A closed deviation is final: the database refuses changes even outside the app.
    with floor.tx() as s:
        import pytest
        from sqlalchemy.exc import DBAPIError

        with pytest.raises(DBAPIError, match="closed"):
            s.execute(text("UPDATE deviations SET title = 'x' WHERE id = :d"), {"d": disposition.deviation_id})


def test_permissions_and_bad_input(client, make_review_floor) -> None:
    floor = make_review_floor()
    batch_id = floor.clean_batch()
    base = f"/t/{floor.tenant.ref.slug}"
    sign_in(client, floor.operator.email)
    assert client.get(f"{base}/review/").status_code == 403
    assert client.get(f"{base}/review/batches/{batch_id}").status_code == 403
    token = csrf_token(client, f"{base}/batches/{batch_id}")
    response = client.post(f"{base}/review/batches/{batch_id}/concern", data={"csrf_token": token, "comment": ""},
                           follow_redirects=True)
    assert "concern is required" in response.get_data(as_text=True)
    client.post(f"{base}/review/batches/{batch_id}/concern", data={"csrf_token": token, "comment": "odd smell"})
    assert [r.type for r in floor.exception_rows(batch_id)] == ["operator_concern"]
    client.post("/logout", data={"csrf_token": token})
    sign_in(client, floor.qa.email)
    assert client.get(f"{base}/review/batches/999999/report.json").status_code == 404
    token = csrf_token(client, f"{base}/review/rules")
    response = client.post(f"{base}/review/rules", data={"csrf_token": token, "reason": "x"})
    assert response.status_code == 403  # QA reviews rules; changing them is an admin setting
