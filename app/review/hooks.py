"""Start the RBE job when a batch completes, without the batch area having to know about review.

A session listener notices a `Batch` whose status was flushed as `completed` and writes an outbox row for
`app.review.jobs:run_rbe_job` in the same transaction (so the job exists exactly when the completion commits,
and is pushed to Redis after the commit like every outbox job). The periodic `review_sweep` catches any batch
completed without it (e.g. by SQL outside the app).
"""

from __future__ import annotations

from typing import Any

from flask import current_app, has_app_context
from sqlalchemy import event, insert, inspect
from sqlalchemy.orm import Session

from app.batches.models import Batch
from app.core.jobs import OutboxMessage, dispatch
from app.core.tenancy import after_commit

JOB = "app.review.jobs:run_rbe_job"
_PENDING = "review.completed_batches"


@event.listens_for(Session, "after_flush")
def _note_completions(session: Session, _context: Any) -> None:
    if "tenant" not in session.info:
        return
    for obj in session.dirty:
        if isinstance(obj, Batch):
            history = inspect(obj).attrs.status.history
            if history.added and history.added[0] == "completed" and "completed" not in (history.deleted or ()):
                session.info.setdefault(_PENDING, []).append(obj.id)


@event.listens_for(Session, "after_flush_postexec")
def _enqueue_reviews(session: Session, _context: Any) -> None:
    batch_ids = session.info.pop(_PENDING, None)
    if not batch_ids or not has_app_context():
        return
    ref = session.info["tenant"]
    table = OutboxMessage.__table__
    ids = [session.connection().execute(
        insert(table).values(func=JOB, queue="reports", kwargs={"batch_id": batch_id, "trigger": "completion"},
                             failures=0).returning(table.c.id)).scalar_one() for batch_id in batch_ids]
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    after_commit(session, lambda: dispatch(app, ref, ids))
