"""Background jobs: a transactional outbox in front of RQ.

`enqueue(session, "app.area.jobs:function", tenant_id=..., **ids)` writes an outbox row in the caller's
tenant transaction. Only after that transaction commits is the job pushed to Redis; if Redis is down the row
waits and the relay (`batchline scheduler`) pushes it later. A rolled-back transaction leaves no row, so its
job never runs.

Every job runs through `run_tenant_job`, which opens the tenant transaction, calls the function with the
session and the ids, and marks the outbox row finished **in the same transaction**: a redelivered job (a
worker killed after commit, a relay that enqueued twice) sees the mark and does nothing.

Control-plane work that has no tenant yet (provisioning a signed-up tenant, processing a Stripe event) uses
the same machinery on `public.control_outbox`: `enqueue_control(session, "app.area.jobs:fn", **ids)` in a
`control_session`, functions marked `@control_job`, run by `run_control_job`.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import os
import pkgutil
import threading
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any, ParamSpec, TypeVar

import redis
from flask import Flask, current_app
from rq import Queue, Retry, SimpleWorker, Worker
from rq.job import Job
from rq.serializers import JSONSerializer
from rq.worker import WorkerStatus
from sqlalchemy import Identity, Index, String, Text, literal_column, select, text, update
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, Session, configure_mappers, mapped_column

from app.core.db import CreatedAt, Database, PublicBase, TenantBase
from app.core.tenancy import TenantRef, after_commit, control_session, tenant_transaction

log = logging.getLogger(__name__)

QUEUES = ("ingest", "analysis", "reports", "default")

P = ParamSpec("P")
R = TypeVar("R")


class OutboxColumns:
    """Columns shared by the tenant outbox and the control-plane outbox."""

    #: Also the idempotency key of the job.
    id: Mapped[int] = mapped_column(Identity(), primary_key=True)
    #: Dotted path `module:function` of a function decorated with `@tenant_job` / `@control_job`.
    func: Mapped[str] = mapped_column(String(200))
    #: RQ queue name.
    queue: Mapped[str] = mapped_column(String(40))
    #: JSON keyword arguments (record ids, never ORM objects).
    kwargs: Mapped[dict[str, Any]] = mapped_column(JSONB, default=dict)
    #: When it was handed to Redis (None: still waiting for the relay).
    dispatched_at: Mapped[datetime | None]
    #: When the job's own transaction committed.
    finished_at: Mapped[datetime | None]
    #: Attempts that raised.
    failures: Mapped[int] = mapped_column(default=0)
    #: Last error text, visible to admins.
    last_error: Mapped[str | None] = mapped_column(Text)
    #: What the job returned (JSON), for status pages.
    result: Mapped[Any | None] = mapped_column(JSONB)


class OutboxMessage(CreatedAt, OutboxColumns, TenantBase):
    """A tenant job to run once the transaction that wrote it has committed."""

    __tablename__ = "outbox"
    __table_args__ = (Index("ix_outbox_pending", "created_at", postgresql_where=text("dispatched_at IS NULL")),
                      {"info": {"gmp": False}})


class ControlOutboxMessage(CreatedAt, OutboxColumns, PublicBase):
    """A control-plane job (no tenant yet, or about the tenant directory) to run after its transaction commits."""

    __tablename__ = "control_outbox"
    __table_args__ = (
        Index("ix_control_outbox_pending", "created_at", postgresql_where=text("dispatched_at IS NULL")),
    )


def tenant_job(queue: str = "default") -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Mark a function `fn(session, **ids)` as a tenant job for `queue`; only marked functions can be enqueued."""
    if queue not in QUEUES:
        raise ValueError(f"unknown queue {queue!r}")

    def mark(fn: Callable[P, R]) -> Callable[P, R]:
        fn.__batchline_queue__ = queue  # type: ignore[attr-defined]
        return fn

    return mark


