"""Read side of billing: what the billing page and the API show."""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from app.billing.gateway import billing_enabled, gateway
from app.billing.plans import ENTITLEMENTS, catalogue
from app.billing.services import metered_this_month, plan_of, subscription_of, usage_of


def billing_overview(session: Session, tenant_id: int, *, with_invoice: bool = True) -> dict[str, Any]:
    """Plan, status, trial, next invoice and usage against limits of one tenant."""
    plan = plan_of(session, tenant_id)
    sub = subscription_of(session, tenant_id)
    usage = []
    for entitlement in ENTITLEMENTS:
        value = plan.entitlements.get(entitlement)
        if isinstance(value, bool):
            usage.append({"entitlement": entitlement, "included": value, "limit": None, "used": None})
        elif entitlement == "readings_per_month":
            # Readings beyond the allowance are kept (never dropped) and shown, so the upgrade prompt is honest.
            used, over = metered_this_month(session, tenant_id, entitlement)
            usage.append({"entitlement": entitlement, "included": True, "limit": value, "used": used,
                          "over_allowance": over})
        else:
            usage.append({"entitlement": entitlement, "included": True, "limit": value,
                          "used": usage_of(session, tenant_id, entitlement)})
    invoice = None
    if with_invoice and billing_enabled() and sub is not None and sub.stripe_subscription_id and \
            sub.stripe_customer_id and sub.status not in ("canceled", "unpaid", "incomplete_expired"):
        preview = gateway().upcoming_invoice(customer_id=sub.stripe_customer_id,
                                             subscription_id=sub.stripe_subscription_id)
        if preview:
            invoice = {"amount_due_cents": preview.get("amount_due"), "currency": preview.get("currency"),
                       "date": preview.get("next_payment_attempt") or preview.get("period_end")}
    live = bool(sub and sub.stripe_subscription_id and sub.status not in ("canceled", "unpaid", "incomplete_expired"))
    choices = []
    for candidate in catalogue().plans.values():
        # Without a live subscription (trial, expired, ended) a new one goes through Stripe Checkout.
        action = ("current" if candidate.key == plan.key else "change") if live else "checkout"
        choices.append({"plan": candidate, "action": action})
    return {
        "billing_enabled": billing_enabled(),
        "live_subscription": live,
        "choices": choices,
        "plan": {"key": plan.key, "name": plan.name, "amount_cents": plan.amount_cents},
        "status": sub.status if sub else ("local" if not billing_enabled() else "none"),
        "trial_ends_at": sub.trial_ends_at if sub else None,
        "current_period_end": sub.current_period_end if sub else None,
        "cancel_at_period_end": bool(sub and sub.cancel_at_period_end),
        "grace_until": sub.grace_until if sub else None,
        "has_subscription": bool(sub and sub.stripe_subscription_id),
        "has_customer": bool(sub and sub.stripe_customer_id),
        "next_invoice": invoice,
        "usage": usage,
    }


def banner_for(session: Session, tenant_id: int, tenant_status: str) -> tuple[str, str] | None:
    """The billing banner a member sees on every page: (level, message), or None."""
    if tenant_status == "read_only":
        return ("bad", "This workspace is read-only: its subscription has ended. All records stay readable and "
                       "exportable; renew on the billing page to record new work.")
    sub = subscription_of(session, tenant_id)
    if sub is None or not billing_enabled():
        return None
    if sub.status == "past_due":
        until = sub.grace_until.strftime("%Y-%m-%d") if sub.grace_until else "soon"
        return ("warn", f"Payment failed. Update your payment method before {until} (UTC) or the workspace "
                        "turns read-only.")
    if sub.status == "trialing" and sub.trial_ends_at is not None:
        return ("info", f"Trial of the {catalogue().get(sub.plan).name} plan until "
                        f"{sub.trial_ends_at.strftime('%Y-%m-%d')} (UTC).")
    return None
