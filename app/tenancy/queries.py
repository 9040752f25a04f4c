"""Read-side queries of the tenant directory."""

from __future__ import annotations

from typing import Any

from flask import Flask
from sqlalchemy import select

from app.core.db import Database
from app.core.tenancy import TenantRef, control_session
from app.tenancy.models import Tenant

LIVE_STATUSES = ("active", "read_only", "suspended")


def active_tenant_refs(app: Flask) -> list[TenantRef]:
    """Every tenant whose schema exists and may have work to do."""
    db: Database = app.extensions["batchline.db"]
    with control_session(db=db) as session:
        rows = session.execute(
            select(Tenant.id, Tenant.slug, Tenant.schema, Tenant.role)
            .where(Tenant.status.in_(LIVE_STATUSES))
            .order_by(Tenant.id)
        ).all()
    return [TenantRef(id=r.id, slug=r.slug, schema=r.schema, role=r.role) for r in rows]


def tenant_by_slug(db: Database, slug: str) -> Tenant | None:
    """The directory row of a live tenant, or None."""
    with control_session(db=db) as session:
        return session.scalar(select(Tenant).where(Tenant.slug == slug, Tenant.status.in_(LIVE_STATUSES)))


def tenant_rows(db: Database) -> list[dict[str, Any]]:
    """Every tenant as a plain dict (for `tenants list --json`)."""
    with control_session(db=db) as session:
        tenants = session.scalars(select(Tenant).order_by(Tenant.id)).all()
        return [
            {"id": t.id, "slug": t.slug, "name": t.name, "schema": t.schema, "role": t.role, "status": t.status,
             "revision": t.revision, "cluster": t.cluster, "last_migration_error": t.last_migration_error,
             "migrated_at": t.migrated_at.isoformat() if t.migrated_at else None}
            for t in tenants
        ]
