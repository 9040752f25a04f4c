"""The RBE over the sensor path: every sensor class of exception (limit breach, statistical excursion, golden-batch
deviation, data gap or bad quality, manual entry where a gateway should deliver) becomes exactly its exception,
with the episode or the gap as evidence, on the step it happened in."""

from __future__ import annotations

import json
import time
from datetime import timedelta

from sqlalchemy import select, text

from app.plant import services as plant
from app.review import rules, services
from app.sensors import services as sensor_services
from app.sensors.models import SensorEpisode, SensorReading
from tests.sensors.conftest import burst

WOBBLE = [0.0, 0.02, -0.01, 0.03, -0.02, 0.01, -0.03]
MS = timedelta(milliseconds=1)


def _payload(tag: str, points: list[tuple]) -> bytes:
    return json.dumps({"readings": [{"sensor": tag, "ts": ts.isoformat(), "value": v} for ts, v in points]}).encode()


def _episode(sensor_id: int, equipment_id: int, kind: str, rule: str, start, end, peak: float) -> SensorEpisode:
    """An episode as the analysis job stores it (baseline charts and PCA need hours of history to fit)."""
    return SensorEpisode(sensor_id=sensor_id, equipment_id=equipment_id, kind=kind, rule=rule,
                         spec={"rule": rule, "kind": kind, "params": {}}, severity="amber", start_ts=start,
                         end_ts=end, peak_ts=start, peak_value=peak, peak_deviation=3.2, n_alarms=4,
                         start_index=0, end_index=3, peak_index=1, is_open=False)


def _ph_sensors(floor, prefix: str, period: float, base) -> tuple[list[int], list[int]]:
    """Three pH sensors on the reactor, the readings partition of `base`, and two stored payloads to cite as
    the readings' ingest: a gateway's, and one a person posted with their own token."""
    from app.sensors.models import SensorIngest

    with floor.tx(floor.supervisor) as s:
        ids = [plant.create_sensor(s, tag=f"{prefix}-{n}", equipment_id=floor.reactor_id, quantity_kind="pH",
                                   unit="pH", range_low=0, range_high=14, sampling_period_s=period).id
               for n in range(3)]
    with floor.tx() as s:
        sensor_services.ensure_partitions(s, {base.date().replace(day=1)})
        ingests = []
        for source in (f"client:gw-{prefix}", "member:7:token:1"):
            ingest = SensorIngest(source=source, message_id=f"{prefix}-{source}", content_type="csv", payload=b"-",
                                  size_bytes=0, status="processed")
            s.add(ingest)
            s.flush()
            ingests.append(ingest.id)
    return ids, ingests


def _store_readings(s, rows: list[dict], manual_ingest: int) -> None:
    """Store readings as the loader does: each new one once (a duplicate is not stored), then the coverage
    buckets of those stored (`manual_ingest`: the ingest a person posted)."""
    import numpy as np
    from sqlalchemy.dialects.postgresql import insert as pg_insert

    t = SensorReading
    stored = s.execute(pg_insert(t).on_conflict_do_nothing().returning(
        t.sensor_id, t.ts, t.value, t.quality, t.batch_id, t.ingest_id, sort_by_parameter_order=True), rows).all()
    stored = [r for r in stored if r is not None]
    sensor_services.add_buckets(
        s, np.array([r.sensor_id for r in stored], dtype=np.int64),
        np.array([r.ts.replace(tzinfo=None) for r in stored], dtype="datetime64[us]"),
        np.array([np.nan if r.value is None else r.value for r in stored]),
        np.array([r.quality for r in stored], dtype=np.int16),
        np.array([-1 if r.batch_id is None else r.batch_id for r in stored], dtype=np.int64),
        np.array([r.ingest_id == manual_ingest for r in stored], dtype=bool))


