"""Read side of review by exception: release readiness, the QA queue, deviations and their aging, metrics."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import func, select, text
from sqlalchemy.orm import Session

from app.batches.models import Batch, BatchException, StepEntry
from app.core.errors import NotFound
from app.core.validation import db_now
from app.review.engine import batch_episodes, criticality_of, episode_type, record_fingerprint
from app.review.models import (
    BatchRelease,
    CapaAction,
    Deviation,
    DispositionItem,
    ExceptionDisposition,
    RbeRun,
)
from app.review.rules import SEVERITIES, RuleSet
from app.review.services import ACTIVE_DISPOSITIONS, current_rule_set, latest_final_run

REVIEW_STATUSES = ("completed", "in_review")


@dataclass
class ExceptionView:
    """An exception as the reviewer sees it: judged under the current rules, with its disposition."""

    exception: BatchException
    exception_class: str
    class_label: str
    severity: str
    blocks: bool
    signatures: int
    disposition: ExceptionDisposition | None = None
    deviation: Deviation | None = None

    @property
    def dispositioned(self) -> bool:
        """True once a disposition with all its signatures covers it."""
        return self.disposition is not None and self.disposition.status == "complete"


@dataclass
class Readiness:
    """Where a batch stands on its way to release: open exceptions by severity and what still blocks it."""

    batch_id: int
    batch_number: str
    status: str
    ready: bool
    blockers: list[str]
    open_by_severity: dict[str, int]
    total: int
    dispositioned: int
    #: Sensor episodes of a running batch that the RBE has not turned into exceptions yet.
    pending_episodes: int
    run: RbeRun | None
    run_current: bool
    exceptions: list[ExceptionView] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        """JSON form (live status on the batch pages, the API)."""
        return {"batch_id": self.batch_id, "batch_number": self.batch_number, "status": self.status,
                "ready": self.ready, "blockers": self.blockers, "open_by_severity": self.open_by_severity,
                "open": sum(self.open_by_severity.values()), "total": self.total,
                "dispositioned": self.dispositioned, "pending_episodes": self.pending_episodes,
                "rbe_run_id": self.run.id if self.run else None, "rbe_current": self.run_current}


def exception_views(session: Session, batch: Batch, rules: RuleSet) -> list[ExceptionView]:
    """Every exception of a batch under the rules, with the disposition holding it (if any)."""
    exceptions = list(session.scalars(select(BatchException).where(BatchException.batch_id == batch.id)
                                      .order_by(BatchException.id)))
    entry_ids = {e.entry_id for e in exceptions if e.entry_id}
    entries = {e.id: e for e in session.scalars(select(StepEntry).where(StepEntry.id.in_(entry_ids)))} \
        if entry_ids else {}
    held = dict(session.execute(
        select(DispositionItem.exception_id, ExceptionDisposition)
        .join(ExceptionDisposition, ExceptionDisposition.id == DispositionItem.disposition_id)
        .where(ExceptionDisposition.batch_id == batch.id, ExceptionDisposition.status.in_(ACTIVE_DISPOSITIONS))
    ).all())
    deviations = {d.id: d for d in session.scalars(select(Deviation).where(Deviation.id.in_(
        {d.deviation_id for d in held.values() if d.deviation_id} or {-1})))}
    views = []
    for exc in exceptions:
        code, severity, blocks, signatures = rules.classify(exc.type, criticality=criticality_of(exc, entries),
                                                            raised_severity=exc.severity)
        disposition = held.get(exc.id)
        views.append(ExceptionView(exc, code, rules.rule(code).label, severity, blocks, signatures, disposition,
                                   deviations.get(disposition.deviation_id) if disposition and
                                   disposition.deviation_id else None))
    return views


def release_readiness(session: Session, batch_id: int) -> Readiness:
    """Live release readiness: open exceptions by severity and every reason the batch cannot be released yet."""
    batch = session.get(Batch, int(batch_id))
    if batch is None:
        raise NotFound(f"no batch {batch_id} in this tenant")
    rules = current_rule_set(session)
    views = exception_views(session, batch, rules)
    open_by_severity = {s: 0 for s in SEVERITIES}
    for view in views:
        if not view.dispositioned:
            open_by_severity[view.severity] += 1
    raised_keys = {v.exception.dedupe_key for v in views if v.exception.dedupe_key}
    pending_episodes = 0
    if batch.status not in ("released", "rejected", "planned"):
        for episode in batch_episodes(session, batch):
            if f"episode:{episode.id}" not in raised_keys:
                pending_episodes += 1
                severity = rules.classify(episode_type(episode.kind, episode.rule))[1]
                open_by_severity[severity] += 1
    blockers: list[str] = []
    run = latest_final_run(session, batch.id)
    run_current = run is not None and run.record_fingerprint == record_fingerprint(session, batch)
    if batch.status in ("released", "rejected"):
        blockers.append(f"the batch is already {batch.status}")
    elif batch.status not in REVIEW_STATUSES:
        blockers.append(f"the batch is {batch.status.replace('_', ' ')}: it is released only once completed")
    if batch.status not in ("released", "rejected"):
        if run is None:
            blockers.append("the review-by-exception checks have not run on the completed record")
        elif not run_current:
            blockers.append(f"the record changed since the checks ran (RBE run #{run.id} at "
                            f"{run.started_at:%Y-%m-%d %H:%M} UTC): run them again")
    undisposed = [v for v in views if v.disposition is None]
    if undisposed:
        by = defaultdict(int)
        for view in undisposed:
            by[view.severity] += 1
        blockers.append(f"{len(undisposed)} exceptions not dispositioned ("
                        + ", ".join(f"{by[s]} {s}" for s in SEVERITIES if by[s]) + ")")
    if pending_episodes:
        blockers.append(f"{pending_episodes} sensor episodes not yet turned into exceptions (run the checks)")
    awaiting = sorted({v.disposition.id for v in views if v.disposition and not v.dispositioned})
    for disposition_id in awaiting:
        blockers.append(f"disposition #{disposition_id} awaits its second signature")
    for view in views:
        if view.disposition is None or not view.blocks:
            continue
        if view.deviation is None:
            blockers.append(f"exception #{view.exception.id} ({view.class_label}, {view.severity}) needs a closed "
                            "deviation")
        elif view.deviation.status != "closed":
            blockers.append(f"exception #{view.exception.id} ({view.class_label}, {view.severity}) needs deviation "
                            f"{view.deviation.number} closed (it is {view.deviation.status})")
    return Readiness(batch_id=batch.id, batch_number=batch.batch_number, status=batch.status, ready=not blockers,
                     blockers=blockers, open_by_severity=open_by_severity, total=len(views) + pending_episodes,
                     dispositioned=sum(1 for v in views if v.dispositioned), pending_episodes=pending_episodes,
                     run=run, run_current=run_current, exceptions=views)


def review_queue(session: Session, *, sort: str = "age") -> list[dict[str, Any]]:
    """Batches awaiting QA (completed or in review): age since completion and undispositioned exceptions."""
    rules = current_rule_set(session)
    now = db_now(session)
    batches = list(session.scalars(select(Batch).where(Batch.status.in_(REVIEW_STATUSES))))
    rows = []
    for batch in batches:
        views = exception_views(session, batch, rules)
        open_views = [v for v in views if not v.dispositioned]
        by = {s: sum(1 for v in open_views if v.severity == s) for s in SEVERITIES}
        last_run = session.scalar(select(RbeRun).where(RbeRun.batch_id == batch.id).order_by(RbeRun.id.desc())
                                  .limit(1))
        completed = batch.ended_at or batch.status_changed_at
        rows.append({"batch": batch, "completed_at": completed, "age_s": (now - completed).total_seconds(),
                     "open": by, "open_total": len(open_views), "total": len(views), "last_run": last_run})
    if sort == "critical":
        rows.sort(key=lambda r: (-r["open"]["critical"], -r["open"]["major"], -r["age_s"]))
    else:
        rows.sort(key=lambda r: (-r["age_s"], -r["open"]["critical"]))
    return rows


def runs_of(session: Session, batch_id: int) -> list[RbeRun]:
    """The batch's RBE runs, newest first."""
    return list(session.scalars(select(RbeRun).where(RbeRun.batch_id == batch_id).order_by(RbeRun.id.desc())))


