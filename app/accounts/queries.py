"""Read-side queries of accounts: settings in force, members, roles, security events and alerts."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.accounts.models import (
    Invitation,
    Membership,
    SecurityEvent,
    SecuritySettings,
    SsoProvider,
    TenantRole,
    User,
)
from app.core.permissions import BUILTIN_ROLES, permissions_of
from app.tenancy.models import Tenant
from app.tenancy.queries import LIVE_STATUSES


@dataclass(frozen=True)
class EffectiveSettings:
    """Security settings in force (one tenant's, or the strictest across an account's tenants)."""

    lockout_threshold: int = 5
    idle_timeout_min: int = 15
    session_max_hours: int = 12
    password_min_length: int = 12


DEFAULT_SETTINGS = EffectiveSettings()
SETTING_NAMES = ("lockout_threshold", "idle_timeout_min", "session_max_hours", "password_min_length")


def tenant_settings(session: Session, tenant_id: int) -> EffectiveSettings:
    """The tenant's settings, or the defaults when it never changed them."""
    row = session.get(SecuritySettings, tenant_id)
    if row is None:
        return DEFAULT_SETTINGS
    return EffectiveSettings(**{name: getattr(row, name) for name in SETTING_NAMES})


def strictest_settings(session: Session, user_id: int) -> EffectiveSettings:
    """One account, one password, one session: the strictest setting among its live memberships applies."""
    tenant_ids = member_tenant_ids(session, user_id)
    if not tenant_ids:
        return DEFAULT_SETTINGS
    settings = [tenant_settings(session, t) for t in tenant_ids]
    return EffectiveSettings(
        lockout_threshold=min(s.lockout_threshold for s in settings),
        idle_timeout_min=min(s.idle_timeout_min for s in settings),
        session_max_hours=min(s.session_max_hours for s in settings),
        password_min_length=max(s.password_min_length for s in settings),
    )


def member_tenant_ids(session: Session, user_id: int) -> list[int]:
    """Live tenants where the account holds an active membership."""
    return list(session.scalars(
        select(Membership.tenant_id).join(Tenant, Tenant.id == Membership.tenant_id)
        .where(Membership.user_id == user_id, Membership.active.is_(True), Tenant.status.in_(LIVE_STATUSES))
        .order_by(Membership.tenant_id)
    ))


def custom_roles(session: Session, tenant_id: int, *, include_retired: bool = False) -> list[TenantRole]:
    """The tenant's custom roles by name."""
    query = select(TenantRole).where(TenantRole.tenant_id == tenant_id).order_by(TenantRole.name)
    if not include_retired:
        query = query.where(TenantRole.active.is_(True))
    return list(session.scalars(query))


def custom_role_permissions(session: Session, tenant_id: int, names: list[str] | None = None) -> dict[str, list[str]]:
    """Active custom roles of the tenant as {name: permissions} (optionally only the named ones)."""
    query = select(TenantRole.name, TenantRole.permissions).where(
        TenantRole.tenant_id == tenant_id, TenantRole.active.is_(True))
    if names is not None:
        query = query.where(TenantRole.name.in_(names))
    return {row.name: list(row.permissions) for row in session.execute(query)}


def member_permissions(session: Session, *, tenant_id: int, roles: list[str]) -> frozenset[str]:
    """Permissions a membership holds in a tenant (built-in and custom roles)."""
    return permissions_of(roles, custom_role_permissions(session, tenant_id, roles))


def assignable_roles(session: Session, tenant_id: int) -> list[str]:
    """Every role name a membership of the tenant may hold."""
    return [*BUILTIN_ROLES, *(r.name for r in custom_roles(session, tenant_id))]


