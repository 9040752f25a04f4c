"""argon2id with rehash, the password policy, and reset by signed, single-use, expiring link."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from argon2 import PasswordHasher
from sqlalchemy import func, select, update

from app.accounts.models import PasswordReset, User
from app.accounts.passwords import check_password_policy
from app.core.errors import ValidationError
from app.core.tenancy import control_session
from tests.accounts.conftest import events
from tests.conftest import TEST_PASSWORD, csrf_token, sign_in

NEW = "another long passphrase for batch 7"


@pytest.mark.parametrize(("password", "message"), [
    ("short pass", "at least 12"),
    ("password1234", "commonly used"),
    ("Password2024!", "commonly used"),
    ("1qaz2wsx3edc", "commonly used"),
    ("aaaaaaaaaaaaaaaa", "too few different"),
    ("ada.lovelace@example.com", "email"),
    ("x" * 257, "at most 256"),
    ("zero\u200bwidth passphrase", "invisible"),
])
def test_policy_refuses_weak_passwords(password: str, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        check_password_policy(password, email="ada.lovelace@example.com")


def test_policy_accepts_a_passphrase_and_honours_tenant_length_within_bounds() -> None:
    check_password_policy("correct horse battery staple 42", email="ada@example.com")
    with pytest.raises(ValidationError, match="at least 20"):
        check_password_policy("correct horse 4242", email="ada@example.com", min_length=20)
    with pytest.raises(ValidationError, match="at least 12"):  # a tenant cannot go below the floor
        check_password_policy("short one 1", email="ada@example.com", min_length=4)


def test_settings_outside_safe_bounds_are_refused(client, make_tenant) -> None:
    tenant = make_tenant()
    sign_in(client, tenant.admin_email)
    url = f"/t/{tenant.ref.slug}/admin/settings/security"
    good = {"lockout_threshold": "5", "idle_timeout_min": "15", "session_max_hours": "12", "password_min_length": "12"}
    for field, bad in (("lockout_threshold", "50"), ("idle_timeout_min", "0"), ("password_min_length", "8"),
                       ("session_max_hours", "many")):
        response = client.post(url, data={**good, field: bad, "csrf_token": csrf_token(client, url)})
        assert response.status_code == 422, field
    assert events(tenant, "settings.changed") == []


def test_old_argon2_parameters_are_upgraded_at_sign_in(client, make_tenant, make_person) -> None:
    tenant = make_tenant()
    person = make_person(tenant, ["Operator"])
    weak = PasswordHasher(time_cost=1, memory_cost=8192, parallelism=1).hash(TEST_PASSWORD)
    with control_session() as s:
        s.execute(update(User).where(User.id == person.user_id).values(password_hash=weak))
    assert sign_in(client, person.email).status_code == 302
    with control_session() as s:
        upgraded = s.get(User, person.user_id).password_hash
    assert upgraded != weak and upgraded.startswith("$argon2id$") and "m=8192" not in upgraded


def test_reset_by_mailed_link_once(app, client, make_tenant, make_person, mailbox) -> None:
    tenant = make_tenant()
    person = make_person(tenant, ["Operator"])
    token = csrf_token(client, "/password/forgot")
    response = client.post("/password/forgot", data={"email": person.email, "csrf_token": token})
    assert response.status_code == 302
    link = mailbox.link(person.email, "/password/reset/")
    tablet = app.test_client()
    sign_in(tablet, person.email)
    visitor = app.test_client()
    response = visitor.post(link, data={"new_password": NEW, "confirm_password": NEW,
                                        "csrf_token": csrf_token(visitor, link)})
    assert response.status_code == 302
    assert sign_in(app.test_client(), person.email, NEW).status_code == 302
    assert tablet.get(f"/t/{tenant.ref.slug}/").status_code == 302  # every old session ended
    again = visitor.get(link)
    assert again.status_code == 422 and "already used" in again.get_data(as_text=True)
    assert [e.kind for e in events(tenant, user_id=person.user_id)
            if e.kind.startswith("password.")] == ["password.reset_requested", "password.reset"]


def test_reset_answers_the_same_for_unknown_addresses(client, mailbox) -> None:
    token = csrf_token(client, "/password/forgot")
    response = client.post("/password/forgot", data={"email": "nobody@nowhere.example.com", "csrf_token": token})
    assert response.status_code == 302 and mailbox.new() == []
    page = client.get(response.headers["Location"]).get_data(as_text=True)
    assert "If an account with a password exists" in page


def test_tampered_and_expired_reset_links_change_nothing(app, client, make_tenant, make_person, mailbox) -> None:
    tenant = make_tenant()
    person = make_person(tenant, ["Operator"])
    client.post("/password/forgot", data={"email": person.email, "csrf_token": csrf_token(client, "/password/forgot")})
    link = mailbox.link(person.email, "/password/reset/")
    with control_session() as s:
        before = s.get(User, person.user_id).password_hash
    visitor = app.test_client()
    for bad in (link[:-2] + ("xy" if not link.endswith("xy") else "zz"), "/password/reset/garbage"):
        response = visitor.post(bad, data={"new_password": NEW, "confirm_password": NEW,
                                           "csrf_token": csrf_token(visitor)})
        assert response.status_code == 422 and "not valid" in response.get_data(as_text=True)
    with control_session() as s:
        s.execute(update(PasswordReset).where(PasswordReset.user_id == person.user_id)
                  .values(expires_at=func.now() - timedelta(seconds=1)))
    response = visitor.post(link, data={"new_password": NEW, "confirm_password": NEW,
                                        "csrf_token": csrf_token(visitor)})
    assert response.status_code == 422 and "expired" in response.get_data(as_text=True)
    with control_session() as s:
        assert s.get(User, person.user_id).password_hash == before
        assert s.scalar(select(PasswordReset.used_at).where(PasswordReset.user_id == person.user_id)) is None


def test_weak_new_password_at_reset_is_refused_and_the_link_stays_usable(app, client, make_tenant, make_person,
                                                                         mailbox) -> None:
    tenant = make_tenant()
    person = make_person(tenant, ["Operator"])
    client.post("/password/forgot", data={"email": person.email, "csrf_token": csrf_token(client, "/password/forgot")})
    link = mailbox.link(person.email, "/password/reset/")
    visitor = app.test_client()
    response = visitor.post(link, data={"new_password": "password1234", "confirm_password": "password1234",
                                        "csrf_token": csrf_token(visitor, link)})
    assert response.status_code == 422 and "commonly used" in response.get_data(as_text=True)
    response = visitor.post(link, data={"new_password": NEW, "confirm_password": NEW,
                                        "csrf_token": csrf_token(visitor, link)})
    assert response.status_code == 302


def test_reset_links_use_the_configured_base_url_not_a_forged_host(app, client, make_tenant, make_person,
                                                                   mailbox) -> None:
    tenant = make_tenant()
    person = make_person(tenant, ["Operator"])
    app.config["PUBLIC_BASE_URL"] = "https://mes.example.com"
    try:
        forged = "http://evil.example.net"
        html = client.get("/password/forgot", base_url=forged).get_data(as_text=True)
        token = re.search(r'name="csrf_token" value="([^"]+)"', html).group(1)
        response = client.post("/password/forgot", base_url=forged, data={"email": person.email, "csrf_token": token})
        assert response.status_code == 302
    finally:
        app.config["PUBLIC_BASE_URL"] = ""
    (mail,) = mailbox.to(person.email)
    body = mailbox.body(mail)
    assert "https://mes.example.com/password/reset/" in body and "evil" not in body


def test_production_hashes_with_rfc9106_and_refuses_the_test_profile_outside_tests(app) -> None:
    from app.accounts import passwords
    from app.factory import create_app

    assert app.config["PASSWORD_HASH_PROFILE"] == "fast_for_tests"  # this suite
    production = passwords._hasher_for(passwords.DEFAULT_HASH_PROFILE)
    stored = production.hash(TEST_PASSWORD)
    assert "$argon2id$v=19$m=65536,t=3,p=4$" in stored and passwords.verify_password(stored, TEST_PASSWORD)
    default = create_app({"DATABASE_URL": app.config["DATABASE_URL"], "REDIS_URL": app.config["REDIS_URL"],
                          "SECRET_KEY": "x" * 32})
    default.extensions["batchline.db"].dispose()
    assert default.config["PASSWORD_HASH_PROFILE"] == "rfc9106_low_memory"
    for profile, message in (("fast_for_tests", "test suite only"), ("md5", "unknown")):
        with pytest.raises(RuntimeError, match=message):
            create_app({"DATABASE_URL": app.config["DATABASE_URL"], "REDIS_URL": app.config["REDIS_URL"],
                        "SECRET_KEY": "x" * 32, "PASSWORD_HASH_PROFILE": profile})


def test_a_hash_started_in_the_background_uses_the_app_profile_and_verifies(app) -> None:
    """Provisioning hashes the first admin's password beside the schema build: same profile, same normalisation."""
    from app.accounts import passwords

    with app.app_context():
        composed = passwords.hash_password_in_background("Cafe\u0301 au lait on the line 7").result(timeout=30)
        assert composed.startswith("$argon2id$") and f"m={passwords.profiles.CHEAPEST.memory_cost}," in composed
        assert passwords.verify_password(composed, "Caf\u00e9 au lait on the line 7")  # NFKC, as hash_password
        assert not passwords.verify_password(composed, "Cafe au lait on the line 7")
