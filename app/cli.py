"""The `batchline` command line (also reachable as `flask --app app ...`)."""

from __future__ import annotations

import gc
import json
import sys
from typing import Any

import click
from flask import current_app
from flask.cli import FlaskGroup, with_appcontext

from app.core.db import Database
from app.core.errors import BatchlineError


def _db() -> Database:
    return current_app.extensions["batchline.db"]


def _fail(exc: BatchlineError) -> None:
    click.echo(f"error: {exc}", err=True)
    sys.exit(2)


def _create_app(*_args: Any) -> Any:
    from app.factory import create_app

    return create_app()


@click.group("db")
def db_group() -> None:
    """Control-plane database."""


@db_group.command("upgrade")
@with_appcontext
def db_upgrade() -> None:
    """Migrate `public` to head and align the runtime role."""
    from app.tenancy.schema import upgrade_public

    db = _db()
    with db.owner.connect() as conn, conn.begin():
        revision = upgrade_public(conn, db.roles, password=current_app.config["RUNTIME_DB_PASSWORD"])
    click.echo(f"public at {revision}; runtime role {db.roles.runtime}")


@click.group("tenants")
def tenants_group() -> None:
    """Tenant directory, provisioning and fleet migrations."""


@tenants_group.command("create")
@click.argument("slug")
@click.option("--name", required=True, help="Company name.")
@click.option("--admin-email", required=True, help="Email of the first tenant admin.")
@click.option("--admin-name", default="", help="Printed name of the first admin.")
@click.option("--admin-password", default=None, help="Password for a new admin account (generated if omitted).")
@with_appcontext
def tenants_create(slug: str, name: str, admin_email: str, admin_name: str, admin_password: str | None) -> None:
    """Create a tenant: schema and role at head, and its first admin."""
    import time

    from app.tenancy.services import create_tenant

    started = time.perf_counter()
    try:
        made = create_tenant(_db(), slug=slug, name=name, admin_email=admin_email, admin_name=admin_name,
                             admin_password=admin_password,
                             migrations_dir=current_app.config["TENANT_MIGRATIONS_DIR"])
    except BatchlineError as exc:
        _fail(exc)
        return
    took = time.perf_counter() - started
    click.echo(f"tenant {slug} created in {took:.3f}s: schema {made.ref.schema}, role {made.ref.role}, "
               f"revision {made.revision}")
    click.echo(f"admin: {made.admin_email}" + (f" password: {made.admin_password}" if made.admin_password else ""))


@tenants_group.command("list")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
@with_appcontext
def tenants_list(as_json: bool) -> None:
    """List tenants with schema, role, revision and status."""
    from app.tenancy.queries import tenant_rows

    for row in tenant_rows(_db()):
        if as_json:
            click.echo(json.dumps(row))
        else:
            click.echo(f"{row['slug']:<24} {row['schema']:<10} {row['status']:<12} {row['revision'] or '-':<10} "
                       f"{row['role']}")


@tenants_group.command("upgrade")
@click.option("--all", "all_", is_flag=True, required=True, help="Upgrade every tenant not at head.")
@click.option("--jobs", default=4, show_default=True, help="Tenants migrated in parallel.")
@with_appcontext
def tenants_upgrade(all_: bool, jobs: int) -> None:
    """Upgrade every tenant schema to head (resumable; one transaction per tenant)."""
    from app.tenancy.migrate import upgrade_all_tenants

    report = upgrade_all_tenants(_db(), jobs=jobs, migrations_dir=current_app.config["TENANT_MIGRATIONS_DIR"],
                                 progress=click.echo)
    click.echo(f"upgraded {len(report.upgraded)}, skipped {len(report.skipped)}, failed {len(report.failed)}")
    for slug, error in sorted(report.failed.items()):
        click.echo(f"FAILED {slug}: {error}", err=True)
    if not report.ok:
        sys.exit(1)


