"""Control-plane models of the tenant directory."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Identity, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from app.core.db import CreatedAt, PublicBase


class Tenant(CreatedAt, PublicBase):
    """One customer company: its schema, its database role and its migration state."""

    __tablename__ = "tenants"

    #: Never reused; the schema and role names derive from it.
    id: Mapped[int] = mapped_column(Identity(), primary_key=True)
    #: URL slug, `^[a-z][a-z0-9-]{1,39}$`, unique forever.
    slug: Mapped[str] = mapped_column(String(40), unique=True)
    #: Company name as shown in the product.
    name: Mapped[str] = mapped_column(String(200))
    #: Schema holding all the tenant's data (`t_<id>`).
    schema: Mapped[str] = mapped_column(String(63), unique=True)
    #: Database role with privileges on that schema and nothing else.
    role: Mapped[str] = mapped_column(String(63), unique=True)
    #: provisioning / active / read_only / suspended.
    status: Mapped[str] = mapped_column(String(20), default="active")
    #: Database cluster the schema lives on (tenant directory; `default` until sharding is needed).
    cluster: Mapped[str] = mapped_column(String(63), default="default")
    #: Alembic revision of the tenant schema (None while provisioning).
    revision: Mapped[str | None] = mapped_column(String(64))
    #: Error of the last failed migration of this tenant, cleared on success.
    last_migration_error: Mapped[str | None] = mapped_column(Text)
    #: When the tenant schema was last migrated successfully.
    migrated_at: Mapped[datetime | None]