def members(session: Session, tenant_id: int) -> list[dict[str, Any]]:
    """Every membership of the tenant (active first), with its account."""
    rows = session.execute(
        select(Membership, User).join(User, User.id == Membership.user_id)
        .where(Membership.tenant_id == tenant_id)
        .order_by(Membership.active.desc(), func.lower(User.name), User.id)
    ).all()
    return [
        {"membership_id": m.id, "user_id": u.id, "name": u.name, "email": u.email, "user_code": u.user_code,
         "roles": list(m.roles), "active": m.active and u.active, "locked": u.locked_at is not None,
         "sso_only": u.password_hash is None, "joined_at": m.created_at, "deactivated_at": m.deactivated_at}
        for m, u in rows
    ]


def member(session: Session, *, tenant_id: int, user_id: int) -> tuple[Membership, User] | None:
    """One membership of the tenant and its account, or None."""
    row = session.execute(
        select(Membership, User).join(User, User.id == Membership.user_id)
        .where(Membership.tenant_id == tenant_id, Membership.user_id == user_id)
    ).first()
    return (row[0], row[1]) if row else None


def admin_recipients(session: Session, tenant_id: int) -> list[tuple[int, str, str]]:
    """Active members who manage users (they receive security alerts): (user id, email, name)."""
    rows = session.execute(
        select(User.id, User.email, User.name, Membership.roles).join(Membership, Membership.user_id == User.id)
        .where(Membership.tenant_id == tenant_id, Membership.active.is_(True), User.active.is_(True))
    ).all()
    custom = custom_role_permissions(session, tenant_id)
    return [(r.id, r.email, r.name) for r in rows if "users.manage" in permissions_of(r.roles, custom)]


def sso_provider(session: Session, tenant_id: int) -> SsoProvider | None:
    """The tenant's OIDC provider configuration, if any."""
    return session.get(SsoProvider, tenant_id)


def security_events(session: Session, *, kind: str = "", user_id: int | None = None, before_id: int | None = None,
                    limit: int = 100) -> list[SecurityEvent]:
    """Newest security events of the tenant (a tenant session), optionally filtered; pages by id."""
    query = select(SecurityEvent).order_by(SecurityEvent.id.desc()).limit(limit)
    if kind:
        query = query.where(SecurityEvent.kind.startswith(kind, autoescape=True))
    if user_id is not None:
        query = query.where(SecurityEvent.user_id == user_id)
    if before_id is not None:
        query = query.where(SecurityEvent.id < before_id)
    return list(session.scalars(query))


def open_alerts(session: Session) -> list[SecurityEvent]:
    """Alert events no admin has acknowledged yet (a tenant session)."""
    acknowledged = select(SecurityEvent.detail["event_id"].as_integer()).where(
        SecurityEvent.kind == "alert.acknowledged")
    return list(session.scalars(
        select(SecurityEvent).where(SecurityEvent.alert.is_(True), SecurityEvent.id.not_in(acknowledged))
        .order_by(SecurityEvent.id.desc())
    ))


def seats_taken(session: Session, tenant_id: int) -> int:
    """Places a plan's `users` limit counts: active members plus open, unexpired invitations (control plane)."""
    members = session.scalar(select(func.count()).select_from(Membership).join(User, User.id == Membership.user_id)
                             .where(Membership.tenant_id == tenant_id, Membership.active.is_(True),
                                    User.active.is_(True))) or 0
    return members + open_invitation_count(session, tenant_id)


def open_invitation_count(session: Session, tenant_id: int, *, email: str | None = None) -> int:
    """Invitations of the tenant (of one address, if given) neither accepted, withdrawn nor expired."""
    stmt = select(func.count()).select_from(Invitation).where(
        Invitation.tenant_id == tenant_id, Invitation.accepted_at.is_(None), Invitation.revoked_at.is_(None),
        Invitation.expires_at > func.now())
    if email is not None:
        stmt = stmt.where(Invitation.email == email)
    return session.scalar(stmt) or 0


def sso_switched_on(session: Session, tenant_id: int) -> bool:
    """Whether the tenant has an enabled single sign-on provider (control plane)."""
    provider = session.get(SsoProvider, tenant_id)
    return provider is not None and provider.enabled
