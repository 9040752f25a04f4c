"""Sensor ingestion end to end against a raw COPY of the same rows into the same database, in the same run.

Prints bench.ingest_readings_per_s: from the first POST to the last reading stored *and analysed* (real HTTP
server, one OAuth2 client per gateway, GATEWAYS gateways posting concurrently, payloads stored, real
`batchline worker` processes running the ingest jobs, which COPY, attach and analyse). The clock stops when
every payload is processed, no job is pending, and every reading has been judged by the rules except the
last `analysis.LAG` of each sensor, which the spike check can only judge once later readings arrive.
bench.copy_readings_per_s: the same readings COPYed straight into the same partitioned `sensor_readings` table
of another tenant of the same database, as one binary COPY built before the clock starts (the fastest raw
load psycopg can do; the text COPY of the same rows is printed for reference); bench.ingest_vs_copy_ratio.
The baseline is the raw load alone: the review's coverage buckets, which the ingest job adds for what it
stores, are part of what ingestion does, not of a raw load. BENCH_ROUNDS (default 3) rounds each measure an
ingest into a fresh tenant and then its baseline into another; the figures are the medians over the rounds (the
ratio: the median of the rounds' own ratios, each pair measured within seconds of each other).

BENCH_SAMPLES (readings per sensor), BENCH_GATEWAYS, BENCH_PER_POST (samples per sensor per payload) and
BENCH_WORKERS (worker processes, default 2: one per core of this machine) size the run. The figure is a
throughput, so the server and the workers are warm when the clock starts, as they are in a plant where gateways
post around the clock: each gateway first posts WARM_UP samples per sensor from just before the measured stream,
and the clock starts once those are stored and analysed (the first request of a process pays for imports, SQL
compilation, prepared statements and pool connections, and a sensor's first readings for fitting its automatic
in-control model, once in its life; the other benchmarks warm up the same way). Payload bodies are
serialised before the clock starts: turning readings into JSON is the gateway's work, on its own machine. The
month's readings partition is made before the clock for both tenants (production makes them ahead with
`batchline sensors partitions`).

Also printed (a `#` line per round, Linux): the CPU seconds spent while ingesting by the bench process (HTTP server and
gateway clients), the worker processes and the database's backends, and by the backend of the binary COPY. Under
load the wall clock says little; CPU per reading says what the path costs.
"""

from __future__ import annotations

import gc
import os
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import orjson
from _harness import bench_app, median, report
from rq import Worker
from sqlalchemy import text
from werkzeug.serving import make_server

from app.api import services as api_services
from app.core.jobs import redis_connection
from app.core.tenancy import control_session, tenant_transaction
from app.plant import services as plant
from app.sensors.analysis import BASELINE_N, LAG
from app.sensors.gateway import IngestClient
from app.sensors.services import Loaded, copy_readings, ensure_partitions
from app.tenancy.services import create_tenant

SENSORS = 10  # per gateway, on the gateway's own bioreactor
GATEWAYS = int(os.environ.get("BENCH_GATEWAYS", "4"))
SAMPLES = int(os.environ.get("BENCH_SAMPLES", "10000"))  # per sensor: 400,000 readings by default
PER_POST = int(os.environ.get("BENCH_PER_POST", "2500"))  # x 10 sensors = 25,000 readings, about 2.1 MB of JSON
#: Samples per sensor posted (and analysed) before the clock starts: enough for every sensor's automatic
#: in-control model (fitted once in a sensor's life, on its first BASELINE_N good readings).
WARM_UP = BASELINE_N + LAG
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "3"))
START = datetime(2026, 11, 2, tzinfo=UTC)
ROOT = Path(__file__).resolve().parents[2]


def _plant(db, slug: str) -> tuple:
    """A tenant with one bioreactor of SENSORS temperature probes per gateway; return it and the sensor ids."""
    tenant = create_tenant(db, slug=slug, name=slug, admin_email=f"admin@{slug}.example.com",
                           admin_password="bench password 123")
    ids = []
    with tenant_transaction(tenant.ref) as session:
        site = plant.create_site(session, code="S1", name="Site", timezone="UTC")
        line = plant.create_line(session, site_id=site.id, code="L1", name="Line")
        for g in range(GATEWAYS):
            equipment = plant.create_equipment(session, tag=f"BR-{g}", name="Bioreactor",
                                               equipment_class="bioreactor", line_id=line.id)
            ids.append([plant.create_sensor(session, tag=f"G{g}S{i:02d}", equipment_id=equipment.id,
                                            quantity_kind="temp", unit="C", range_low=0, range_high=100,
                                            sampling_period_s=1).id
                        for i in range(SENSORS)])
    return tenant, ids


