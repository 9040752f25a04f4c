"""Sign-ups waiting for verification or being provisioned (control plane)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import ForeignKey, Identity, Index, String, Text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from app.core.db import CreatedAt, PublicBase


class Signup(CreatedAt, PublicBase):
    """One self-serve sign-up: what the visitor typed, its verification and its provisioning progress."""

    __tablename__ = "signups"
    __table_args__ = (Index("ix_signups_slug", "slug"), Index("ix_signups_email", "email"))

    #: Never reused; carried (signed) in the verification link.
    id: Mapped[int] = mapped_column(Identity(), primary_key=True)
    #: Company name as typed.
    company_name: Mapped[str] = mapped_column(String(200))
    #: Desired tenant slug; reserved while the sign-up is pending and unexpired.
    slug: Mapped[str] = mapped_column(String(40))
    #: Printed name of the first admin.
    admin_name: Mapped[str] = mapped_column(String(200))
    #: Lower-cased email of the first admin; verified by the signed link.
    email: Mapped[str] = mapped_column(String(254))
    #: argon2id hash of the chosen password (never the password itself).
    password_hash: Mapped[str] = mapped_column(String(255))
    #: Plan chosen for the trial (a key of tenants/plans.json).
    plan: Mapped[str] = mapped_column(String(40))
    #: pending (mail sent) / verified / provisioning / ready / failed / expired.
    status: Mapped[str] = mapped_column(String(20), default="pending")
    #: Provisioning progress: [{"key", "label", "state": waiting|running|done|failed, "seconds"}].
    steps: Mapped[list[dict[str, Any]]] = mapped_column(JSONB, default=list)
    #: The tenant made for it (None until provisioned).
    tenant_id: Mapped[int | None] = mapped_column(ForeignKey("public.tenants.id"))
    #: Error shown to the visitor when provisioning failed.
    error: Mapped[str | None] = mapped_column(Text)
    #: Until when the verification link works and the slug stays reserved.
    expires_at: Mapped[datetime]
    #: When the link was first clicked.
    verified_at: Mapped[datetime | None]
    #: When the tenant became usable.
    ready_at: Mapped[datetime | None]
    #: When the verified visitor was signed in to the new tenant (once only).
    entered_at: Mapped[datetime | None]
