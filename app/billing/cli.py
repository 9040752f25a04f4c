"""`batchline billing ...` commands."""

from __future__ import annotations

import click
from flask import current_app
from flask.cli import with_appcontext

from app.billing.gateway import billing_enabled
from app.billing.jobs import enforce_billing_deadlines
from app.billing.services import sync_plans


@click.group("billing")
def billing_group() -> None:
    """Plans, Stripe and billing deadlines."""


@billing_group.command("sync-plans")
@with_appcontext
def sync_plans_command() -> None:
    """Create the catalogue's plans in Stripe (idempotent; ids come from tenants/plans.json)."""
    if not billing_enabled():
        raise click.ClickException("billing is off: set STRIPE_SECRET_KEY")
    for plan_id in sync_plans():
        click.echo(f"stripe plan {plan_id}: ok")


@billing_group.command("enforce")
@with_appcontext
def enforce_command() -> None:
    """Expire ended trials and lapsed grace periods now (the scheduler does this every sweep)."""
    changed = enforce_billing_deadlines(current_app._get_current_object())  # type: ignore[attr-defined]
    click.echo(f"{len(changed)} tenant(s) turned read-only")
