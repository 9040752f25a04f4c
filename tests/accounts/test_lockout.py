"""Lockout after N consecutive wrong passwords, with an alert to the tenant's admins (21 CFR 11.300(d))."""

from __future__ import annotations

from sqlalchemy import text

from app.accounts.models import User
from app.accounts.security import register_failed_password, verify_user_password
from app.accounts.services import update_security_settings
from app.accounts.sessions import live_session_count
from app.core.tenancy import control_session
from tests.accounts.conftest import admin_of, events, run_jobs, sign_out
from tests.conftest import TEST_PASSWORD, csrf_token, sign_in


def _locked(user_id: int) -> bool:
    with control_session() as session:
        return session.get(User, user_id).locked_at is not None


def test_fifth_wrong_password_locks_and_alerts_admins_in_app_and_by_mail(client, make_tenant, make_person,
                                                                         mailbox) -> None:
    tenant = make_tenant()
    admin = admin_of(tenant)
    operator = make_person(tenant, ["Operator"])
    for attempt in range(1, 5):
        response = sign_in(client, operator.email, f"wrong password number {attempt}")
        assert response.status_code == 401 and "not correct" in response.get_data(as_text=True)
        assert not _locked(operator.user_id), f"locked too early, at failure {attempt}"
    response = sign_in(client, operator.email, "wrong password number 5")
    assert response.status_code == 401
    assert "now locked" in response.get_data(as_text=True)
    assert _locked(operator.user_id)

    # The right password no longer works, and says why.
    response = sign_in(client, operator.email, TEST_PASSWORD)
    assert response.status_code == 401 and "locked" in response.get_data(as_text=True)

    failures = events(tenant, "password.failure", operator.user_id)
    assert [e.detail["consecutive_failures"] for e in failures] == [1, 2, 3, 4, 5]
    assert all(e.ip == "127.0.0.1" and e.source == "signin" for e in failures)
    (alert,) = events(tenant, "account.locked", operator.user_id)
    assert alert.alert and alert.membership_id == operator.membership_id
    assert operator.email in alert.user_label

    # Visible in the app: the admin sees the banner and the alert on the security page.
    admin_client = client.application.test_client()
    sign_in(admin_client, admin.email)
    home = admin_client.get(f"/t/{tenant.ref.slug}/").get_data(as_text=True)
    assert "1 security alert to review" in home
    page = admin_client.get(f"/t/{tenant.ref.slug}/admin/security").get_data(as_text=True)
    assert "account.locked" in page and operator.email in page

    # Sent by mail: through the outbox and a real RQ worker.
    run_jobs()
    (mail,) = mailbox.to(admin.email)
    assert "account.locked" in mail["Subject"]
    assert operator.email in mailbox.body(mail) and "/admin/security" in mailbox.body(mail)


def test_threshold_is_a_tenant_setting(client, make_tenant, make_person) -> None:
    tenant = make_tenant()
    admin = admin_of(tenant)
    update_security_settings(tenant_id=tenant.ref.id, by_user_id=admin.user_id,
                             values={"lockout_threshold": 3, "idle_timeout_min": 15, "session_max_hours": 12,
                                     "password_min_length": 12})
    person = make_person(tenant, ["QA"])
    for _ in range(2):
        sign_in(client, person.email, "not the password at all")
    assert not _locked(person.user_id)
    sign_in(client, person.email, "not the password at all")
    assert _locked(person.user_id)


def test_a_correct_password_resets_the_count(client, make_tenant, make_person) -> None:
    tenant = make_tenant()
    person = make_person(tenant, ["Operator"])
    for _ in range(4):
        sign_in(client, person.email, "not the password at all")
    assert sign_in(client, person.email).status_code == 302
    sign_out(client)
    for _ in range(4):
        sign_in(client, person.email, "not the password at all")
    assert not _locked(person.user_id)


def test_lockout_ends_live_sessions_at_once(app, client, make_tenant, make_person) -> None:
    tenant = make_tenant()
    person = make_person(tenant, ["Operator"])
    assert sign_in(client, person.email).status_code == 302
    assert client.get(f"/t/{tenant.ref.slug}/").status_code == 200
    assert live_session_count(person.user_id) == 1
    attacker = app.test_client()
    for _ in range(5):
        sign_in(attacker, person.email, "guessing the password")
    assert live_session_count(person.user_id) == 0
    response = client.get(f"/t/{tenant.ref.slug}/")
    assert response.status_code == 302 and "/login" in response.headers["Location"]


