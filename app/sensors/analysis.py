"""Analyse new readings of a sensor window by window and open or extend exception episodes.

Per sensor, `analyse_sensor` reads the readings after the sensor's cursor, prepends the last `LOOKBACK`
readings before it (the run rules and health checks need them), and judges every new reading except the last
`LAG` (the spike check's centred window needs that many later readings; they are judged with the next
window). Recursive chart state (EWMA, CUSUM, AR(1) whitening) is carried in `sensor_analysis_state`, and the
open episode of each rule is extended with `detection.extend_episodes`, so analysing a stream in pieces gives
the same alarms and episodes as analysing it whole.

Rules and their documented defaults (per sensor; `fit_baseline` can change `arl0` and enable Nelson rules):

* health (the sensor cannot be trusted; those readings are blanked out before the process charts):
  quality flag (bad or uncertain), physical range (the sensor's `range_low..range_high`), stuck value
  (`STUCK_N` identical readings), spike (Hampel filter, `SPIKE_HALF_WINDOW` each side, `SPIKE_THRESHOLD`
  robust sigmas), data gap (longer than `GAP_PERIODS` sampling periods);
* process: the shift detector (AR(1) whitening, then EWMA lambda 0.1 or CUSUM k 0.5 designed together for an
  in-control ARL of `arl0` = 370 samples and a 1-sigma step caught in about 10 samples, see `detection`);
  Nelson/Western Electric run rules on the whitened readings when enabled for the sensor (each enabled rule
  shortens the in-control ARL, so none are on by default); the hard and alarm limits of the critical parameter
  of the running step (from the batch record, by the sensor's quantity kind).

The in-control model (mean, sigma, AR(1) phi) comes from `fit_baseline` on a qualified window; without one it
is fitted on the sensor's first `BASELINE_N` good readings, and the charts start after them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
from sqlalchemy import select, text
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import flag_modified

from app.audit.services import plain_json_text, record_many
from app.plant.models import Sensor
from app.sensors import detection, queries
from app.sensors.batch_link import StepLimits, running_steps
from app.sensors.models import PcaModel, PcaState, SensorAnalysisState, SensorEpisode, SensorReading
from app.sensors.multivariate import PcaMonitor
from app.sensors.services import aligned_matrix, attach_steps, baseline_document

_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)
_EPOCH64 = np.datetime64("2000-01-01T00:00:00", "us")

STUCK_N = 10
#: A Hampel window of 15 readings and 10 robust sigmas: about 2 false spikes per 100,000 in-control readings
#: of an autocorrelated probe (smaller windows have heavy-tailed MADs and flag many more).
SPIKE_HALF_WINDOW = 7
SPIKE_THRESHOLD = 10.0
GAP_PERIODS = 3.0
BASELINE_N = 1000
#: Quiet readings that may separate two alarms of one excursion before it counts as over. A small sustained
#: shift keeps its chart hovering at the limit, alarming on and off: half a minute at 1 Hz keeps it one episode.
GAP_TOLERANCE = 30
LAG = SPIKE_HALF_WINDOW
LOOKBACK = max(2 * SPIKE_HALF_WINDOW, STUCK_N - 1, detection.nelson_lookback(detection.NELSON_RULES), 1)
#: How many new readings one pass analyses at most (a backlog is worked through in several passes).
MAX_WINDOW = 200_000


def _states_for_update(session: Session, sensor_ids: list[int]) -> dict[int, SensorAnalysisState]:
    """Return the sensors' analysis state rows, created if missing, locked for this transaction (id order)."""
    if not sensor_ids:
        return {}
    # One statement: the upsert inserts the missing rows and locks the existing ones (a conflicting row is locked
    # for its no-op update), in sensor id order (the rows are handled in the order given), and returns them all.
    stmt = (insert(SensorAnalysisState).values([{"sensor_id": s, "n_seen": 0, "open_episodes": {}}
                                                for s in sorted(set(sensor_ids))])
            .on_conflict_do_update(index_elements=["sensor_id"],
                                   set_={"sensor_id": insert(SensorAnalysisState).excluded.sensor_id})
            .returning(SensorAnalysisState))
    rows = session.scalars(stmt, execution_options={"populate_existing": True})
    return {row.sensor_id: row for row in rows}


