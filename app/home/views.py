"""The tenant home page."""

from __future__ import annotations

from typing import Any

from flask import g, render_template
from sqlalchemy import func, select

from app.core.jobs import OutboxMessage
from app.core.tenancy import tenant_transaction
from app.core.web import MEMBER, requires, tenant_blueprint
from app.onboarding.services import checklist

bp = tenant_blueprint("home", __name__, template_folder="templates")


@bp.get("/")
@requires(MEMBER)
def index() -> Any:
    """Show the tenant's home page."""
    with tenant_transaction(g.tenant) as session:
        pending_jobs = session.scalar(
            select(func.count()).select_from(OutboxMessage).where(OutboxMessage.finished_at.is_(None))
        )
        onboarding = checklist(session, g.tenant)
    return render_template("home/index.html", pending_jobs=pending_jobs, onboarding=onboarding)