def test_sensor_classes_yield_their_exceptions_with_evidence(make_review_floor) -> None:
    floor = make_review_floor()
    with floor.tx(floor.supervisor) as s:
        tt = plant.create_sensor(s, tag=f"TT-{floor.reactor_id}", equipment_id=floor.reactor_id,
                                 quantity_kind="temperature", unit="°C", range_low=0, range_high=60,
                                 sampling_period_s=0.2)
        tt_id, tag = tt.id, tt.tag
    with floor.tx(floor.qa) as s:  # a 0.6 s gap threshold (3 sampling periods), so a short test step can show one
        services.update_rules(s, overrides={"settings": {"sensor_gap_min_s": 0}}, reason="fast sampling probe")
    batch_id = floor.new_batch()
    floor.start(batch_id, "clearance")
    time.sleep(0.6)  # the gateway's first readings (0.4 s before the charge phase) fall in the clearance step
    floor.enter(batch_id, "clearance", "room_clear", {"value": True})
    floor.enter(batch_id, "clearance", "vessel", {"code": f"EQ:{floor.reactor_tag}"})
    floor.sign_all(batch_id, "clearance")
    floor.complete(batch_id, "clearance")
    floor.start(batch_id, "charge")
    floor.enter(batch_id, "charge", "medium", {"code": f"LOT:{floor.lots['MED-T']}", "quantity": "8", "unit": "L"})
    floor.enter(batch_id, "charge", "temp", {"value": "37.0", "unit": "degC"})
    time.sleep(3.2)  # the critical charge phase runs for a few seconds of real time
    floor.sign_all(batch_id, "charge")
    floor.complete(batch_id, "charge")
    charge = floor.step(batch_id, "charge")
    start, end = charge.started_at, charge.ended_at
    # The gateway's readings of the charge phase: 0.2 s apart, above the alarm limit (37.5) for a moment, and a
    # 1 s hole in the middle of the phase.
    middle = start + (end - start) / 2
    points, t, i = [], start - timedelta(seconds=0.4), 0
    while t <= end + timedelta(seconds=0.2):
        if not (middle - timedelta(seconds=0.5) <= t <= middle + timedelta(seconds=0.5)):
            value = 37.8 if start + timedelta(seconds=0.4) <= t <= start + timedelta(seconds=0.8) else 37.0
            points.append((t, value + WOBBLE[i % len(WOBBLE)]))
        t, i = t + timedelta(seconds=0.2), i + 1
    # A person posted two readings with their own API token: manual data where the gateway should deliver.
    manual = [(start + timedelta(seconds=0.3), 37.01), (start + timedelta(seconds=0.5), 37.02)]
    with floor.tx() as s:
        sensor_services.accept_payload(s, body=_payload(tag, points), kind="json", source="client:gw-test",
                                       max_bytes=10**7)
        sensor_services.accept_payload(s, body=_payload(tag, manual), kind="json",
                                       source=f"member:{floor.operator.member_id}:token:1", max_bytes=10**7)
    burst()  # the real ingest and analysis jobs
    with floor.tx() as s:
        assert set(s.scalars(select(SensorReading.batch_id).where(SensorReading.sensor_id == tt_id))) == {batch_id}
        found = {e.rule for e in s.scalars(select(SensorEpisode).where(SensorEpisode.batch_id == batch_id))}
        assert "limits" in found, found
        # What the baseline charts and the PCA (golden batch) model find needs hours of history: stored as the
        # analysis job stores them.
        s.add_all([_episode(tt_id, floor.reactor_id, "process", "shift", start, end, 37.3),
                   _episode(None, floor.reactor_id, "multivariate", "pca.spe", start, end, 14.2),
                   _episode(tt_id, floor.reactor_id, "health", "health.stuck", start, end, 37.0)])
        # On the reactor the day before the batch used it: another batch's business, never this one's.
        before = _episode(tt_id, floor.reactor_id, "process", "nelson_2", start - timedelta(days=1),
                          end - timedelta(days=1), 37.4)
        s.add(before)
        s.flush()
        before_id = before.id
    floor.start(batch_id, "bolus")
    floor.enter(batch_id, "bolus", "glucose", {"code": f"LOT:{floor.lots['GLC-T']}", "quantity": "0.5", "unit": "L"})
    floor.sign_all(batch_id, "bolus")
    floor.complete(batch_id, "bolus")
    floor.start(batch_id, "sample")
    floor.enter(batch_id, "sample", "sample_id", {"value": "S-0009"})
    floor.enter(batch_id, "sample", "ph", {"value": "7.0"})
    floor.enter(batch_id, "sample", "appearance", {"value": "Clear"})
    floor.sign_all(batch_id, "sample")
    floor.complete(batch_id, "sample")
    floor.finish(batch_id)
    run = floor.rbe(batch_id)
    rule_set = rules.build_rule_set()
    rows = floor.exception_rows(batch_id)
    by_class: dict[str, list] = {}
    for row in rows:
        by_class.setdefault(rule_set.class_of(row.type), []).append(row)
    assert set(by_class) == {"sensor_limit_breach", "sensor_excursion", "golden_batch_deviation", "sensor_data_gap",
                             "manual_entry"}, [(r.type, r.evidence.get("rule")) for r in rows]
    assert before_id not in {r.evidence.get("episode_id") for r in rows}
    breach = by_class["sensor_limit_breach"][0]
    assert (breach.severity, breach.phase_key, breach.evidence["rule"]) == ("major", "charge", "limits")
    assert breach.evidence["peak_value"] >= 37.7
    with floor.tx() as s:  # the episode's times as the audit trail writes dates (ISO), and in the message
        episode = s.get(SensorEpisode, breach.evidence["episode_id"])
        message = s.execute(text("SELECT message FROM batch_exceptions WHERE id = :i"), {"i": breach.id}).scalar()
    assert [breach.evidence[k] for k in ("start_ts", "end_ts", "peak_ts")] == [
        episode.start_ts.isoformat(), episode.end_ts.isoformat(), episode.peak_ts.isoformat()]
    assert breach.evidence["spec"] == episode.spec and isinstance(episode.spec, dict)
    assert message == (f"{tag}: limits episode from {episode.start_ts:%Y-%m-%d %H:%M:%S} to "
                       f"{episode.end_ts:%H:%M:%S} UTC ({episode.n_alarms} alarmed readings, peak "
                       f"{episode.peak_value}) during step Charge medium"), message
    assert by_class["sensor_excursion"][0].severity == "minor"
    assert by_class["golden_batch_deviation"][0].evidence["kind"] == "multivariate"
    gaps = {r.type: r for r in by_class["sensor_data_gap"]}
    assert gaps["sensor_coverage_gap"].phase_key == "charge"
    assert 0.9 < gaps["sensor_coverage_gap"].evidence["seconds"] < 1.6
    assert gaps["sensor_coverage_gap"].evidence["threshold_s"] == 0.6000000000000001
    assert "sensor_bad_quality" in gaps  # health.stuck
    assert by_class["manual_entry"][0].evidence["sensor"] == tag
    checks = {c["code"]: c for c in run.checks}
    assert not checks["sensor_coverage"]["passed"] and not checks["sensor_episodes"]["passed"]
    assert checks["sensor_coverage"]["counts"]["readings"] == len(points) + len(manual)
    # Running the checks again raises nothing new (one exception per episode, per gap).
    assert floor.rbe(batch_id, who=floor.qa).new_exception_ids == []