def control_job(queue: str = "default") -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Mark a function `fn(session, **ids)` as a control-plane job (its session is a `control_session`)."""
    if queue not in QUEUES:
        raise ValueError(f"unknown queue {queue!r}")

    def mark(fn: Callable[P, R]) -> Callable[P, R]:
        fn.__batchline_control_queue__ = queue  # type: ignore[attr-defined]
        return fn

    return mark


def _resolve(path: str, marker: str = "__batchline_queue__") -> Callable[..., Any]:
    module_name, _, attr = path.partition(":")
    if not module_name.startswith("app.") or not attr:
        raise ValueError(f"job path must be 'app.<module>:<function>', got {path!r}")
    fn = getattr(importlib.import_module(module_name), attr)
    if not hasattr(fn, marker):
        kind = "@tenant_job" if marker == "__batchline_queue__" else "@control_job"
        raise ValueError(f"{path} is not marked with {kind}")
    return fn


def job_id(tenant_id: int, outbox_id: int) -> str:
    """RQ job id: deterministic, so a job pushed twice is one job in Redis."""
    return f"t{tenant_id}-ob{outbox_id}"


def redis_connection(app: Flask | None = None) -> redis.Redis:
    """Return the app's Redis client."""
    return (app or current_app).extensions["batchline.redis"]


def enqueue(session: Session, func: str, **kwargs: Any) -> OutboxMessage:
    """Schedule `func(session, **kwargs)` for this session's tenant, after the transaction commits."""
    ref: TenantRef = session.info["tenant"]
    fn = _resolve(func)
    msg = OutboxMessage(func=func, queue=fn.__batchline_queue__, kwargs=kwargs)
    session.add(msg)
    session.flush()
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    outbox_id, queue = msg.id, msg.queue
    after_commit(session, lambda: dispatch_new(app, ref, outbox_id, queue=queue, func=func))
    return msg


def _push_to_rq(app: Flask, *, queue_name: str, jid: str, entry: str, kwargs: dict[str, Any],
                description: str, fresh: bool = False) -> None:
    """Hand one outbox row to RQ under a deterministic id (pushing twice is one job), in one pipeline.

    `fresh`: the row was committed a moment ago and nobody pushed it yet, so the check whether Redis already
    has the job (a round trip) is skipped; the relay, which may meet rows pushed before, always checks.
    """
    conn = redis_connection(app)
    if not fresh and Job.exists(jid, connection=conn):
        return
    intervals = list(app.config["JOB_RETRY_INTERVALS"])
    pipe = conn.pipeline()
    Queue(queue_name, connection=conn, serializer=JSONSerializer).enqueue_call(
        entry,
        kwargs=kwargs,
        job_id=jid,
        retry=Retry(max=len(intervals), interval=intervals),
        result_ttl=86400,
        failure_ttl=7 * 86400,
        description=description,
        pipeline=pipe,
    )
    pipe.execute()


def _push(app: Flask, tenant_id: int, row: OutboxMessage) -> None:
    _push_to_rq(app, queue_name=row.queue, jid=job_id(tenant_id, row.id), entry="app.core.jobs.run_tenant_job",
                kwargs={"tenant_id": tenant_id, "outbox_id": row.id}, description=f"{row.func} tenant={tenant_id}")


def _push_and_mark(app: Flask, session: Session, rows: Any, push: Callable[[Any], None], what: str) -> int:
    """Push rows in order and stamp them dispatched; stop at the first Redis error (the relay retries)."""
    pushed = 0
    for row in rows:
        try:
            push(row)
        except redis.RedisError as exc:
            # Redis is down: the row stays undispatched and the relay retries it.
            log.warning("redis unavailable, %s outbox %s waits: %s", what, row.id, exc)
            break
        row.dispatched_at = session.execute(text("SELECT now()")).scalar_one()
        pushed += 1
    return pushed


def dispatch(app: Flask, ref: TenantRef, outbox_ids: list[int]) -> int:
    """Push committed outbox rows to Redis and mark them dispatched; return how many were pushed."""
    with app.app_context(), tenant_transaction(ref) as session:
        rows = session.scalars(
            select(OutboxMessage)
            .where(OutboxMessage.id.in_(outbox_ids), OutboxMessage.dispatched_at.is_(None))
            .with_for_update(skip_locked=True)
        ).all()
        return _push_and_mark(app, session, rows, lambda row: _push(app, ref.id, row), f"tenant {ref.id}")


#: Stamp rows dispatched unless already stamped, or locked: a locked row is being run by its job right now
#: (it was pushed a moment ago), and `run_tenant_job` stamps a row it finishes undispatched.
_MARK_DISPATCHED = text(
    "UPDATE outbox SET dispatched_at = now() WHERE id IN (SELECT id FROM outbox WHERE id = ANY(:ids) "
    "AND dispatched_at IS NULL FOR UPDATE SKIP LOCKED)")