@dataclass(frozen=True)
class Readings:
    """One sensor's readings in time order, column by column (timestamps datetime64[us] UTC, -1 for no id)."""

    stamps: np.ndarray
    values: np.ndarray
    quality: np.ndarray
    batch_ids: np.ndarray
    step_ids: np.ndarray

    @classmethod
    def of_rows(cls, rows: Sequence[Any]) -> Readings:
        """Build from rows of (ts, value, quality, batch_id, step_id)."""
        return cls(np.array([r[0].astimezone(UTC).replace(tzinfo=None) for r in rows], dtype="datetime64[us]"),
                   np.array([np.nan if r[1] is None else r[1] for r in rows], dtype=float),
                   np.array([r[2] for r in rows], dtype=np.int8),
                   np.array([-1 if r[3] is None else r[3] for r in rows], dtype=np.int64),
                   np.array([-1 if r[4] is None else r[4] for r in rows], dtype=np.int64))

    def __len__(self) -> int:
        return int(self.stamps.size)

    def take(self, where: Any) -> Readings:
        """Return the readings at these positions (a slice, an index array or a mask)."""
        return Readings(self.stamps[where], self.values[where], self.quality[where], self.batch_ids[where],
                        self.step_ids[where])

    @staticmethod
    def join(*parts: Readings) -> Readings:
        """Concatenate readings and sort them by time."""
        joined = Readings(*(np.concatenate([getattr(p, name) for p in parts]) for name in _READING_COLUMNS))
        order = np.argsort(joined.stamps, kind="stable")
        return joined.take(order)


_READING_COLUMNS = ("stamps", "values", "quality", "batch_ids", "step_ids")
_COLUMNS = (SensorReading.ts, SensorReading.value, SensorReading.quality, SensorReading.batch_id,
            SensorReading.step_id)


def _load(session: Session, sensor_id: int, cursor: datetime | None) -> tuple[Readings, Readings]:
    """Return (lookback, new) readings of a sensor from the database, in time order."""
    query = select(*_COLUMNS).where(SensorReading.sensor_id == sensor_id)
    if cursor is None:
        return Readings.of_rows([]), Readings.of_rows(
            session.execute(query.order_by(SensorReading.ts).limit(MAX_WINDOW)).all())
    new = session.execute(query.where(SensorReading.ts > cursor).order_by(SensorReading.ts)
                          .limit(MAX_WINDOW)).all()
    return _lookbacks(session, {sensor_id: cursor})[sensor_id], Readings.of_rows(new)


#: The last LOOKBACK readings up to its cursor of each sensor, in one statement.
_LOOKBACK_SQL = text("""
SELECT s.sensor_id, r.ts, r.value, r.quality, r.batch_id, r.step_id
FROM unnest(CAST(:ids AS bigint[]), CAST(:cursors AS timestamptz[])) AS s(sensor_id, cursor_ts)
CROSS JOIN LATERAL (SELECT ts, value, quality, batch_id, step_id FROM sensor_readings
                    WHERE sensor_id = s.sensor_id AND ts <= s.cursor_ts ORDER BY ts DESC LIMIT :n) AS r
""")

#: Per sensor, the stored readings not yet judged around the fresh ones: after the cursor and before the first
#: fresh reading, or after the last one (at most :n + 1 of them: more is a backlog), in one statement.
_OTHERS_SQL = text("""
SELECT s.sensor_id, r.ts, r.value, r.quality, r.batch_id, r.step_id
FROM unnest(CAST(:ids AS bigint[]), CAST(:cursors AS timestamptz[]), CAST(:firsts AS timestamptz[]),
            CAST(:lasts AS timestamptz[])) AS s(sensor_id, cursor_ts, first_ts, last_ts)
CROSS JOIN LATERAL (
  (SELECT ts, value, quality, batch_id, step_id FROM sensor_readings
   WHERE sensor_id = s.sensor_id AND ts < s.first_ts AND ts > coalesce(s.cursor_ts, '-infinity'))
  UNION ALL
  (SELECT ts, value, quality, batch_id, step_id FROM sensor_readings WHERE sensor_id = s.sensor_id AND ts > s.last_ts)
  LIMIT :n + 1) AS r
""")


