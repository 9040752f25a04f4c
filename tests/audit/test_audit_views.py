"""Audit review screens and the signing form over HTTP, as QA and inspectors use them."""

from __future__ import annotations

import csv
import io

from sqlalchemy import text

from app.audit.services import record
from app.core.tenancy import Actor, tenant_transaction
from tests.conftest import TEST_PASSWORD, csrf_token, sign_in

BOB = Actor(member_id=41, label="Bob Builder <bob@example.com>", request_id="r-9", client_addr="10.9.9.9")


def _trail(tenant) -> None:
    with tenant_transaction(tenant.ref, actor=BOB) as session:
        record(session, action="create", record_type="lot", record_id="L-1", new={"qty": "10", "status": "quarantine"})
        record(session, action="correct", record_type="lot", record_id="L-1", old={"qty": "10"}, new={"qty": "12"},
               reason="typo at receipt")
        record(session, action="create", record_type="equipment", record_id="BR-7", new={"tag": "BR-7"})


def _count(tenant, sql: str) -> int:
    with tenant_transaction(tenant.ref) as session:
        return session.execute(text(sql)).scalar_one()


def test_trail_filters_history_and_exports(client, make_tenant) -> None:
    tenant = make_tenant()
    _trail(tenant)
    sign_in(client, tenant.admin_email)
    base = f"/t/{tenant.ref.slug}/audit"
    page = client.get(f"{base}?record_type=lot&user=bob&action=correct").get_data(as_text=True)
    assert "typo at receipt" in page and "BR-7" not in page
    assert "<del>10</del> → <ins>12</ins>" in page
    assert client.get(f"{base}?since=not-a-date").status_code == 422
    history = client.get(f"{base}/records/lot/L-1").get_data(as_text=True)
    assert "History of Lot L-1" in history and "typo at receipt" in history and "Not signed." in history
    rows = list(csv.DictReader(io.StringIO(client.get(f"{base}/export.csv?record_id=L-1").get_data(as_text=True))))
    qty = [r for r in rows if r["field"] == "qty"]
    assert [(r["action"], r["old"], r["new"], r["reason"]) for r in qty] == [("create", "", "10", ""),
                                                                           ("correct", "10", "12", "typo at receipt")]
    assert all(r["user"] == BOB.label for r in rows)
    pdf = client.get(f"{base}/export.pdf?record_type=lot")
    assert pdf.status_code == 200 and pdf.data.startswith(b"%PDF")
    verify = client.get(f"{base}/verify").get_data(as_text=True)
    assert "Intact: 3 events" in verify


def test_audit_screens_need_audit_read(client, make_tenant, make_member) -> None:
    tenant = make_tenant()
    operator = make_member(tenant, ["Operator"])
    sign_in(client, operator.email)
    assert client.get(f"/t/{tenant.ref.slug}/audit").status_code == 403
    assert client.get(f"/t/{tenant.ref.slug}/audit/export.csv").status_code == 403


def test_status_change_without_reason_is_refused_and_stores_nothing(client, make_tenant) -> None:
    tenant = make_tenant()
    sign_in(client, tenant.admin_email)
    path = f"/t/{tenant.ref.slug}/settings/signatures"
    token = csrf_token(client, path)
    before = _count(tenant, "SELECT count(*) FROM audit_events")
    response = client.post(f"{path}/meanings/verified/active", data={"active": "0", "reason": " ",
                                                                     "csrf_token": token})
    assert response.status_code == 422 and "reason is required" in response.get_data(as_text=True)
    assert _count(tenant, "SELECT count(*) FROM audit_events") == before
    assert _count(tenant, "SELECT count(*) FROM signature_meanings WHERE code = 'verified' AND active") == 1
    response = client.post(f"{path}/meanings/verified/active", data={"active": "0", "reason": "not in our SOPs",
                                                                     "csrf_token": token})
    assert response.status_code == 302
    assert _count(tenant, "SELECT count(*) FROM signature_meanings WHERE code = 'verified' AND active") == 0
    response = client.post(f"{path}/routes", data={"record_type": "deviation", "csrf_token": token,
                                                   "steps": "reviewed: QA -> assessed\napproved: QA, Admin -> closed"})
    assert response.status_code == 302
    assert "reviewed by QA → assessed" in client.get(path).get_data(as_text=True)


