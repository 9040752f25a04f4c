"""Re-authentication through the tenant's identity provider, for people whose account signs in through SSO
(21 CFR 11.200(a): every e-signature re-asks for the signer's credentials, and SSO accounts have no password here).

1. `begin(...)` starts an OIDC request with `prompt=login` and `max_age=0` (fresh state, nonce and PKCE), bound
   to a `purpose` (for a signature: record type, record id, meaning, content hash) and the page to return to.
2. The SSO callback calls `complete(...)` once `sso.finish` has verified the ID token (signature, issuer,
   audience, nonce): the subject must be the identity linked to the signed-in person, and `auth_time` must be
   fresh (not before the request started, at most `SSO_REAUTH_MAX_AGE_S` old). It stores a single-use proof in
   Redis — bound to tenant, user, session and purpose, expiring with the login's freshness — and its token in the
   session, so the form page can submit it instead of a password.
3. The signing service calls `consume(...)`: the proof leaves Redis atomically (GETDEL), so it works once; a
   mismatch of any binding refuses, and every refusal counts toward lockout like a wrong password.

Proving who someone is belongs here; what a purpose means (and when it matches) belongs to the caller.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import redis
from flask import current_app
from sqlalchemy import select

from app.accounts.models import SsoIdentity, SsoProvider, User
from app.accounts.security import (
    record_security_event,
    register_failed_reauthentication,
    register_successful_password,
)
from app.accounts.sso import Claims
from app.accounts.sso import start as start_sso
from app.core.errors import BatchlineError, ValidationError
from app.core.tenancy import control_session

#: `mode` of a pending SSO request that re-authenticates (the SSO callback dispatches on it).
MODE = "reauth"
#: Flask session key of the proof waiting for its form to be submitted (one at a time per session).
SESSION_KEY = "reauth_proof"
_PROOF_PREFIX = "bl:reauth:"
_USED_PREFIX = "bl:reauth-used:"
#: How long a consumed proof is remembered, so a second use is named as such rather than as "expired".
_USED_MEMORY_S = 3600
_KEEP_MAX_FIELDS, _KEEP_MAX_CHARS = 20, 4000


class ReauthRefused(BatchlineError):
    """The re-authentication does not prove what it must; the message says why and what to do."""

    status_code = 403


@dataclass(frozen=True)
class SsoReauth:
    """How a member re-authenticates in one tenant when it is through the identity provider."""

    issuer: str
    #: What the form names: "Re-authenticate with <provider>" (the issuer's host).
    provider: str


@dataclass(frozen=True)
class SsoProof:
    """What a signing form submits instead of a password: the proof's token and the session it came from."""

    token: str
    session_id: str


@dataclass(frozen=True)
class PendingProof:
    """A proof waiting in this session for its form to be submitted."""

    token: str
    purpose: dict[str, str]
    #: Form values typed before the detour to the provider, to fill the form in again.
    keep: dict[str, str]
    provider: str
    auth_time: int
    expires_at: float

    @property
    def seconds_left(self) -> int:
        """Seconds until the proof expires (for the form's hint)."""
        return max(0, int(self.expires_at - time.time()))


@dataclass(frozen=True)
class VerifiedReauth:
    """A consumed proof: who logged in at which provider, and when (epoch seconds, the provider's clock)."""

    issuer: str
    subject: str
    auth_time: int


def _redis() -> redis.Redis:
    return current_app.extensions["batchline.redis"]


def _max_age() -> int:
    return int(current_app.config["SSO_REAUTH_MAX_AGE_S"])