def _rows_by_sensor(rows: Sequence[Any]) -> dict[int, list[Any]]:
    """Group rows of (sensor_id, ts, value, quality, batch_id, step_id) by sensor, without the sensor id."""
    grouped: dict[int, list[Any]] = {}
    for row in rows:
        grouped.setdefault(row[0], []).append(row[1:])
    return grouped


def _lookbacks(session: Session, cursors: Mapping[int, datetime | None]) -> dict[int, Readings]:
    """Return per sensor its last LOOKBACK readings up to its cursor (none without a cursor), in time order."""
    ids = [sensor_id for sensor_id, cursor in cursors.items() if cursor is not None]
    rows = _rows_by_sensor(session.execute(_LOOKBACK_SQL, {
        "ids": ids, "cursors": [cursors[i] for i in ids], "n": LOOKBACK}).all()) if ids else {}
    return {sensor_id: Readings.join(Readings.of_rows(rows.get(sensor_id, []))) for sensor_id in cursors}


def _on_time(cursor: datetime | None, fresh: Readings) -> tuple[Readings, int]:
    """Return the fresh readings after the cursor and how many were at or before it (too late to chart)."""
    if cursor is None:
        return fresh, 0
    on_time = fresh.stamps > np.datetime64(cursor.astimezone(UTC).replace(tzinfo=None), "us")
    late = int(fresh.stamps.size - on_time.sum())
    return (fresh.take(on_time) if late else fresh), late


Window = tuple[Readings, Readings, int]


def _with_fresh(session: Session, cursors: Mapping[int, datetime | None],
                fresh: Mapping[int, Readings]) -> dict[int, Window]:
    """Return per sensor (lookback, new, late) when the caller holds the readings it just stored (time order).

    Only readings stored by others and not yet judged are read back: those after the cursor and before the
    fresh ones (normally the previous window's unjudged tail of LAG readings) or after them. Fresh readings
    at or before the cursor arrived too late for the recursive charts and are counted, not judged. All
    sensors' readings are read in two statements (lookback, others), whatever their number.
    """
    split = {sensor_id: _on_time(cursors[sensor_id], readings) for sensor_id, readings in fresh.items()}
    windows: dict[int, Window] = {}
    ids = [sensor_id for sensor_id, (readings, _) in split.items() if len(readings)]
    others = _rows_by_sensor(session.execute(_OTHERS_SQL, {
        "ids": ids, "cursors": [cursors[i] for i in ids], "firsts": [_aware(split[i][0].stamps[0]) for i in ids],
        "lasts": [_aware(split[i][0].stamps[-1]) for i in ids], "n": MAX_WINDOW}).all()) if ids else {}
    backs = _lookbacks(session, {i: cursors[i] for i in ids})
    for sensor_id, (readings, late) in split.items():
        rows = others.get(sensor_id, [])
        if not len(readings) or len(rows) > MAX_WINDOW:
            # Nothing fresh to judge, or a backlog (analysis was off, or failed for long): work through it in
            # passes from the database.
            back, new = _load(session, sensor_id, cursors[sensor_id])
            windows[sensor_id] = (back, new, late)
            continue
        new = Readings.join(Readings.of_rows(rows), readings) if rows else readings
        windows[sensor_id] = (backs[sensor_id], new, late)
    return windows


def _aware(stamp: Any) -> datetime:
    """Return a timestamp (datetime64 UTC or an aware datetime) as an aware UTC datetime."""
    if isinstance(stamp, datetime):
        return stamp
    return np.datetime64(stamp, "us").astype(datetime).replace(tzinfo=UTC)


def _auto_baseline(session: Session, sensor_id: int,
                   first: Readings | None = None) -> tuple[detection.InControlModel, datetime] | None:
    """Fit the fallback in-control model on the sensor's first BASELINE_N good readings, if there are that many.

    `first`: the sensor's readings from its very first one on, in time order, when the caller holds them (a
    sensor's first window); they are read from the database only if they hold too few good readings.
    """
    good = np.flatnonzero(first.quality == 0)[:BASELINE_N] if first is not None else np.empty(0, dtype=np.intp)
    if good.size == BASELINE_N:
        values, last_ts = first.values[good], _aware(first.stamps[good[-1]])  # type: ignore[union-attr]
    else:
        rows = session.execute(
            select(SensorReading.ts, SensorReading.value)
            .where(SensorReading.sensor_id == sensor_id, SensorReading.quality == 0)
            .order_by(SensorReading.ts).limit(BASELINE_N)).all()
        if len(rows) < BASELINE_N:
            return None
        values, last_ts = np.array([r[1] for r in rows], dtype=float), rows[-1][0]
    try:
        return detection.fit_in_control(values), last_ts
    except ValueError:
        return None  # a flat or non-stationary start: wait for a deliberate fit_baseline


