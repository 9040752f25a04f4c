"""Accounts: global users, memberships, custom roles, security settings, invitations, SSO (control plane), and the
per-tenant security event log (tenant schema)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from flask_login import UserMixin
from sqlalchemy import (
    ARRAY,
    DDL,
    Computed,
    ForeignKey,
    Identity,
    Index,
    String,
    Text,
    UniqueConstraint,
    event,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from app.core.db import CreatedAt, PublicBase, TenantBase


class User(UserMixin, CreatedAt, PublicBase):
    """A person. The id is unique forever: users are deactivated, never deleted or reused."""

    __tablename__ = "users"

    #: Never reused.
    id: Mapped[int] = mapped_column(Identity(), primary_key=True)
    #: Lower-cased email; sign-in name.
    email: Mapped[str] = mapped_column(String(254), unique=True)
    #: Printed name (signature manifestations copy it at signing time).
    name: Mapped[str] = mapped_column(String(200))
    #: argon2id hash (PHC string); None for SSO-only accounts.
    password_hash: Mapped[str | None] = mapped_column(String(255))
    #: False once deactivated; the row stays on every record the user touched.
    active: Mapped[bool] = mapped_column(default=True)
    #: Badge / user code for the shared-tablet quick switch; derived from the never-reused id, so never reused.
    user_code: Mapped[str] = mapped_column(
        String(20), Computed("'U' || lpad(id::text, 6, '0')", persisted=True), unique=True)
    #: Consecutive wrong passwords (sign-in, quick switch, e-signature); reset by a correct one.
    failed_logins: Mapped[int] = mapped_column(default=0, server_default=text("0"))
    #: When the account was locked after too many failures (21 CFR 11.300(d)); None while unlocked.
    locked_at: Mapped[datetime | None]
    #: When the password was last set (database clock).
    password_changed_at: Mapped[datetime | None]
    #: When the account was deactivated (database clock).
    deactivated_at: Mapped[datetime | None]

    @property
    def is_active(self) -> bool:  # flask-login reads this
        return self.active and self.locked_at is None

    @property
    def label(self) -> str:
        """Printed name and email, as security events and lists show a person."""
        return f"{self.name} <{self.email}>"


class Membership(CreatedAt, PublicBase):
    """A user's membership of one tenant: everything done in the tenant is attributed to it."""

    __tablename__ = "memberships"
    __table_args__ = (UniqueConstraint("user_id", "tenant_id"),)

    #: Never reused; audit events and signatures reference it.
    id: Mapped[int] = mapped_column(Identity(), primary_key=True)
    #: The account.
    user_id: Mapped[int] = mapped_column(ForeignKey("public.users.id"))
    #: The tenant (control plane only: no foreign key into any tenant schema).
    tenant_id: Mapped[int] = mapped_column(ForeignKey("public.tenants.id", ondelete="CASCADE"))
    #: Role names held in this tenant (built-in names or the tenant's custom roles).
    roles: Mapped[list[str]] = mapped_column(ARRAY(String(60)), default=list)
    #: False once deactivated in this tenant; the row stays.
    active: Mapped[bool] = mapped_column(default=True)
    #: When the membership was last deactivated (database clock).
    deactivated_at: Mapped[datetime | None]
    #: Account of the admin who deactivated it.
    deactivated_by: Mapped[int | None] = mapped_column(ForeignKey("public.users.id"))


class TenantRole(CreatedAt, PublicBase):
    """A tenant's custom role: a named set of the same permissions the built-in roles use."""

    __tablename__ = "tenant_roles"
    __table_args__ = (UniqueConstraint("tenant_id", "name"),)

    #: Never reused.
    id: Mapped[int] = mapped_column(Identity(), primary_key=True)
    #: Owning tenant.
    tenant_id: Mapped[int] = mapped_column(ForeignKey("public.tenants.id", ondelete="CASCADE"))
    #: Role name as memberships hold it; fixed once created, so memberships never point at a renamed role.
    name: Mapped[str] = mapped_column(String(60))
    #: What the role is for, shown to admins.
    description: Mapped[str] = mapped_column(String(300), default="")
    #: Named permissions (see `app.core.permissions.PERMISSIONS`).
    permissions: Mapped[list[str]] = mapped_column(ARRAY(String(60)), default=list)
    #: False once retired (only when nobody holds it); the row stays for the record.
    active: Mapped[bool] = mapped_column(default=True)
    #: Account that created the role.
    created_by: Mapped[int | None] = mapped_column(ForeignKey("public.users.id"))


