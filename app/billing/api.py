"""Billing endpoints of the public API."""

from __future__ import annotations

from typing import Any

from app.api.registry import operation
from app.api.services import ApiPrincipal
from app.billing.queries import billing_overview
from app.billing.schemas import BillingOut
from app.core.tenancy import control_session


@operation("GET", "/billing", summary="Plan, subscription status and usage against limits",
           permission="billing.manage", response=BillingOut, tags=["billing"], read_only_ok=True)
def get_billing(principal: ApiPrincipal) -> dict[str, Any]:
    """The tenant's plan, subscription state, trial and usage (the next invoice is on the billing page)."""
    with control_session() as session:
        o = billing_overview(session, principal.tenant.id, with_invoice=False)
    return {"billing_enabled": o["billing_enabled"], "plan": o["plan"]["key"], "plan_name": o["plan"]["name"],
            "status": o["status"], "trial_ends_at": o["trial_ends_at"], "current_period_end": o["current_period_end"],
            "grace_until": o["grace_until"], "cancel_at_period_end": o["cancel_at_period_end"], "usage": o["usage"]}
