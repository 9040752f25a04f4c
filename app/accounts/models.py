"""Global accounts and per-tenant memberships (control plane)."""

from __future__ import annotations

from flask_login import UserMixin
from sqlalchemy import ARRAY, ForeignKey, Identity, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from app.core.db import CreatedAt, PublicBase


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

    @property
    def is_active(self) -> bool:  # flask-login reads this
        return self.active


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
    #: Role names held in this tenant (Admin, Supervisor, Operator...).
    roles: Mapped[list[str]] = mapped_column(ARRAY(String(60)), default=list)
    #: False once deactivated in this tenant.
    active: Mapped[bool] = mapped_column(default=True)
