"""Read-side queries of a tenant's background jobs."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.core.jobs import OutboxMessage


def recent_jobs(session: Session, *, limit: int = 100) -> list[dict[str, Any]]:
    """The tenant's most recent jobs, newest first, as plain dicts."""
    rows = session.scalars(select(OutboxMessage).order_by(OutboxMessage.id.desc()).limit(limit)).all()
    return [
        {
            "id": r.id, "func": r.func, "queue": r.queue, "kwargs": r.kwargs,
            "status": "finished" if r.finished_at else ("failing" if r.failures else
                                                        ("queued" if r.dispatched_at else "waiting")),
            "created_at": r.created_at.isoformat(), "finished_at": r.finished_at.isoformat() if r.finished_at else None,
            "failures": r.failures, "last_error": r.last_error, "result": r.result,
        }
        for r in rows
    ]
