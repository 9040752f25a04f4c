"""The outbox in front of RQ: rolled-back work never runs, committed work runs once, Redis outages delay only."""

from __future__ import annotations

import socket
import subprocess
import threading
import time

import pytest
import redis
from rq import Queue, SimpleWorker
from rq.job import JobStatus
from rq.registry import ScheduledJobRegistry, StartedJobRegistry
from rq.serializers import JSONSerializer
from sqlalchemy import select

from app.core.embedded import redis_server_binary
from app.core.jobs import (
    PERIODIC_JOBS,
    QUEUES,
    BatchlineWorker,
    InProcessWorker,
    OutboxMessage,
    enqueue,
    import_job_modules,
    job_id,
    redis_connection,
    relay_tenant,
    run_tenant_job,
    worker_class,
)
from app.core.tenancy import tenant_transaction
from app.factory import create_app


def _burst(conn: redis.Redis) -> None:
    SimpleWorker(list(QUEUES), connection=conn, serializer=JSONSerializer).work(burst=True)


def test_job_enqueued_in_rolled_back_transaction_never_runs(app, make_tenant) -> None:
    tenant = make_tenant()
    queue = Queue("default", connection=redis_connection(), serializer=JSONSerializer)
    before = queue.count
    with pytest.raises(RuntimeError), tenant_transaction(tenant.ref) as session:
        enqueue(session, "app.core.jobs:whoami")
        raise RuntimeError("the unit of work fails after enqueueing")
    assert queue.count == before
    with tenant_transaction(tenant.ref) as session:
        assert session.scalars(select(OutboxMessage)).all() == []


def test_committed_job_runs_once_under_its_own_tenant(app, make_tenant) -> None:
    tenant = make_tenant()
    with tenant_transaction(tenant.ref) as session:
        outbox_id = enqueue(session, "app.core.jobs:whoami").id
    conn = redis_connection()
    job = Queue("default", connection=conn, serializer=JSONSerializer).fetch_job(job_id(tenant.ref.id, outbox_id))
    assert job is not None
    _burst(conn)
    with tenant_transaction(tenant.ref) as session:
        row = session.get(OutboxMessage, outbox_id)
        assert row.result == {"role": tenant.ref.role, "schema": tenant.ref.schema}
        finished = row.finished_at
    # A redelivery (killed worker, relay racing the web process) changes nothing.
    assert run_tenant_job(tenant_id=tenant.ref.id, outbox_id=outbox_id) == row.result
    with tenant_transaction(tenant.ref) as session:
        assert session.get(OutboxMessage, outbox_id).finished_at == finished
    # The relay does not push a dispatched row again.
    assert relay_tenant(app, tenant.ref, min_age_s=0) == 0


def test_failing_job_is_retried_and_its_error_is_visible(app, make_tenant) -> None:
    tenant = make_tenant()
    with tenant_transaction(tenant.ref) as session:
        outbox_id = enqueue(session, "app.core.jobs:whoami").id
        # Simulate a job whose function raises: point it at a path that is not a tenant job.
        session.get(OutboxMessage, outbox_id).func = "app.core.jobs:enqueue"
    _burst(redis_connection())
    with tenant_transaction(tenant.ref) as session:
        row = session.get(OutboxMessage, outbox_id)
        assert row.finished_at is None
        assert row.failures == 2  # first attempt + one retry (JOB_RETRY_INTERVALS=[0] in tests)
        assert "not marked with @tenant_job" in row.last_error


