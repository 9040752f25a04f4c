"""Background jobs of the batch area (RQ, through the outbox): the hold-time timer."""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from app.batches.execution import raise_due_hold_times
from app.core.jobs import tenant_job


@tenant_job(queue="default")
def check_hold_times(session: Session) -> dict[str, Any]:
    """Raise hold_time_exceeded for results waiting past their max hold time; idempotent (once per step)."""
    return {"raised": raise_due_hold_times(session)}
