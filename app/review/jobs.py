"""Review jobs (`reports` queue): the RBE run at batch completion or on demand, and a sweep that catches up.

Jobs get ids, open their own tenant transaction (the outbox runner does) and are safe to run twice: a second
RBE run raises nothing new (every finding has a dedupe key) and records one more run, which is evidence too.
"""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.batches.models import Batch
from app.core.errors import BatchlineError
from app.core.jobs import tenant_job
from app.review.engine import run_rbe
from app.review.models import RbeRun

log = logging.getLogger(__name__)


@tenant_job(queue="reports")
def run_rbe_job(session: Session, *, batch_id: int, trigger: str = "on_demand") -> dict[str, Any]:
    """Run the review-by-exception checks over one batch."""
    batch = session.get(Batch, int(batch_id))
    if batch is None or batch.status in ("planned", "released", "rejected"):
        return {"skipped": f"batch {batch_id} is {batch.status if batch else 'unknown'}"}
    run = run_rbe(session, batch_id=int(batch_id), trigger=trigger)
    return {"rbe_run_id": run.id, "final": run.final, "exceptions": run.counts["total"],
            "new_exceptions": len(run.new_exception_ids), "duration_ms": run.duration_ms}


@tenant_job(queue="reports")
def review_sweep(session: Session) -> dict[str, Any]:
    """Run the checks over every completed batch that has no run since it completed (a missed trigger)."""
    reviewed = select(RbeRun.batch_id).where(RbeRun.final.is_(True))
    pending = list(session.scalars(select(Batch.id).where(Batch.status == "completed", Batch.id.not_in(reviewed))
                                   .order_by(Batch.id).limit(50)))
    done, failed = [], {}
    for batch_id in pending:
        try:
            with session.begin_nested():  # one batch's failure must not stop the others
                run_rbe(session, batch_id=batch_id, trigger="sweep")
            done.append(batch_id)
        except BatchlineError as exc:
            log.warning("review sweep: batch %s: %s", batch_id, exc)
            failed[str(batch_id)] = str(exc)
    return {"reviewed": done, "failed": failed}