class SecuritySettings(PublicBase):
    """Per-tenant security settings; a tenant without a row uses the defaults. Control plane, because sign-in
    and session checks need them before any tenant transaction (and across the tenants of one account)."""

    __tablename__ = "tenant_security_settings"

    #: The tenant.
    tenant_id: Mapped[int] = mapped_column(ForeignKey("public.tenants.id", ondelete="CASCADE"), primary_key=True)
    #: Consecutive wrong passwords that lock an account (3..10).
    lockout_threshold: Mapped[int] = mapped_column(default=5)
    #: Minutes without a request before the session ends (1..30).
    idle_timeout_min: Mapped[int] = mapped_column(default=15)
    #: Hours after sign-in when the session ends regardless of activity (1..24).
    session_max_hours: Mapped[int] = mapped_column(default=12)
    #: Minimum password length (12..64).
    password_min_length: Mapped[int] = mapped_column(default=12)
    #: When last changed (database clock).
    updated_at: Mapped[datetime] = mapped_column(server_default=text("now()"))
    #: Account that last changed them.
    updated_by: Mapped[int | None] = mapped_column(ForeignKey("public.users.id"))


class Invitation(CreatedAt, PublicBase):
    """An invitation of an email address to a tenant, accepted once through a signed, expiring link."""

    __tablename__ = "invitations"
    __table_args__ = (Index("ix_invitations_tenant_id_email", "tenant_id", "email"),)

    #: Never reused; the signed link carries it.
    id: Mapped[int] = mapped_column(Identity(), primary_key=True)
    #: Inviting tenant.
    tenant_id: Mapped[int] = mapped_column(ForeignKey("public.tenants.id", ondelete="CASCADE"))
    #: Lower-cased invited email.
    email: Mapped[str] = mapped_column(String(254))
    #: Roles the membership gets on acceptance.
    roles: Mapped[list[str]] = mapped_column(ARRAY(String(60)), default=list)
    #: Random value inside the signed link; a link whose nonce does not match is refused.
    nonce: Mapped[str] = mapped_column(String(64))
    #: Admin who invited.
    invited_by: Mapped[int] = mapped_column(ForeignKey("public.users.id"))
    #: After this the link is refused.
    expires_at: Mapped[datetime]
    #: When accepted (single use).
    accepted_at: Mapped[datetime | None]
    #: The account that accepted it.
    accepted_user_id: Mapped[int | None] = mapped_column(ForeignKey("public.users.id"))
    #: When withdrawn (by an admin, or by a newer invitation of the same email).
    revoked_at: Mapped[datetime | None]


class PasswordReset(CreatedAt, PublicBase):
    """A password reset link: signed, single-use, expiring; only a hash of its secret is stored."""

    __tablename__ = "password_resets"

    #: Never reused; the signed link carries it.
    id: Mapped[int] = mapped_column(Identity(), primary_key=True)
    #: The account.
    user_id: Mapped[int] = mapped_column(ForeignKey("public.users.id"), index=True)
    #: SHA-256 of the random secret inside the link.
    nonce_hash: Mapped[str] = mapped_column(String(64))
    #: After this the link is refused.
    expires_at: Mapped[datetime]
    #: When used (single use).
    used_at: Mapped[datetime | None]
    #: Address the request came from.
    requested_ip: Mapped[str | None] = mapped_column(String(45))


class SsoProvider(PublicBase):
    """A tenant's OpenID Connect provider (authorization code + PKCE)."""

    __tablename__ = "tenant_sso_providers"

    #: The tenant (one provider per tenant).
    tenant_id: Mapped[int] = mapped_column(ForeignKey("public.tenants.id", ondelete="CASCADE"), primary_key=True)
    #: Issuer URL exactly as the provider's `iss` claim states it.
    issuer: Mapped[str] = mapped_column(String(500))
    #: OAuth client id registered at the provider.
    client_id: Mapped[str] = mapped_column(String(255))
    #: Client secret, sealed with a key derived from SECRET_KEY (`app.core.crypto`).
    client_secret_sealed: Mapped[str] = mapped_column(Text)
    #: Email domains whose verified users may join without an invitation (just-in-time membership).
    allowed_domains: Mapped[list[str]] = mapped_column(ARRAY(String(253)), default=list)
    #: Roles a just-in-time member from an allowed domain gets.
    default_roles: Mapped[list[str]] = mapped_column(ARRAY(String(60)), default=list)
    #: SSO sign-in offered only while enabled.
    enabled: Mapped[bool] = mapped_column(default=True)
    #: Policy "SSO required": members with a linked identity re-authenticate through the provider to e-sign,
    #: even if their account also has a password (which signing then refuses).
    sso_required: Mapped[bool] = mapped_column(default=False, server_default=text("false"))
    #: When last changed (database clock).
    updated_at: Mapped[datetime] = mapped_column(server_default=text("now()"))
    #: Account that last changed it.
    updated_by: Mapped[int | None] = mapped_column(ForeignKey("public.users.id"))