def dispatch_new(app: Flask, ref: TenantRef, outbox_id: int, *, queue: str, func: str) -> bool:
    """Push a row its transaction has just committed, then stamp it dispatched; return whether it was pushed.

    The push comes first and needs no read of the row (its id, queue and function are known): one Redis round
    trip, then one UPDATE. If Redis is down the row stays undispatched and the relay pushes it later; if this
    process dies between the push and the stamp, the relay finds the job in Redis and only stamps the row.
    """
    try:
        _push_to_rq(app, queue_name=queue, jid=job_id(ref.id, outbox_id), entry="app.core.jobs.run_tenant_job",
                    kwargs={"tenant_id": ref.id, "outbox_id": outbox_id},
                    description=f"{func} tenant={ref.id}", fresh=True)
    except redis.RedisError as exc:
        log.warning("redis unavailable, tenant %s outbox %s waits: %s", ref.id, outbox_id, exc)
        return False
    with app.app_context(), tenant_transaction(ref) as session:
        session.execute(_MARK_DISPATCHED, {"ids": [outbox_id]})
    return True


def relay_tenant(app: Flask, ref: TenantRef, *, min_age_s: float | None = None,
                 lost_after_s: float | None = None) -> int:
    """Push every undispatched outbox row of one tenant older than `min_age_s` (the relay's sweep).

    Also re-push rows that were dispatched more than `lost_after_s` ago, are not finished, and whose RQ job no
    longer exists: Redis restarted without persistence (or was flushed) and took the queued job with it. The
    job is idempotent, so a job that was merely slow is never run twice in effect.
    """
    age = app.config["OUTBOX_RELAY_MIN_AGE_S"] if min_age_s is None else min_age_s
    lost = app.config["OUTBOX_LOST_AFTER_S"] if lost_after_s is None else lost_after_s
    with app.app_context(), tenant_transaction(ref) as session:
        ids = session.scalars(
            select(OutboxMessage.id).where(
                OutboxMessage.dispatched_at.is_(None),
                OutboxMessage.created_at <= text("now() - make_interval(secs => :age)").bindparams(age=age),
            )
        ).all()
        stale = session.scalars(
            select(OutboxMessage.id).where(
                OutboxMessage.finished_at.is_(None),
                OutboxMessage.dispatched_at <= text("now() - make_interval(secs => :lost)").bindparams(lost=lost),
            )
        ).all()
    pushed = dispatch(app, ref, list(ids)) if ids else 0
    if stale:
        pushed += _redispatch_lost(app, ref, list(stale))
    return pushed


def _redispatch_lost(app: Flask, ref: TenantRef, outbox_ids: list[int]) -> int:
    """Push again the dispatched, unfinished rows whose job Redis no longer has."""
    conn = redis_connection(app)
    try:
        missing = [i for i in outbox_ids if not Job.exists(job_id(ref.id, i), connection=conn)]
    except redis.RedisError as exc:
        log.warning("redis unavailable, cannot check lost jobs of tenant %s: %s", ref.id, exc)
        return 0
    if not missing:
        return 0
    log.warning("re-pushing %d outbox jobs of tenant %s that Redis lost", len(missing), ref.id)
    with app.app_context(), tenant_transaction(ref) as session:
        rows = session.scalars(
            select(OutboxMessage).where(OutboxMessage.id.in_(missing), OutboxMessage.finished_at.is_(None))
            .with_for_update(skip_locked=True)
        ).all()
        return _push_and_mark(app, session, rows, lambda row: _push(app, ref.id, row), f"tenant {ref.id}")


def relay_all(app: Flask, *, min_age_s: float | None = None) -> int:
    """Sweep the control outbox and every active tenant's outbox once; one failure never stops the others."""
    from app.tenancy.queries import active_tenant_refs  # tenancy builds on core, not the reverse

    total = 0
    try:
        total += relay_control(app, min_age_s=min_age_s)
    except Exception:
        log.exception("control outbox relay failed")
    for ref in active_tenant_refs(app):
        try:
            total += relay_tenant(app, ref, min_age_s=min_age_s)
        except Exception:
            log.exception("outbox relay failed for tenant %s", ref.id)
    return total


class _HeartbeatGrace:
    """Abandoned-job detection with our heartbeat grace instead of RQ's fixed 60 s."""

    heartbeat_grace_s: int = 60
    job_monitoring_interval: int

    def get_heartbeat_ttl(self, job: Job, working_time: float = 0.0) -> int:
        """Return the TTL of the job's next heartbeat: past it, registry maintenance treats the job as abandoned."""
        interval = self.job_monitoring_interval
        if job.timeout and job.timeout > 0:
            interval = min(job.timeout - working_time, interval)
        return int(interval) + self.heartbeat_grace_s


