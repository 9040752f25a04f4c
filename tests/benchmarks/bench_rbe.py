"""The review-by-exception job over a big batch, against a plain `count(*)` scan of that batch's readings.

The batch is real: a 25-phase recipe (every phase with critical and key parameters measured by sensors) planned,
released to the floor and executed through the batch services — 500 entries, each step signed *performed* and
*verified* by a second operator (passwords checked) — then completed, which queues the RBE job on the `reports`
queue as in production. Before completion a gateway's readings are loaded the way the ingest job loads them:
`attach_steps` (the ingest job's own function) gives each reading the batch step running on its equipment at its
time, and COPY puts 1,000,000 readings (20 sensors: temperature, pH, DO, pressure, agitation) into the partitioned
`sensor_readings` table; 1,000 exception episodes are stored as the analysis job stores them (one audit event
each). A real RQ worker (`SimpleWorker`, the `reports` queue) then runs the job `app.review.jobs:run_rbe_job`.

The batch runs in real time (its steps last seconds, not days), so its readings are dense (sub-millisecond to a
few milliseconds apart) to put a million of them inside its steps; the RBE reads the same rows either way.

Prints bench.rbe_1m_readings_s (the job, from the worker picking it up to its commit and the job's result stored:
the worker's `execute_job`; a production worker is long-lived, so its start-up and the burst worker's shutdown —
which waits up to a second for its pubsub thread — are not the job's time, and the summary line shows them
apart), bench.rbe_count_scan_s
(median of `SELECT count(*) FROM sensor_readings WHERE batch_id = ...` in the same database, cache warm) and
bench.rbe_vs_scan_ratio. Targets: the job under 5 s and under 3x the scan.
BENCH_RBE_READINGS sizes the run (default 1,000,000).
"""

from __future__ import annotations

import os
import statistics
import time
import uuid
from datetime import UTC, datetime, timedelta

import numpy as np
from _harness import bench_app, report
from rq import Queue, SimpleWorker
from rq.job import Job
from rq.serializers import JSONSerializer
from sqlalchemy import func, select, text

from app.accounts.models import Membership, User
from app.accounts.passwords import hash_password
from app.audit.services import record_many
from app.batches import execution, services
from app.core.jobs import OutboxMessage, redis_connection
from app.core.tenancy import Actor, control_session, tenant_transaction
from app.plant import services as plant
from app.review.models import RbeRun
from app.sensors.models import SensorEpisode, SensorIngest
from app.sensors.services import COPY_COLUMNS, add_buckets, attach_steps, ensure_partitions
from app.tenancy.services import create_tenant
from tests.batches.conftest import make_recipe_version
from tests.factories import make_line, make_material

READINGS = int(os.environ.get("BENCH_RBE_READINGS", "1000000"))
PHASES = 25
CAPTURES_PER_PHASE = 20  # 25 x 20 = 500 entries
EPISODES = 1000
PASSWORD = "bench password 1234 review"

#: (parameter key, name, unit, target, low, high, criticality, sensor quantity kind)
PARAMETERS = [
    ("temp", "Temperature", "degC", 37.0, 36.0, 38.0, "critical", "temperature"),
    ("ph", "pH", "pH", 7.0, 6.8, 7.2, "critical", "pH"),
    ("do", "Dissolved oxygen", "percent", 40.0, 20.0, 60.0, "key", "dissolved oxygen"),
    ("pressure", "Headspace pressure", "mbar", 50.0, 20.0, 100.0, "key", "pressure"),
    ("agitation", "Agitation", "rpm", 120.0, 100.0, 140.0, "key", "agitation"),
]
SENSORS_PER_KIND = 4  # 20 sensors

RECIPE = {
    "schema": "batchline.recipe/1",
    "header": {"recipe_code": "RBE-BENCH", "product_code": "RBE-P", "product_name": "Bench harvest",
               "batch_size": {"value": 50, "unit": "L"}},
    "formula": {"parameters": [
        {"key": key, "name": name, "type": "process_parameter", "unit": unit, "target": target, "low": low,
         "high": high, "criticality": criticality}
        for key, name, unit, target, low, high, criticality, _ in PARAMETERS]},
    "procedure": {"unit_procedures": [{
        "key": "culture", "name": "Culture", "equipment_class": "bioreactor",
        "operations": [{"key": "run", "name": "Run", "phases": [
            {"key": f"p{p:02d}", "name": f"Culture day {p + 1}", "instructions": "Read the probes.",
             "parameters": [key for key, *_ in PARAMETERS],
             "captures": [{"kind": "number", "key": f"c{c:02d}", "label": f"Reading {c}",
                           "parameter": PARAMETERS[c % len(PARAMETERS)][0]} for c in range(CAPTURES_PER_PHASE)],
             "signatures": [{"meaning": "performed"}, {"meaning": "verified", "independent": True}]}
            for p in range(PHASES)]}]}]},
}


