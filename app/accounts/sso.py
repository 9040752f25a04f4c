"""Single sign-on per tenant: OpenID Connect authorization code flow with PKCE (authlib client, joserfc for the ID
token), and the rules that decide who may come in.

Users are matched by (issuer, subject), never by email. An unknown subject becomes a member only when the tenant
invited its (verified) email or allows its email domain; an email that already belongs to an account is never
taken over — that account's owner signs in with their password and links SSO from their account page.
"""

from __future__ import annotations

import hmac
import secrets
import time
from dataclasses import dataclass
from typing import Any

import requests
from authlib.integrations.requests_client import OAuth2Session
from flask import current_app
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet
from sqlalchemy import func, select

from app.accounts.models import Invitation, Membership, SsoIdentity, SsoProvider, User
from app.accounts.security import record_security_event
from app.accounts.services import validate_email, validate_name
from app.billing.services import require_capacity, require_feature
from app.core.crypto import unseal
from app.core.errors import BatchlineError, ValidationError
from app.core.tenancy import control_session, control_then_tenant_transaction
from app.tenancy.models import Tenant

_ID_TOKEN_ALGORITHMS = ["RS256", "RS384", "RS512", "PS256", "ES256", "ES384"]
#: Seconds a started sign-in may take at the provider before its state is refused.
STATE_MAX_AGE_S = 600


class SsoRefused(BatchlineError):
    """Single sign-on did not let this person in; the message says why and what to do."""

    status_code = 403


@dataclass(frozen=True)
class Claims:
    """What a validated ID token says about the person."""

    issuer: str
    subject: str
    email: str | None
    email_verified: bool
    name: str
    #: When the person last logged in at the provider (epoch seconds), if the token says (`auth_time`).
    auth_time: int | None = None


def _timeout() -> float:
    return float(current_app.config["SSO_HTTP_TIMEOUT_S"])


def _provider(tenant_id: int) -> tuple[SsoProvider, str]:
    with control_session() as session:
        provider = session.get(SsoProvider, tenant_id)
        if provider is None or not provider.enabled:
            raise ValidationError("single sign-on is not set up for this company; sign in with your password")
        secret = unseal(provider.client_secret_sealed, purpose=f"sso-client-secret:{tenant_id}")
        session.expunge(provider)
    return provider, secret


def discover(issuer: str) -> dict[str, Any]:
    """Fetch the provider's discovery document and check it names the configured issuer exactly."""
    try:
        response = requests.get(f"{issuer}/.well-known/openid-configuration", timeout=_timeout())
        response.raise_for_status()
        metadata = response.json()
    except (requests.RequestException, ValueError) as exc:
        raise SsoRefused(f"the sign-on provider {issuer} cannot be reached ({type(exc).__name__}); try again "
                         "later or sign in with your password") from exc
    if metadata.get("issuer") != issuer:
        raise SsoRefused("the sign-on provider's discovery document names another issuer; ask your administrator")
    for key in ("authorization_endpoint", "token_endpoint", "jwks_uri"):
        if not isinstance(metadata.get(key), str):
            raise SsoRefused(f"the sign-on provider's discovery document lacks {key}")
    return metadata


def start(*, tenant_id: int, redirect_uri: str, mode: str = "signin",
          force_login: bool = False) -> tuple[str, dict[str, Any]]:
    """Return the provider's authorization URL and the pending state to keep in the session.

    `force_login` asks the provider to make the person log in again whatever session they have there
    (`prompt=login`, `max_age=0`): re-authentication for e-signatures (21 CFR 11.200(a)).
    """
    if mode != "reauth":
        # Signing in and linking need the plan's SSO; re-authenticating a signed-in signer never depends on it,
        # so a plan change cannot stop anyone from signing a GMP record.
        with control_session() as session:
            require_feature(session, tenant_id=tenant_id, feature="sso")
    provider, _secret = _provider(tenant_id)
    metadata = discover(provider.issuer)
    state, nonce, verifier = secrets.token_urlsafe(32), secrets.token_urlsafe(32), secrets.token_urlsafe(64)
    client = OAuth2Session(provider.client_id, redirect_uri=redirect_uri, scope="openid email profile",
                           code_challenge_method="S256")
    extra = {"prompt": "login", "max_age": "0"} if force_login else {}
    url, _ = client.create_authorization_url(metadata["authorization_endpoint"], state=state, nonce=nonce,
                                             code_verifier=verifier, **extra)
    pending = {"tenant_id": tenant_id, "state": state, "nonce": nonce, "verifier": verifier, "mode": mode,
               "started": time.time(), "redirect_uri": redirect_uri}
    return url, pending


