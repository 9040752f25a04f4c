"""`batchline validation ...`: the validation report of the recipe template library, run on this instance."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click
from flask import current_app
from flask.cli import with_appcontext
from sqlalchemy import select

from app.billing.services import require_feature
from app.core.errors import PaymentRequired
from app.core.tenancy import Actor, control_session, tenant_ref, tenant_transaction


@click.group("validation")
def validation_group() -> None:
    """Validation evidence (IQ/OQ) of this installation."""


@validation_group.command("report")
@click.option("--tenant", "slug", required=True, help="Tenant slug: the report runs in that tenant's schema.")
@click.option("--pdf", "pdf_path", type=click.Path(dir_okay=False, path_type=Path), help="Write the report as PDF.")
@click.option("--html", "html_path", type=click.Path(dir_okay=False, path_type=Path), help="Write it as HTML.")
@click.option("--performed-by", default="", help="Name of the person running it (printed on the report).")
@click.option("--engine", is_flag=True, help="Also replay every scenario through the batch engine in this tenant "
              "(writes real batch records: use a tenant kept for validation).")
@click.option("--template", "template_ids", multiple=True, help="With --engine: replay only these templates.")
@with_appcontext
def validation_report(slug: str, pdf_path: Path | None, html_path: Path | None, performed_by: str, engine: bool,
                      template_ids: tuple[str, ...]) -> None:
    """Run every template scenario on this instance, store the run and write the report; exit 1 on a failure."""
    from app.recipes import report
    from app.tenancy.models import Tenant

    db = current_app.extensions["batchline.db"]
    with control_session(db=db) as session:
        row = session.execute(select(Tenant.id, Tenant.slug).where(Tenant.slug == slug,
                                                                   Tenant.status != "dropped")).first()
    if row is None:
        click.echo(f"error: no tenant {slug!r}", err=True)
        sys.exit(2)
    ref = tenant_ref(row.id, db=db, slug=row.slug)
    label = f"batchline validation report (CLI){': ' + performed_by if performed_by else ''}"
    try:
        engine_replay = None
        if engine:
            from app.batches.scenario_replay import replay_for_report

            with tenant_transaction(ref, db=db, actor=Actor(member_id=None, label=label)) as session:
                require_feature(session, tenant_id=ref.id, feature="validation_report")  # before any batch is made

            def progress(template_id: str, replay: Any) -> None:
                click.echo(f"engine {template_id} {replay.scenario_id} batch {replay.batch_number}: "
                           f"{'passed' if replay.passed else 'FAILED'}")

            engine_replay = replay_for_report(ref, template_ids=list(template_ids) or None, progress=progress)
        with tenant_transaction(ref, db=db, actor=Actor(member_id=None, label=label)) as session:
            run = report.run_validation(session, tenant=ref, engine_replay=engine_replay)
            passed = report.run_passed(run)
            html = report.render_html(run, tenant=ref) if html_path else None
            pdf = report.render_pdf(run, tenant=ref) if pdf_path else None
    except PaymentRequired as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)
    if html_path and html is not None:
        html_path.write_text(html, encoding="utf-8")
        click.echo(f"wrote {html_path}")
    if pdf_path and pdf is not None:
        pdf_path.write_bytes(pdf)
        click.echo(f"wrote {pdf_path}")
    click.echo(f"validation run {run.id} for {slug}: {run.scenarios_passed} of {run.scenarios_run} scenarios passed; "
               f"{'PASSED' if passed else 'FAILED'}")
    click.echo(f"evidence sha256 {run.evidence_hash}")
    if not passed:
        sys.exit(1)