class SsoIdentity(CreatedAt, PublicBase):
    """Link of an account to a provider subject: SSO users are matched by (issuer, subject), never by email."""

    __tablename__ = "sso_identities"
    __table_args__ = (UniqueConstraint("issuer", "subject"),)

    #: Never reused.
    id: Mapped[int] = mapped_column(Identity(), primary_key=True)
    #: Issuer URL.
    issuer: Mapped[str] = mapped_column(String(500))
    #: The provider's stable subject identifier (`sub`).
    subject: Mapped[str] = mapped_column(String(255))
    #: The linked account.
    user_id: Mapped[int] = mapped_column(ForeignKey("public.users.id"), index=True)
    #: Tenant whose provider the link was made through.
    tenant_id: Mapped[int] = mapped_column(ForeignKey("public.tenants.id", ondelete="CASCADE"))


class SecurityEvent(TenantBase):
    """A security-relevant event in one tenant: who, when (database clock), from where, what.

    Append-only (privileges and a trigger), ordered by id, so the audit trail can hash-chain it as it stands.
    """

    __tablename__ = "security_events"
    __table_args__ = (
        Index("ix_security_events_kind_id", "kind", "id"),
        Index("ix_security_events_user_id_id", "user_id", "id"),
        Index("ix_security_events_open_alerts", "id", postgresql_where=text("alert")),
        # `gmp`: the audit area's convention (every tenant table declares it). Security events are not batch
        # records; they carry their own append-only trigger and are ordered by id, ready to be chained.
        {"info": {"privileges": "append_only", "gmp": False}},
    )

    #: Order of recording.
    id: Mapped[int] = mapped_column(Identity(), primary_key=True)
    #: When it happened, by the database server's clock (UTC).
    occurred_at: Mapped[datetime] = mapped_column(server_default=text("now()"))
    #: What happened: `signin.success`, `signin.failure`, `account.locked`, `role.changed`...
    kind: Mapped[str] = mapped_column(String(60))
    #: The account the event is about (global, never-reused id); None for an unknown sign-in name.
    user_id: Mapped[int | None]
    #: That account's membership of this tenant, if any.
    membership_id: Mapped[int | None]
    #: Printed name and email of the account at the time.
    user_label: Mapped[str] = mapped_column(String(460), default="")
    #: Who did it, when someone else did (an admin changing roles); None when the user acted.
    actor_user_id: Mapped[int | None]
    #: Printed name and email of the actor at the time.
    actor_label: Mapped[str] = mapped_column(String(460), default="")
    #: Channel: web, switch, sso, esign, api, cli, system.
    source: Mapped[str] = mapped_column(String(40), default="web")
    #: Client address as seen by the app (after the trusted proxies).
    ip: Mapped[str | None] = mapped_column(String(45))
    #: Client user agent, truncated.
    user_agent: Mapped[str | None] = mapped_column(String(300))
    #: What changed (before/after, reason); never a password or token.
    detail: Mapped[dict[str, Any]] = mapped_column(JSONB, default=dict)
    #: True for events admins are alerted to (lockouts).
    alert: Mapped[bool] = mapped_column(default=False)


#: GMP records are never changed or removed: the trigger refuses it even for a role that holds the privilege.
SECURITY_EVENTS_APPEND_ONLY_FUNCTION = """\
CREATE FUNCTION security_events_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  RAISE EXCEPTION USING MESSAGE = 'security_events is append-only: ' || TG_OP || ' refused',
    ERRCODE = 'insufficient_privilege';
END;
$$"""
SECURITY_EVENTS_APPEND_ONLY_TRIGGER = (
    "CREATE TRIGGER security_events_append_only BEFORE UPDATE OR DELETE ON security_events "
    "FOR EACH ROW EXECUTE FUNCTION security_events_refuse_change()"
)

event.listen(SecurityEvent.__table__, "after_create", DDL(SECURITY_EVENTS_APPEND_ONLY_FUNCTION))
event.listen(SecurityEvent.__table__, "after_create", DDL(SECURITY_EVENTS_APPEND_ONLY_TRIGGER))
