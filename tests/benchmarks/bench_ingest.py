"""Sensor ingestion end to end against a raw COPY of the same rows into the same database, in the same run.

Prints bench.ingest_readings_per_s (from the first POST to the last reading stored *and analysed*: real HTTP
server, OAuth2 gateway token, payload stored, a real `batchline worker` process running the ingest and
analysis jobs), bench.copy_readings_per_s (psycopg COPY of the same readings straight into the same
partitioned `sensor_readings` table of another tenant of the same database) and bench.ingest_vs_copy_ratio.
BENCH_SAMPLES (readings per sensor, 10 sensors) and BENCH_WORKERS (worker processes) size the run.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
from _harness import bench_app, report
from sqlalchemy import func, select, text
from werkzeug.serving import make_server

from app.api import services as api_services
from app.core.jobs import OutboxMessage
from app.core.tenancy import control_session, tenant_transaction
from app.plant import services as plant
from app.sensors.gateway import IngestClient, Reading
from app.sensors.models import SensorIngest
from app.tenancy.services import create_tenant

SENSORS = 10
SAMPLES = int(os.environ.get("BENCH_SAMPLES", "20000"))  # per sensor: 200,000 readings by default
PER_POST = 2_000  # samples per payload (x 10 sensors = 20,000 readings, about 1.7 MB of JSON)
START = datetime(2026, 11, 2, tzinfo=UTC)


def _plant(db, slug: str) -> tuple:
    tenant = create_tenant(db, slug=slug, name=slug, admin_email=f"admin@{slug}.example.com",
                           admin_password="bench password 123")
    with tenant_transaction(tenant.ref) as session:
        site = plant.create_site(session, code="S1", name="Site", timezone="UTC")
        line = plant.create_line(session, site_id=site.id, code="L1", name="Line")
        equipment = plant.create_equipment(session, tag="BR-1", name="Bioreactor", equipment_class="bioreactor",
                                           line_id=line.id)
        sensors = [plant.create_sensor(session, tag=f"S{i:02d}", equipment_id=equipment.id, quantity_kind="temp",
                                       unit="C", range_low=0, range_high=100, sampling_period_s=1).id
                   for i in range(SENSORS)]
    return tenant, sensors


def _values() -> np.ndarray:
    rng = np.random.default_rng(7)
    return np.round(37.0 + rng.normal(0, 0.05, (SENSORS, SAMPLES)), 5)


def main() -> None:
    # A timeout's SIGTERM must still run the `finally` that stops the worker processes.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    app = bench_app("ingest")
    db = app.extensions["batchline.db"]
    values = _values()
    stamps = [START + timedelta(seconds=i) for i in range(SAMPLES)]
    total = SENSORS * SAMPLES
    with app.app_context():
        tenant, _ = _plant(db, "ingest-e2e")
        copy_tenant, copy_ids = _plant(db, "ingest-copy")
        with control_session() as session:
            creds = api_services.create_oauth_client(session, tenant_id=tenant.ref.id, name="bench",
                                                     scopes=["ingest"], created_by_user_id=None)
        batches = []
        for start in range(0, SAMPLES, PER_POST):
            batches.append([Reading(sensor=f"S{s:02d}", ts=stamps[i], value=float(values[s, i]))
                            for i in range(start, start + PER_POST) for s in range(SENSORS)])
        config = app.config
        env = {**os.environ, "DATABASE_URL": config["DATABASE_URL"], "REDIS_URL": config["REDIS_URL"],
               "BATCHLINE_SECRET_KEY": config["SECRET_KEY"]}
        # One worker process per core (BENCH_WORKERS, default 2), as a deployment on this machine would run.
        workers = [subprocess.Popen([str(Path(sys.executable).parent / "batchline"), "worker", "ingest", "analysis"],
                                    env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                   for _ in range(int(os.environ.get("BENCH_WORKERS", "2")))]
        server = make_server("127.0.0.1", 0, app, threaded=True)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        try:
            client = IngestClient(f"http://127.0.0.1:{server.port}", creds.client_id, creds.secret)
            client.token()
            time.sleep(3)  # let the worker process start up before the clock runs
            started = time.perf_counter()
            for batch in batches:
                client.post(batch)
            while True:
                with tenant_transaction(tenant.ref) as session:
                    pending = session.scalar(select(func.count()).select_from(OutboxMessage)
                                             .where(OutboxMessage.finished_at.is_(None)))
                    processed = session.scalar(select(func.count()).select_from(SensorIngest)
                                               .where(SensorIngest.status == "processed"))
                if pending == 0 and processed == len(batches):
                    break
                time.sleep(0.05)
            ingest_s = time.perf_counter() - started
            with tenant_transaction(tenant.ref) as session:
                stored = session.scalar(text("SELECT count(*) FROM sensor_readings"))
                analysed = session.scalar(text("SELECT sum(n_seen) FROM sensor_analysis_state"))
            assert stored == total, f"stored {stored} of {total}"
        finally:
            server.shutdown()
            for worker in workers:
                worker.terminate()
                worker.wait(30)

        rows = "".join(f"{copy_ids[s]}\t{stamps[i].isoformat()}\t{float(values[s, i])!r}\t0\t0\n"
                       for i in range(SAMPLES) for s in range(SENSORS))
        with tenant_transaction(copy_tenant.ref) as session:
            session.execute(text("SELECT sensor_readings_ensure_partition(:m)"), {"m": START.date()})
        with tenant_transaction(copy_tenant.ref) as session:
            raw = session.connection().connection.driver_connection
            copy_started = time.perf_counter()
            with raw.cursor() as cur, cur.copy(
                    "COPY sensor_readings (sensor_id, ts, value, quality, ingest_id) FROM STDIN") as copy:
                copy.write(rows)
        copy_s = time.perf_counter() - copy_started  # includes the commit, like the ingest path
    print(f"# {total} readings; analysed {analysed}; {len(workers)} workers; e2e {ingest_s:.2f}s, "
          f"copy {copy_s:.2f}s", flush=True)
    report("ingest_readings_per_s", total / ingest_s, "readings/s")
    report("copy_readings_per_s", total / copy_s, "readings/s")
    report("ingest_vs_copy_ratio", (total / ingest_s) / (total / copy_s), "x")


if __name__ == "__main__":
    main()
