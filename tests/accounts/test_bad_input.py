"""Bad input gets a clear 4xx with an actionable message, and nothing already stored changes."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from app.accounts.models import Invitation, Membership, User
from app.accounts.services import validate_email, validate_name
from app.core.errors import ValidationError
from app.core.tenancy import control_session
from tests.accounts.conftest import events, run_jobs
from tests.conftest import csrf_token, sign_in


@pytest.mark.parametrize(("email", "message"), [
    ("", "required"),
    ("plainaddress", "not a valid email"),
    ("two@@example.com", "not a valid email"),
    ("a b@example.com", "not a valid email"),
    ("x@localhost", "not a valid email"),
    ("admin@ex\u0430mple.com", "non-ASCII"),  # Cyrillic a in the domain
    ("\u202eadmin@example.com", "non-ASCII"),
    ("a" * 65 + "@example.com", "not a valid email"),
    ("a@" + "b" * 250 + ".com", "too long"),
    ("user@example.com\r\nBcc: victim@example.com", "not a valid email"),
])
def test_malformed_emails_are_refused(email: str, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        validate_email(email)


@pytest.mark.parametrize("name", ["Ada\u202eecalevoL", "Ada\u200bLovelace", "Ada\x00", "Ada\nLovelace\u2028", ""])
def test_unicode_tricks_in_names_are_refused(name: str) -> None:
    with pytest.raises(ValidationError):
        validate_name(name)


def test_names_are_normalised_not_mangled() -> None:
    assert validate_name("  Zoë   Ångström  ") == "Zoë Ångström"
    assert validate_name("Zoe\u0308") == "Zoë"  # NFC: combining diaeresis composes


def _state() -> tuple[int, int, int]:
    with control_session() as s:
        return tuple(s.scalar(select(func.count()).select_from(t)) for t in (User, Membership, Invitation))


def test_bad_invitations_are_refused_with_a_message_and_store_nothing(client, make_tenant) -> None:
    tenant = make_tenant()
    sign_in(client, tenant.admin_email)
    url = f"/t/{tenant.ref.slug}/admin/users"
    before = _state()
    cases = [
        ({"email": "not-an-email", "roles": ["Viewer"]}, 422, "not a valid email"),
        ({"email": "x" * 300 + "@example.com", "roles": ["Viewer"]}, 422, "too long"),
        ({"email": "ok@example.com", "roles": []}, 422, "at least one role"),
        ({"email": "ok@example.com", "roles": ["Emperor"]}, 422, "unknown role"),
        ({"email": tenant.admin_email, "roles": ["Viewer"]}, 409, "already a member"),
    ]
    for form, status, message in cases:
        response = client.post(f"{url}/invite", data={**form, "csrf_token": csrf_token(client, url)})
        assert response.status_code == status, form
        assert message in response.get_data(as_text=True).lower(), (form, message)
    assert _state() == before
    assert events(tenant, "member.invited") == []


def test_bad_account_creation_through_an_invitation_changes_nothing(app, client, make_tenant, mailbox) -> None:
    tenant = make_tenant()
    sign_in(client, tenant.admin_email)
    url = f"/t/{tenant.ref.slug}/admin/users"
    client.post(f"{url}/invite", data={"email": "newbie@example.com", "roles": ["Viewer"],
                                       "csrf_token": csrf_token(client, url)})
    run_jobs()
    link = mailbox.link("newbie@example.com", "/invite/")
    visitor = app.test_client()
    before = _state()
    good = "a long enough passphrase here"
    for form, message in (
        ({"name": "Eve\u202e", "password": good, "confirm_password": good}, "invisible"),
        ({"name": "N" * 201, "password": good, "confirm_password": good}, "too long"),
        ({"name": "Newbie", "password": "short", "confirm_password": "short"}, "at least 12"),
        ({"name": "Newbie", "password": "newbie@example.com", "confirm_password": "newbie@example.com"}, "email"),
        ({"name": "Newbie", "password": good, "confirm_password": good + "x"}, "differ"),
    ):
        response = visitor.post(link, data={**form, "csrf_token": csrf_token(visitor, link)})
        assert response.status_code == 422, form
        assert message in response.get_data(as_text=True), (form, message)
    assert _state() == before
    # The link still works once the input is right.
    response = visitor.post(link, data={"name": "Newbie", "password": good, "confirm_password": good,
                                        "csrf_token": csrf_token(visitor, link)})
    assert response.status_code == 302


def test_overlong_sign_in_fields_are_harmless(client, make_tenant) -> None:
    tenant = make_tenant()
    response = client.post("/login", data={"email": "x" * 10000, "password": "y" * 100000,
                                           "csrf_token": csrf_token(client)})
    assert response.status_code == 401 and "not correct" in response.get_data(as_text=True)
    response = client.post("/login", data={"email": tenant.admin_email, "password": "y" * 100000,
                                           "csrf_token": csrf_token(client)})
    assert response.status_code == 401
