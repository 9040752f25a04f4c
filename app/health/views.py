"""`/healthz` (process up) and `/readyz` (database, Redis, migrations at head)."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, current_app, jsonify
from sqlalchemy import func, select, text

from app.core.jobs import redis_connection
from app.core.tenancy import current_db
from app.core.web import PUBLIC, requires
from app.tenancy.models import Tenant
from app.tenancy.schema import alembic_config, head_revision

bp = Blueprint("health", __name__)


@bp.get("/healthz")
@requires(PUBLIC)
def healthz() -> Any:
    """The process answers."""
    return jsonify(status="ok")


@bp.get("/readyz")
@requires(PUBLIC)
def readyz() -> Any:
    """The database and Redis answer and both migration trees are at head."""
    checks: dict[str, Any] = {}
    ready = True
    try:
        with current_db().runtime.connect() as conn:
            public_rev = conn.execute(text("SELECT version_num FROM public.alembic_version")).scalar()
            public_head = head_revision(alembic_config("public"))
            tenant_head = head_revision(alembic_config("tenant", directory=current_app.config["TENANT_MIGRATIONS_DIR"]))
            behind = conn.execute(
                select(func.count()).select_from(Tenant)
                .where(Tenant.status == "active", Tenant.revision.is_distinct_from(tenant_head))
            ).scalar_one()
        checks["database"] = "ok"
        checks["public_migrations"] = "ok" if public_rev == public_head else f"at {public_rev}, head {public_head}"
        checks["tenant_migrations"] = "ok" if behind == 0 else f"{behind} tenant(s) behind {tenant_head}"
        ready = public_rev == public_head and behind == 0
    except Exception as exc:
        checks["database"] = f"error: {type(exc).__name__}"
        ready = False
    try:
        redis_connection().ping()
        checks["redis"] = "ok"
    except Exception as exc:
        checks["redis"] = f"error: {type(exc).__name__}"
        ready = False
    response = jsonify(status="ready" if ready else "not ready", checks=checks)
    response.status_code = 200 if ready else 503
    return response
