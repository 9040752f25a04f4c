"""Single sign-on per tenant against a real OIDC provider on loopback: code flow + PKCE, real token exchange."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from sqlalchemy import func, select

from app.accounts.models import Invitation, Membership, SsoIdentity, User
from app.accounts.services import configure_sso, invite_member
from app.core.permissions import BUILTIN_ROLES
from app.core.tenancy import control_session
from tests.accounts.conftest import admin_of, events
from tests.accounts.oidc_provider import running_provider
from tests.conftest import csrf_token, sign_in

CALLBACK = "http://localhost/sso/callback"
ADMIN = BUILTIN_ROLES["Admin"]


@pytest.fixture
def provider():
    with running_provider() as p:
        p.register("batchline-client", "client-secret-42", CALLBACK)
        yield p


def _setup(tenant, provider, *, domains: str = "", default_roles: list[str] | None = None) -> None:
    configure_sso(tenant_id=tenant.ref.id, issuer=provider.issuer, client_id="batchline-client",
                  client_secret="client-secret-42", allowed_domains=domains, default_roles=default_roles or [],
                  enabled=True, by_user_id=admin_of(tenant).user_id, by_permissions=ADMIN)


def _sso(client, slug: str, *, link: bool = False, tamper_state: bool = False):
    """Walk the browser through: our start URL -> provider (real HTTP) -> our callback."""
    start = client.get(f"/sso/{slug}/start" + ("?link=1" if link else ""))
    assert start.status_code == 302, start.get_data(as_text=True)
    authorize = start.headers["Location"]
    query = parse_qs(urlsplit(authorize).query)
    assert query["code_challenge_method"] == ["S256"] and len(query["code_challenge"][0]) >= 43
    assert query["nonce"][0] and query["state"][0]
    at_provider = requests.get(authorize, allow_redirects=False, timeout=10)
    assert at_provider.status_code == 302, at_provider.text
    back = urlsplit(at_provider.headers["Location"])
    assert f"{back.scheme}://{back.netloc}{back.path}" == CALLBACK
    callback = f"{back.path}?{back.query}"
    if tamper_state:
        callback = callback.replace("state=", "state=x")
    return client.get(callback)


def _identity_count() -> int:
    with control_session() as s:
        return s.scalar(select(func.count()).select_from(SsoIdentity))


def test_invited_email_signs_in_through_sso_and_becomes_a_member(client, make_tenant, provider) -> None:
    tenant = make_tenant()
    _setup(tenant, provider)
    invite_member(tenant_id=tenant.ref.id, email="grace@hopper.example.com", roles=["QA"],
                  by_user_id=admin_of(tenant).user_id, by_permissions=ADMIN)
    provider.next_user = {"sub": "idp-grace-001", "email": "grace@hopper.example.com", "email_verified": True,
                          "name": "Grace Hopper"}
    response = _sso(client, tenant.ref.slug)
    assert response.status_code == 302 and response.headers["Location"].endswith(f"/t/{tenant.ref.slug}/")
    assert client.get(f"/t/{tenant.ref.slug}/").status_code == 200
    assert provider.token_requests[-1] == {"client_id": "batchline-client", "verifier_ok": True, "ok": True}
    with control_session() as s:
        user = s.scalar(select(User).where(User.email == "grace@hopper.example.com"))
        assert user.password_hash is None and user.name == "Grace Hopper"
        identity = s.scalar(select(SsoIdentity).where(SsoIdentity.user_id == user.id))
        assert (identity.issuer, identity.subject) == (provider.issuer, "idp-grace-001")
        assert s.scalar(select(Membership.roles).where(Membership.user_id == user.id)) == ["QA"]
        assert s.scalar(select(Invitation.accepted_user_id).where(Invitation.email == user.email)) == user.id
    assert events(tenant, "member.joined", user.id)[0].detail["via"] == "sso"
    assert events(tenant, "sso.signin", user.id)


def test_uninvited_email_is_refused_and_nothing_is_created(client, make_tenant, provider) -> None:
    tenant = make_tenant()
    _setup(tenant, provider, domains="allowed.example.com", default_roles=["Viewer"])
    provider.next_user = {"sub": "idp-eve", "email": "eve@elsewhere.example.com", "email_verified": True}
    with control_session() as s:
        users_before = s.scalar(select(func.count()).select_from(User))
    response = _sso(client, tenant.ref.slug)
    assert response.status_code == 403
    assert "not invited" in response.get_data(as_text=True)
    with control_session() as s:
        assert s.scalar(select(func.count()).select_from(User)) == users_before
    assert client.get(f"/t/{tenant.ref.slug}/").status_code == 302
    (refused,) = events(tenant, "sso.refused")
    assert refused.detail["reason"] == "not invited" and refused.detail["subject"] == "idp-eve"


def test_allowed_domain_joins_just_in_time_with_default_roles(client, make_tenant, provider) -> None:
    tenant = make_tenant()
    _setup(tenant, provider, domains="plant.example.com", default_roles=["Operator"])
    provider.next_user = {"sub": "idp-op-7", "email": "op7@plant.example.com", "email_verified": True, "name": "Op 7"}
    assert _sso(client, tenant.ref.slug).status_code == 302
    with control_session() as s:
        roles = s.scalar(select(Membership.roles).join(User, User.id == Membership.user_id)
                         .where(User.email == "op7@plant.example.com"))
    assert roles == ["Operator"]
    # An unverified email of the same domain is not enough.
    provider.next_user = {"sub": "idp-op-8", "email": "op8@plant.example.com", "email_verified": False}
    response = _sso(client.application.test_client(), tenant.ref.slug)
    assert response.status_code == 403 and "did not confirm your email" in response.get_data(as_text=True)


def test_no_account_takeover_through_an_email_collision(app, client, make_tenant, make_person, provider) -> None:
    victim_home, tenant = make_tenant(), make_tenant()
    victim = make_person(victim_home, ["Admin"], email_="victim@corp.example.com")
    _setup(tenant, provider, domains="corp.example.com", default_roles=["Viewer"])
    invite_member(tenant_id=tenant.ref.id, email=victim.email, roles=["Viewer"],
                  by_user_id=admin_of(tenant).user_id, by_permissions=ADMIN)
    # Someone controlling an IdP entry claims the victim's email, with another subject.
    provider.next_user = {"sub": "attacker-sub", "email": victim.email, "email_verified": True}
    with control_session() as s:
        before = s.get(User, victim.user_id).password_hash
    identities = _identity_count()
    response = _sso(client, tenant.ref.slug)
    assert response.status_code == 403 and "already exists" in response.get_data(as_text=True)
    assert client.get(f"/t/{victim_home.ref.slug}/").status_code == 302  # not signed in as the victim
    assert _identity_count() == identities
    with control_session() as s:
        assert s.get(User, victim.user_id).password_hash == before
        assert s.scalar(select(func.count()).select_from(Membership).where(
            Membership.user_id == victim.user_id)) == 1
    assert events(tenant, "sso.refused")[-1].detail["reason"] == "email belongs to another account"


def test_linked_identity_is_matched_by_subject_not_email(app, make_tenant, make_person, provider) -> None:
    tenant = make_tenant()
    _setup(tenant, provider)
    person = make_person(tenant, ["Supervisor"], email_="sam@corp.example.com")
    browser = app.test_client()
    sign_in(browser, person.email)
    provider.next_user = {"sub": "idp-sam", "email": "sam@corp.example.com", "email_verified": True}
    response = _sso(browser, tenant.ref.slug, link=True)
    assert response.status_code == 302 and response.headers["Location"].endswith("/account")
    (linked,) = events(tenant, "sso.linked", person.user_id)
    assert linked.detail["subject"] == "idp-sam"
    # Later the provider reports another email for the same subject: still the same account.
    provider.next_user = {"sub": "idp-sam", "email": "samuel.new@corp.example.com", "email_verified": True}
    fresh = app.test_client()
    assert _sso(fresh, tenant.ref.slug).status_code == 302
    assert "sam@corp.example.com" in fresh.get("/account").get_data(as_text=True)


@pytest.mark.parametrize("tamper", ["aud", "nonce", "iss", "sig"])
def test_invalid_id_tokens_are_refused(client, make_tenant, provider, tamper) -> None:
    tenant = make_tenant()
    _setup(tenant, provider, domains="corp.example.com", default_roles=["Viewer"])
    provider.next_user = {"sub": f"idp-{tamper}", "email": f"{tamper}@corp.example.com", "email_verified": True}
    provider.tamper = tamper
    response = _sso(client, tenant.ref.slug)
    assert response.status_code == 403 and "ID token" in response.get_data(as_text=True)
    assert client.get(f"/t/{tenant.ref.slug}/").status_code == 302


def test_forged_state_is_refused(client, make_tenant, provider) -> None:
    tenant = make_tenant()
    _setup(tenant, provider, domains="corp.example.com", default_roles=["Viewer"])
    provider.next_user = {"sub": "idp-x", "email": "x@corp.example.com", "email_verified": True}
    response = _sso(client, tenant.ref.slug, tamper_state=True)
    assert response.status_code == 403 and "state mismatch" in response.get_data(as_text=True)
    assert provider.token_requests == []  # the code was never exchanged


def test_sso_configuration_is_validated_and_the_secret_sealed(client, make_tenant, provider) -> None:
    tenant = make_tenant()
    sign_in(client, tenant.admin_email)
    url = f"/t/{tenant.ref.slug}/admin/sso"
    form = {"issuer": provider.issuer, "client_id": "batchline-client", "client_secret": "client-secret-42",
            "allowed_domains": "", "enabled": "on"}
    for field, bad in (("issuer", "http://idp.example.com"), ("issuer", "javascript:alert(1)"),
                       ("allowed_domains", "not a domain!"), ("client_id", "")):
        response = client.post(url, data={**form, field: bad, "csrf_token": csrf_token(client, url)})
        assert response.status_code == 422, (field, bad)
    assert client.post(url, data={**form, "csrf_token": csrf_token(client, url)}).status_code == 302
    from app.accounts.models import SsoProvider

    with control_session() as s:
        sealed = s.get(SsoProvider, tenant.ref.id).client_secret_sealed
    assert "client-secret-42" not in sealed
    (configured,) = events(tenant, "sso.configured")
    assert "client-secret-42" not in str(configured.detail)