class BatchlineWorker(_HeartbeatGrace, Worker):
    """Forking RQ worker: each job runs in a fresh work horse (a leak or a crash dies with the horse)."""


class InProcessWorker(_HeartbeatGrace, SimpleWorker):
    """RQ worker that runs jobs in its own process, one after the other: no fork, imports and DB pools reused.

    For short, frequent jobs (`ingest`, `analysis`: many a second) a forked work horse costs more than the job:
    a fork, fresh database connections and lazily imported modules on every job. Here the worker keeps its
    Flask app and its connection pools across jobs (they are created in this process, never inherited through
    a fork: `dispose_pools_after_fork` makes any forked child, such as RQ's scheduler, drop its copies).

    What the forking worker guarantees still holds:
    * job timeouts: RQ's death penalty (SIGALRM in this, the main, thread) interrupts the job, whose tenant
      transaction rolls back; the job fails and is retried like any failure;
    * a crashed or killed job: the job and the worker are one process, so they die together; a heartbeat
      thread keeps the job's heartbeat fresh only while the process lives, so once it is older than
      `WORKER_JOB_MONITORING_INTERVAL_S` + `WORKER_HEARTBEAT_GRACE_S` the next registry maintenance (by any
      worker, or this one restarted) retries it, exactly as when a forking worker is SIGKILLed.
    """

    def execute_job(self, job: Job, queue: Queue) -> None:
        """Run the job here, heart-beating from a side thread like the forking worker's monitor loop does."""
        execution = self.prepare_execution(job)
        done = threading.Event()
        beat = threading.Thread(target=self._beat, args=(job, execution, done), name="rq-heartbeat", daemon=True)
        beat.start()
        try:
            self.perform_job(job, queue, execution)
        finally:
            done.set()
            beat.join()
            self.executions.pop(execution.id, None)
        self.set_state(WorkerStatus.IDLE)

    def _beat(self, job: Job, execution: Any, done: threading.Event) -> None:
        while not done.wait(self.job_monitoring_interval):
            try:
                self.maintain_heartbeats(job, execution)
            except Exception:  # a missed beat only risks an early retry, which the outbox makes harmless
                log.exception("heartbeat of job %s failed", job.id)


#: Queues whose jobs `batchline worker` runs in process by default (setting WORKER_IN_PROCESS_QUEUES).
IN_PROCESS_QUEUES = ("ingest", "analysis")


def worker_class(queues: list[str], in_process_queues: list[str] | tuple[str, ...],
                 mode: str = "auto") -> type[BatchlineWorker] | type[InProcessWorker]:
    """Return the worker class for these queues: `fork`, `in-process`, or `auto` (in process when every queue
    is one of `in_process_queues`, forking otherwise: reports and imports keep a fresh process per job)."""
    if mode not in ("auto", "fork", "in-process"):
        raise ValueError(f"unknown worker mode {mode!r}: use auto, fork or in-process")
    if mode == "auto":
        mode = "in-process" if queues and set(queues) <= set(in_process_queues) else "fork"
    return InProcessWorker if mode == "in-process" else BatchlineWorker


def import_job_modules() -> list[str]:
    """Import every area's `jobs` module (and what it imports) now, so no job pays for it; return their names.

    A worker resolves a job's function by path on its first job: without this, the first job of each worker
    (and, forking, of each work horse) imports its area's job and analysis modules under the job's clock.
    The ORM mappers are configured here too: SQLAlchemy does it on the first query, and for our seventy
    models that is tens of milliseconds of the first job's time.
    """
    import app

    names = []
    for area in sorted(m.name for m in pkgutil.iter_modules(app.__path__) if m.ispkg):
        if importlib.util.find_spec(f"app.{area}.jobs") is not None:
            importlib.import_module(f"app.{area}.jobs")
            names.append(f"app.{area}.jobs")
    configure_mappers()
    return names


def dispose_pools_after_fork(db: Database) -> None:
    """Make a child forked from this process drop (without closing) the database connections it inherited.

    A pooled connection shared by two processes corrupts both sessions; the child opens its own when needed.
    """
    def drop() -> None:
        for engine in (db.owner_engine, db.runtime_engine):
            if engine is not None:
                engine.dispose(close=False)

    os.register_at_fork(after_in_child=drop)


_worker_app: Flask | None = None