def dispositions_of(session: Session, batch_id: int) -> list[ExceptionDisposition]:
    """The batch's dispositions, oldest first."""
    return list(session.scalars(select(ExceptionDisposition).where(ExceptionDisposition.batch_id == batch_id)
                                .order_by(ExceptionDisposition.id)))


def release_of(session: Session, batch_id: int) -> BatchRelease | None:
    """The batch's release decision, if made."""
    return session.scalar(select(BatchRelease).where(BatchRelease.batch_id == batch_id))


# ---------------------------------------------------------------------------------------------------------------
# Deviations

AGING_BUCKETS = ((7, "0-7 days"), (30, "8-30 days"), (90, "31-90 days"), (None, "over 90 days"))


def deviation_list(session: Session, *, status: str | None = None) -> dict[str, Any]:
    """Deviations newest first with their age, CAPA counts, and the aging of open ones."""
    now = db_now(session)
    query = select(Deviation, Batch.batch_number).outerjoin(Batch, Batch.id == Deviation.batch_id) \
        .order_by(Deviation.id.desc())
    if status in ("open", "closed"):
        query = query.where(Deviation.status == status)
    capa = defaultdict(lambda: {"open": 0, "overdue": 0, "total": 0})
    for row in session.execute(select(CapaAction.deviation_id, CapaAction.status, CapaAction.due_date)):
        item = capa[row.deviation_id]
        item["total"] += 1
        if row.status == "open":
            item["open"] += 1
            if row.due_date < now.date():
                item["overdue"] += 1
    rows, aging = [], {label: 0 for _, label in AGING_BUCKETS}
    for deviation, batch_number in session.execute(query):
        end = deviation.closed_at or now
        days = (end - deviation.opened_at).total_seconds() / 86400
        if deviation.status == "open":
            for limit, label in AGING_BUCKETS:
                if limit is None or days <= limit:
                    aging[label] += 1
                    break
        rows.append({"deviation": deviation, "batch_number": batch_number, "age_days": days,
                     "capa": capa[deviation.id]})
    return {"rows": rows, "aging": aging, "open": sum(1 for r in rows if r["deviation"].status == "open")}