@tenants_group.command("drop")
@click.argument("slug")
@click.option("--yes", is_flag=True, help="Confirm: the tenant's schema and role are dropped.")
@with_appcontext
def tenants_drop(slug: str, yes: bool) -> None:
    """Decommission a tenant (its id and slug are never reused)."""
    from app.tenancy.services import drop_tenant

    if not yes:
        click.echo("refusing without --yes: this drops every record of the tenant", err=True)
        sys.exit(2)
    try:
        drop_tenant(_db(), slug=slug)
    except BatchlineError as exc:
        _fail(exc)
    click.echo(f"tenant {slug} dropped")


@click.command("worker")
@click.option("--burst", is_flag=True, help="Exit once the queues are empty.")
@click.option("--mode", type=click.Choice(["auto", "fork", "in-process"]), default="auto", show_default=True,
              help="fork: a fresh work horse per job; in-process: jobs run in the worker itself (imports and DB "
                   "pools reused); auto: in-process when every queue is in WORKER_IN_PROCESS_QUEUES.")
@click.argument("queues", nargs=-1)
@with_appcontext
def worker(burst: bool, mode: str, queues: tuple[str, ...]) -> None:
    """Run an RQ worker on the given queues (default: all)."""
    import redis
    from rq.serializers import JSONSerializer

    from app.core.jobs import QUEUES, dispose_pools_after_fork, import_job_modules, worker_class

    config = current_app.config
    names = list(queues or QUEUES)
    cls = worker_class(names, config["WORKER_IN_PROCESS_QUEUES"], mode)
    import_job_modules()  # before the first job, not during it (and inherited by forked work horses)
    # What is loaded now (modules, mappers, the app) lives as long as the worker: out of the garbage collector's
    # sight, a full collection inside a job no longer walks it (130-160 ms measured in a worker of this size).
    gc.freeze()
    # RQ forks its scheduler (and, in fork mode, a horse per job): none of them may share our pooled connections.
    dispose_pools_after_fork(_db())
    # The worker blocks on BRPOP for minutes: no short socket timeout here, unlike the web client.
    conn = redis.Redis.from_url(config["REDIS_URL"])
    worker = cls(names, connection=conn, serializer=JSONSerializer,
                 job_monitoring_interval=int(config["WORKER_JOB_MONITORING_INTERVAL_S"]),
                 maintenance_interval=int(config["WORKER_MAINTENANCE_INTERVAL_S"]))
    worker.heartbeat_grace_s = int(config["WORKER_HEARTBEAT_GRACE_S"])
    # with_scheduler: retries with a back-off interval wait in RQ's scheduled registry; without a scheduler
    # they would never be moved back to their queue.
    worker.work(burst=burst, with_scheduler=True)


@click.command("scheduler")
@click.option("--once", is_flag=True, help="One sweep, then exit.")
@with_appcontext
def scheduler(once: bool) -> None:
    """Run periodic work: the outbox relay (exactly one scheduler per deployment)."""
    from app.core.jobs import run_relay_loop

    run_relay_loop(current_app._get_current_object(), once=once)  # type: ignore[attr-defined]


from app.audit.cli import audit_group  # noqa: E402  (area commands register after the core ones)
from app.billing.cli import billing_group  # noqa: E402
from app.jobs.cli import jobs_group  # noqa: E402
from app.recipes.cli import validation_group  # noqa: E402
from app.sensors.cli import gateway_group, sensors_group, simulate  # noqa: E402

COMMANDS = [db_group, tenants_group, worker, scheduler, jobs_group, audit_group, billing_group,
            validation_group, gateway_group, simulate, sensors_group]


def register_flask_cli(app: Any) -> None:
    """Expose the same commands under `flask --app app ...`."""
    for command in COMMANDS:
        app.cli.add_command(command)


@click.group(cls=FlaskGroup, create_app=_create_app, add_default_commands=False, add_version_option=False)
def cli() -> None:
    """Batchline: multi-tenant MES."""


for _command in COMMANDS:
    cli.add_command(_command)

from app.devserver import run_command  # noqa: E402  (imports cli helpers above)

cli.add_command(run_command)