def _values() -> np.ndarray:
    rng = np.random.default_rng(7)
    return np.round(37.0 + rng.normal(0, 0.05, (GATEWAYS, SENSORS, SAMPLES)), 5)


def _bodies(values: np.ndarray, stamps: list[str], per_post: int = PER_POST,
            prefix: str = "gw") -> list[list[bytes]]:
    """Per gateway, its payloads in order (each with a message id), as a gateway would send them."""
    bodies = []
    samples = values.shape[2]
    for g in range(GATEWAYS):
        mine = []
        for start in range(0, samples, per_post):
            readings = [{"sensor": f"G{g}S{s:02d}", "ts": stamps[i], "value": float(values[g, s, i])}
                        for i in range(start, min(start + per_post, samples)) for s in range(SENSORS)]
            mine.append(orjson.dumps({"readings": readings, "message_id": f"{prefix}{g}-{start}"}))
        bodies.append(mine)
    return bodies


_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process so far (0 if it is gone or this is not Linux)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / _TICKS


def _backend_cpu(db) -> dict[int, float]:
    """CPU seconds so far of each backend of the bench database (a server on this machine), by pid."""
    with db.owner.connect() as conn:
        pids = conn.execute(text("SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
                                 "AND pid <> pg_backend_pid()")).scalars().all()
    return {pid: _cpu_s(pid) for pid in pids}


#: What the clock waits for, in one statement: the poll runs every 20 ms on the same two cores as the ingest, so
#: it should cost as little as it can (one held connection, see `_progress_connection`).
_PROGRESS_SQL = text(
    "SELECT (SELECT count(*) FROM outbox WHERE finished_at IS NULL), "
    "(SELECT count(*) FROM sensor_ingests WHERE status = 'processed'), "
    "(SELECT coalesce(sum(n_seen), 0) FROM sensor_analysis_state)")


def _warm_up_bodies() -> list[list[bytes]]:
    """Per gateway, one payload of WARM_UP samples per sensor ending a second before START, from the same
    process (another seed): the stream the measured one continues."""
    rng = np.random.default_rng(11)
    values = np.round(37.0 + rng.normal(0, 0.05, (GATEWAYS, SENSORS, WARM_UP)), 5)
    stamps = [(START - timedelta(seconds=WARM_UP - i)).isoformat() for i in range(WARM_UP)]
    return _bodies(values, stamps, per_post=WARM_UP, prefix="warm")


def _done(progress, expected_posts: int, judged: int) -> bool:
    """True once every payload is processed, no job is pending and every judgeable reading was judged."""
    pending, processed, analysed = progress.execute(_PROGRESS_SQL).one()
    return pending == 0 and processed == expected_posts and analysed == judged


def _quiet_partition(db, tenant) -> None:
    """Keep autovacuum off the tenant's readings partition: its vacuum and analysis of what one measurement loaded
    would otherwise run under the clock of the next (the ingest's 440,000 rows under the COPY's, and so on)."""
    partition = f"sensor_readings_p{START:%Y_%m}"
    with db.owner.begin() as conn:
        conn.execute(text(f'ALTER TABLE "{tenant.ref.schema}".{partition} '
                          "SET (autovacuum_enabled = false, toast.autovacuum_enabled = false)"))


def _progress_connection(db, tenant):
    """One connection held open for the poll, on the tenant's schema, each poll its own snapshot (autocommit):
    the instrument should not cost a pool checkout and a transaction per look."""
    conn = db.owner.connect().execution_options(isolation_level="AUTOCOMMIT")
    conn.exec_driver_sql(f'SET search_path TO "{tenant.ref.schema}"')
    return conn