def _limit_detections(session: Session, sensor: Sensor, stamps: np.ndarray, values: np.ndarray,
                      step_ids: np.ndarray) -> detection.Detection | None:
    """Check readings against the limits of the critical parameter of the step running at each reading."""
    if not (step_ids >= 0).any():
        return None
    steps = running_steps(session, equipment_id=sensor.equipment_id, start=_aware(stamps[0]),
                          end=_aware(stamps[-1]))
    limits_of: dict[int, StepLimits] = {}
    for step in steps:
        limit = step.limits.get(sensor.quantity_kind)
        if limit is not None:
            limits_of[step.step_id] = limit
    if not limits_of:
        return None
    alarm = np.zeros(values.size, dtype=bool)
    statistic = np.zeros(values.size)
    level = np.full(values.size, detection.LimitState.GREEN, dtype=np.int8)
    params: dict[str, Any] = {}
    for step_id, limit in limits_of.items():
        where = step_ids == step_id
        if not where.any():
            continue
        check = detection.limit_check(values[where], low=limit.low, high=limit.high, alarm_low=limit.alarm_low,
                                      alarm_high=limit.alarm_high)
        alarm[where], statistic[where], level[where] = check.alarm, check.statistic, check.level
        params[str(step_id)] = dict(check.spec.params)
    spec = detection.RuleSpec("limits", "process", {"by_step": params})
    return detection.Detection(spec, alarm, statistic, level=level)


def _finite(value: float) -> float | None:
    """Return the value, or None for NaN/inf (JSON and the audit trail have no NaN)."""
    return float(value) if np.isfinite(value) else None


def _only_finite(found: detection.Detection, values: np.ndarray) -> detection.Detection:
    return detection.Detection(found.spec, found.alarm & np.isfinite(values), found.statistic, found.state,
                               found.level)


def _episode_of(row: SensorEpisode) -> detection.Episode:
    return detection.Episode(rule=row.rule, start_index=row.start_index, end_index=row.end_index,
                             start_time=row.start_ts, end_time=row.end_ts, peak_index=row.peak_index,
                             peak_value=np.nan if row.peak_value is None else row.peak_value,
                             peak_deviation=row.peak_deviation, n_alarms=row.n_alarms,
                             open=row.is_open)


#: What the audit trail records of an episode opened.
_AUDITED_COLUMNS = ("sensor_id", "rule", "kind", "severity", "start_ts", "end_ts", "peak_ts", "peak_value", "n_alarms",
                    "batch_id", "step_id", "spec")

#: Episode rows a pass wrote, with their state and rule and whether the pass opened them: inserted, audited
#: and linked to their state together by `_record_episodes`. An episode the pass opened is its column values
#: (inserted with the others in one statement), one it extended is its ORM row (updated by the flush).
Pending = list[tuple[SensorAnalysisState | PcaState, str, SensorEpisode | dict[str, Any], bool]]

#: The new episodes of a pass in one statement, the rows as one JSON parameter (as `record_many` does for their
#: audit events): a few dozen ORM objects per job cost more than the analysis that found them. Rows are inserted
#: in the order given, so the sorted new ids map back to them.
_INSERT_EPISODES_SQL = text("""
INSERT INTO sensor_episodes (sensor_id, equipment_id, kind, rule, spec, severity, start_ts, end_ts, peak_ts,
                             peak_value, peak_deviation, n_alarms, start_index, end_index, peak_index, is_open,
                             batch_id, step_id)
SELECT sensor_id, equipment_id, kind, rule, spec, severity, start_ts, end_ts, peak_ts, peak_value, peak_deviation,
       n_alarms, start_index, end_index, peak_index, is_open, batch_id, step_id
FROM ROWS FROM (jsonb_to_recordset(CAST(:rows AS jsonb)) AS (
  sensor_id bigint, equipment_id bigint, kind varchar(20), rule varchar(40), spec jsonb, severity varchar(10),
  start_ts timestamptz, end_ts timestamptz, peak_ts timestamptz, peak_value double precision,
  peak_deviation double precision, n_alarms bigint, start_index bigint, end_index bigint, peak_index bigint,
  is_open boolean, batch_id bigint, step_id bigint)) WITH ORDINALITY AS r
ORDER BY r.ordinality
RETURNING id
""")


