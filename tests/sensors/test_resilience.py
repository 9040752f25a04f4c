"""Nothing acknowledged is lost: a worker SIGKILLed mid-job, Redis stopped and restarted during ingestion."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import redis
from rq import Queue
from rq.registry import StartedJobRegistry
from rq.serializers import JSONSerializer
from sqlalchemy import func, select

from app.core.embedded import redis_server_binary
from app.core.jobs import OutboxMessage, redis_connection, relay_tenant
from app.core.tenancy import tenant_transaction
from app.factory import create_app
from app.sensors import services
from app.sensors.models import SensorIngest, SensorReading
from tests.sensors.conftest import T0, burst, readings_json

BATCHLINE = str(Path(sys.executable).parent / "batchline")


def _worker(database_url: str, redis_url: str, *queues: str) -> subprocess.Popen:
    env = {**os.environ, "DATABASE_URL": database_url, "REDIS_URL": redis_url,
           "BATCHLINE_SECRET_KEY": "test-secret-key-not-for-production", "BATCHLINE_JOB_RETRY_INTERVALS": "[0]",
           # Detect an abandoned job within seconds (production: 30 s + 60 s, maintenance every 60 s).
           "BATCHLINE_WORKER_JOB_MONITORING_INTERVAL_S": "1", "BATCHLINE_WORKER_HEARTBEAT_GRACE_S": "2",
           "BATCHLINE_WORKER_MAINTENANCE_INTERVAL_S": "1"}
    return subprocess.Popen([BATCHLINE, "worker", *queues], env=env, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _kill(proc: subprocess.Popen) -> None:
    """SIGKILL the worker and its work horse (its whole process group): no cleanup runs anywhere."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(10)


def _wait(predicate, timeout: float = 60.0, step: float = 0.02) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(step)


def _stored(plant) -> int:
    with tenant_transaction(plant.ref) as session:
        return session.scalar(select(func.count()).select_from(SensorReading))


def _big_payload(plant, samples: int) -> bytes:
    readings = []
    for short in ("TT", "PH", "DO", "PT"):
        doc = json.loads(readings_json(plant.tag(short), [1.0 + (i % 17) / 10 for i in range(samples)]))
        readings += doc["readings"]
    return json.dumps({"readings": readings}).encode()


def test_worker_sigkilled_during_an_ingest_job_is_retried_and_stores_each_reading_once(
        app, make_plant, database_url, redis_url) -> None:
    plant = make_plant()
    samples = 40_000  # 160,000 readings: the job runs long enough to be killed in the middle
    with tenant_transaction(plant.ref) as session:
        ingest_id = services.accept_payload(session, body=_big_payload(plant, samples), kind="json",
                                            source="test", max_bytes=50 * 1024 * 1024).ingest.id
    conn = redis_connection()
    started = StartedJobRegistry("ingest", connection=conn, serializer=JSONSerializer)
    first = _worker(database_url, redis_url, "ingest")
    try:
        _wait(lambda: started.get_job_ids(), timeout=60)
        time.sleep(0.5)  # well inside the job: parsing and COPY of 160,000 readings
    finally:
        _kill(first)
    with tenant_transaction(plant.ref) as session:
        assert session.get(SensorIngest, ingest_id).status == "queued"  # its transaction died with the worker
    assert _stored(plant) == 0

    second = _worker(database_url, redis_url, "ingest", "analysis")
    try:
        def done() -> bool:
            with tenant_transaction(plant.ref) as session:
                return session.get(SensorIngest, ingest_id).status == "processed"

        _wait(done, timeout=90, step=0.5)
    finally:
        second.terminate()
        second.wait(30)
    with tenant_transaction(plant.ref) as session:
        ingest = session.get(SensorIngest, ingest_id)
        job = session.scalar(select(OutboxMessage).where(OutboxMessage.func == "app.sensors.jobs:process_ingest"))
    assert (ingest.readings_stored, ingest.readings_duplicate) == (4 * samples, 0)
    assert _stored(plant) == 4 * samples
    assert job.finished_at is not None
    burst()  # whatever analysis is left


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _redis_server(port: int, directory: Path) -> subprocess.Popen:
    server = subprocess.Popen([redis_server_binary(), "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                               "--appendonly", "no", "--dir", str(directory)], stdout=subprocess.DEVNULL)
    conn = redis.Redis(port=port)
    _wait(lambda: _pings(conn), timeout=10, step=0.05)
    return server


def _pings(conn: redis.Redis) -> bool:
    try:
        return bool(conn.ping())
    except redis.ConnectionError:
        return False


def test_redis_stopped_during_ingestion_then_restarted_loses_nothing(
        app, make_plant, database_url, tmp_path) -> None:
    plant = make_plant()
    port = _free_port()
    url = f"redis://127.0.0.1:{port}/0"
    own = create_app({"DATABASE_URL": database_url, "REDIS_URL": url, "SECRET_KEY": "x" * 32,
                      "JOB_RETRY_INTERVALS": [0], "API_RATE_LIMIT": "1000 per minute"})
    server = _redis_server(port, tmp_path)
    try:
        def post(i: int) -> int:
            body = readings_json(plant.tag("TT"), [37.0 + j / 100 for j in range(100)],
                                 start=T0 + timedelta(seconds=100 * i), message_id=f"m-{i}")
            with own.app_context(), tenant_transaction(plant.ref) as session:
                return services.accept_payload(session, body=body, kind="json", source="gw",
                                               max_bytes=10**7).ingest.id

        acknowledged = [post(0)]  # queued in Redis, not yet run
        server.terminate()
        server.wait(10)  # Redis dies and takes the queued job with it (no persistence)
        acknowledged += [post(1), post(2)]  # still acknowledged: the payload and its outbox row are in PostgreSQL
        with own.app_context(), tenant_transaction(plant.ref) as session:
            waiting = session.scalar(select(func.count()).select_from(OutboxMessage)
                                     .where(OutboxMessage.dispatched_at.is_(None)))
        assert waiting == 2
        server = _redis_server(port, tmp_path)
        # The relay pushes what waited, and re-pushes the job Redis lost when it restarted.
        assert relay_tenant(own, plant.ref, min_age_s=0, lost_after_s=0) == 3
        assert relay_tenant(own, plant.ref, min_age_s=0, lost_after_s=0) == 0  # the jobs exist now
        conn = redis.Redis.from_url(url)
        assert Queue("ingest", connection=conn, serializer=JSONSerializer).count == 3
        with own.app_context():
            burst(conn)
        with own.app_context(), tenant_transaction(plant.ref) as session:
            rows = session.scalars(select(SensorIngest).where(SensorIngest.id.in_(acknowledged))).all()
            assert {r.status for r in rows} == {"processed"}
            assert sum(r.readings_stored for r in rows) == 300
            assert session.scalar(select(func.count()).select_from(SensorReading)) == 300
    finally:
        server.terminate()
        server.wait(10)
        own.extensions["batchline.db"].dispose()