def test_a_failing_job_waits_the_configured_backoff_before_each_retry(app, make_tenant) -> None:
    tenant = make_tenant()
    app.config["JOB_RETRY_INTERVALS"] = [30, 120, 600]  # as in production: a broken job is not hammered
    try:
        with tenant_transaction(tenant.ref) as session:
            outbox_id = enqueue(session, "app.core.jobs:whoami").id
            session.get(OutboxMessage, outbox_id).func = "app.core.jobs:enqueue"  # fails every time
    finally:
        app.config["JOB_RETRY_INTERVALS"] = [0]
    conn = redis_connection()
    queue = Queue("default", connection=conn, serializer=JSONSerializer)
    job = queue.fetch_job(job_id(tenant.ref.id, outbox_id))
    assert (job.retries_left, job.retry_intervals) == (3, [30, 120, 600])
    started = time.time()
    _burst(conn)  # the first attempt fails; the retry is scheduled, not run at once
    job.refresh()
    assert job.get_status() == JobStatus.SCHEDULED and job.retries_left == 2
    due = ScheduledJobRegistry(queue=queue).get_scheduled_time(job)
    assert 25 <= due.timestamp() - started <= 40
    with tenant_transaction(tenant.ref) as session:
        assert session.get(OutboxMessage, outbox_id).failures == 1
    ScheduledJobRegistry(queue=queue).remove(job, delete_job=True)  # leave nothing scheduled for later tests


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_job_enqueued_while_redis_is_down_runs_once_redis_is_back(app, make_tenant, database_url, tmp_path) -> None:
    port = _free_port()
    url = f"redis://127.0.0.1:{port}/0"
    down_app = create_app({"DATABASE_URL": database_url, "REDIS_URL": url, "SECRET_KEY": "x" * 32,
                           "JOB_RETRY_INTERVALS": [0]})
    tenant = make_tenant()
    with down_app.app_context(), tenant_transaction(tenant.ref) as session:
        outbox_id = enqueue(session, "app.core.jobs:whoami").id  # commit succeeds; the push to Redis fails
    with down_app.app_context(), tenant_transaction(tenant.ref) as session:
        assert session.get(OutboxMessage, outbox_id).dispatched_at is None

    server = subprocess.Popen([redis_server_binary(), "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                               "--appendonly", "no", "--dir", str(tmp_path)], stdout=subprocess.DEVNULL)
    try:
        conn = redis.Redis.from_url(url)
        for _ in range(50):
            try:
                conn.ping()
                break
            except redis.ConnectionError:
                time.sleep(0.1)
        assert relay_tenant(down_app, tenant.ref, min_age_s=0) == 1
        with down_app.app_context():
            _burst(conn)
        with down_app.app_context(), tenant_transaction(tenant.ref) as session:
            row = session.get(OutboxMessage, outbox_id)
            assert row.finished_at is not None and row.result["schema"] == tenant.ref.schema
    finally:
        server.terminate()
        server.wait(10)
        down_app.extensions["batchline.db"].dispose()


def test_a_job_run_before_its_row_was_stamped_dispatched_stamps_it(app, make_tenant, database_url) -> None:
    # A job can start between the push and the stamp of its row (the stamp skips a row the job holds): the job
    # stamps it, so the relay never takes a finished row for one still waiting.
    down_app = create_app({"DATABASE_URL": database_url, "REDIS_URL": f"redis://127.0.0.1:{_free_port()}/0",
                           "SECRET_KEY": "x" * 32})
    tenant = make_tenant()
    try:
        with down_app.app_context(), tenant_transaction(tenant.ref) as session:
            outbox_id = enqueue(session, "app.core.jobs:whoami").id  # Redis is down: pushed by nobody
        with down_app.app_context():
            run_tenant_job(tenant_id=tenant.ref.id, outbox_id=outbox_id)
        with down_app.app_context(), tenant_transaction(tenant.ref) as session:
            row = session.get(OutboxMessage, outbox_id)
            assert row.finished_at is not None and row.dispatched_at == row.finished_at
        assert relay_tenant(down_app, tenant.ref, min_age_s=0) == 0
    finally:
        down_app.extensions["batchline.db"].dispose()


def test_only_marked_functions_can_be_enqueued(app, make_tenant) -> None:
    tenant = make_tenant()
    with pytest.raises(ValueError, match=r"app\.<module>"), tenant_transaction(tenant.ref) as session:
        enqueue(session, "os:system")
    with pytest.raises(ValueError, match="not marked"), tenant_transaction(tenant.ref) as session:
        enqueue(session, "app.core.jobs:enqueue")


def test_worker_mode_runs_short_job_queues_in_process_and_forks_for_the_rest() -> None:
    in_process = ["ingest", "analysis"]
    assert worker_class(["ingest", "analysis"], in_process) is InProcessWorker
    assert worker_class(["ingest"], in_process) is InProcessWorker
    assert worker_class(["ingest", "reports"], in_process) is BatchlineWorker  # a report keeps its own process
    assert worker_class(list(QUEUES), in_process) is BatchlineWorker
    assert worker_class(["reports"], in_process, "in-process") is InProcessWorker
    assert worker_class(["ingest"], in_process, "fork") is BatchlineWorker
    with pytest.raises(ValueError, match="unknown worker mode"):
        worker_class(["ingest"], in_process, "thread")


def _test_queue(conn: redis.Redis) -> Queue:
    queue = Queue("in-process-test", connection=conn, serializer=JSONSerializer)
    queue.empty()
    return queue


def test_in_process_worker_enforces_the_job_timeout(app) -> None:
    conn = redis_connection()
    queue = _test_queue(conn)
    slow = queue.enqueue_call("time.sleep", args=(30,), timeout=1)
    started = time.monotonic()
    InProcessWorker([queue], connection=conn, serializer=JSONSerializer).work(burst=True)
    assert time.monotonic() - started < 15
    slow.refresh()
    assert slow.get_status() == JobStatus.FAILED
    assert "JobTimeoutException" in slow.latest_result().exc_string


def test_in_process_worker_keeps_a_long_job_alive_but_only_while_it_runs(app) -> None:
    """The job's heartbeat TTL is interval + grace (2 s here): a 4 s job survives registry maintenance."""
    conn = redis_connection()
    queue = _test_queue(conn)
    job = queue.enqueue_call("time.sleep", args=(4,), timeout=60)
    worker = InProcessWorker([queue], connection=conn, serializer=JSONSerializer, job_monitoring_interval=1)
    worker.heartbeat_grace_s = 1
    registry = StartedJobRegistry(queue=queue)
    seen: dict[str, object] = {}

    def maintenance_mid_job() -> None:
        time.sleep(3)  # past the first heartbeat's TTL: only later heartbeats keep the job registered
        registry.cleanup()  # what any worker's registry maintenance does to abandoned jobs
        seen["status"] = job.get_status(refresh=True)
        seen["registered"] = job.id in registry.get_job_ids(cleanup=False)

    watcher = threading.Thread(target=maintenance_mid_job)
    watcher.start()
    worker.work(burst=True)
    watcher.join()
    assert seen == {"status": JobStatus.STARTED, "registered": True}
    assert job.get_status(refresh=True) == JobStatus.FINISHED


def test_workers_import_every_job_module_before_their_first_job() -> None:
    imported = set(import_job_modules())
    assert {"app.sensors.jobs", "app.core.jobs"} <= imported
    assert {path.partition(":")[0] for path, _ in PERIODIC_JOBS} <= imported
