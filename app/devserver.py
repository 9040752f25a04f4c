"""`batchline run`: the whole product on one machine (web, worker, scheduler), embedded services if needed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import click

REPO_ROOT = Path(__file__).resolve().parents[1]
DEMO_EMAIL = "admin@demo.example.com"


def _ensure_services() -> None:
    """Start embedded PostgreSQL / Redis when no URL is configured, and export the URLs to child processes."""
    from app.core.embedded import embedded_postgres_url, embedded_redis_url

    instance = REPO_ROOT / "instance"
    if not (os.environ.get("DATABASE_URL") or os.environ.get("BATCHLINE_DATABASE_URL")):
        click.echo("DATABASE_URL unset: starting embedded PostgreSQL under instance/pg ...")
        os.environ["DATABASE_URL"] = embedded_postgres_url(instance / "pg")
    if not (os.environ.get("REDIS_URL") or os.environ.get("BATCHLINE_REDIS_URL")):
        click.echo("REDIS_URL unset: starting embedded Redis under instance/redis ...")
        os.environ["REDIS_URL"] = embedded_redis_url(instance / "redis")


def _prepare_demo() -> tuple[str, str]:
    """Migrate, create the demo tenant once, and return its admin credentials."""
    from app.factory import create_app
    from app.tenancy.migrate import upgrade_all_tenants
    from app.tenancy.queries import tenant_by_slug
    from app.tenancy.schema import upgrade_public
    from app.tenancy.services import create_tenant

    app = create_app()
    creds = Path(app.instance_path) / "demo_credentials.txt"
    creds.parent.mkdir(parents=True, exist_ok=True)
    with app.app_context():
        db = app.extensions["batchline.db"]
        with db.owner.connect() as conn, conn.begin():
            upgrade_public(conn, db.roles, password=app.config["RUNTIME_DB_PASSWORD"])
        upgrade_all_tenants(db, migrations_dir=app.config["TENANT_MIGRATIONS_DIR"], progress=click.echo)
        slug = app.config["DEMO_TENANT"]
        if tenant_by_slug(db, slug) is None:
            made = create_tenant(db, slug=slug, name="Demo Biologics", admin_email=DEMO_EMAIL,
                                 admin_name="Demo Admin")
            creds.write_text(f"{DEMO_EMAIL}\n{made.admin_password or '(existing account password)'}\n")
            creds.chmod(0o600)
        _seed_demo_batch(db, slug, Path(app.instance_path) / "demo_people.txt")
        from app.core.tenancy import tenant_ref, tenant_transaction
        from app.sensors.simulate import seed_demo_bioreactor

        demo = tenant_by_slug(db, slug)
        with tenant_transaction(tenant_ref(demo.id, db=db, slug=slug)) as session:
            equipment_id = seed_demo_bioreactor(session)
    db.dispose()
    email, password = [*creds.read_text().splitlines(), "", ""][:2] if creds.exists() else (DEMO_EMAIL, "?")
    return email, password, equipment_id


def _seed_demo_batch(db: Any, slug: str, people_file: Path) -> None:
    """Seed the demo plant, the approved fed-batch recipe and a batch on the floor, once (app.batches.demo)."""
    from app.batches.demo import create_demo_people, seed_demo
    from app.core.tenancy import tenant_ref, tenant_transaction
    from app.tenancy.queries import tenant_by_slug

    row = tenant_by_slug(db, slug)
    if row is None:
        return
    ref = tenant_ref(row.id, db=db, slug=row.slug)
    password = None
    if people_file.exists():
        password = (people_file.read_text().splitlines() or [""])[0].removeprefix("password: ") or None
    people, password = create_demo_people(ref, domain=f"{slug}.example.com", password=password)
    with tenant_transaction(ref, db=db) as session:
        batch = seed_demo(session, people=people, password=password)
        number = batch.batch_number if batch is not None else None
    people_file.write_text(f"password: {password}\n" + "".join(
        f"{p.email}  ({', '.join(p.roles)})\n" for p in people.values()))
    people_file.chmod(0o600)
    if number:
        click.echo(f"demo batch {number} (CHO fed-batch, 50 L) released to the floor of line USP-DEMO")


@click.command("run")
@click.option("--bind", default="127.0.0.1:8000", show_default=True)
@click.option("--no-worker", is_flag=True, help="Do not start the RQ worker and scheduler.")
@click.option("--no-simulate", is_flag=True, help="Do not feed the demo bioreactor with simulated readings.")
def run_command(bind: str, no_worker: bool, no_simulate: bool) -> None:
    """Run web (gunicorn), an RQ worker and the scheduler, with a demo tenant."""
    _ensure_services()
    # Links in mails written by the worker point at this server unless the deployment says otherwise.
    os.environ.setdefault("BATCHLINE_PUBLIC_BASE_URL", f"http://{bind}")
    email, password, equipment_id = _prepare_demo()
    exe = Path(sys.executable).parent
    # S603: fixed argument lists naming this virtualenv's own executables; nothing comes from user input.
    commands = [[str(exe / "gunicorn"), "-c", str(REPO_ROOT / "infra" / "gunicorn.conf.py"), "--bind", bind,
                 "app.wsgi:app"]]
    if not no_worker:
        commands += [[str(exe / "batchline"), "worker"], [str(exe / "batchline"), "scheduler"]]
    procs = [subprocess.Popen(argv, cwd=REPO_ROOT) for argv in commands]  # noqa: S603
    feeder: subprocess.Popen[bytes] | None = None
    if not no_simulate and not no_worker:
        # The demo feed: 20 minutes of in-control history at once (the baseline), then one sample a second
        # for a week, with a planted 1-sigma temperature shift three minutes after start.
        feed = [str(exe / "batchline"), "simulate", "--tenant", "demo", "--equipment", str(equipment_id),
                "--url", f"http://{bind}", "--backfill", "1200", "--samples", str(7 * 86400), "--realtime",
                "--fault", "shift:TT-101:1.0@1380", "--seed", str(int(time.time())),
                # ARL0 370 at one sample a second is a false alarm every ~6 min per sensor; the demo designs
                # for 5000 samples (a 1-sigma step is then caught in ~17 samples instead of ~12).
                "--arl0", "5000"]
        # Not in `procs`: the feed ending (or failing) must not stop the product.
        feeder = subprocess.Popen(feed, cwd=REPO_ROOT, stdout=subprocess.DEVNULL)  # noqa: S603
    click.echo("")
    click.echo(f"Batchline is running: http://{bind}/login")
    click.echo(f"  demo tenant: http://{bind}/t/demo/   sign in as {email} / {password}")
    if not no_simulate and not no_worker:
        click.echo(f"  live sensors of BR-101: http://{bind}/t/demo/sensors/ (a 1-sigma TT-101 shift in ~3 min)")
    people = Path(REPO_ROOT / "instance" / "demo_people.txt")
    if people.exists():
        click.echo(f"  demo people (operator, supervisor, QA...): see {people}")
    click.echo(f"  mail (invitations, password resets, alerts) is written to {REPO_ROOT / 'instance' / 'mail'}")
    click.echo("  Ctrl-C stops everything.")

    def stop(*_args: object) -> None:
        for p in [*procs, *([feeder] if feeder else [])]:
            p.terminate()
        for p in [*procs, *([feeder] if feeder else [])]:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
        sys.exit(0)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    while all(p.poll() is None for p in procs):
        time.sleep(1)
    click.echo("a child process exited; stopping", err=True)
    stop()
