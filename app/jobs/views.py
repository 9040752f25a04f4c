"""Tenant admin page of background jobs."""

from __future__ import annotations

from typing import Any

from flask import g, render_template

from app.core.tenancy import tenant_transaction
from app.core.web import requires, tenant_blueprint
from app.jobs.queries import recent_jobs

bp = tenant_blueprint("jobs", __name__, template_folder="templates")


@bp.get("/admin/jobs")
@requires("jobs.read")
def index() -> Any:
    """List recent jobs with their status and last error."""
    with tenant_transaction(g.tenant) as session:
        jobs = recent_jobs(session)
    return render_template("jobs/index.html", jobs=jobs)