def test_dense_sensor_walk_finds_the_same_gaps_as_the_bucketed_pass(make_review_floor) -> None:
    """Sensors sampling densely have their gaps walked on the index: the same rows as the bucketed pass over
    holes, bad-quality stretches, another batch's readings, readings of no batch, a hole exactly at the threshold
    and readings outside the scanned range."""
    from datetime import UTC, datetime

    from app.review.engine import scan_readings

    floor = make_review_floor()
    base = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)
    ms = timedelta(milliseconds=1)
    ids, ingests = _ph_sensors(floor, "DENSE", 0.001, base)
    with floor.tx() as s:
        rows = []
        for n, sensor_id in enumerate(ids):
            for i in range(0, 4200, 2):  # a reading every 2 ms for 4.2 s
                t = base + i * ms
                if 1000 < i < 1700 or 200 < i < 700 + n:  # a 0.7 s hole; a 0.5 s hole (a gap only when > 0.5 s)
                    continue
                bad = 2000 <= i <= 2600 and n != 2  # a stretch of bad quality (some with no value)
                batch = 99 if 2700 <= i <= 3300 else (None if i % 50 == 0 else 7)  # another batch, no batch
                rows.append({"sensor_id": sensor_id, "ts": t, "value": None if bad and i % 4 == 0 else 7.0,
                             "quality": 2 if bad else 0, "ingest_id": ingests[i == 3500 and n == 1],
                             "batch_id": batch, "step_id": None})
        _store_readings(s, rows, ingests[1])
    lo, hi = base + 100 * ms, base + 4100 * ms  # readings outside the range are out of scope
    with floor.tx() as s:
        found = {}
        for walk in (False, True):
            for manual in ([], [ingests[1]]):
                found[walk, bool(manual)] = sorted(
                    tuple(row) for row in scan_readings(s, sensor_ids=ids, batch_id=7, lo=lo, hi=hi, min_gap=0.5,
                                                        manual=manual, walk=walk))
    assert found[True, False] == found[False, False]
    assert found[True, True] == found[False, True]
    rows = found[True, True]
    gaps = [(r[1], (r[2] - base) // ms, (r[3] - base) // ms) for r in rows if r[0] == "gap"]
    assert gaps == sorted([(ids[0], 1000, 1700), (ids[0], 1998, 2602), (ids[0], 2698, 3302),
                           (ids[1], 200, 702), (ids[1], 1000, 1700), (ids[1], 1998, 2602), (ids[1], 2698, 3302),
                           (ids[2], 200, 702), (ids[2], 1000, 1700), (ids[2], 2698, 3302)]), gaps
    summary = {r[1]: r[2:] for r in rows if r[0] == "summary"}
    assert {k: ((v[0] - base) // ms, (v[1] - base) // ms, v[4]) for k, v in summary.items()} == {
        ids[0]: (100, 4100, False), ids[1]: (100, 4100, True), ids[2]: (100, 4100, False)}
    assert summary[ids[0]][3] == summary[ids[1]][3] == 301 and summary[ids[2]][3] == 0  # bad readings counted


def test_coverage_buckets_answer_as_the_readings_do(make_review_floor) -> None:
    """The coverage buckets kept by the trigger give the RBE the rows a scan of the readings gives: with readings
    arriving out of order (late ones inside buckets already kept) and twice, a hole across a bucket boundary and
    one inside a bucket, another batch's and no batch's readings, and ranges ending inside buckets or on their
    boundaries."""
    import random
    from datetime import UTC, datetime

    from app.review.engine import _exact_spans, coverage_rows, scan_readings
    from app.sensors.models import BUCKET_ROWS_SQL

    floor = make_review_floor()
    base = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(hours=2)
    ids, ingests = _ph_sensors(floor, "COV", 0.1, base)
    rows = []
    for n, sensor_id in enumerate(ids):
        for i in range(3600):  # a reading every 100 ms for 6 minutes
            t = i / 10
            # 7 s and 5 s holes across minute boundaries, a 5 s hole inside a minute, a short hole (0.5 s to 1.5 s)
            if 117 < t < 124 or 298 < t < 303 or 200 < t < 205 or 10 < t < 10 + 0.5 * (n + 1):
                continue
            bad = 30 <= t <= 45 and n != 1
            batch = 99 if 150 <= t <= 170 else (None if 60 <= t < 120 and i % 50 == 0 else 7)
            rows.append({"sensor_id": sensor_id, "ts": base + timedelta(seconds=t), "value": None if bad and i % 4 == 0
                         else 7.0, "quality": 2 if bad else 0, "ingest_id": ingests[i == 100 and n == 0],
                         "batch_id": batch, "step_id": None})
    # Half the readings first, then the rest shuffled in four statements (late readings land inside buckets
    # already kept), then a gateway resending a thousand of them (stored once: refused as duplicates).
    rng = random.Random(5)  # noqa: S311 (a reproducible arrival order, not a secret)
    first, rest = rows[::2], rows[1::2]
    rng.shuffle(rest)
    for part in (first, *[rest[k::4] for k in range(4)]):
        with floor.tx() as s:
            _store_readings(s, part, ingests[1])
    with floor.tx() as s:
        _store_readings(s, rng.sample(rows, 1000), ingests[1])
    columns = "sensor_id, batch_key, bucket_start, bucket_s, n, bad, manual, first_ts, last_ts, first_good, " \
              "last_good, slots"
    second = timedelta(seconds=1)
    with floor.tx() as s:
        kept = s.execute(text(f"SELECT {columns} FROM sensor_reading_buckets WHERE sensor_id = ANY(:ids) "
                              "ORDER BY 1, 2, 3"), {"ids": ids}).all()
        fresh = s.execute(text(f"SELECT * FROM ({BUCKET_ROWS_SQL.format(source='sensor_readings')}) b "
                               "WHERE sensor_id = ANY(:ids) ORDER BY 1, 2, 3"), {"ids": ids}).all()
        assert [tuple(r) for r in kept] == [tuple(r) for r in fresh]
        assert sum(r.n for r in kept) == len(rows)
        # Buckets read whole and spans scanned both serve the review of a range over all the readings.
        buckets = s.execute(text("SELECT *, bucket_start + make_interval(secs => bucket_s) AS bucket_end "
                                 "FROM sensor_reading_buckets WHERE sensor_id = :i AND batch_key IN (0, 7) "
                                 "ORDER BY bucket_start"), {"i": ids[0]}).all()
        whole, spans = _exact_spans(buckets, base - 60 * second, base + 400 * second, 2.0)
        assert [(b.bucket_start - base) // second for b in whole] == [240, 300]
        assert [((a - base) // second, (b - base) // second) for a, b in spans] == [(0, 240)]
        for lo, hi in ((base + second / 20, base + 299 * second), (base, base + 360 * second - MS),
                       (base - 60 * second, base + 400 * second), (base + 118 * second, base + 301 * second)):
            for min_gap in (0.1, 2.0, 10.0):
                expected = sorted(tuple(row) for row in scan_readings(
                    s, sensor_ids=ids, batch_id=7, lo=lo, hi=hi, min_gap=min_gap, manual=[ingests[1]], walk=False))
                found = sorted(coverage_rows(s, sensor_ids=ids, dense_ids=ids[:1], batch_id=7, lo=lo, hi=hi,
                                             min_gap=min_gap, manual=[ingests[1]]))
                assert found == expected, (lo - base, hi - base, min_gap)
                for t1, t2 in ((117000, 124000), (298000, 303000)):  # the holes across bucket boundaries
                    across = [r for r in found if r[0] == "gap" and ((r[2] - base) // MS, (r[3] - base) // MS)
                              == (t1, t2)]
                    seen = lo <= base + t1 * MS and hi >= base + t2 * MS and (t2 - t1) / 1000 > min_gap
                    assert len(across) == (3 if seen else 0)