def _people(db, ref) -> dict[str, tuple[int, Actor, str]]:
    hashed = hash_password(PASSWORD)
    people = {}
    with control_session(db=db) as cp:
        for key, roles in (("operator", ["Operator"]), ("operator2", ["Operator"]), ("supervisor", ["Supervisor"])):
            email = f"{key}@bench-rbe.example.com"
            user = User(email=email, name=key.title(), password_hash=hashed)
            cp.add(user)
            cp.flush()
            member = Membership(user_id=user.id, tenant_id=ref.id, roles=roles)
            cp.add(member)
            cp.flush()
            people[key] = (user.id, Actor(member_id=member.id, label=f"{key} <{email}>", request_id="bench"), email)
    return people


def _execute_batch(db, ref, people) -> tuple[int, int, list[int]]:
    """Plan, release and execute the batch through the services; return (batch id, reactor id, sensor ids)."""
    sup_user, supervisor, _ = people["supervisor"]
    with tenant_transaction(ref, db=db, actor=supervisor) as s:
        line = make_line(s)
        reactor = plant.create_equipment(s, tag="BR-500", name="Bioreactor 500", equipment_class="bioreactor",
                                         line_id=line.id, capacity="50", capacity_unit="L", status="clean",
                                         qualification_status="qualified")
        sensors = [plant.create_sensor(s, tag=f"{kind[:4].upper().replace(' ', '')}-{i}", equipment_id=reactor.id,
                                       quantity_kind=kind, unit=unit, range_low=low - 50, range_high=high + 50,
                                       sampling_period_s="0.001").id
                   for _key, _name, unit, _t, low, high, _c, kind in PARAMETERS for i in range(SENSORS_PER_KIND)]
        make_material(s, code="RBE-P", name="Bench harvest", unit="L", material_type="product")
        version = make_recipe_version(s, RECIPE)
        batch = services.plan_batch(s, master_recipe_id=version.master_recipe_id, batch_size="50", unit="L",
                                    line_id=line.id, planned_start=datetime.now(UTC),
                                    equipment={"bioreactor": reactor.id})
        control = services.dispatch_batch(s, batch_id=batch.id, password=PASSWORD, user_id=sup_user,
                                          actor=supervisor)
        batch_id, reactor_id, control_hash = batch.id, reactor.id, control.content_hash
        steps = list(s.execute(text("SELECT id, phase_key FROM step_executions WHERE batch_id = :b ORDER BY seq"),
                               {"b": batch_id}))
    targets = {key: target for key, _n, _u, target, *_ in PARAMETERS}
    units = {key: unit for key, _n, unit, *_ in PARAMETERS}
    signers = {who: services.member_signer(ref, user_id=people[who][0], actor=people[who][1],
                                           email=people[who][2]) for who in ("operator", "operator2")}
    operator = people["operator"][1]
    for step_id, _phase_key in steps:
        with tenant_transaction(ref, db=db, actor=operator) as s:
            execution.start_step(s, batch_id=batch_id, step_id=step_id)
        for c in range(CAPTURES_PER_PHASE):
            param = PARAMETERS[c % len(PARAMETERS)][0]
            with tenant_transaction(ref, db=db, actor=operator) as s:
                execution.record_entry(s, batch_id=batch_id, step_id=step_id, capture_key=f"c{c:02d}",
                                       raw={"value": str(targets[param]), "unit": units[param]},
                                       idempotency_key=uuid.uuid4().hex, control_recipe_hash=control_hash)
        for who, meaning in (("operator", "performed"), ("operator2", "verified")):
            with tenant_transaction(ref, db=db, actor=people[who][1]) as s:
                execution.sign_step(s, batch_id=batch_id, step_id=step_id, meaning=meaning, password=PASSWORD,
                                    signer=signers[who], identification=people[who][2],
                                    identification_required=True)
        with tenant_transaction(ref, db=db, actor=operator) as s:
            execution.complete_step(s, batch_id=batch_id, step_id=step_id)
    return batch_id, reactor_id, sensors