def _digest(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def sso_reauth_for(*, tenant_id: int, user_id: int) -> SsoReauth | None:
    """The provider through which this member re-authenticates, or None when they re-enter a password.

    Through the provider when the tenant's SSO is enabled, the account has an identity linked at its issuer, and
    either the account has no password or the tenant's policy is "SSO required".
    """
    with control_session() as control:
        row = control.execute(
            select(SsoProvider.issuer, SsoProvider.sso_required, User.password_hash)
            .join(SsoIdentity, SsoIdentity.issuer == SsoProvider.issuer)
            .join(User, User.id == SsoIdentity.user_id)
            .where(SsoProvider.tenant_id == tenant_id, SsoProvider.enabled.is_(True), User.id == user_id)
            .limit(1)
        ).first()
    if row is None or (row.password_hash is not None and not row.sso_required):
        return None
    return SsoReauth(issuer=row.issuer, provider=urlsplit(row.issuer).netloc or row.issuer)


def _safe_return(path: str) -> str:
    parts = urlsplit(path or "")
    if parts.scheme or parts.netloc or not path.startswith("/t/") or "\\" in path:
        raise ValidationError("re-authentication returns to a page of this company only")
    return path


def _kept(values: Mapping[str, str]) -> dict[str, str]:
    kept = {}
    for name, value in list(values.items())[:_KEEP_MAX_FIELDS]:
        kept[str(name)[:60]] = str(value)[:_KEEP_MAX_CHARS]
    return kept


def begin(*, tenant_id: int, user_id: int, purpose: Mapping[str, str], return_to: str, redirect_uri: str,
          keep: Mapping[str, str] | None = None, source: str = "esign") -> tuple[str, dict[str, Any]]:
    """Start a forced re-login at the provider; return its URL and the pending state to keep in the session."""
    if sso_reauth_for(tenant_id=tenant_id, user_id=user_id) is None:
        raise ValidationError("your account re-authenticates with its password here, not through single sign-on")
    return_to = _safe_return(return_to)
    url, pending = start_sso(tenant_id=tenant_id, redirect_uri=redirect_uri, mode=MODE, force_login=True)
    pending.update(user_id=user_id, purpose={str(k): str(v) for k, v in purpose.items()}, return_to=return_to,
                   keep=_kept(keep or {}), source=source[:40])
    return url, pending


def _linked_user(issuer: str, subject: str) -> int | None:
    with control_session() as control:
        return control.scalar(select(SsoIdentity.user_id).where(SsoIdentity.issuer == issuer,
                                                                SsoIdentity.subject == subject))


def _account_refusal(user_id: int) -> str | None:
    with control_session() as control:
        user = control.get(User, user_id)
        if user is None or not user.active:
            return "this account is deactivated; ask your administrator"
        if user.locked_at is not None:
            return "this account is locked after repeated failures; ask your administrator to unlock it"
    return None


def complete(*, pending: Mapping[str, Any], claims: Claims, user_id: int | None,
             session_id: str | None) -> PendingProof:
    """Check that verified claims prove a fresh login of the person who asked, and store a single-use proof."""
    tenant_id, expected = int(pending["tenant_id"]), int(pending["user_id"])
    source = str(pending.get("source") or "esign")
    if user_id != expected or not session_id:
        raise ReauthRefused("you are no longer signed in as the person who started this re-authentication; sign "
                            "in again and start over")
    provider = urlsplit(claims.issuer).netloc or claims.issuer

    def refuse(reason: str, message: str) -> ReauthRefused:
        register_failed_reauthentication(user_id=expected, tenant_id=tenant_id, source=source, reason=reason)
        return ReauthRefused(message + " The failed attempt counts toward the lockout.")

    account = _account_refusal(expected)
    if account is not None:
        raise ReauthRefused(account)
    linked = _linked_user(claims.issuer, claims.subject)
    if linked != expected:
        who = claims.email or claims.subject
        raise refuse("identity of another person" if linked else "identity not linked to any account",
                     f"you logged in at {provider} as {who}, which is not your linked identity; log in there as "
                     "yourself to sign.")
    now = time.time()
    if claims.auth_time is None:
        raise refuse("no auth_time", f"{provider} did not say when you logged in (no auth_time in the ID token), "
                     "so it cannot prove a fresh login; ask your administrator to check the provider.")
    started = float(pending["started"])
    skew = float(current_app.config["SSO_REAUTH_CLOCK_SKEW_S"])
    if claims.auth_time < started - skew or now - claims.auth_time > _max_age():
        raise refuse("stale auth_time", f"{provider} did not make you log in again (your last login there was "
                     "before you asked to sign, or too long ago); re-authenticate again, and if this repeats ask "
                     "your administrator: the provider must honour prompt=login.")
    token = secrets.token_urlsafe(32)
    purpose = dict(pending["purpose"])
    expires_at = claims.auth_time + _max_age()
    record = {"tenant_id": tenant_id, "user_id": expected, "session": _digest(session_id), "purpose": purpose,
              "issuer": claims.issuer, "subject": claims.subject, "auth_time": claims.auth_time,
              "issued_at": now}
    _redis().set(_PROOF_PREFIX + _digest(token), json.dumps(record), ex=max(1, int(expires_at - now) + 1))
    record_security_event(tenant_id=tenant_id, kind="reauth.success", user_id=expected, source=source,
                          detail={"issuer": claims.issuer, "subject": claims.subject,
                                  "auth_time": claims.auth_time, "purpose": purpose})
    return PendingProof(token=token, purpose=purpose, keep=dict(pending.get("keep") or {}), provider=provider,
                        auth_time=claims.auth_time, expires_at=expires_at)


def remember(session: Any, proof: PendingProof) -> None:
    """Keep the proof's token in the (server-side) session for the form page."""
    session[SESSION_KEY] = {"token": proof.token, "purpose": proof.purpose, "keep": proof.keep,
                            "provider": proof.provider, "auth_time": proof.auth_time, "expires_at": proof.expires_at}


def pending_proof(session: Any) -> PendingProof | None:
    """The proof waiting in this session, while it is still usable (dropped from the session otherwise)."""
    stored = session.get(SESSION_KEY)
    if not isinstance(stored, dict):
        return None
    try:
        proof = PendingProof(token=str(stored["token"]), purpose=dict(stored["purpose"]), keep=dict(stored["keep"]),
                             provider=str(stored["provider"]), auth_time=int(stored["auth_time"]),
                             expires_at=float(stored["expires_at"]))
    except (KeyError, TypeError, ValueError):
        proof = None
    if proof is None or proof.seconds_left <= 0 or not _redis().exists(_PROOF_PREFIX + _digest(proof.token)):
        session.pop(SESSION_KEY, None)
        return None
    return proof


def forget(session: Any) -> None:
    """Drop the waiting proof from the session (after it was used)."""
    session.pop(SESSION_KEY, None)


def consume(*, proof: SsoProof, tenant_id: int, user_id: int,
            check_purpose: Callable[[Mapping[str, str]], str | None], source: str = "esign") -> VerifiedReauth:
    """Use a proof once for `user_id` in `tenant_id`; `check_purpose` returns why its purpose does not match.

    The proof is gone after this call whatever the outcome; every refusal counts toward the lockout.
    """

    def refuse(reason: str, message: str) -> ReauthRefused:
        register_failed_reauthentication(user_id=user_id, tenant_id=tenant_id, source=source, reason=reason)
        return ReauthRefused(message + "; the failed attempt counts toward the lockout")

    token = (proof.token or "").strip()
    digest = _digest(token)
    conn = _redis()
    raw = conn.getdel(_PROOF_PREFIX + digest) if 20 <= len(token) <= 100 else None
    if raw is None:
        if token and conn.exists(_USED_PREFIX + digest):
            raise refuse("proof reused", "this re-authentication was already used: each one is good for one "
                         "signature; re-authenticate again")
        raise refuse("proof unknown or expired", f"this re-authentication has expired (it is good for "
                     f"{_max_age()} s after you log in at the provider) or is unknown; re-authenticate again")
    conn.set(_USED_PREFIX + digest, "1", ex=_USED_MEMORY_S)
    data = json.loads(raw)
    account = _account_refusal(user_id)
    if account is not None:
        raise ReauthRefused(account)
    if int(data["tenant_id"]) != tenant_id:
        raise refuse("proof of another company", "this re-authentication was made in another company")
    if int(data["user_id"]) != user_id:
        raise refuse("proof of another person", "this re-authentication belongs to another person; only the "
                     "person who re-authenticated can sign with it")
    if not proof.session_id or data["session"] != _digest(proof.session_id):
        raise refuse("proof of another session", "this re-authentication was made in another browser session")
    mismatch = check_purpose(data["purpose"])
    if mismatch:
        raise refuse("proof for another purpose", mismatch)
    if _linked_user(data["issuer"], data["subject"]) != user_id:
        raise refuse("identity no longer linked", "the identity you logged in with is no longer linked to your "
                     "account")
    if time.time() - int(data["auth_time"]) > _max_age():
        raise refuse("stale auth_time", f"your login at the provider is more than {_max_age()} s old; "
                     "re-authenticate again")
    register_successful_password(user_id=user_id, tenant_id=tenant_id, source=source)
    return VerifiedReauth(issuer=data["issuer"], subject=data["subject"], auth_time=int(data["auth_time"]))