def _save_episodes(session: Session, owner: tuple[int | None, int], state: SensorAnalysisState | PcaState,
                   result: detection.Detection, judged: slice, stamps: np.ndarray, values: np.ndarray,
                   batch_ids: np.ndarray, step_ids: np.ndarray, pending: Pending) -> tuple[int, int]:
    """Extend the rule's open episode of (sensor id or None, equipment id) and add new ones; return counts.

    The rows go to `pending`; `_record_episodes` writes and audits them with the rest of the pass's.
    """
    sensor_id, equipment_id = owner
    rule, offset = result.spec.rule, state.n_seen
    alarm, statistic = result.alarm[judged], result.statistic[judged]
    level = result.level[judged] if result.level is not None else None
    open_id = state.open_episodes.get(rule)
    open_row = session.get(SensorEpisode, open_id) if open_id else None
    carried = _episode_of(open_row) if open_row is not None else None
    if carried is None and not alarm.any():
        return 0, 0
    episodes = detection.extend_episodes(carried, alarm, np.asarray(stamps), values, rule=rule,
                                         deviation=statistic, gap_tolerance=GAP_TOLERANCE, index_offset=offset)
    open_episodes = dict(state.open_episodes)
    open_episodes.pop(rule, None)
    rows: list[tuple[SensorEpisode | dict[str, Any], bool]] = []  # (episode, opened by this window)
    spec = result.spec.to_dict()
    for position, episode in enumerate(episodes):
        local = lambda index: index - offset  # noqa: E731 (index of a global sample in this window)
        severity = "amber"
        if level is not None:
            span = level[max(local(episode.start_index), 0): local(episode.end_index) + 1]
            severity = "red" if span.size and span.max() >= detection.LimitState.RED else "amber"
        if position == 0 and open_row is not None:
            row = open_row
            was_red = row.severity == "red"
            row.end_ts, row.end_index = _aware(episode.end_time), episode.end_index
            if episode.peak_index != row.peak_index:
                row.peak_index, row.peak_value = episode.peak_index, _finite(episode.peak_value)
                row.peak_deviation = _finite(episode.peak_deviation) or 0.0
                row.peak_ts = _aware(stamps[local(episode.peak_index)])
            row.n_alarms, row.is_open = episode.n_alarms, episode.open
            row.severity = "red" if was_red or severity == "red" else "amber"
            rows.append((row, False))
        else:
            start = local(episode.start_index)
            rows.append(({
                "sensor_id": sensor_id, "equipment_id": equipment_id, "kind": result.spec.kind, "rule": rule,
                "spec": spec, "severity": severity, "start_ts": _aware(episode.start_time),
                "end_ts": _aware(episode.end_time), "peak_ts": _aware(stamps[local(episode.peak_index)]),
                "peak_value": _finite(episode.peak_value),
                "peak_deviation": _finite(episode.peak_deviation) or 0.0, "n_alarms": int(episode.n_alarms),
                "start_index": int(episode.start_index), "end_index": int(episode.end_index),
                "peak_index": int(episode.peak_index), "is_open": bool(episode.open),
                "batch_id": int(batch_ids[start]) if batch_ids[start] >= 0 else None,
                "step_id": int(step_ids[start]) if step_ids[start] >= 0 else None}, True))
    state.open_episodes = open_episodes  # the rule's open episode, if any, is linked by _record_episodes
    pending.extend((state, rule, row, opened_here) for row, opened_here in rows)
    opened = sum(1 for _, new in rows if new)
    return opened, sum(1 for row, new in rows if not (row["is_open"] if new else row.is_open))  # type: ignore[index,union-attr]