def _timed_copy(db, kind: str, values: np.ndarray, moments: list[datetime],
                stamps: list[str], round_no: int) -> tuple[float, float]:
    """Seconds to COPY the same readings into a fresh tenant's `sensor_readings`, commit included, and the CPU
    seconds of the database backend that ran it."""
    tenant, ids = _plant(db, f"ingest-copy-{kind}-{round_no}")
    total = values.size
    if kind == "binary":
        sensor_ids = np.repeat(np.asarray(ids, dtype=np.int64)[:, :, None], SAMPLES, axis=2).ravel()
        times = np.tile(np.array(moments, dtype="datetime64[us]"), GATEWAYS * SENSORS)
        none = np.full(total, -1, dtype=np.int64)
        data: bytes | str = Loaded(sensor_ids, times, values.ravel(), np.zeros(total, dtype=np.int16),
                                   none, none, np.zeros(total, dtype=np.int64)).copy_binary()
    else:
        data = "".join(f"{ids[g][s]}\t{stamps[i]}\t{float(values[g, s, i])!r}\t0\t0\t\\N\t\\N\n"
                       for g in range(GATEWAYS) for s in range(SENSORS) for i in range(SAMPLES))
    with tenant_transaction(tenant.ref) as session:
        session.execute(text("SELECT sensor_readings_ensure_partition(:m)"), {"m": START.date()})
    _quiet_partition(db, tenant)
    started = time.perf_counter()
    with tenant_transaction(tenant.ref) as session:
        backend = session.execute(text("SELECT pg_backend_pid()")).scalar_one()
        cpu_before = _cpu_s(backend)
        if kind == "binary":
            assert copy_readings(session, data, total).stored == total  # type: ignore[arg-type]
        else:
            with session.connection().connection.driver_connection.cursor() as cur, cur.copy(
                    "COPY sensor_readings (sensor_id, ts, value, quality, ingest_id, batch_id, step_id) "
                    "FROM STDIN") as copy:
                copy.write(data)
    return time.perf_counter() - started, _cpu_s(backend) - cpu_before  # the commit included, like the ingest's


def _ingest_round(db, round_no: int, workers: list[subprocess.Popen], base_url: str,
                  bodies: list[list[bytes]], warm_up: list[list[bytes]]) -> dict:
    """One measured ingest into a fresh tenant: its plant, gateways and warm-up before the clock, then every payload
    posted by its gateway concurrently until all is stored and analysed. Return the times, episodes and CPU."""
    total, warm = GATEWAYS * SENSORS * SAMPLES, GATEWAYS * SENSORS * WARM_UP
    posts = sum(len(b) for b in bodies)
    tenant, _ = _plant(db, f"ingest-e2e-{round_no}")
    with tenant_transaction(tenant.ref) as session:
        # The month's partition exists before the clock, as for the COPY: in production `batchline sensors
        # partitions` makes them ahead; making one is not what this measures.
        ensure_partitions(session, {START.date().replace(day=1)})
    _quiet_partition(db, tenant)
    with control_session() as session:
        creds = [api_services.create_oauth_client(session, tenant_id=tenant.ref.id, name=f"gw{g}", scopes=["ingest"],
                                                  created_by_user_id=None) for g in range(GATEWAYS)]
    clients = [IngestClient(base_url, c.client_id, c.secret) for c in creds]
    for client in clients:
        client.token()

    def gateway(g: int, payloads: list[list[bytes]] = bodies) -> None:
        for body in payloads[g]:
            clients[g].post_body(body)

    progress = _progress_connection(db, tenant)
    try:
        warming = time.perf_counter()
        with ThreadPoolExecutor(GATEWAYS) as pool:
            list(pool.map(gateway, range(GATEWAYS), [warm_up] * GATEWAYS))
        while not _done(progress, GATEWAYS, warm - GATEWAYS * SENSORS * LAG):
            assert time.perf_counter() - warming < 300, "the warm-up was not stored and analysed in 5 minutes"
            time.sleep(0.02)
        with tenant_transaction(tenant.ref) as session:
            warm_episodes = session.scalar(text("SELECT count(*) FROM sensor_episodes"))
        # As a web worker is once gunicorn has loaded the app (`post_worker_init` in infra/gunicorn.conf.py), and
        # as `batchline worker` is: what is loaded by now lives for the whole run.
        gc.freeze()
        backends_before = _backend_cpu(db)
        bench_before, workers_before = _cpu_s(os.getpid()), sum(_cpu_s(p.pid) for p in workers)
        started = time.perf_counter()
        with ThreadPoolExecutor(GATEWAYS) as pool:
            list(pool.map(gateway, range(GATEWAYS)))
        posted_s = time.perf_counter() - started
        while not _done(progress, GATEWAYS + posts, warm + total - GATEWAYS * SENSORS * LAG):
            assert time.perf_counter() - started < 900, "not all stored and analysed after 15 minutes"
            time.sleep(0.02)
        ingest_s = time.perf_counter() - started
        cpu = {"bench": _cpu_s(os.getpid()) - bench_before,
               "workers": sum(_cpu_s(p.pid) for p in workers) - workers_before,
               "backends": sum(now - backends_before.get(pid, 0.0) for pid, now in _backend_cpu(db).items())}
    finally:
        progress.close()
    with tenant_transaction(tenant.ref) as session:
        stored = session.scalar(text("SELECT count(*) FROM sensor_readings"))
        episodes = session.scalar(text("SELECT count(*) FROM sensor_episodes")) - warm_episodes
    assert stored == warm + total, f"stored {stored} of {warm} + {total}"
    return {"ingest_s": ingest_s, "posted_s": posted_s, "episodes": episodes, "cpu": cpu}