def test_signing_over_http_re_asks_password_and_user_id_after_sign_in(client, make_tenant) -> None:
    tenant = make_tenant()
    _trail(tenant)
    sign_in(client, tenant.admin_email)
    base = f"/t/{tenant.ref.slug}/audit"
    form = client.get(f"{base}?record_type=lot").get_data(as_text=True)
    assert 'name="signature_user_id"' in form  # first signature since sign-in: user ID asked too
    token = csrf_token(client, f"{base}?record_type=lot")
    data = {"record_type": "lot", "conclusion": "corrections justified", "csrf_token": token,
            "signature_password": TEST_PASSWORD}
    response = client.post(f"{base}/reviews", data=data)
    assert response.status_code == 422 and "user ID" in response.get_data(as_text=True)
    response = client.post(f"{base}/reviews", data={**data, "signature_user_id": tenant.admin_email,
                                                     "signature_password": "wrong"})
    assert response.status_code == 403
    assert _count(tenant, "SELECT count(*) FROM audit_reviews") == 0
    response = client.post(f"{base}/reviews", data={**data, "signature_user_id": tenant.admin_email})
    assert response.status_code == 302
    review = client.get(response.headers["Location"]).get_data(as_text=True)
    assert "Reviewed</strong>" in review and "UTC" in review and "valid" in review
    # Within the same continuous session only the password is asked.
    assert 'name="signature_user_id"' not in client.get(f"{base}?record_type=lot").get_data(as_text=True)
    response = client.post(f"{base}/reviews", data={**data, "conclusion": "second look"})
    assert response.status_code == 302
    assert _count(tenant, "SELECT count(*) FROM signatures WHERE record_type = 'audit_review'") == 2


def test_signing_after_an_idle_period_asks_for_the_user_id_again(app, client, make_tenant) -> None:
    tenant = make_tenant()
    _trail(tenant)
    sign_in(client, tenant.admin_email)
    base = f"/t/{tenant.ref.slug}/audit"
    token = csrf_token(client, f"{base}?record_type=lot")
    data = {"record_type": "lot", "conclusion": "first look", "csrf_token": token,
            "signature_password": TEST_PASSWORD, "signature_user_id": tenant.admin_email}
    assert client.post(f"{base}/reviews", data=data).status_code == 302
    assert 'name="signature_user_id"' not in client.get(f"{base}?record_type=lot").get_data(as_text=True)
    # The signer walks away: the last signature is now older than the idle timeout (§11.200(a)(1)(ii)).
    with client.session_transaction() as flask_session:
        flask_session["esign_last_signed_at"] -= app.config["ESIGN_IDLE_TIMEOUT_S"] + 1
    assert 'name="signature_user_id"' in client.get(f"{base}?record_type=lot").get_data(as_text=True)
    response = client.post(f"{base}/reviews", data={**data, "signature_user_id": "", "conclusion": "after a break"})
    assert response.status_code == 422 and "user ID" in response.get_data(as_text=True)
    assert _count(tenant, "SELECT count(*) FROM audit_reviews") == 1
    assert client.post(f"{base}/reviews", data={**data, "conclusion": "after a break"}).status_code == 302
    assert _count(tenant, "SELECT count(*) FROM signatures WHERE record_type = 'audit_review'") == 2


def test_trail_filters_by_time_range(client, make_tenant) -> None:
    tenant = make_tenant()
    moments = []
    for record_id in ("EARLY", "LATE"):  # two transactions: two database times
        with tenant_transaction(tenant.ref, actor=BOB) as session:
            moments.append(record(session, action="create", record_type="lot", record_id=record_id,
                                  new={"qty": "1"}).occurred_at)
    assert moments[0] < moments[1]
    sign_in(client, tenant.admin_email)

    def ids(**window: str) -> list[str]:
        body = client.get(f"/t/{tenant.ref.slug}/audit/export.csv", query_string=window).get_data(as_text=True)
        return [r["record_id"] for r in csv.DictReader(io.StringIO(body))]

    assert ids() == ["EARLY", "LATE"]
    assert ids(since=moments[1].isoformat()) == ["LATE"]
    assert ids(until=moments[0].isoformat()) == ["EARLY"]
    today = moments[0].date()
    assert ids(since=str(today), until=str(today)) in (["EARLY", "LATE"], ["EARLY"])  # whole UTC days
    assert ids(until=str(today.replace(year=today.year - 1))) == []
    page = client.get(f"/t/{tenant.ref.slug}/audit", query_string={"since": moments[1].isoformat()})
    assert "LATE" in page.get_data(as_text=True) and "EARLY" not in page.get_data(as_text=True)