def _record_episodes(session: Session, pending: Pending) -> None:
    """Insert a pass's new episodes in one statement, audit them in one statement, and link the open ones."""
    if not pending:
        return
    opened = [row for _, _, row, opened_here in pending if opened_here]
    if opened:
        ids = sorted(session.scalars(_INSERT_EPISODES_SQL, {"rows": plain_json_text(opened)}))
        for row, new_id in zip(opened, ids, strict=True):
            row["id"] = new_id  # type: ignore[index]
    entries: list[dict[str, Any]] = []
    for state, rule, row, opened_here in pending:
        if opened_here:
            values: dict[str, Any] = row  # type: ignore[assignment]
            entries.append({"action": "create", "record_type": "sensor_episode", "record_id": values["id"],
                            "new": {column: values[column] for column in _AUDITED_COLUMNS}})
        else:
            values = {"id": row.id, "is_open": row.is_open, "end_ts": row.end_ts,  # type: ignore[union-attr]
                      "n_alarms": row.n_alarms, "peak_value": row.peak_value}  # type: ignore[union-attr]
        if values["is_open"]:
            state.open_episodes = {**state.open_episodes, rule: values["id"]}
        else:  # only open episodes are carried, so a closed one was closed by this pass
            entries.append({"action": "close", "record_type": "sensor_episode", "record_id": values["id"],
                            "new": {"end_ts": values["end_ts"], "n_alarms": values["n_alarms"],
                                    "peak_value": values["peak_value"]},
                            "reason": f"no {rule} alarm for {GAP_TOLERANCE} samples"})
    if entries:
        record_many(session, entries)  # one statement; the chain order is the order of `entries`
    pending.clear()


def analyse_sensor(session: Session, sensor: Sensor, *, fresh: Readings | None = None,
                   state: SensorAnalysisState | None = None, pending: Pending | None = None,
                   window: Window | None = None) -> dict[str, Any]:
    """Judge a sensor's new readings with the health and process rules and record episodes; return counts.

    `fresh`: readings of this sensor the caller has just stored and still holds (time order), so they are not
    read back from the database. `state`: its analysis state, already locked by the caller. `pending`: where
    to leave episode rows for the caller to record with other sensors' (default: recorded here). `window`:
    (lookback, new, late) already read by the caller for several sensors at once (`_with_fresh`).
    """
    state = state or _states_for_update(session, [sensor.id])[sensor.id]
    late = 0
    if window is not None:
        back, new, late = window
    elif fresh is None:
        back, new = _load(session, sensor.id, state.cursor_ts)
    else:
        back, new, late = _with_fresh(session, {sensor.id: state.cursor_ts}, {sensor.id: fresh})[sensor.id]
    if len(new) <= LAG:
        return {"sensor_id": sensor.id, "analysed": 0, "late": late}
    rows = Readings.join(back, new) if len(back) else new
    n_back, n_judged = len(back), len(new) - LAG
    judged = slice(n_back, n_back + n_judged)
    stamps, values, quality = rows.stamps, rows.values, rows.quality
    batch_ids, step_ids = rows.batch_ids, rows.step_ids
    seconds = (stamps - _EPOCH64) / np.timedelta64(1, "s")
    low, high = float(sensor.range_low), float(sensor.range_high)

    health = [
        detection.quality_check(quality),
        # A missing value (a bad reading without a number) is the quality check's business, not a range fault.
        _only_finite(detection.range_check(values, low=low, high=high), values),
        detection.stuck_check(values, n=STUCK_N),
        detection.spike_check(values, half_window=SPIKE_HALF_WINDOW, threshold=SPIKE_THRESHOLD,
                              min_scale=(high - low) * 1e-6),
        detection.gap_check(seconds, period=float(sensor.sampling_period_s), k=GAP_PERIODS),
    ]
    # A gap flags the first reading after a dropout; that reading itself is sound, so it is not blanked.
    masked = detection.mask_unhealthy(values, *health[:4])
    detections: list[detection.Detection] = list(health)

    model_doc = state.model
    chart_from = n_back  # index in `rows` where the process charts start
    if model_doc is None:
        # Without a cursor the window starts at the sensor's first reading: its baseline readings are in hand.
        fitted = _auto_baseline(session, sensor.id, rows if state.cursor_ts is None else None)
        if fitted is not None:
            model, last_ts = fitted
            model_doc = baseline_document(model, source="first_readings", start=None, end=last_ts)
            state.model, state.chart_state = model_doc, None
            chart_from = max(n_back, int(np.searchsorted(seconds, (last_ts - _EPOCH).total_seconds(),
                                                         side="right")))
    if model_doc is not None and chart_from < n_back + n_judged:
        model = detection.InControlModel(model_doc["mean"], model_doc["sigma"], model_doc["phi"])
        design = detection.design_detector(float(model_doc.get("arl0", 370.0)))
        carried = detection.ChartState(**state.chart_state) if state.chart_state else None
        window = masked[chart_from: n_back + n_judged]
        shift = detection.shift_detector(window, model=model, design=design, state=carried)
        state.chart_state = shift.state.to_dict() if shift.state else None
        pad = np.zeros(chart_from, dtype=bool), np.full(chart_from, np.nan)
        tail = np.zeros(len(rows) - n_back - n_judged, dtype=bool), np.full(len(rows) - n_back - n_judged, np.nan)
        detections.append(detection.Detection(
            shift.spec, np.concatenate((pad[0], shift.alarm, tail[0])),
            np.concatenate((pad[1], shift.statistic, tail[1])), shift.state))
        if model_doc.get("nelson"):
            residuals = detection.whiten(masked, model=model)
            residuals[:chart_from] = np.nan
            for found in detection.nelson_rules(residuals, mean=0.0, sigma=1.0,
                                                rules=model_doc["nelson"]).values():
                detections.append(found)
    limits = _limit_detections(session, sensor, stamps, values, step_ids)
    if limits is not None:
        limits = detection.Detection(limits.spec, limits.alarm & np.isfinite(masked), limits.statistic,
                                     level=limits.level)
        detections.append(limits)

    opened = closed = 0
    judged_stamps = stamps[judged]
    mine: Pending = [] if pending is None else pending
    for found in detections:
        a, c = _save_episodes(session, (sensor.id, sensor.equipment_id), state, found, judged, judged_stamps,
                              values[judged], batch_ids[judged], step_ids[judged], mine)
        opened, closed = opened + a, closed + c
    state.cursor_ts = _aware(stamps[n_back + n_judged - 1])
    state.n_seen = state.n_seen + n_judged
    for column in ("model", "chart_state", "open_episodes"):
        # Every analysed sensor's state writes the same columns, so a pass saves them all in one executemany.
        flag_modified(state, column)
    if pending is None:
        _record_episodes(session, mine)
        session.flush()
    return {"sensor_id": sensor.id, "analysed": n_judged, "opened": opened, "closed": closed, "late": late}