def main() -> None:
    # A timeout's SIGTERM must still run the `finally` that stops the worker processes.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    app = bench_app("ingest")
    db = app.extensions["batchline.db"]
    values = _values()
    moments = [START + timedelta(seconds=i) for i in range(SAMPLES)]
    stamps = [m.isoformat() for m in moments]
    total = GATEWAYS * SENSORS * SAMPLES
    bodies = _bodies(values, stamps)
    warm_up = _warm_up_bodies()
    posts = sum(len(b) for b in bodies)
    rounds = []
    with app.app_context():
        config = app.config
        # The workers run this checkout's code: the `batchline` script alone would import the package wherever
        # the virtualenv's editable install points (another checkout sharing the virtualenv, say).
        env = {**os.environ, "DATABASE_URL": config["DATABASE_URL"], "REDIS_URL": config["REDIS_URL"],
               "BATCHLINE_SECRET_KEY": config["SECRET_KEY"],
               "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
        workers = [subprocess.Popen([str(Path(sys.executable).parent / "batchline"), "worker", "ingest", "analysis"],
                                    env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                   for _ in range(int(os.environ.get("BENCH_WORKERS", "2")))]
        server = make_server("127.0.0.1", 0, app, threaded=True)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        try:
            # The first round starts once every worker process has started and registered with Redis (listening).
            conn = redis_connection(app)
            while len([w for w in Worker.all(connection=conn) if w.pid in {p.pid for p in workers}]) < len(workers):
                assert all(p.poll() is None for p in workers), "a worker process died on start-up"
                time.sleep(0.2)
            # Rounds of an ingest and its baseline one after the other: a drift in the machine's speed hits both
            # members of a pair alike, and the median of the pairs' ratios is what is reported.
            for round_no in range(ROUNDS):
                measured = _ingest_round(db, round_no, workers, f"http://127.0.0.1:{server.port}", bodies,
                                         warm_up)
                measured["copy_s"], measured["copy_cpu"] = _timed_copy(db, "binary", values, moments, stamps,
                                                                       round_no)
                rounds.append(measured)
        finally:
            server.shutdown()
            for worker in workers:
                worker.terminate()
                worker.wait(30)
        text_s, text_cpu = _timed_copy(db, "text", values, moments, stamps, 0)
    print(f"# {total} readings from {GATEWAYS} gateways in {posts} payloads; {len(workers)} workers; {ROUNDS} "
          f"rounds; COPY text (reference, once) {text_s:.2f}s, backend {text_cpu:.2f} CPU-s", flush=True)
    for round_no, r in enumerate(rounds):
        cpu = r["cpu"]
        print(f"# round {round_no + 1}: all posted (202) after {r['posted_s']:.2f}s, stored and analysed after "
              f"{r['ingest_s']:.2f}s, {r['episodes']} episodes; binary COPY {r['copy_s']:.2f}s (backend "
              f"{r['copy_cpu']:.2f} CPU-s); ratio {r['copy_s'] / r['ingest_s']:.3f}; CPU-s while ingesting: bench "
              f"process {cpu['bench']:.2f}, workers {cpu['workers']:.2f}, database backends {cpu['backends']:.2f}, "
              f"total {sum(cpu.values()):.2f}", flush=True)
    report("ingest_readings_per_s", median([total / r["ingest_s"] for r in rounds]), "readings/s")
    report("copy_readings_per_s", median([total / r["copy_s"] for r in rounds]), "readings/s")
    report("ingest_vs_copy_ratio", median([r["copy_s"] / r["ingest_s"] for r in rounds]), "x")


if __name__ == "__main__":
    main()
