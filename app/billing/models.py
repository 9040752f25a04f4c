"""Billing state of each tenant, processed Stripe events and metered usage (control plane)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import ForeignKey, String, Text, func
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from app.core.db import CreatedAt, PublicBase


class Subscription(CreatedAt, PublicBase):
    """A tenant's plan and subscription state, mirrored from Stripe (or local when billing is off)."""

    __tablename__ = "subscriptions"

    #: The tenant (one subscription row per tenant).
    tenant_id: Mapped[int] = mapped_column(ForeignKey("public.tenants.id", ondelete="CASCADE"), primary_key=True)
    #: Plan key in tenants/plans.json (`local` when billing is off).
    plan: Mapped[str] = mapped_column(String(40))
    #: local / trialing / active / past_due / canceled / unpaid / trial_expired / incomplete.
    status: Mapped[str] = mapped_column(String(20))
    #: End of the free trial (None when there is none).
    trial_ends_at: Mapped[datetime | None]
    #: Stripe customer id (`cus_...`).
    stripe_customer_id: Mapped[str | None] = mapped_column(String(64), unique=True)
    #: Stripe subscription id (`sub_...`).
    stripe_subscription_id: Mapped[str | None] = mapped_column(String(64), unique=True)
    #: End of the paid period (next invoice date).
    current_period_end: Mapped[datetime | None]
    #: The customer asked to cancel at the end of the period.
    cancel_at_period_end: Mapped[bool] = mapped_column(default=False)
    #: Past due: the tenant turns read-only after this moment unless payment succeeds.
    grace_until: Mapped[datetime | None]
    #: When the state was last re-fetched from Stripe.
    synced_at: Mapped[datetime | None]
    #: When this row last changed.
    updated_at: Mapped[datetime | None]


class StripeEvent(PublicBase):
    """A verified Stripe webhook event, stored once by its id (a second delivery is a no-op)."""

    __tablename__ = "stripe_events"

    #: Stripe's event id (`evt_...`): the deduplication key.
    id: Mapped[str] = mapped_column(String(255), primary_key=True)
    #: Event type, e.g. `customer.subscription.updated`.
    type: Mapped[str] = mapped_column(String(100))
    #: The verified payload as received.
    payload: Mapped[dict[str, Any]] = mapped_column(JSONB)
    #: Stripe's creation time of the event.
    stripe_created: Mapped[datetime | None]
    #: When we received it (database clock).
    received_at: Mapped[datetime] = mapped_column(server_default=func.now())
    #: When the processing job finished.
    processed_at: Mapped[datetime | None]
    #: What processing did (for support: "tenant 4 -> past_due", "ignored: no subscription").
    outcome: Mapped[str | None] = mapped_column(Text)


class UsageCounter(PublicBase):
    """Metered usage of one tenant in one calendar month (UTC), e.g. sensor readings ingested."""

    __tablename__ = "usage_counters"

    #: The tenant.
    tenant_id: Mapped[int] = mapped_column(ForeignKey("public.tenants.id", ondelete="CASCADE"), primary_key=True)
    #: Entitlement metered, e.g. `readings_per_month`.
    metric: Mapped[str] = mapped_column(String(40), primary_key=True)
    #: Month, `YYYY-MM` (UTC).
    period: Mapped[str] = mapped_column(String(7), primary_key=True)
    #: Units counted so far (all of them: usage over the allowance is kept, not dropped).
    used: Mapped[int] = mapped_column(default=0)
    #: Units counted beyond the plan's allowance (flagged for the upgrade prompt).
    over_allowance: Mapped[int] = mapped_column(default=0)
