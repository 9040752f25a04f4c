"""RQ jobs of the sensor path: process a stored payload (`ingest` queue), analyse sensors (`analysis` queue)."""

from __future__ import annotations

from datetime import date
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.core.jobs import tenant_job
from app.sensors import analysis, services


@tenant_job(queue="ingest")
def process_ingest(session: Session, *, ingest_id: int) -> dict[str, Any]:
    """Parse, COPY and attach one stored payload's readings, then queue their analysis."""
    summary = services.process_ingest(session, ingest_id=ingest_id)
    # The outbox keeps the result for the jobs page: counts only, the refusals stay on the ingest row.
    return {key: value for key, value in summary.items() if key != "errors"}


@tenant_job(queue="analysis")
def analyse_sensors(session: Session, *, sensor_ids: list[int], ingest_id: int | None = None) -> dict[str, Any]:
    """Run the health and process rules on the new readings of these sensors and record episodes."""
    return {"ingest_id": ingest_id, "sensors": analysis.analyse_sensors(session, sensor_ids=sensor_ids)}


@tenant_job(queue="default")
def ensure_partitions_ahead(session: Session, *, months: int = 3) -> dict[str, Any]:
    """Create this month's and the next months' readings partitions ahead of the data."""
    today: date = session.scalar(select(func.current_date()))
    wanted = set()
    year, month = today.year, today.month
    for _ in range(months + 1):
        wanted.add(date(year, month, 1))
        year, month = (year + 1, 1) if month == 12 else (year, month + 1)
    return {"partitions": services.ensure_partitions(session, wanted)}