def _app_for_job() -> Flask:
    global _worker_app  # one app per worker process, built lazily
    try:
        return current_app._get_current_object()  # type: ignore[attr-defined]
    except RuntimeError:
        pass
    if _worker_app is None:
        from app.factory import create_app

        _worker_app = create_app()
    return _worker_app


def run_tenant_job(*, tenant_id: int, outbox_id: int) -> Any:
    """RQ entry point: run one outbox job under its tenant, exactly once in effect."""
    app = _app_for_job()
    with app.app_context():
        db: Database = app.extensions["batchline.db"]
        try:
            with tenant_transaction(tenant_id, db=db) as session:
                # now() is the transaction's time: read with the row, it is what `finished_at` gets at the end.
                found = session.execute(
                    select(OutboxMessage, literal_column("now()"))
                    .where(OutboxMessage.id == outbox_id).with_for_update()
                ).one_or_none()
                if found is None:
                    raise LookupError(f"outbox row {outbox_id} not found in tenant {tenant_id}")
                row, now = found
                if row.finished_at is not None:
                    return row.result  # already done: a redelivery changes nothing
                result = _resolve(row.func)(session, **row.kwargs)
                row.result, row.finished_at = result, now
                if row.dispatched_at is None:  # run before its dispatcher could stamp it (see `dispatch_new`)
                    row.dispatched_at = row.finished_at
                return result
        except Exception as exc:
            with tenant_transaction(tenant_id, db=db) as session:
                session.execute(
                    update(OutboxMessage)
                    .where(OutboxMessage.id == outbox_id)
                    .values(failures=OutboxMessage.failures + 1, last_error=f"{type(exc).__name__}: {exc}"[:4000])
                )
            raise


def control_job_id(outbox_id: int) -> str:
    """RQ job id of a control-plane job: deterministic, like tenant jobs."""
    return f"c-ob{outbox_id}"


def enqueue_control(session: Session, func: str, **kwargs: Any) -> ControlOutboxMessage:
    """Schedule control-plane `func(session, **kwargs)` after the `control_session` transaction commits."""
    fn = _resolve(func, "__batchline_control_queue__")
    msg = ControlOutboxMessage(func=func, queue=fn.__batchline_control_queue__, kwargs=kwargs)
    session.add(msg)
    session.flush()
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    outbox_id = msg.id
    after_commit(session, lambda: dispatch_control(app, [outbox_id]))
    return msg


def _push_control(app: Flask, row: ControlOutboxMessage) -> None:
    _push_to_rq(app, queue_name=row.queue, jid=control_job_id(row.id), entry="app.core.jobs.run_control_job",
                kwargs={"outbox_id": row.id}, description=f"{row.func} control")


def dispatch_control(app: Flask, outbox_ids: list[int]) -> int:
    """Push committed control-outbox rows to Redis and mark them dispatched; return how many were pushed."""
    with app.app_context(), control_session() as session:
        rows = session.scalars(
            select(ControlOutboxMessage)
            .where(ControlOutboxMessage.id.in_(outbox_ids), ControlOutboxMessage.dispatched_at.is_(None))
            .order_by(ControlOutboxMessage.id)
            .with_for_update(skip_locked=True)
        ).all()
        return _push_and_mark(app, session, rows, lambda row: _push_control(app, row), "control")


def relay_control(app: Flask, *, min_age_s: float | None = None) -> int:
    """Push every undispatched control-outbox row older than `min_age_s`."""
    age = app.config["OUTBOX_RELAY_MIN_AGE_S"] if min_age_s is None else min_age_s
    with app.app_context(), control_session() as session:
        ids = session.scalars(
            select(ControlOutboxMessage.id).where(
                ControlOutboxMessage.dispatched_at.is_(None),
                ControlOutboxMessage.created_at <= text("now() - make_interval(secs => :age)").bindparams(age=age),
            )
        ).all()
    return dispatch_control(app, list(ids)) if ids else 0


def run_control_job(*, outbox_id: int) -> Any:
    """RQ entry point: run one control-plane outbox job, exactly once in effect."""
    app = _app_for_job()
    with app.app_context():
        db: Database = app.extensions["batchline.db"]
        try:
            with control_session(db=db) as session:
                row = session.execute(
                    select(ControlOutboxMessage).where(ControlOutboxMessage.id == outbox_id).with_for_update()
                ).scalar_one_or_none()
                if row is None:
                    raise LookupError(f"control outbox row {outbox_id} not found")
                if row.finished_at is not None:
                    return row.result  # already done: a redelivery changes nothing
                result = _resolve(row.func, "__batchline_control_queue__")(session, **row.kwargs)
                row.result = result
                row.finished_at = session.execute(text("SELECT now()")).scalar_one()
                return result
        except Exception as exc:
            with control_session(db=db) as session:
                session.execute(
                    update(ControlOutboxMessage)
                    .where(ControlOutboxMessage.id == outbox_id)
                    .values(failures=ControlOutboxMessage.failures + 1,
                            last_error=f"{type(exc).__name__}: {exc}"[:4000])
                )
            raise