def _load_readings(db, ref, batch_id: int, reactor_id: int, sensors: list[int]) -> int:
    """COPY the gateway's readings over the batch's steps, attached to them as the ingest job attaches them."""
    with tenant_transaction(ref, db=db) as s:
        start, end = s.execute(text("SELECT min(started_at), max(ended_at) FROM step_executions "
                                    "WHERE batch_id = :b"), {"b": batch_id}).one()
        per_sensor = READINGS // len(sensors)
        span_us = int((end - start).total_seconds() * 1e6)
        base = np.datetime64(start.astimezone(UTC).replace(tzinfo=None), "us")
        offsets = np.linspace(0, span_us - 1, per_sensor).astype(np.int64)
        rng = np.random.default_rng(11)
        ingests = []
        for sensor_id in sensors:
            ingest = SensorIngest(source="client:bench-gateway", message_id=f"bench-{sensor_id}",
                                  content_type="csv", payload=b"(loaded by COPY in the benchmark)", size_bytes=0,
                                  status="processed", readings_total=per_sensor, readings_stored=per_sensor)
            s.add(ingest)
            s.flush()
            ingests.append(ingest.id)
        stamps = base + offsets.astype("timedelta64[us]")
        batch_ids, step_ids = attach_steps(s, reactor_id, stamps)  # the same for every sensor of the reactor
        months = {datetime(int(str(m)[:4]), int(str(m)[5:7]), 1, tzinfo=UTC).date()
                  for m in np.unique(stamps.astype("datetime64[M]"))}
        ensure_partitions(s, months)
        ts_text = [f"{t}Z" for t in np.datetime_as_string(stamps, unit="us").tolist()]
        batch_text = ["\\N" if b < 0 else str(b) for b in batch_ids.tolist()]
        step_text = ["\\N" if b < 0 else str(b) for b in step_ids.tolist()]
        raw = s.connection().connection.driver_connection
        loaded = []
        with raw.cursor() as cur, cur.copy(f"COPY sensor_readings ({COPY_COLUMNS}) FROM STDIN") as copy:
            for n, (sensor_id, ingest_id) in enumerate(zip(sensors, ingests, strict=True)):
                target = PARAMETERS[n // SENSORS_PER_KIND][3]
                values = [repr(v) for v in np.round(target + rng.normal(0, 0.005 * abs(target), per_sensor),
                                                    4).tolist()]
                quality = ["0"] * per_sensor
                # A probe now and then reports bad quality (no value): realistic, and the check must count it.
                for i in range(4999, per_sensor, 5000):
                    values[i], quality[i] = "\\N", "2"
                copy.write("".join(
                    f"{sensor_id}\t{ts_text[i]}\t{values[i]}\t{quality[i]}\t{ingest_id}\t{batch_text[i]}\t"
                    f"{step_text[i]}\n" for i in range(per_sensor)))
                loaded.append((sensor_id, values, quality))
        for sensor_id, values, quality in loaded:  # the review's coverage buckets, as the ingest job adds them
            add_buckets(s, np.full(per_sensor, sensor_id, dtype=np.int64), stamps,
                        np.array([np.nan if v == "\\N" else float(v) for v in values]),
                        np.array(quality, dtype=np.int16), batch_ids, False)
    return per_sensor * len(sensors)


def _store_episodes(db, ref, batch_id: int, reactor_id: int, sensors: list[int]) -> None:
    """1,000 closed episodes over the batch's steps, stored (with their audit event) as the analysis job does."""
    kinds = [("process", "limits"), ("process", "shift"), ("process", "nelson_2"), ("health", "health.stuck"),
             ("health", "health.gap"), ("multivariate", "pca.spe")]
    with tenant_transaction(ref, db=db) as s:
        steps = list(s.execute(text("SELECT id, started_at, ended_at FROM step_executions WHERE batch_id = :b "
                                    "ORDER BY seq"), {"b": batch_id}))
        rows = []
        for n in range(EPISODES):
            step = steps[n % len(steps)]
            kind, rule = kinds[n % len(kinds)]
            start = step.started_at + (step.ended_at - step.started_at) * ((n // len(steps)) / (EPISODES / len(steps)))
            end = start + timedelta(milliseconds=5)
            rows.append(SensorEpisode(
                sensor_id=None if kind == "multivariate" else sensors[n % len(sensors)], equipment_id=reactor_id,
                kind=kind, rule=rule, spec={"rule": rule, "kind": kind, "params": {}},
                severity="red" if rule == "limits" else "amber", start_ts=start, end_ts=end, peak_ts=start,
                peak_value=37.9, peak_deviation=3.1, n_alarms=4, start_index=n * 10, end_index=n * 10 + 3,
                peak_index=n * 10 + 1, is_open=False, batch_id=batch_id, step_id=step.id))
        s.add_all(rows)
        s.flush()
        record_many(s, [{"action": "create", "record_type": "sensor_episode", "record_id": row.id,
                         "new": {"rule": row.rule, "kind": row.kind, "batch_id": batch_id}} for row in rows])


class TimedWorker(SimpleWorker):
    """The RQ worker that runs the job in production (`SimpleWorker` here, in-process), timing each job it runs."""

    job_seconds: list[float]

    def execute_job(self, job: Job, queue: Queue) -> None:
        started = time.perf_counter()
        try:
            super().execute_job(job, queue)
        finally:
            self.job_seconds.append(time.perf_counter() - started)


def main() -> None:
    app = bench_app("rbe")
    db = app.extensions["batchline.db"]
    clock = time.perf_counter()
    with app.app_context():
        made = create_tenant(db, slug="bench-rbe", name="Bench RBE", admin_email="admin@bench-rbe.example.com",
                             admin_password=PASSWORD)
        ref = made.ref
        people = _people(db, ref)
        batch_id, reactor_id, sensors = _execute_batch(db, ref, people)
        executed = time.perf_counter() - clock
        loaded = _load_readings(db, ref, batch_id, reactor_id, sensors)
        _store_episodes(db, ref, batch_id, reactor_id, sensors)
        with tenant_transaction(ref, db=db, actor=people["supervisor"][1]) as s:
            services.record_output(s, batch_id=batch_id, lot_number="RBE-OUT-1", quantity="47.5", unit="L")
        with tenant_transaction(ref, db=db, actor=people["supervisor"][1]) as s:
            services.complete_batch(s, batch_id=batch_id)  # queues the RBE job (outbox, pushed after commit)
        # Planner statistics as autovacuum would have them on a live database a minute after the load.
        with db.owner.connect() as conn, conn.begin():
            conn.execute(text(f"ANALYZE {ref.schema}.sensor_readings"))
        seeded = time.perf_counter() - clock

        def scan() -> float:
            with tenant_transaction(ref, db=db) as s:
                started = time.perf_counter()
                counted = s.scalar(text("SELECT count(*) FROM sensor_readings WHERE batch_id = :b"), {"b": batch_id})
                took = time.perf_counter() - started
            assert counted == loaded, f"the batch holds {counted} readings, {loaded} loaded"
            return took

        scan()  # warm the cache for both: the job reads the same pages right after
        scans = [scan() for _ in range(3)]
        worker = TimedWorker(["reports"], connection=redis_connection(app), serializer=JSONSerializer)
        worker.job_seconds = []
        started = time.perf_counter()
        worker.work(burst=True)
        burst_s = time.perf_counter() - started
        assert len(worker.job_seconds) == 1, f"the worker ran {len(worker.job_seconds)} jobs"
        rbe_s = worker.job_seconds[0]
        scans += [scan() for _ in range(2)]
        with tenant_transaction(ref, db=db) as s:
            unfinished = s.scalar(select(func.count()).select_from(OutboxMessage)
                                  .where(OutboxMessage.finished_at.is_(None)))
            run = s.scalar(select(RbeRun).where(RbeRun.batch_id == batch_id))
            assert unfinished == 0 and run is not None, "the RBE job did not run"
            checks = {c["code"]: c for c in run.checks}
            readings = checks["sensor_coverage"]["counts"]["readings"]
            episodes = checks["sensor_episodes"]["counts"]["episodes"]
            assert readings == loaded and episodes == EPISODES, (readings, episodes)
            entries = s.scalar(text("SELECT count(*) FROM step_entries WHERE batch_id = :b"), {"b": batch_id})
            summary = (f"# batch executed in {executed:.0f}s ({entries} entries), seeded in {seeded:.0f}s; "
                       f"run #{run.id}: {run.counts['total']} exceptions ({len(run.new_exception_ids)} new), "
                       f"{readings} readings, {episodes} episodes, {run.duration_ms} ms inside run_rbe, "
                       f"{rbe_s:.3f} s the job, {burst_s:.3f} s the burst worker from start to exit; "
                       f"scans {', '.join(f'{x:.3f}' for x in scans)} s")
    print(summary, flush=True)
    scan_s = statistics.median(scans)
    report("rbe_1m_readings_s", rbe_s, "s")
    report("rbe_count_scan_s", scan_s, "s")
    report("rbe_vs_scan_ratio", rbe_s / scan_s, "x")


if __name__ == "__main__":
    main()