def analyse_sensors(session: Session, *, sensor_ids: list[int], fresh: Mapping[int, Readings] | None = None,
                    known: Mapping[int, Sensor] | None = None) -> list[dict[str, Any]]:
    """Analyse each sensor's new readings (id order: a stable lock order), then their equipment's PCA models.

    `fresh`: per sensor id, the readings the caller has just stored (see `analyse_sensor`). `known`: the
    sensors by id when the caller has read them in this transaction already (the ingest job has).
    """
    if known is not None and set(sensor_ids) <= set(known):
        sensors = [known[sensor_id] for sensor_id in sorted(set(sensor_ids))]
    else:
        sensors = session.scalars(select(Sensor).where(Sensor.id.in_(sensor_ids)).order_by(Sensor.id)).all()
    states = _states_for_update(session, [sensor.id for sensor in sensors])
    windows = _with_fresh(session, {s.id: states[s.id].cursor_ts for s in sensors if s.id in (fresh or {})},
                          {s.id: fresh[s.id] for s in sensors if s.id in (fresh or {})}) if fresh else {}
    # The open episodes the pass may extend, in one query (kept referenced: `session.get` then finds them).
    open_ids = sorted({i for state in states.values() for i in state.open_episodes.values()})
    open_rows = session.scalars(select(SensorEpisode).where(SensorEpisode.id.in_(open_ids))).all() if open_ids else []
    pending: Pending = []
    with session.no_autoflush:  # the pass's writes go in a few batched statements at the end
        results = [analyse_sensor(session, sensor, state=states[sensor.id], pending=pending,
                                  window=windows.get(sensor.id)) for sensor in sensors]
    del open_rows
    _record_episodes(session, pending)
    session.flush()
    for equipment_id in sorted({sensor.equipment_id for sensor in sensors}):
        results += analyse_equipment_pca(session, equipment_id)
    return results