def test_esign_reauthentication_counts_toward_lockout_and_refuses_locked_users(make_tenant, make_person) -> None:
    tenant = make_tenant()
    signer = make_person(tenant, ["QA"])
    assert verify_user_password(user_id=signer.user_id, password=TEST_PASSWORD, tenant_id=tenant.ref.id)
    results = [verify_user_password(user_id=signer.user_id, password="mistyped at signing", tenant_id=tenant.ref.id)
               for _ in range(5)]
    assert results == [False] * 5
    assert _locked(signer.user_id)
    assert not verify_user_password(user_id=signer.user_id, password=TEST_PASSWORD, tenant_id=tenant.ref.id)
    assert [e.source for e in events(tenant, "password.failure", signer.user_id)] == ["esign"] * 5
    assert events(tenant, "signin.refused", signer.user_id)[-1].detail["reason"] == "locked"


def test_register_failed_password_reports_the_locking_failure(make_tenant, make_person) -> None:
    tenant = make_tenant()
    person = make_person(tenant, ["Operator"])
    outcomes = [register_failed_password(user_id=person.user_id, tenant_id=tenant.ref.id, source="esign")
                for _ in range(6)]
    assert outcomes == [False, False, False, False, True, False]
    assert len(events(tenant, "account.locked", person.user_id)) == 1


def test_admin_unlocks_and_the_unlock_is_recorded(client, make_tenant, make_person) -> None:
    tenant = make_tenant()
    admin = admin_of(tenant)
    person = make_person(tenant, ["Operator"])
    for _ in range(5):
        register_failed_password(user_id=person.user_id, tenant_id=None, source="signin")
    sign_in(client, admin.email)
    url = f"/t/{tenant.ref.slug}/admin/users/{person.user_id}"
    response = client.post(f"{url}/unlock", data={"csrf_token": csrf_token(client, url)})
    assert response.status_code == 302
    assert not _locked(person.user_id)
    (event,) = events(tenant, "account.unlocked", person.user_id)
    assert event.actor_user_id == admin.user_id
    assert sign_in(client.application.test_client(), person.email).status_code == 302


def test_alert_acknowledgement_is_a_new_event_and_closes_the_alert(client, make_tenant, make_person) -> None:
    tenant = make_tenant()
    admin = admin_of(tenant)
    person = make_person(tenant, ["Operator"])
    for _ in range(5):
        register_failed_password(user_id=person.user_id, tenant_id=None, source="signin")
    (alert,) = events(tenant, "account.locked")
    sign_in(client, admin.email)
    page = f"/t/{tenant.ref.slug}/admin/security"
    client.post(f"{page}/alerts/{alert.id}/ack", data={"csrf_token": csrf_token(client, page),
                                                      "note": "called the operator: fat fingers"})
    assert "security alert" not in client.get(f"/t/{tenant.ref.slug}/").get_data(as_text=True)
    (ack,) = events(tenant, "alert.acknowledged")
    assert ack.detail == {"event_id": alert.id, "note": "called the operator: fat fingers"}
    assert events(tenant, "account.locked")[0].alert  # the alert itself is unchanged


def test_security_events_are_append_only_in_the_database(db, make_tenant) -> None:
    import pytest
    from sqlalchemy.exc import ProgrammingError

    from app.core.tenancy import tenant_transaction

    tenant = make_tenant()
    events_before = events(tenant)
    assert events_before == [] or events_before
    from app.accounts.security import record_security_event

    event_id = record_security_event(tenant_id=tenant.ref.id, kind="signin.success", source="test")
    for statement in ("UPDATE security_events SET kind = 'x' WHERE id = :i",
                      "DELETE FROM security_events WHERE id = :i"):
        with pytest.raises(ProgrammingError, match="permission denied"), tenant_transaction(tenant.ref) as session:
            session.execute(text(statement), {"i": event_id})
    # Even the owner (who holds every privilege) is stopped by the trigger.
    with db.owner.connect() as conn, pytest.raises(ProgrammingError, match="append-only"), conn.begin():
        conn.execute(text(f'UPDATE "{tenant.ref.schema}".security_events SET kind = :k'), {"k": "forged"})
