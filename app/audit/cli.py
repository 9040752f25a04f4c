"""`batchline audit ...`: verify a tenant's chain, prove it records changes, anchor it at the TSA."""

from __future__ import annotations

import json
import sys
import time

import click
from flask import current_app
from flask.cli import with_appcontext

from app.audit.services import anchor_chain, check_selftest_change, make_selftest_change, verify_chain
from app.core.errors import BatchlineError
from app.core.tenancy import Actor, TenantRef, tenant_ref, tenant_transaction
from app.tenancy.queries import tenant_by_slug

CLI_ACTOR = Actor(member_id=None, label="system:batchline audit selftest")


def _tenant(slug: str) -> TenantRef:
    db = current_app.extensions["batchline.db"]
    tenant = tenant_by_slug(db, slug)
    if tenant is None:
        click.echo(f"error: no tenant {slug!r}", err=True)
        sys.exit(2)
    return tenant_ref(tenant.id, db=db, slug=tenant.slug)


@click.group("audit")
def audit_group() -> None:
    """Audit trail of a tenant (21 CFR 11.10(e))."""


@audit_group.command("verify")
@click.option("--tenant", "slug", required=True, help="Tenant slug.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as one JSON object.")
@with_appcontext
def audit_verify(slug: str, as_json: bool) -> None:
    """Walk the hash chain and the time-stamp anchors; exit 1 and name the first broken seq if tampered."""
    ref = _tenant(slug)
    started = time.perf_counter()
    with tenant_transaction(ref) as session:
        report = verify_chain(session)
    took = time.perf_counter() - started
    if as_json:
        click.echo(json.dumps({**report.as_dict(), "tenant": slug, "seconds": round(took, 3)}))
    elif report.ok:
        anchored = f", anchored up to seq {report.anchored_seq}" if report.anchored_seq else ""
        click.echo(f"ok: {report.events} events, head seq {report.head_seq} {report.head_hash}, "
                   f"{report.anchors} anchors{anchored} ({took:.2f}s)")
        for warning in report.warnings:
            click.echo(f"warning: {warning}")
    else:
        click.echo(f"BROKEN at seq {report.first_broken_seq}: {report.problem}")
    sys.exit(0 if report.ok else 1)


@audit_group.command("selftest")
@click.option("--tenant", "slug", required=True, help="Tenant slug.")
@with_appcontext
def audit_selftest(slug: str) -> None:
    """Make a known change, then check it appears in the trail exactly once, attributed and chained."""
    ref = _tenant(slug)
    with tenant_transaction(ref, actor=CLI_ACTOR) as session:
        selftest_id, nonce = make_selftest_change(session)
    with tenant_transaction(ref) as session:
        result = check_selftest_change(session, selftest_id=selftest_id, nonce=nonce)
    for name, passed in result.checks:
        click.echo(f"{'PASS' if passed else 'FAIL'}  {name}")
    click.echo(f"selftest {'passed' if result.ok else 'FAILED'}: audit_selftest #{result.selftest_id}, "
               f"event seq {result.seq}")
    sys.exit(0 if result.ok else 1)


@audit_group.command("anchor")
@click.option("--tenant", "slug", required=True, help="Tenant slug.")
@with_appcontext
def audit_anchor(slug: str) -> None:
    """Time-stamp the tenant's chain head at the TSA now."""
    ref = _tenant(slug)
    try:
        with tenant_transaction(ref) as session:
            anchor = anchor_chain(session, reason="manual")
    except BatchlineError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)
    if anchor is None:
        click.echo("nothing to anchor: the audit trail is empty")
    else:
        click.echo(f"anchored seq {anchor.seq} {anchor.head_hash} at {anchor.gen_time.isoformat()} "
                   f"(TSA serial {anchor.tsa_serial})")