def finish(*, pending: dict[str, Any] | None, args: dict[str, str]) -> tuple[int, Claims]:
    """Check the callback against the pending sign-in, exchange the code (with the PKCE verifier) and validate
    the ID token; return (tenant id, claims)."""
    if not pending or time.time() - float(pending.get("started", 0)) > STATE_MAX_AGE_S:
        raise SsoRefused("this sign-on attempt expired or was started in another browser; start again")
    if not hmac.compare_digest(str(args.get("state", "")), str(pending["state"])):
        raise SsoRefused("the sign-on response does not belong to this browser's attempt (state mismatch)")
    if args.get("error"):
        detail = str(args.get("error_description") or args["error"])[:200]
        raise SsoRefused(f"the sign-on provider refused: {detail}")
    code = args.get("code", "")
    if not code or len(code) > 2048:
        raise SsoRefused("the sign-on response carries no authorization code; start again")
    tenant_id = int(pending["tenant_id"])
    provider, secret = _provider(tenant_id)
    metadata = discover(provider.issuer)
    client = OAuth2Session(provider.client_id, secret, redirect_uri=pending["redirect_uri"],
                           token_endpoint_auth_method="client_secret_basic",  # noqa: S106  (a method name)
                           code_challenge_method="S256")
    try:
        token = client.fetch_token(metadata["token_endpoint"], grant_type="authorization_code", code=code,
                                   code_verifier=pending["verifier"], timeout=_timeout())
        jwks = requests.get(metadata["jwks_uri"], timeout=_timeout())
        jwks.raise_for_status()
        keys = KeySet.import_key_set(jwks.json())
    except Exception as exc:  # authlib raises OAuthError, requests its own; both mean "no valid token"
        raise SsoRefused(f"the sign-on provider did not issue a token ({type(exc).__name__}: {str(exc)[:120]})") \
            from exc
    id_token = token.get("id_token")
    if not id_token:
        raise SsoRefused("the sign-on provider returned no ID token (is the 'openid' scope allowed?)")
    try:
        decoded = jwt.decode(id_token, keys, algorithms=_ID_TOKEN_ALGORITHMS)
        jwt.JWTClaimsRegistry(
            leeway=60,
            iss={"essential": True, "value": provider.issuer},
            aud={"essential": True, "value": provider.client_id},
            sub={"essential": True},
            exp={"essential": True},
            iat={"essential": True},
            nonce={"essential": True, "value": pending["nonce"]},
        ).validate(decoded.claims)
    except JoseError as exc:
        raise SsoRefused(f"the ID token is not valid ({exc.error}: {exc.description or ''})".strip()) from exc
    claims = decoded.claims
    audience = claims["aud"]
    if isinstance(audience, list) and len(audience) > 1 and claims.get("azp") != provider.client_id:
        raise SsoRefused("the ID token was issued to another client (azp)")
    subject = str(claims["sub"])
    if not subject or len(subject) > 255:
        raise SsoRefused("the ID token's subject is empty or too long")
    email = claims.get("email")
    auth_time = claims.get("auth_time")
    return tenant_id, Claims(issuer=provider.issuer, subject=subject,
                             email=email if isinstance(email, str) else None,
                             email_verified=claims.get("email_verified") is True,
                             name=str(claims.get("name") or "")[:200],
                             auth_time=int(auth_time) if isinstance(auth_time, int | float)
                             and not isinstance(auth_time, bool) else None)


def _refuse(tenant_id: int, claims: Claims, reason: str, message: str, *, user_id: int | None = None) -> SsoRefused:
    record_security_event(tenant_id=tenant_id, kind="sso.refused", user_id=user_id, source="sso",
                          user_label=(claims.email or "")[:254],
                          detail={"reason": reason, "issuer": claims.issuer, "subject": claims.subject,
                                  "email": claims.email, "email_verified": claims.email_verified})
    return SsoRefused(message)


def sign_in_user(*, tenant_id: int, claims: Claims) -> int:
    """Decide who the validated claims are in this tenant, creating the account/membership when the rules
    allow (invitation or allowed domain); return the user id, or raise SsoRefused."""
    with control_session() as control:
        require_feature(control, tenant_id=tenant_id, feature="sso")
        identity = control.scalar(select(SsoIdentity).where(SsoIdentity.issuer == claims.issuer,
                                                            SsoIdentity.subject == claims.subject))
        provider = control.get(SsoProvider, tenant_id)
        known_user = control.get(User, identity.user_id) if identity else None
        membership = control.scalar(select(Membership).where(
            Membership.user_id == known_user.id, Membership.tenant_id == tenant_id)) if known_user else None
    if known_user is not None:
        if not known_user.active or known_user.locked_at is not None:
            raise _refuse(tenant_id, claims, "account deactivated or locked",
                          "this account is deactivated or locked; ask your administrator", user_id=known_user.id)
        if membership is not None and not membership.active:
            raise _refuse(tenant_id, claims, "membership deactivated",
                          "your membership of this company is deactivated; ask your administrator",
                          user_id=known_user.id)
        if membership is not None:
            record_security_event(tenant_id=tenant_id, kind="sso.signin", user_id=known_user.id, source="sso",
                                  detail={"issuer": claims.issuer, "subject": claims.subject})
            return known_user.id
    return _join(tenant_id=tenant_id, claims=claims, provider=provider, known_user=known_user)


