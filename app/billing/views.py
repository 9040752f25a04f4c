"""The billing page of a tenant, its actions, and Stripe's webhook endpoint."""

from __future__ import annotations

import re
import uuid
from typing import Any

import stripe
from flask import Blueprint, current_app, flash, g, redirect, render_template, request, url_for

from app.billing import services
from app.billing.gateway import billing_enabled
from app.billing.jobs import enforce_billing_deadlines
from app.billing.queries import banner_for, billing_overview
from app.core.errors import ValidationError
from app.core.jobs import PERIODIC_SWEEPS, enqueue_control
from app.core.tenancy import control_session
from app.core.web import PUBLIC, allowed_when_read_only, problem, requires, tenant_blueprint

bp = tenant_blueprint("billing", __name__, template_folder="templates")
webhook_bp = Blueprint("billing_webhook", __name__)

if enforce_billing_deadlines not in PERIODIC_SWEEPS:
    PERIODIC_SWEEPS.append(enforce_billing_deadlines)

_OPERATION_RE = re.compile(r"^[A-Za-z0-9-]{8,64}$")


def _operation_id() -> str:
    """The form's operation id: the same id on a double submit, so Stripe sees one idempotent request."""
    op = request.form.get("operation_id") or ""
    if not _OPERATION_RE.match(op):
        raise ValidationError("the form is missing its operation id; reload the billing page and try again")
    return op


def _absolute(endpoint: str, **values: Any) -> str:
    base = current_app.config.get("PUBLIC_BASE_URL")
    path = url_for(endpoint, **values)
    return base.rstrip("/") + path if base else url_for(endpoint, _external=True, **values)


@bp.app_context_processor
def _billing_banner() -> dict[str, Any]:
    tenant = g.get("tenant")
    if tenant is None:
        return {}
    with control_session() as session:
        return {"billing_banner": banner_for(session, tenant.id, g.get("tenant_status", "active"))}


@bp.get("/billing")
@requires("billing.manage")
def index() -> Any:
    """Plan, status, next invoice and usage against limits, with the ways to change them."""
    with control_session() as session:
        overview = billing_overview(session, g.tenant.id)
    return render_template("billing/index.html", o=overview, operation_id=str(uuid.uuid4()))


@bp.post("/billing/checkout")
@requires("billing.manage")
@allowed_when_read_only
def checkout() -> Any:
    """Send the admin to Stripe Checkout for the chosen plan."""
    plan, op = request.form.get("plan", ""), _operation_id()
    with control_session() as session:
        url = services.checkout_url(session, tenant_id=g.tenant.id, plan=plan, operation_id=op,
                                    success_url=_absolute("billing.index") + "?checkout=done",
                                    cancel_url=_absolute("billing.index"))
    return redirect(url, code=303)


@bp.post("/billing/plan")
@requires("billing.manage")
@allowed_when_read_only
def change_plan() -> Any:
    """Upgrade or downgrade the subscription (or the trial's plan)."""
    plan, op = request.form.get("plan", ""), _operation_id()
    with control_session() as session:
        sub = services.change_plan(session, tenant_id=g.tenant.id, plan=plan, operation_id=op)
    flash(f"Plan changed to {sub.plan}.", "ok")
    return redirect(url_for("billing.index"))


@bp.post("/billing/cancel")
@requires("billing.manage")
@allowed_when_read_only
def cancel() -> Any:
    """Cancel at the end of the paid period."""
    op = _operation_id()
    with control_session() as session:
        services.cancel_subscription(session, tenant_id=g.tenant.id, operation_id=op, at_period_end=True)
    flash("Your subscription ends at the end of the paid period; your records stay readable after that.", "ok")
    return redirect(url_for("billing.index"))


@bp.post("/billing/portal")
@requires("billing.manage")
@allowed_when_read_only
def portal() -> Any:
    """Open the Stripe Customer Portal (cards, invoices)."""
    op = _operation_id()
    with control_session() as session:
        url = services.portal_url(session, tenant_id=g.tenant.id, return_url=_absolute("billing.index"),
                                  operation_id=op)
    return redirect(url, code=303)


@webhook_bp.post("/billing/webhook")
@requires(PUBLIC)
def webhook() -> Any:
    """Verify a Stripe event on the raw body, store it once, and process it as a job."""
    secret = current_app.config.get("STRIPE_WEBHOOK_SECRET")
    if not billing_enabled() or not secret:
        return problem(404, "Billing is off", "this deployment has no STRIPE_SECRET_KEY / STRIPE_WEBHOOK_SECRET")
    payload = request.get_data(cache=False)
    try:
        stripe.Webhook.construct_event(payload, request.headers.get("Stripe-Signature", ""), secret)
    except (ValueError, stripe.SignatureVerificationError) as exc:
        return problem(400, "Invalid webhook", f"signature or payload rejected: {exc}")
    with control_session() as session:
        event_id, first = services.record_stripe_event(session, payload=payload)
        if first:
            enqueue_control(session, "app.billing.jobs:process_stripe_event", event_id=event_id)
    return {"received": event_id, "duplicate": not first}
