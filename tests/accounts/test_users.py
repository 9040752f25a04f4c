"""User management: invitations by signed expiring link, roles, deactivation; user ids never reused."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import func, select, text, update
from sqlalchemy.exc import ProgrammingError

from app.accounts.models import Invitation, Membership, User
from app.core.tenancy import control_session
from tests.accounts.conftest import admin_of, events, run_jobs, sign_out
from tests.conftest import TEST_PASSWORD, csrf_token, sign_in

NEW_PASSWORD = "plenty long passphrase for the cleanroom"


def _invite(client, tenant, email: str, roles: list[str]):
    url = f"/t/{tenant.ref.slug}/admin/users"
    return client.post(f"{url}/invite", data={"email": email, "roles": roles, "csrf_token": csrf_token(client, url)})


def _counts() -> tuple[int, int, int]:
    with control_session() as s:
        return (s.scalar(select(func.count()).select_from(User)),
                s.scalar(select(func.count()).select_from(Membership)),
                s.scalar(select(func.count()).select_from(Invitation)))


def test_invite_mail_accept_and_sign_in_as_the_new_user(app, client, make_tenant, mailbox) -> None:
    tenant = make_tenant()
    admin = admin_of(tenant)
    sign_in(client, admin.email)
    response = _invite(client, tenant, "New.Operator@Example.com", ["Operator", "QA"])
    assert response.status_code == 302
    run_jobs()  # the invitation mail goes through the outbox and a real RQ worker
    link = mailbox.link("new.operator@example.com", "/invite/")
    newcomer = app.test_client()
    page = newcomer.get(link)
    assert page.status_code == 200 and "new.operator@example.com" in page.get_data(as_text=True)
    response = newcomer.post(link, data={"name": "Ada Operator", "password": NEW_PASSWORD,
                                         "confirm_password": NEW_PASSWORD, "csrf_token": csrf_token(newcomer, link)})
    assert response.status_code == 302 and response.headers["Location"].endswith(f"/t/{tenant.ref.slug}/")
    assert newcomer.get(f"/t/{tenant.ref.slug}/").status_code == 200
    sign_out(newcomer)
    assert sign_in(newcomer, "new.operator@example.com", NEW_PASSWORD).status_code == 302
    with control_session() as s:
        user = s.scalar(select(User).where(User.email == "new.operator@example.com"))
        membership = s.scalar(select(Membership).where(Membership.user_id == user.id))
        assert membership.roles == ["Operator", "QA"] and user.user_code == f"U{user.id:06d}"
    (invited,) = events(tenant, "member.invited")
    assert invited.actor_user_id == admin.user_id and invited.detail["roles"] == ["Operator", "QA"]
    (joined,) = events(tenant, "member.joined")
    assert joined.user_id == user.id and joined.membership_id == membership.id
    # The link is single-use.
    again = app.test_client().get(link)
    assert again.status_code == 422 and "already used" in again.get_data(as_text=True)


def test_tampered_and_expired_invitation_links_are_refused(app, client, make_tenant, mailbox) -> None:
    tenant = make_tenant()
    sign_in(client, tenant.admin_email)
    _invite(client, tenant, "late@example.com", ["Viewer"])
    run_jobs()
    link = mailbox.link("late@example.com", "/invite/")
    visitor = app.test_client()
    before = _counts()
    token = link.rsplit("/", 1)[1]
    payload, _, _signature = token.rpartition(".")
    for bad in (link[:-3] + ("AAA" if not link.endswith("AAA") else "BBB"), "/invite/" + payload + "." + "x" * 27,
                "/invite/not-a-token", "/invite/" + "A" * 600):
        response = visitor.post(bad, data={"name": "Mallory", "password": NEW_PASSWORD,
                                           "confirm_password": NEW_PASSWORD,
                                           "csrf_token": csrf_token(visitor)})
        assert response.status_code == 422, bad
        assert "not valid" in response.get_data(as_text=True)
    with control_session() as s:
        s.execute(update(Invitation).where(Invitation.email == "late@example.com")
                  .values(expires_at=func.now() - timedelta(minutes=1)))
    response = visitor.get(link)
    assert response.status_code == 422 and "expired" in response.get_data(as_text=True)
    assert _counts() == before


def test_a_newer_invitation_replaces_the_older_link(client, make_tenant, mailbox) -> None:
    tenant = make_tenant()
    sign_in(client, tenant.admin_email)
    _invite(client, tenant, "twice@example.com", ["Viewer"])
    run_jobs()
    first = mailbox.link("twice@example.com", "/invite/")
    _invite(client, tenant, "twice@example.com", ["Operator"])
    response = client.get(first)
    assert response.status_code == 422 and "withdrawn or replaced" in response.get_data(as_text=True)


def test_existing_account_joins_a_second_tenant_only_when_signed_in_as_itself(app, client, make_tenant,
                                                                             mailbox) -> None:
    a, b = make_tenant(), make_tenant()
    sign_in(client, b.admin_email)
    _invite(client, b, a.admin_email, ["Viewer"])
    run_jobs()
    link = mailbox.link(a.admin_email, "/invite/")
    stranger = app.test_client()
    response = stranger.post(link, data={"name": "Impostor", "password": NEW_PASSWORD,
                                         "confirm_password": NEW_PASSWORD, "csrf_token": csrf_token(stranger)})
    assert response.status_code == 422 and "sign in as" in response.get_data(as_text=True)
    owner = app.test_client()
    sign_in(owner, a.admin_email)
    response = owner.post(link, data={"csrf_token": csrf_token(owner, link)})
    assert response.status_code == 302
    assert owner.get(f"/t/{b.ref.slug}/").status_code == 200
    with control_session() as s:  # still one account, with the password it had
        assert s.scalar(select(func.count()).select_from(User).where(User.email == a.admin_email)) == 1


def test_assign_roles_records_before_and_after(client, make_tenant, make_person) -> None:
    tenant = make_tenant()
    person = make_person(tenant, ["Operator"])
    sign_in(client, tenant.admin_email)
    url = f"/t/{tenant.ref.slug}/admin/users/{person.user_id}"
    response = client.post(f"{url}/roles", data={"roles": ["Operator", "Supervisor"],
                                                 "csrf_token": csrf_token(client, url)})
    assert response.status_code == 302
    (event,) = events(tenant, "role.changed", person.user_id)
    assert event.detail == {"before": ["Operator"], "after": ["Operator", "Supervisor"]}
    assert event.actor_user_id == admin_of(tenant).user_id


def test_the_last_user_manager_cannot_be_removed(client, make_tenant) -> None:
    tenant = make_tenant()
    admin = admin_of(tenant)
    sign_in(client, admin.email)
    url = f"/t/{tenant.ref.slug}/admin/users/{admin.user_id}"
    response = client.post(f"{url}/roles", data={"roles": ["Viewer"], "csrf_token": csrf_token(client, url)})
    assert response.status_code == 409 and "manages users" in response.get_data(as_text=True)
    response = client.post(f"{url}/deactivate", data={"csrf_token": csrf_token(client, url)})
    assert response.status_code == 409
    with control_session() as s:
        assert s.get(Membership, admin.membership_id).roles == ["Admin"]


def test_an_admin_with_a_narrow_role_cannot_grant_more_than_they_hold(app, make_tenant, make_person) -> None:
    from app.accounts.services import create_custom_role
    from app.core.permissions import BUILTIN_ROLES

    tenant = make_tenant()
    admin = admin_of(tenant)
    create_custom_role(tenant_id=tenant.ref.id, name="User Clerk", description="", by_user_id=admin.user_id,
                       permissions=["users.manage", "batches.read"], by_permissions=BUILTIN_ROLES["Admin"])
    clerk = make_person(tenant, ["User Clerk"])
    c = app.test_client()
    sign_in(c, clerk.email)
    response = _invite(c, tenant, "escalate@example.com", ["Admin"])
    assert response.status_code == 422 and "do not hold yourself" in response.get_data(as_text=True)
    assert _invite(c, tenant, "fine@example.com", ["User Clerk"]).status_code == 302


def test_user_ids_are_never_reused_or_deleted(client, make_tenant, make_person) -> None:
    tenant = make_tenant()
    person = make_person(tenant, ["Operator"])
    sign_in(client, tenant.admin_email)
    url = f"/t/{tenant.ref.slug}/admin/users/{person.user_id}"
    client.post(f"{url}/deactivate", data={"csrf_token": csrf_token(client, url)})
    later = make_person(tenant, ["Operator"])
    assert later.user_id > person.user_id
    with control_session() as s:
        assert s.get(User, person.user_id) is not None  # the deactivated user's row stays
    response = client.post(f"{url}/reactivate", data={"csrf_token": csrf_token(client, url)})
    assert response.status_code == 302
    assert [e.kind for e in events(tenant, user_id=person.user_id)][-2:] == ["member.deactivated",
                                                                            "member.reactivated"]
    # The database itself refuses to delete an account or a membership: the runtime role holds no DELETE.
    db = client.application.extensions["batchline.db"]
    for table, key in (("users", "id"), ("memberships", "user_id")):
        with db.runtime.connect() as conn, pytest.raises(ProgrammingError, match="permission denied"):
            conn.execute(text(f"DELETE FROM public.{table} WHERE {key} = :i"), {"i": person.user_id})
    assert TEST_PASSWORD
