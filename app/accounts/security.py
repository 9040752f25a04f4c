"""Security events, failed-password counting and lockout, and password re-authentication.

Stable entry points other areas call (the e-signature service among them):

- `record_security_event(...)` writes one event into a tenant's append-only `security_events`;
- `register_failed_password(...)` / `register_successful_password(...)` count wrong passwords toward lockout
  (21 CFR 11.300(d)): the Nth consecutive failure locks the account, ends its sessions and alerts the admins
  of every tenant it belongs to, in the app and by mail; `register_failed_reauthentication(...)` counts a
  refused re-authentication through the identity provider (`app.accounts.reauth`) the same way;
- `verify_user_password(...)` re-authenticates a member (refusing locked and deactivated users) and counts.

Each of these commits on its own: a failed signature attempt rolls back the caller's work, but the failure it
caused must still be counted and recorded.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from flask import has_request_context, request
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.accounts.models import Membership, SecurityEvent, User
from app.accounts.passwords import hash_password, needs_rehash, verify_password
from app.accounts.queries import member_tenant_ids, strictest_settings
from app.core.jobs import enqueue
from app.core.tenancy import control_session, tenant_transaction

log = logging.getLogger(__name__)

#: Event kinds recorded by this area (others may add their own, namespaced by area).
EVENT_KINDS = (
    "signin.success", "signin.refused", "signout", "password.failure", "account.locked", "account.unlocked",
    "password.changed", "password.reset_requested", "password.reset", "role.changed", "role.created",
    "role.updated", "role.retired", "member.invited", "member.invitation_revoked", "member.joined",
    "member.deactivated", "member.reactivated", "settings.changed", "sso.configured", "sso.linked",
    "sso.signin", "sso.refused", "user.switched", "alert.acknowledged", "reauth.success", "reauth.failure",
)


def request_origin() -> tuple[str | None, str | None]:
    """Client address and user agent of the current request (none outside a request)."""
    if not has_request_context():
        return None, None
    return (request.remote_addr or "")[:45] or None, (request.user_agent.string or "")[:300] or None


def _labels(session: Session, *user_ids: int | None) -> dict[int, str]:
    ids = [u for u in user_ids if u is not None]
    if not ids:
        return {}
    return {row.id: f"{row.name} <{row.email}>"[:460]
            for row in session.execute(select(User.id, User.name, User.email).where(User.id.in_(ids)))}


def record_security_event(*, tenant_id: int, kind: str, user_id: int | None = None,
                          actor_user_id: int | None = None, source: str = "web",
                          detail: Mapping[str, Any] | None = None, alert: bool = False,
                          ip: str | None = None, user_agent: str | None = None,
                          session: Session | None = None, user_label: str | None = None,
                          membership_id: int | None = None) -> int:
    """Record a security event in one tenant and return its id.

    With `session` (a tenant session of that tenant) the event joins the caller's transaction; without it, the
    event commits on its own. `ip`/`user_agent` default to the current request's; `user_label`/`membership_id`
    are looked up (committed data) unless given, as they must be for an account made in the same transaction.
    Never put secrets in `detail`.
    """
    req_ip, req_ua = request_origin()
    with control_session() as control:
        labels = _labels(control, user_id, actor_user_id)
        if membership_id is None and user_id is not None:
            membership_id = control.scalar(select(Membership.id).where(
                Membership.user_id == user_id, Membership.tenant_id == tenant_id))
    event = SecurityEvent(
        kind=kind[:60], user_id=user_id, membership_id=membership_id,
        user_label=(user_label if user_label is not None else labels.get(user_id or -1, ""))[:460],
        actor_user_id=actor_user_id, actor_label=labels.get(actor_user_id or -1, ""), source=source[:40],
        ip=(ip or req_ip), user_agent=(user_agent or req_ua), detail=dict(detail or {}), alert=alert,
    )
    if session is not None:
        if session.info["tenant"].id != tenant_id:
            raise ValueError("record_security_event: the session belongs to another tenant")
        session.add(event)
        session.flush()
        if alert:
            enqueue(session, "app.accounts.jobs:send_security_alert", event_id=event.id)
        return event.id
    with tenant_transaction(tenant_id) as own:
        own.add(event)
        own.flush()
        if alert:
            enqueue(own, "app.accounts.jobs:send_security_alert", event_id=event.id)
        return event.id


def record_account_event(*, user_id: int, kind: str, tenant_ids: list[int] | None = None, **kwargs: Any) -> list[int]:
    """Record an account-wide event (sign-in, lockout, password change) in every tenant of the account."""
    if tenant_ids is None:
        with control_session() as control:
            tenant_ids = member_tenant_ids(control, user_id)
    ids = []
    for tenant_id in tenant_ids:
        ids.append(record_security_event(tenant_id=tenant_id, kind=kind, user_id=user_id, **kwargs))
    return ids


def register_failed_password(*, user_id: int, tenant_id: int | None, source: str) -> bool:
    """Count one wrong password for the account; return True when this failure locks it.

    The threshold is the strictest `lockout_threshold` among the account's tenants. The failure is recorded in
    `tenant_id` (or, for a sign-in before any tenant is chosen, in every tenant of the account); a lockout is
    recorded as an alert in every tenant of the account, its admins are mailed, and its sessions end at once.
    """
    return _register_failure(user_id=user_id, tenant_id=tenant_id, source=source, kind="password.failure")


def register_failed_reauthentication(*, user_id: int, tenant_id: int, source: str, reason: str) -> bool:
    """Count one failed re-authentication through the identity provider (an SSO proof refused for `reason`)
    exactly like a wrong password: it counts toward the same lockout (21 CFR 11.300(d))."""
    return _register_failure(user_id=user_id, tenant_id=tenant_id, source=source, kind="reauth.failure",
                             reason=reason)


def _register_failure(*, user_id: int, tenant_id: int | None, source: str, kind: str,
                      reason: str | None = None) -> bool:
    from app.accounts.sessions import end_user_sessions

    with control_session() as control:
        user = control.scalar(select(User).where(User.id == user_id).with_for_update())
        if user is None:
            return False
        settings = strictest_settings(control, user_id)
        already_locked = user.locked_at is not None
        locked_now = False
        if not already_locked:
            user.failed_logins += 1
            if user.failed_logins >= settings.lockout_threshold:
                user.locked_at = func.now()  # the database clock, like every GMP timestamp
                locked_now = True
        failures = user.failed_logins
        all_tenants = member_tenant_ids(control, user_id)
    detail: dict[str, Any] = {"consecutive_failures": failures, "threshold": settings.lockout_threshold,
                              "already_locked": already_locked}
    if reason is not None:
        detail["reason"] = reason[:300]
    where = [tenant_id] if tenant_id is not None else all_tenants
    record_account_event(user_id=user_id, kind=kind, tenant_ids=where, source=source, detail=detail)
    if locked_now:
        ended = end_user_sessions(user_id)
        log.warning("account %s locked after %s consecutive failures (%s)", user_id, failures, source)
        record_account_event(user_id=user_id, kind="account.locked", tenant_ids=all_tenants, source=source,
                             detail={**detail, "sessions_ended": ended}, alert=True)
    return locked_now


def register_successful_password(*, user_id: int, tenant_id: int | None = None, source: str = "web") -> None:
    """Reset the consecutive-failure count after a correct password (no event: the caller records its own)."""
    with control_session() as control:
        user = control.scalar(select(User).where(User.id == user_id).with_for_update())
        if user is not None and user.failed_logins:
            user.failed_logins = 0


def verify_user_password(*, user_id: int, password: str, tenant_id: int, source: str = "esign") -> bool:
    """Re-authenticate a member of `tenant_id`: False for a locked or deactivated user or a wrong password.

    Wrong passwords count toward lockout; a correct one resets the count and upgrades an old hash.
    """
    with control_session() as control:
        row = control.execute(
            select(User, Membership).join(Membership, Membership.user_id == User.id)
            .where(User.id == user_id, Membership.tenant_id == tenant_id)
        ).first()
        refusal = None
        if row is None:
            refusal = "not a member"
        elif not row.User.active or not row.Membership.active:
            refusal = "deactivated"
        elif row.User.locked_at is not None:
            refusal = "locked"
        elif row.User.password_hash is None:
            refusal = "no password (single sign-on account)"
        stored_hash = row.User.password_hash if row is not None else None
    if refusal is not None:
        if row is not None:
            record_security_event(tenant_id=tenant_id, kind="signin.refused", user_id=user_id, source=source,
                                  detail={"reason": refusal})
        return False
    if not verify_password(stored_hash, password):
        register_failed_password(user_id=user_id, tenant_id=tenant_id, source=source)
        return False
    with control_session() as control:
        user = control.scalar(select(User).where(User.id == user_id).with_for_update())
        if user is not None:
            user.failed_logins = 0
            if user.password_hash and needs_rehash(user.password_hash):
                user.password_hash = hash_password(password)
    return True
