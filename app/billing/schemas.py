"""Billing schemas of the public API."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel

from app.api.schemas import UsageItem


class BillingUsageItem(UsageItem):
    """Usage of one entitlement; metered ones also say how much of this month is beyond the allowance."""

    over_allowance: int | None = None


class BillingOut(BaseModel):
    """Plan, subscription state and usage of the tenant."""

    billing_enabled: bool
    plan: str
    plan_name: str
    status: str
    trial_ends_at: datetime | None
    current_period_end: datetime | None
    grace_until: datetime | None
    cancel_at_period_end: bool
    usage: list[BillingUsageItem]
