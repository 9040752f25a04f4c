"""`batchline jobs ...` commands."""

from __future__ import annotations

import json
import sys

import click
from flask import current_app
from flask.cli import with_appcontext

from app.core.tenancy import tenant_transaction
from app.jobs.queries import recent_jobs
from app.tenancy.queries import tenant_by_slug


@click.group("jobs")
def jobs_group() -> None:
    """Background jobs of a tenant."""


@jobs_group.command("list")
@click.option("--tenant", "slug", required=True)
@click.option("--json", "as_json", is_flag=True)
@with_appcontext
def jobs_list(slug: str, as_json: bool) -> None:
    """List a tenant's recent jobs."""
    db = current_app.extensions["batchline.db"]
    tenant = tenant_by_slug(db, slug)
    if tenant is None:
        click.echo(f"error: no tenant {slug!r}", err=True)
        sys.exit(2)
    with tenant_transaction(tenant.id) as session:
        jobs = recent_jobs(session)
    for job in jobs:
        click.echo(json.dumps(job) if as_json else f"{job['id']:>6} {job['status']:<9} {job['func']}")