def deviation_detail(session: Session, deviation_id: int) -> dict[str, Any]:
    """A deviation with its batch, linked exceptions, CAPA actions and closure signature."""
    deviation = session.get(Deviation, int(deviation_id))
    if deviation is None:
        raise NotFound(f"no deviation {deviation_id} in this tenant")
    batch = session.get(Batch, deviation.batch_id) if deviation.batch_id else None
    exceptions = list(session.scalars(
        select(BatchException).join(DispositionItem, DispositionItem.exception_id == BatchException.id)
        .join(ExceptionDisposition, ExceptionDisposition.id == DispositionItem.disposition_id)
        .where(ExceptionDisposition.deviation_id == deviation.id,
               ExceptionDisposition.status.in_(ACTIVE_DISPOSITIONS)).order_by(BatchException.id)))
    capas = list(session.scalars(select(CapaAction).where(CapaAction.deviation_id == deviation.id)
                                 .order_by(CapaAction.id)))
    return {"deviation": deviation, "batch": batch, "exceptions": exceptions, "capas": capas,
            "today": db_now(session).date()}


# ---------------------------------------------------------------------------------------------------------------
# Metrics

METRICS_SQL = text("""
SELECT count(*) FILTER (WHERE r.decision = 'released') AS released,
       count(*) FILTER (WHERE r.decision = 'rejected') AS rejected,
       percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM r.decided_at - b.ended_at))
         FILTER (WHERE r.decision = 'released') AS median_s,
       percentile_cont(0.9) WITHIN GROUP (ORDER BY extract(epoch FROM r.decided_at - b.ended_at))
         FILTER (WHERE r.decision = 'released') AS p90_s
FROM batch_releases r JOIN batches b ON b.id = r.batch_id
""")


def metrics(session: Session) -> dict[str, Any]:
    """Completion-to-release time (median, p90), exceptions per batch by category, right-first-time rate."""
    row = session.execute(METRICS_SQL).one()
    rules = current_rule_set(session)
    reviewed = list(session.scalars(select(Batch.id).where(Batch.status.in_(("in_review", "released", "rejected")))))
    per_class: dict[str, int] = defaultdict(int)
    clean_released = 0
    if reviewed:
        counts = session.execute(select(BatchException.batch_id, BatchException.type, func.count())
                                 .where(BatchException.batch_id.in_(reviewed))
                                 .group_by(BatchException.batch_id, BatchException.type)).all()
        with_exceptions = {c.batch_id for c in counts}
        for c in counts:
            per_class[rules.class_of(c.type)] += c[2]
        clean_released = session.scalar(select(func.count()).select_from(BatchRelease).where(
            BatchRelease.decision == "released", BatchRelease.batch_id.not_in(with_exceptions or {-1}))) or 0
    decided = (row.released or 0) + (row.rejected or 0)
    return {"released": row.released or 0, "rejected": row.rejected or 0, "decided": decided,
            "completion_to_release_median_s": float(row.median_s) if row.median_s is not None else None,
            "completion_to_release_p90_s": float(row.p90_s) if row.p90_s is not None else None,
            "reviewed_batches": len(reviewed),
            "exceptions_per_batch": {k: round(v / len(reviewed), 2) for k, v in sorted(per_class.items())}
            if reviewed else {},
            "class_labels": {k: rules.rule(k).label for k in per_class},
            "right_first_time": round(clean_released / decided, 4) if decided else None,
            "right_first_time_batches": clean_released}


def human_duration(seconds: float | None) -> str:
    """A duration as a person reads it (42 s, 7 min, 3.5 h, 2.1 d)."""
    if seconds is None:
        return "—"
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    if seconds < 172800:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} d"


def as_utc(value: datetime | None) -> str:
    """A timestamp for pages and reports (UTC)."""
    return value.strftime("%Y-%m-%d %H:%M:%S UTC") if value else "—"