def _join(*, tenant_id: int, claims: Claims, provider: SsoProvider | None, known_user: User | None) -> int:
    """Just-in-time membership: only for an invited email or an allowed domain, never over an existing account."""
    if not claims.email or not claims.email_verified:
        raise _refuse(tenant_id, claims, "no verified email",
                      "your sign-on provider did not confirm your email address; ask your administrator to invite you")
    try:
        email = validate_email(claims.email)
    except ValidationError as exc:
        raise _refuse(tenant_id, claims, "unusable email", f"your sign-on email cannot be used here: {exc}") from exc
    domain = email.rpartition("@")[2]
    with control_then_tenant_transaction(tenant_id) as (control, enter_tenant):
        invitation = control.scalar(select(Invitation).where(
            Invitation.tenant_id == tenant_id, Invitation.email == email, Invitation.accepted_at.is_(None),
            Invitation.revoked_at.is_(None), Invitation.expires_at > func.now()).with_for_update())
        by_domain = provider is not None and domain in (provider.allowed_domains or [])
        if invitation is None and not by_domain:
            reason, message = "not invited", (f"{email} is not invited to this company; ask your administrator for "
                                              "an invitation")
        else:
            reason = message = ""
        owner = control.scalar(select(User).where(User.email == email))
        if not reason and known_user is None and owner is not None:
            # The email belongs to an account that never linked this subject: letting the provider's word
            # about an email sign into it would hand the account to whoever controls that provider entry.
            reason, message = "email belongs to another account", (
                f"an account for {email} already exists; sign in with its password and link single sign-on from "
                "your account page")
        if reason:
            raise _refuse(tenant_id, claims, reason, message)
        # An invited address already holds its place; joining by domain takes a new one.
        require_capacity(control, tenant_id=tenant_id, entitlement="users", adding=0 if invitation else 1)
        roles = list(invitation.roles) if invitation is not None else list(provider.default_roles)  # type: ignore[union-attr]
        if known_user is None:
            name = validate_name(claims.name or email.partition("@")[0])
            user = User(email=email, name=name, password_hash=None)
            control.add(user)
            control.flush()
            control.add(SsoIdentity(issuer=claims.issuer, subject=claims.subject, user_id=user.id,
                                    tenant_id=tenant_id))
        else:
            user = control.get(User, known_user.id)  # type: ignore[assignment]
        membership = Membership(user_id=user.id, tenant_id=tenant_id, roles=roles)
        control.add(membership)
        if invitation is not None:
            invitation.accepted_at = func.now()
            invitation.accepted_user_id = user.id
        control.flush()
        user_id, label, membership_id = user.id, f"{user.name} <{user.email}>", membership.id
        session = enter_tenant()
        record_security_event(session=session, tenant_id=tenant_id, kind="member.joined", user_id=user_id,
                              user_label=label, membership_id=membership_id, source="sso",
                              detail={"via": "sso", "invitation_id": invitation.id if invitation else None,
                                      "allowed_domain": domain if invitation is None else None, "roles": roles,
                                      "new_account": known_user is None})
        record_security_event(session=session, tenant_id=tenant_id, kind="sso.signin", user_id=user_id,
                              user_label=label, membership_id=membership_id, source="sso",
                              detail={"issuer": claims.issuer, "subject": claims.subject, "first": True})
    return user_id


def link_identity(*, tenant_id: int, claims: Claims, user_id: int) -> None:
    """Link a provider subject to the signed-in account (after it proved itself with its password)."""
    with control_then_tenant_transaction(tenant_id) as (control, enter_tenant):
        existing = control.scalar(select(SsoIdentity).where(SsoIdentity.issuer == claims.issuer,
                                                            SsoIdentity.subject == claims.subject))
        if existing is not None and existing.user_id != user_id:
            raise _refuse(tenant_id, claims, "subject linked to another account",
                          "this sign-on identity is already linked to another account", user_id=user_id)
        if existing is None:
            control.add(SsoIdentity(issuer=claims.issuer, subject=claims.subject, user_id=user_id,
                                    tenant_id=tenant_id))
        tenant = control.get(Tenant, tenant_id)
        if tenant is None:
            raise SsoRefused("no such company")
        record_security_event(session=enter_tenant(), tenant_id=tenant_id, kind="sso.linked", user_id=user_id,
                              source="sso", detail={"issuer": claims.issuer, "subject": claims.subject,
                                                    "provider_email": claims.email})