#: Periodic control-plane sweeps other areas register (e.g. billing deadlines); each gets the app.
PERIODIC_SWEEPS: list[Callable[[Flask], Any]] = []


@tenant_job(queue="default")
def whoami(session: Session) -> dict[str, str]:
    """Report the database role and schema a job runs under (ops diagnostics and isolation tests)."""
    row = session.execute(text("SELECT current_user, current_schema()")).one()
    return {"role": row[0], "schema": row[1]}


#: Periodic tenant jobs the scheduler fans out: (`module:function` of a `@tenant_job`, setting of its interval in s).
#: Paths, not imports: core imports no area.
PERIODIC_JOBS: list[tuple[str, str]] = [
    ("app.audit.jobs:anchor_audit_chain", "AUDIT_ANCHOR_INTERVAL_S"),
    ("app.batches.jobs:check_hold_times", "BATCH_HOLD_CHECK_INTERVAL_S"),
]


def periodic_job_id(tenant_id: int, func: str, slot: int) -> str:
    """RQ job id of one tenant's run of a periodic job in one time slot: a second fan-out is a no-op."""
    name = func.rpartition(":")[2]
    return f"t{tenant_id}-{name}-{slot}"


def fan_out_periodic(app: Flask, func: str, interval_s: float, *, now: float | None = None) -> int:
    """Push one run of `func` per active tenant for the current slot; return how many were new."""
    from app.tenancy.queries import active_tenant_refs  # tenancy builds on core, not the reverse

    fn = _resolve(func)
    slot = int((time.time() if now is None else now) // interval_s)
    conn = redis_connection(app)
    queue = Queue(fn.__batchline_queue__, connection=conn, serializer=JSONSerializer)
    intervals = list(app.config["JOB_RETRY_INTERVALS"])
    pushed = 0
    for ref in active_tenant_refs(app):
        jid = periodic_job_id(ref.id, func, slot)
        if Job.exists(jid, connection=conn):
            continue
        queue.enqueue_call("app.core.jobs.run_periodic_job", kwargs={"tenant_id": ref.id, "func": func},
                           job_id=jid, retry=Retry(max=len(intervals), interval=intervals),
                           result_ttl=86400, failure_ttl=7 * 86400, description=f"{func} tenant={ref.id}")
        pushed += 1
    return pushed


def run_periodic_job(*, tenant_id: int, func: str) -> Any:
    """RQ entry point of a periodic job: run `func(session)` in the tenant's own transaction."""
    app = _app_for_job()
    with app.app_context():
        db: Database = app.extensions["batchline.db"]
        with tenant_transaction(tenant_id, db=db) as session:
            return _resolve(func)(session)


def run_due_periodic(app: Flask, last_slots: dict[str, int], *, now: float | None = None) -> None:
    """Fan out every periodic job whose slot has turned since the last call (one tenant's failure stops none)."""
    moment = time.time() if now is None else now
    for func, setting in PERIODIC_JOBS:
        interval = float(app.config[setting])
        slot = int(moment // interval)
        if last_slots.get(func) == slot:
            continue
        try:
            fan_out_periodic(app, func, interval, now=moment)
            last_slots[func] = slot
        except redis.RedisError as exc:  # Redis down: try again on the next sweep
            log.warning("periodic fan-out of %s waits for Redis: %s", func, exc)


def run_relay_loop(app: Flask, *, interval_s: float | None = None, once: bool = False) -> None:
    """The scheduler process: sweep outboxes every few seconds and fan out periodic jobs."""
    interval = interval_s if interval_s is not None else app.config["OUTBOX_RELAY_INTERVAL_S"]
    last_slots: dict[str, int] = {}
    while True:
        relay_all(app)
        run_due_periodic(app, last_slots)
        for sweep in PERIODIC_SWEEPS:
            try:
                sweep(app)
            except Exception:  # one sweep's failure must not stop the relay
                log.exception("periodic sweep %s failed", getattr(sweep, "__name__", sweep))
        if once:
            return
        time.sleep(interval)