def _latest_models(session: Session, equipment_id: int) -> list[PcaModel]:
    """Return the model in force per phase of an equipment (the newest of each)."""
    rows = session.scalars(select(PcaModel).where(PcaModel.equipment_id == equipment_id)
                           .order_by(PcaModel.phase, PcaModel.id.desc())).all()
    latest: dict[str, PcaModel] = {}
    for row in rows:
        latest.setdefault(row.phase, row)
    return list(latest.values())


def analyse_equipment_pca(session: Session, equipment_id: int) -> list[dict[str, Any]]:
    """Score the complete new time buckets of an equipment against its PCA models (T-squared and SPE)."""
    results = []
    for model in _latest_models(session, equipment_id):
        session.execute(insert(PcaState).values(model_id=model.id, n_seen=0, open_episodes={})
                        .on_conflict_do_nothing(index_elements=["model_id"]))
        state = session.execute(select(PcaState).where(PcaState.model_id == model.id).with_for_update()
                                .execution_options(populate_existing=True)).scalar_one()
        latest = queries.latest_readings(session, list(model.sensor_ids))
        if len(latest) < len(model.sensor_ids):
            continue
        # Only buckets every sensor has finished reporting: up to the bucket holding the oldest newest reading.
        horizon = min(datetime.fromisoformat(doc["ts"]) for doc in latest.values())
        start = state.cursor_ts + timedelta(seconds=model.bucket_s) if state.cursor_ts else model.trained_to
        bucket = timedelta(seconds=model.bucket_s)
        end = _EPOCH + ((horizon - _EPOCH) // bucket) * bucket
        if end <= start:
            continue
        buckets, matrix = aligned_matrix(session, sensor_ids=list(model.sensor_ids), start=start, end=end,
                                         bucket_s=model.bucket_s)
        complete = np.isfinite(matrix).all(axis=1)
        stamps = [b for b, ok in zip(buckets.tolist(), complete.tolist(), strict=True) if ok]
        if not stamps:
            continue
        matrix = matrix[complete]
        times = np.array([b.astimezone(UTC).replace(tzinfo=None) for b in stamps], dtype="datetime64[us]")
        batch_ids, step_ids = attach_steps(session, equipment_id, times)
        if model.phase:
            steps = running_steps(session, equipment_id=equipment_id, start=stamps[0], end=stamps[-1])
            in_phase = np.array([any(s.phase == model.phase and s.covers(b) for s in steps) for b in stamps])
            stamps = [b for b, ok in zip(stamps, in_phase.tolist(), strict=True) if ok]
            matrix, batch_ids, step_ids = matrix[in_phase], batch_ids[in_phase], step_ids[in_phase]
            if not stamps:
                state.cursor_ts = buckets[-1]
                continue
        monitor = PcaMonitor.from_dict(model.document)
        scores = monitor.score(matrix)
        params = {"model_id": model.id, "phase": model.phase, "bucket_s": model.bucket_s,
                  "confidence": monitor.confidence, "sensor_ids": list(model.sensor_ids)}
        opened = closed = 0
        window = slice(0, len(stamps))
        pending: Pending = []
        for rule, alarm, statistic, limit in (("pca.t2", scores.t2_alarm, scores.t2, monitor.t2_limit),
                                              ("pca.spe", scores.spe_alarm, scores.spe, monitor.spe_limit)):
            spec = detection.RuleSpec(rule, "multivariate", {**params, "limit": limit},  # type: ignore[arg-type]
                                      model_version=monitor.model_version)
            found = detection.Detection(spec, alarm, statistic)
            a, c = _save_episodes(session, (None, equipment_id), state, found, window, stamps, statistic,
                                  batch_ids, step_ids, pending)
            opened, closed = opened + a, closed + c
        _record_episodes(session, pending)
        state.cursor_ts = stamps[-1]
        state.n_seen = state.n_seen + len(stamps)
        session.flush()
        results.append({"pca_model_id": model.id, "scored": len(stamps), "opened": opened, "closed": closed})
    return results

