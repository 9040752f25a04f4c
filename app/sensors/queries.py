"""Read-side queries of the sensor path: ingest status, downsampled trends, live tiles, episodes."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select, text
from sqlalchemy.orm import Session

from app.plant.models import Sensor
from app.sensors.models import SensorEpisode, SensorIngest, SensorReading
from app.sensors.payloads import QUALITY_NAMES

#: Trend query: min / max / avg per bucket; the time filter prunes partitions and uses the (sensor_id, ts) key.
TREND_SQL = text("""
SELECT date_bin(make_interval(secs => :bucket), ts, TIMESTAMPTZ '2000-01-01 00:00:00+00') AS bucket,
       min(value) AS min, max(value) AS max, avg(value) AS avg, count(value) AS n,
       max(quality) AS worst_quality
FROM sensor_readings
WHERE sensor_id = :sensor_id AND ts >= :start AND ts < :end
GROUP BY 1 HAVING count(value) > 0 ORDER BY 1
""")


def ingest(session: Session, ingest_id: int) -> SensorIngest | None:
    """Return one ingest row, or None."""
    return session.get(SensorIngest, ingest_id)


def bucket_seconds(start: datetime, end: datetime, points: int) -> float:
    """Return the bucket width that gives about `points` buckets over [start, end) (at least 1 ms)."""
    return max((end - start).total_seconds() / max(points, 1), 0.001)


def trend(session: Session, *, sensor_id: int, start: datetime, end: datetime,
          points: int = 500) -> list[dict[str, Any]]:
    """Return a sensor's readings over [start, end) downsampled to about `points` min/max/avg buckets."""
    rows = session.execute(TREND_SQL, {"bucket": bucket_seconds(start, end, points), "sensor_id": sensor_id,
                                       "start": start, "end": end}).all()
    return [{"t": r.bucket.isoformat(), "min": r.min, "max": r.max, "avg": r.avg, "n": r.n,
             "quality": QUALITY_NAMES.get(r.worst_quality, "bad")} for r in rows]


def latest_readings(session: Session, sensor_ids: list[int]) -> dict[int, dict[str, Any]]:
    """Return the newest reading of each sensor (one index probe per sensor)."""
    if not sensor_ids:
        return {}
    rows = session.execute(text("""
        SELECT s.id, r.ts, r.value, r.quality FROM unnest(CAST(:ids AS bigint[])) AS s(id)
        CROSS JOIN LATERAL (SELECT ts, value, quality FROM sensor_readings
                            WHERE sensor_id = s.id ORDER BY ts DESC LIMIT 1) r
    """), {"ids": sensor_ids}).all()
    return {r.id: {"ts": r.ts.isoformat(), "value": r.value, "quality": QUALITY_NAMES.get(r.quality, "bad")}
            for r in rows}


def tiles(session: Session, *, equipment_id: int | None = None) -> list[dict[str, Any]]:
    """Return live tiles: each sensor with its newest reading and its open episodes (red/amber/green)."""
    query = select(Sensor).order_by(Sensor.tag)
    if equipment_id is not None:
        query = query.where(Sensor.equipment_id == equipment_id)
    sensors = session.scalars(query).all()
    latest = latest_readings(session, [s.id for s in sensors])
    open_rows = session.scalars(select(SensorEpisode).where(SensorEpisode.is_open,
                                                            SensorEpisode.sensor_id.in_([s.id for s in sensors]))
                                ).all()
    by_sensor: dict[int, list[SensorEpisode]] = {}
    for row in open_rows:
        by_sensor.setdefault(row.sensor_id or 0, []).append(row)
    result = []
    for sensor in sensors:
        episodes = by_sensor.get(sensor.id, [])
        state = "green"
        if any(e.kind != "health" for e in episodes):
            state = "red" if any(e.severity == "red" for e in episodes) else "amber"
        elif episodes:
            state = "grey"  # only the sensor's health is in question
        result.append({"id": sensor.id, "tag": sensor.tag, "unit": sensor.unit, "kind": sensor.quantity_kind,
                       "equipment_id": sensor.equipment_id, "latest": latest.get(sensor.id), "state": state,
                       "open": [episode_doc(e) for e in episodes]})
    return result


def episode_doc(row: SensorEpisode, *, tenant_slug: str = "") -> dict[str, Any]:
    """Return an episode as JSON, with the evidence link to the trend around it."""
    margin = max((row.end_ts - row.start_ts) / 2, timedelta(minutes=5))
    doc = {"id": row.id, "sensor_id": row.sensor_id, "equipment_id": row.equipment_id, "kind": row.kind,
           "rule": row.rule, "severity": row.severity, "start": row.start_ts.isoformat(),
           "end": row.end_ts.isoformat(), "peak": {"ts": row.peak_ts.isoformat(), "value": row.peak_value,
                                                  "deviation": row.peak_deviation},
           "n_alarms": row.n_alarms, "open": row.is_open, "batch_id": row.batch_id, "step_id": row.step_id,
           "spec": row.spec}
    if row.sensor_id is not None:
        start, end = (row.start_ts - margin).isoformat(), (row.end_ts + margin).isoformat()
        prefix = f"/t/{tenant_slug}" if tenant_slug else ""
        doc["evidence"] = f"{prefix}/sensors/{row.sensor_id}/trend?start={start}&end={end}".replace("+", "%2B")
    return doc


def episodes(session: Session, *, batch_id: int | None = None, sensor_id: int | None = None,
             kind: str | None = None, open_only: bool = False, limit: int = 200) -> list[SensorEpisode]:
    """Return episodes, newest first, filtered by batch, sensor, kind or openness."""
    query = select(SensorEpisode).order_by(SensorEpisode.start_ts.desc(), SensorEpisode.id.desc()).limit(limit)
    if batch_id is not None:
        query = query.where(SensorEpisode.batch_id == batch_id)
    if sensor_id is not None:
        query = query.where(SensorEpisode.sensor_id == sensor_id)
    if kind is not None:
        query = query.where(SensorEpisode.kind == kind)
    if open_only:
        query = query.where(SensorEpisode.is_open)
    return list(session.scalars(query))


def reading_count(session: Session, *, sensor_id: int) -> int:
    """Return how many readings a sensor has (tests and diagnostics)."""
    return session.scalar(select(text("count(*)")).select_from(SensorReading).where(
        SensorReading.sensor_id == sensor_id)) or 0
