"""Billing jobs: Stripe events processed off the request path, and the periodic deadline sweep."""

from __future__ import annotations

from flask import Flask
from sqlalchemy.orm import Session

from app.billing import services
from app.core.jobs import control_job
from app.core.tenancy import control_session


@control_job(queue="default")
def process_stripe_event(session: Session, *, event_id: str) -> str:
    """Apply one Stripe event (idempotent: a processed event is left alone)."""
    return services.process_stripe_event(session, event_id=event_id)


def enforce_billing_deadlines(app: Flask) -> list[int]:
    """Scheduler sweep: ended trials and lapsed grace periods turn their tenants read-only."""
    with app.app_context(), control_session() as session:
        return services.enforce_deadlines(session)
