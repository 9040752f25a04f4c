"""State changes of the sensor path: accept a payload, load its readings, fit baselines, train PCA models.

Every function takes the caller's tenant session and flushes, never commits. Analysis (charts and episodes)
lives in `app.sensors.analysis`.
"""

from __future__ import annotations

import itertools
import logging
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from itertools import repeat
from typing import Any, NamedTuple

import numpy as np
import orjson
import psycopg
import zstandard
from sqlalchemy import func, select, text
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.exc import ProgrammingError
from sqlalchemy.orm import Session, defer

from app.audit.services import record
from app.billing.services import meter_usage
from app.core.errors import NotFound, ValidationError
from app.core.jobs import enqueue
from app.core.tenancy import control_session
from app.plant.models import Sensor
from app.sensors import detection
from app.sensors.batch_link import RunningStep, running_steps
from app.sensors.models import (
    BUCKET_COLUMNS,
    BUCKET_SECONDS,
    BUCKET_SLOTS,
    PcaModel,
    SensorAnalysisState,
    SensorIngest,
    SensorReading,
)
from app.sensors.multivariate import fit_pca_monitor
from app.sensors.payloads import ParsedReadings, PayloadError, check_envelope, parse_readings

COPY_COLUMNS = "sensor_id, ts, value, quality, ingest_id, batch_id, step_id"
#: The plan entitlement stored readings count against (tenants/plans.json).
READINGS_METRIC = "readings_per_month"
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Accepted:
    """What `accept_payload` did: the ingest row and whether it was a repeat of an earlier message."""

    ingest: SensorIngest
    duplicate: bool


def accept_payload(session: Session, *, body: bytes, kind: str, source: str, max_bytes: int,
                   message_id: str | None = None) -> Accepted:
    """Store a payload durably as received and schedule its processing; a repeated message id is accepted once."""
    if len(body) > max_bytes:
        raise PayloadError(f"the payload is {len(body)} bytes; the limit is {max_bytes} bytes: split it")
    envelope_id = check_envelope(body, kind)
    message_id = message_id or envelope_id
    stored = compress_payload(body)
    # One statement: a repeated message id (an earlier one, or a concurrent one that committed first) inserts
    # nothing and the first ingest is answered instead; no read before, no savepoint around it.
    row = session.execute(
        pg_insert(SensorIngest)
        .values(source=source[:120], message_id=message_id, content_type=kind, payload=stored,
                payload_encoding="zstd", size_bytes=len(body), status="queued")
        .on_conflict_do_nothing(index_elements=["source", "message_id"],
                                index_where=SensorIngest.message_id.is_not(None))
        .returning(SensorIngest.id, SensorIngest.received_at)
    ).first()
    if row is None:
        existing = session.scalar(select(SensorIngest).where(SensorIngest.source == source[:120],
                                                             SensorIngest.message_id == message_id))
        if existing is None:
            raise LookupError(f"ingest of message {message_id!r} from {source!r} neither stored nor found")
        return Accepted(existing, True)
    ingest = SensorIngest(id=row.id, received_at=row.received_at, source=source[:120], message_id=message_id,
                          content_type=kind, size_bytes=len(body), status="queued")
    enqueue(session, "app.sensors.jobs:process_ingest", ingest_id=ingest.id)
    return Accepted(ingest, False)


def compress_payload(body: bytes) -> bytes:
    """Return the body as one zstd frame (with its size and checksum), as `sensor_ingests` stores it.

    Level 1: 5 ms for a 1.7 MB JSON body, a tenth of its size; the frame's checksum makes a damaged payload fail
    to read rather than parse into other readings. A compressor per call: they are not for concurrent threads.
    """
    return zstandard.ZstdCompressor(level=1, write_checksum=True, write_content_size=True).compress(body)


def sensors_by_tag(session: Session, tags: set[str]) -> dict[str, Sensor]:
    """Return the plant's sensors for these tags (unknown tags are simply absent)."""
    if not tags:
        return {}
    return {s.tag: s for s in session.scalars(select(Sensor).where(Sensor.tag.in_(sorted(tags))))}


#: Per month, the name of its readings partition if it exists (else NULL); the names follow the SQL function's.
_PRESENT_PARTITIONS_SQL = text(
    "SELECT m, CASE WHEN to_regclass(p) IS NOT NULL THEN p END "
    "FROM unnest(CAST(:months AS date[])) AS m, LATERAL (SELECT 'sensor_readings_p' || to_char(m, 'YYYY_MM') AS p) n")


def ensure_partitions(session: Session, months: set[date]) -> list[str]:
    """Make sure each month (UTC) has its own readings partition; return their names."""
    # Normally every month already has its partition (made ahead, or by an earlier payload): one query says so,
    # and only a missing month goes through the function and its savepoint.
    present = dict(session.execute(_PRESENT_PARTITIONS_SQL, {"months": sorted(months)}).all()) if months else {}
    names = []
    for month in sorted(months):
        if present.get(month):
            names.append(present[month])
            continue
        try:
            with session.begin_nested():
                name = session.execute(text("SELECT sensor_readings_ensure_partition(:m)"), {"m": month}).scalar_one()
        except ProgrammingError as exc:
            if not isinstance(exc.orig, psycopg.errors.DuplicateTable):
                raise
            # Two jobs made the same new partition at once: the loser's check ran on a catalog snapshot taken
            # before the winner committed. Asked again, it finds the partition.
            name = session.execute(text("SELECT sensor_readings_ensure_partition(:m)"), {"m": month}).scalar_one()
        names.append(name)
    return names


def attach_steps(session: Session, equipment_id: int, stamps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Return batch and step ids (-1: none) for each timestamp (datetime64[us], sorted or not) on one equipment."""
    batch_ids = np.full(stamps.size, -1, dtype=np.int64)
    step_ids = np.full(stamps.size, -1, dtype=np.int64)
    start = stamps.min().astype(datetime).replace(tzinfo=UTC)
    end = stamps.max().astype(datetime).replace(tzinfo=UTC)
    steps: list[RunningStep] = running_steps(session, equipment_id=equipment_id, start=start, end=end)
    for step in steps:
        lo = np.datetime64(step.started_at.astimezone(UTC).replace(tzinfo=None), "us")
        inside = stamps >= lo
        if step.ended_at is not None:
            inside &= stamps < np.datetime64(step.ended_at.astimezone(UTC).replace(tzinfo=None), "us")
        batch_ids[inside] = step.batch_id
        step_ids[inside] = step.step_id
    return batch_ids, step_ids


#: PostgreSQL binary COPY: signature, flags, header extension length; and the end-of-data marker.
_COPY_HEADER = b"PGCOPY\n\xff\r\n\x00" + b"\x00" * 8
_COPY_TRAILER = b"\xff\xff"
_PG_EPOCH = np.datetime64("2000-01-01T00:00:00", "us")
#: COPY_COLUMNS in binary: name and big-endian numpy type (bigint, timestamptz as microseconds, double, smallint).
_BINARY_FIELDS = (("sensor", ">i8"), ("ts", ">i8"), ("value", ">f8"), ("quality", ">i2"), ("ingest", ">i8"),
                  ("batch", ">i8"), ("step", ">i8"))


_LOADED_COLUMNS = ("sensor_ids", "stamps", "values", "qualities", "batch_ids", "step_ids", "ingest_ids")


@dataclass
class Loaded:
    """Readings of one or more payloads ready to store: accepted, of known sensors, attached to batch steps (numpy
    columns), each with the ingest it came in, kept in sensor then time order (then ingest: the earlier payload
    first where two carry the same reading)."""

    sensor_ids: np.ndarray
    stamps: np.ndarray  # datetime64[us], UTC
    values: np.ndarray  # NaN: NULL (a bad reading without a number)
    qualities: np.ndarray
    batch_ids: np.ndarray  # -1: none
    step_ids: np.ndarray
    ingest_ids: np.ndarray

    def __post_init__(self) -> None:
        # A payload comes instant by instant, every sensor in turn: COPYed so, each reading lands on another
        # sensor's page of the primary key's index. Sensor by sensor, each sensor's readings go to one index page
        # after the other, and the analysis takes them in this order (`by_sensor` only slices).
        order = np.lexsort((self.ingest_ids, self.stamps, self.sensor_ids))
        for name in _LOADED_COLUMNS:
            setattr(self, name, getattr(self, name)[order])

    def __len__(self) -> int:
        return int(self.sensor_ids.size)

    def copy_binary(self) -> bytes:
        """Render the rows as one PostgreSQL binary COPY buffer (no per-reading Python object).

        A binary row is: field count, then per field its byte length (-1 for NULL) and its big-endian value.
        Rows are grouped by which of value / batch / step are NULL, so each group is one fixed-layout numpy
        record array; COPY does not care about row order.
        """
        has_value = np.isfinite(self.values)
        pattern = has_value.astype(np.int8) | (self.batch_ids >= 0) * np.int8(2) | (self.step_ids >= 0) * np.int8(4)
        columns: dict[str, Any] = {"sensor": self.sensor_ids, "ts": (self.stamps - _PG_EPOCH).astype(np.int64),
                                   "value": self.values, "quality": self.qualities, "ingest": self.ingest_ids,
                                   "batch": self.batch_ids, "step": self.step_ids}
        parts = [_COPY_HEADER]
        for group in np.unique(pattern).tolist():
            where = pattern == group
            present = {name: True for name, _ in _BINARY_FIELDS}
            present.update(value=bool(group & 1), batch=bool(group & 2), step=bool(group & 4))
            fields: list[tuple[str, str]] = [("n", ">i2")]
            for name, kind in _BINARY_FIELDS:
                fields += [(f"len_{name}", ">i4")] + ([(name, kind)] if present[name] else [])
            rows = np.empty(int(where.sum()), dtype=fields)
            rows["n"] = len(_BINARY_FIELDS)
            for name, kind in _BINARY_FIELDS:
                rows[f"len_{name}"] = np.dtype(kind).itemsize if present[name] else -1
                if present[name]:
                    rows[name] = columns[name][where]
            parts.append(rows.tobytes())
        parts.append(_COPY_TRAILER)
        return b"".join(parts)

    def by_sensor(self) -> dict[int, Any]:
        """Split the rows per sensor, each in time order, as the analysis takes them."""
        from app.sensors.analysis import Readings  # analysis imports this module: import at call time

        bounds = [0, *(np.flatnonzero(np.diff(self.sensor_ids)) + 1).tolist(), len(self)]
        result = {}
        for start, end in itertools.pairwise(bounds):
            if start < end:
                result[int(self.sensor_ids[start])] = Readings(self.stamps[start:end], self.values[start:end],
                                                               self.qualities[start:end].astype(np.int8),
                                                               self.batch_ids[start:end], self.step_ids[start:end])
        return result


class Copied(NamedTuple):
    """What `copy_readings` stored: how many readings, how many were duplicates, and (only when some were) the
    readings stored as rows of (ts, value, quality, batch_id, step_id, sensor_id, ingest_id)."""

    stored: int
    duplicates: int
    rows: list[Any] | None = None


def copy_readings(session: Session, rows: bytes, n_rows: int) -> Copied:
    """Load readings (a binary COPY buffer); one already stored is not stored again.

    The fast path COPYs straight into `sensor_readings` inside a savepoint. If any reading is already there
    (a payload processed twice, a gateway resending), the unique key refuses the whole COPY, the savepoint
    rolls back, and the slow path COPYs into a temporary table and inserts with ON CONFLICT DO NOTHING (of
    readings repeated within the rows, the one of the earliest ingest). Coverage buckets are the caller's
    (`add_buckets`).
    """
    if n_rows == 0:
        return Copied(0, 0)
    session.flush()
    raw = session.connection().connection.driver_connection
    with raw.cursor() as cur:
        cur.execute("SAVEPOINT sensor_readings_copy")
        try:
            with cur.copy(f"COPY sensor_readings ({COPY_COLUMNS}) FROM STDIN (FORMAT BINARY)") as copy:
                copy.write(rows)
        except psycopg.errors.UniqueViolation:
            cur.execute("ROLLBACK TO SAVEPOINT sensor_readings_copy")
        else:
            cur.execute("RELEASE SAVEPOINT sensor_readings_copy")
            return Copied(n_rows, 0)
        cur.execute("CREATE TEMP TABLE IF NOT EXISTS sensor_readings_staging "
                    "(LIKE sensor_readings INCLUDING DEFAULTS) ON COMMIT DROP")
        cur.execute("TRUNCATE sensor_readings_staging")
        with cur.copy(f"COPY sensor_readings_staging ({COPY_COLUMNS}) FROM STDIN (FORMAT BINARY)") as copy:
            copy.write(rows)
        cur.execute(f"INSERT INTO sensor_readings ({COPY_COLUMNS}) "  # noqa: S608 (constant column list)
                    f"SELECT DISTINCT ON (sensor_id, ts) {COPY_COLUMNS} FROM sensor_readings_staging "
                    "ORDER BY sensor_id, ts, ingest_id ON CONFLICT (sensor_id, ts) DO NOTHING "
                    "RETURNING ts, value, quality, batch_id, step_id, sensor_id, ingest_id")
        stored = cur.fetchall()
    return Copied(len(stored), n_rows - len(stored), stored)


_BUCKET_US = BUCKET_SECONDS * 1_000_000
_NO_TIME = np.iinfo(np.int64).max


def bucket_rows(sensor_ids: np.ndarray, stamps: np.ndarray, values: np.ndarray, qualities: np.ndarray,
                batch_ids: np.ndarray, manual: np.ndarray) -> list[dict[str, Any]]:
    """Fold stored readings (numpy columns, any order; NaN value: NULL, batch -1: none, `manual` per reading)
    into coverage bucket rows, exactly as `BUCKET_ROWS_SQL` folds them from the table.

    Integer microseconds throughout: a reading's slice of its minute is floor(offset * slots / width), which
    the SQL computes in floating point on the same exact values.
    """
    if not sensor_ids.size:
        return []
    us = (stamps.astype("datetime64[us]") - _PG_EPOCH).astype(np.int64)
    bucket = us // _BUCKET_US
    batch_key = np.where(batch_ids >= 0, batch_ids, 0)
    order = np.lexsort((bucket, batch_key, sensor_ids))
    sensor_ids, batch_key, bucket, us = sensor_ids[order], batch_key[order], bucket[order], us[order]
    good = (qualities[order] < 2) & ~np.isnan(values[order])
    change = (sensor_ids[1:] != sensor_ids[:-1]) | (batch_key[1:] != batch_key[:-1]) | (bucket[1:] != bucket[:-1])
    starts = np.concatenate(([0], np.flatnonzero(change) + 1))
    n = np.diff(np.append(starts, us.size))
    slot = ((us - bucket * _BUCKET_US) * BUCKET_SLOTS) // _BUCKET_US
    bits = np.where(good, np.left_shift(np.uint64(1), slot.astype(np.uint64)), np.uint64(0))
    first_good = np.minimum.reduceat(np.where(good, us, _NO_TIME), starts)
    columns = {
        "sensor_id": sensor_ids[starts], "batch_key": batch_key[starts], "bucket_start": bucket[starts] * _BUCKET_US,
        "n": n, "bad": n - np.add.reduceat(good.astype(np.int64), starts),
        "manual": np.logical_or.reduceat(manual[order], starts),
        "first_ts": np.minimum.reduceat(us, starts), "last_ts": np.maximum.reduceat(us, starts),
        "first_good": first_good, "last_good": np.maximum.reduceat(np.where(good, us, -_NO_TIME), starts),
        "slots": np.bitwise_or.reduceat(bits, starts).view(np.int64),
    }
    none = first_good == _NO_TIME
    for name in ("bucket_start", "first_ts", "last_ts", "first_good", "last_good"):
        text_of = np.char.add(np.datetime_as_string(_PG_EPOCH + columns[name].astype("timedelta64[us]"),
                                                    unit="us"), "Z").astype(object)
        if name in ("first_good", "last_good"):
            text_of[none] = None
        columns[name] = text_of
    lists = [columns[name].tolist() for name in BUCKET_COLUMNS]
    return [dict(zip(BUCKET_COLUMNS, row, strict=True)) for row in zip(*lists, strict=True)]


def add_buckets(session: Session, sensor_ids: np.ndarray, stamps: np.ndarray, values: np.ndarray,
                qualities: np.ndarray, batch_ids: np.ndarray, manual: np.ndarray | bool) -> int:
    """Add readings just stored to the coverage buckets the review reads (one statement); return the rows."""
    flags = np.full(sensor_ids.size, manual, dtype=bool) if isinstance(manual, bool) else manual
    rows = bucket_rows(sensor_ids, stamps, values, qualities, batch_ids, flags)
    if rows:
        session.execute(text("SELECT sensor_reading_buckets_add(CAST(:rows AS jsonb))"),
                        {"rows": orjson.dumps(rows).decode()})
    return len(rows)


def _add_stored_buckets(session: Session, loaded: Loaded, copied: Copied, *, manual: bool) -> None:
    """Add what `copy_readings` stored to the buckets: the readings in hand, or the rows it returned."""
    if copied.rows is None:
        add_buckets(session, loaded.sensor_ids, loaded.stamps, loaded.values, loaded.qualities, loaded.batch_ids,
                    manual)
        return
    from app.sensors.analysis import Readings  # analysis imports this module: import at call time

    stored = Readings.of_rows(copied.rows)  # its first five columns are those of a Readings row
    add_buckets(session, np.array([r[5] for r in copied.rows], dtype=np.int64), stored.stamps, stored.values,
                stored.quality, stored.batch_ids, manual)


#: How far back a job looks for earlier queued payloads of its source to process first (a bounded index scan).
ORDER_WINDOW = timedelta(days=1)
#: At most how many payload bytes (as received) one job processes together: its own, the earlier queued ones of
#: its source and, while under this, the later ones already queued behind it.
BATCH_MAX_BYTES = 16 * 1024 * 1024
#: At most how many payloads one job processes together.
BATCH_MAX_PAYLOADS = 16


def process_ingest(session: Session, *, ingest_id: int) -> dict[str, Any]:
    """Parse a stored payload, load its readings with COPY, attach them to the running batch step, analyse them.

    Payloads of one source are processed in the order they were accepted (a lock per source; an earlier one
    still queued is processed first, in this transaction), so a sensor's readings reach the recursive charts
    in time order even with several workers. When payloads of the source are already queued behind this one (the
    workers are behind: a backlog), they are processed with it, up to `BATCH_MAX_BYTES`: one COPY, one analysis
    pass per sensor and one set of statements for all of them instead of one per payload (their own jobs then
    find them processed). Idempotent: a processed ingest is left alone, and reprocessing stores each reading once.
    """
    # Not the payload (megabytes): it is read once, under the row lock, by `_process_batch`.
    # With now(), the transaction's time (`processed_at` of what this job processes), in the same round trip.
    ingest = session.execute(select(SensorIngest.id, SensorIngest.source, SensorIngest.received_at,
                                    func.now().label("now")).where(SensorIngest.id == ingest_id)).one_or_none()
    if ingest is None:
        raise NotFound(f"no ingest {ingest_id}")
    session.execute(select(func.pg_advisory_xact_lock(func.hashtext("sensor_ingests:" + ingest.source))))
    # Read after the lock: what another job of this source processed before we got it is no longer queued.
    queued = [(row.id, row.size_bytes) for row in session.execute(
        select(SensorIngest.id, SensorIngest.size_bytes)
        .where(SensorIngest.source == ingest.source, SensorIngest.status == "queued",
               SensorIngest.received_at >= ingest.received_at - ORDER_WINDOW,
               SensorIngest.received_at <= ingest.received_at + ORDER_WINDOW)
        .order_by(SensorIngest.id))]
    if ingest_id not in {i for i, _ in queued}:  # processed already (a redelivery): its row answers
        queued = sorted([*queued, (ingest_id, 0)])
    results: list[tuple[SensorIngest, bool]] = []
    for group in _groups(queued, ingest_id):
        results += _process_group(session, group, ingest_id, now=ingest.now)
    # Last, so that nothing but this transaction's commit can fail once the usage is counted.
    meter_readings(session, [row for row, now_processed in results if now_processed])
    row = next(row for row, _ in results if row.id == ingest_id)
    return ingest_summary(row, tenant_slug=session.info["tenant"].slug)


def _groups(queued: list[tuple[int, int]], ingest_id: int) -> list[list[int]]:
    """Split queued payloads (id, bytes; id order) into the groups a job processes one after the other: every
    one up to `ingest_id`, then later ones while the last group stays under `BATCH_MAX_BYTES` and
    `BATCH_MAX_PAYLOADS`."""
    groups: list[list[int]] = [[]]
    size = 0
    for queued_id, size_bytes in queued:
        full = bool(groups[-1]) and (size + size_bytes > BATCH_MAX_BYTES or len(groups[-1]) >= BATCH_MAX_PAYLOADS)
        if queued_id > ingest_id and full:
            break
        if full:
            groups.append([])
            size = 0
        groups[-1].append(queued_id)
        size += size_bytes
    return groups


def _process_group(session: Session, group: list[int], ingest_id: int, *,
                   now: datetime) -> list[tuple[SensorIngest, bool]]:
    """Process a group of payloads together; if that fails, the earlier ones one by one (each its own job's to
    report if it fails too), then the job's own payload alone (which fails the job if it fails again); later
    ones are left to their own jobs."""
    try:
        with session.begin_nested():
            return _process_batch(session, group, now=now)
    except Exception:
        if group == [ingest_id]:
            raise
        log.exception("ingests %s failed together; processing them one by one", group)
    results = []
    for other in group:
        if other == ingest_id:
            results += _process_batch(session, [other], now=now)
        elif other < ingest_id:
            try:
                with session.begin_nested():
                    results += _process_batch(session, [other], now=now)
            except Exception:
                log.exception("earlier ingest %s failed while processing ingest %s", other, ingest_id)
    return results


def meter_readings(session: Session, ingests: list[SensorIngest]) -> None:
    """Count the readings these ingests have just stored into the tenant's monthly usage; flag any over the plan.

    Usage lives in the control plane, so it is counted in a control-plane transaction that commits just before
    the caller's tenant transaction. An ingest is metered once: only while it is being processed (a processed
    ingest is never processed again, and a job that fails before this point rolls back and is retried from
    the start). Readings over the allowance are kept and flagged, never dropped.
    """
    due = [ingest for ingest in ingests if ingest.status == "processed"]
    if not due:
        return
    tenant_id = session.info["tenant"].id
    amounts = [ingest.readings_stored or 0 for ingest in due]
    with control_session() as control:
        # One count for all of them; the readings over the allowance are then told apart in order, exactly as
        # counting the ingests one after the other would.
        result = meter_usage(control, tenant_id=tenant_id, metric=READINGS_METRIC, amount=sum(amounts))
    used = result.used - sum(amounts)
    for ingest, amount in zip(due, amounts, strict=True):
        used += amount
        ingest.readings_over_allowance = (0 if result.allowance is None
                                          else max(0, min(amount, used - result.allowance)))
    session.flush()


def _process_batch(session: Session, ingest_ids: list[int], *, now: datetime) -> list[tuple[SensorIngest, bool]]:
    """Process queued payloads of one source together (the caller holds its lock); return, in id order, each
    one's row and whether it was queued (a processed or failed one is left as it is).

    Each payload is parsed and judged on its own (its refusals and counts are its own; one that cannot be read
    fails alone); the readings of all of them are stored in one COPY and analysed in one pass. `now`: the
    transaction's time, `processed_at`.
    """
    rows = session.scalars(select(SensorIngest).where(SensorIngest.id.in_(ingest_ids))
                           .order_by(SensorIngest.id).with_for_update()
                           .options(defer(SensorIngest.payload))  # read only if it is still to be parsed
                           .execution_options(populate_existing=True)).all()
    results: list[tuple[SensorIngest, bool]] = []
    parts: list[tuple[SensorIngest, ParsedReadings]] = []
    for ingest in rows:
        if ingest.status != "queued":
            results.append((ingest, False))
            continue
        results.append((ingest, True))
        try:
            parts.append((ingest, parse_readings(stored_payload(session, ingest.id), ingest.content_type)))
        except PayloadError as exc:
            ingest.status, ingest.failure, ingest.processed_at = "failed", str(exc), now
    if not parts:
        return results
    sensors = sensors_by_tag(session, {tag for _, parsed in parts for tag in set(parsed.tags)})
    loaded = _loaded(session, [(ingest.id, parsed) for ingest, parsed in parts], sensors)
    copied = copy_readings(session, loaded.copy_binary(), len(loaded))
    # Every payload of a batch comes from one source, so all are manual entries or none is.
    _add_stored_buckets(session, loaded, copied, manual=parts[0][0].source.startswith("member:"))
    ids, kept = np.unique(loaded.ingest_ids, return_counts=True)
    kept_of = dict(zip(ids.tolist(), kept.tolist(), strict=True))
    stored_of = kept_of if copied.rows is None else dict(Counter(row[6] for row in copied.rows))
    for ingest, parsed in parts:
        ingest.readings_total = parsed.total
        ingest.readings_stored = stored_of.get(ingest.id, 0)
        ingest.readings_duplicate = kept_of.get(ingest.id, 0) - ingest.readings_stored
        ingest.readings_rejected = parsed.rejected
        ingest.errors = parsed.errors
        ingest.error_counts = parsed.error_counts
        ingest.status, ingest.processed_at = "processed", now
    session.flush()
    if len(loaded):
        # Every stored reading was in these payloads only when nothing was a duplicate: then the readings in
        # hand are exactly what is stored, and the analysis need not read them back.
        _analyse(session, parts[-1][0].id, loaded, fresh=copied.duplicates == 0,
                 known={s.id: s for s in sensors.values()})
    return results


def stored_payload(session: Session, ingest_id: int) -> bytes:
    """Return an ingest's payload exactly as it was received, read in PostgreSQL's binary format.

    In the text format a bytea travels hex-encoded, twice its size, and is decoded on both sides.
    """
    raw = session.connection().connection.driver_connection
    with raw.cursor(binary=True) as cur:
        cur.execute("SELECT payload, payload_encoding FROM sensor_ingests WHERE id = %s", (ingest_id,))
        row = cur.fetchone()
    if row is None:
        raise NotFound(f"no ingest {ingest_id}")
    payload, encoding = row
    if encoding == "identity":
        return bytes(payload)
    if encoding == "zstd":
        try:
            return zstandard.ZstdDecompressor().decompress(payload)
        except zstandard.ZstdError as exc:  # the frame's checksum or structure: the stored bytes are damaged
            raise PayloadError(f"the stored payload is damaged and cannot be read ({exc}); ask the gateway "
                               "to send it again") from exc
    raise ValueError(f"ingest {ingest_id}: unknown payload encoding {encoding!r}")


def _analyse(session: Session, ingest_id: int, loaded: Loaded, *, fresh: bool, known: dict[int, Sensor]) -> None:
    """Analyse the sensors of a payload in this transaction; if that fails, leave it to the `analysis` queue."""
    from app.sensors import analysis  # analysis imports this module: import at call time

    sensor_ids = sorted({int(s) for s in np.unique(loaded.sensor_ids).tolist()})
    try:
        with session.begin_nested():
            analysis.analyse_sensors(session, sensor_ids=sensor_ids, fresh=loaded.by_sensor() if fresh else None,
                                     known=known)
    except Exception:
        # Readings must never wait on a fault in the rules: they are stored, and the analysis job retries.
        log.exception("analysis of ingest %s failed; queued for the analysis workers", ingest_id)
        enqueue(session, "app.sensors.jobs:analyse_sensors", sensor_ids=sensor_ids, ingest_id=ingest_id)


def _loaded(session: Session, parts: list[tuple[int, ParsedReadings]], sensors: dict[str, Sensor]) -> Loaded:
    """Refuse readings of unknown sensors (in their own payload's list) and attach the rest of every payload
    (ingest id, parsed readings) to the batch step running on their equipment."""
    id_of = {tag: sensor.id for tag, sensor in sensors.items()}
    columns: list[tuple[np.ndarray, ...]] = []
    for ingest_id, parsed in parts:
        ids = np.fromiter(map(id_of.get, parsed.tags, repeat(-1)), dtype=np.int64, count=len(parsed.tags))
        unknown = np.flatnonzero(ids < 0)
        for position in unknown.tolist():
            parsed.refuse(int(parsed.indices[position]), parsed.tags[position],
                          "unknown sensor tag: register it in Plant > Sensors")
        keep = np.flatnonzero(ids >= 0) if unknown.size else slice(None)
        columns.append((ids[keep], parsed.stamps[keep], parsed.values[keep],
                        parsed.qualities[keep].astype(np.int16), np.full(ids[keep].size, ingest_id, dtype=np.int64)))
    ids, stamps, values, qualities, ingest_ids = (columns[0] if len(columns) == 1
                                                  else tuple(np.concatenate(c) for c in zip(*columns, strict=True)))
    batch_ids = np.full(ids.size, -1, dtype=np.int64)
    step_ids = np.full(ids.size, -1, dtype=np.int64)
    if ids.size:
        # Each reading's equipment through a table indexed by sensor id (no sort of a hundred thousand ids).
        equipment_of = np.full(max(s.id for s in sensors.values()) + 1, -1, dtype=np.int64)
        for sensor in sensors.values():
            equipment_of[sensor.id] = sensor.equipment_id
        equipment_ids = equipment_of[ids]
        for equipment_id in sorted({s.equipment_id for s in sensors.values()}):
            where = equipment_ids == equipment_id
            if where.any():
                batch_ids[where], step_ids[where] = attach_steps(session, int(equipment_id), stamps[where])
        month_of = stamps.astype("datetime64[M]")
        first, last = month_of.min(), month_of.max()
        # Nearly always a single month: then no sort to find which.
        months = {date(int(str(m)[:4]), int(str(m)[5:7]), 1)
                  for m in ([first] if first == last else np.unique(month_of))}
        ensure_partitions(session, months)
    return Loaded(ids, stamps, values, qualities, batch_ids, step_ids, ingest_ids)


def ingest_summary(ingest: SensorIngest, *, tenant_slug: str = "") -> dict[str, Any]:
    """Return the status document of an ingest (what `GET /api/v1/ingest/<id>` answers)."""
    doc: dict[str, Any] = {"id": ingest.id, "status": ingest.status, "message_id": ingest.message_id,
                           "received_at": ingest.received_at.isoformat() if ingest.received_at else None,
                           "size_bytes": ingest.size_bytes}
    if ingest.status == "processed":
        doc.update(processed_at=ingest.processed_at.isoformat() if ingest.processed_at else None,
                   readings={"total": ingest.readings_total, "stored": ingest.readings_stored,
                             "duplicate": ingest.readings_duplicate, "rejected": ingest.readings_rejected},
                   error_counts=ingest.error_counts or {}, errors=ingest.errors or [])
        if ingest.readings_over_allowance:
            billing = f"/t/{tenant_slug}/billing" if tenant_slug else "the workspace's billing page"
            doc["over_allowance"] = {
                "readings": ingest.readings_over_allowance,
                "detail": f"{ingest.readings_over_allowance} of the readings stored went beyond your plan's "
                          f"monthly allowance of {READINGS_METRIC.replace('_', ' ')}; they are kept all the "
                          f"same. Upgrade your plan at {billing}.",
            }
    elif ingest.status == "failed":
        doc.update(processed_at=ingest.processed_at.isoformat() if ingest.processed_at else None,
                   failure=ingest.failure)
    return doc


def fit_baseline(session: Session, *, sensor_id: int, start: datetime, end: datetime,
                 arl0: float = 370.0, nelson: list[int] | None = None) -> dict[str, Any]:
    """Fit a sensor's in-control model on its readings in [start, end] (a qualified reference window)."""
    values = np.asarray(session.scalars(
        select(SensorReading.value)
        .where(SensorReading.sensor_id == sensor_id, SensorReading.ts >= start, SensorReading.ts <= end,
               SensorReading.quality == 0)
        .order_by(SensorReading.ts)).all(), dtype=float)
    try:
        model = detection.fit_in_control(values)
    except ValueError as exc:
        raise ValidationError(f"cannot fit a baseline for sensor {sensor_id} on that window: {exc}") from exc
    document = baseline_document(model, source="window", start=start, end=end, arl0=arl0, nelson=nelson)
    state = session.get(SensorAnalysisState, sensor_id, with_for_update=True)
    if state is None:
        state = SensorAnalysisState(sensor_id=sensor_id, n_seen=0, open_episodes={})
        session.add(state)
    old = state.model
    state.model = document
    state.chart_state = None  # restart the recursive charts under the new model
    session.flush()
    # The in-control model decides what raises an exception episode: who changed it, and to what, is audited.
    record(session, action="create" if old is None else "supersede", record_type="sensor_baseline",
           record_id=sensor_id, old=old, new=document,
           reason=None if old is None else "baseline refitted on a reference window")
    return document


def baseline_document(model: detection.InControlModel, *, source: str, start: datetime | None,
                      end: datetime | None, arl0: float = 370.0, nelson: list[int] | None = None) -> dict[str, Any]:
    """Return the JSON form of a sensor's in-control model and chart settings."""
    return {"mean": model.mean, "sigma": model.sigma, "phi": model.phi, "source": source,
            "fitted_from": start.isoformat() if start else None, "fitted_to": end.isoformat() if end else None,
            "arl0": arl0, "nelson": sorted(nelson or [])}


def train_pca_model(session: Session, *, equipment_id: int, start: datetime, end: datetime,
                    bucket_s: int = 60, phase: str = "", sensor_ids: list[int] | None = None,
                    variance: float = 0.9) -> PcaModel:
    """Fit a PCA monitor on an equipment's readings in [start, end], aligned on a `bucket_s` grid."""
    if sensor_ids is None:
        sensor_ids = list(session.scalars(select(Sensor.id).where(Sensor.equipment_id == equipment_id)
                                          .order_by(Sensor.id)))
    if len(sensor_ids) < 2:
        raise ValidationError("a PCA model needs at least two sensors on the equipment")
    _, matrix = aligned_matrix(session, sensor_ids=sensor_ids, start=start, end=end, bucket_s=bucket_s)
    complete = matrix[np.isfinite(matrix).all(axis=1)]
    if complete.shape[0] < 3 * len(sensor_ids):
        raise ValidationError(f"only {complete.shape[0]} complete samples in that window; need at least "
                              f"{3 * len(sensor_ids)} for {len(sensor_ids)} sensors")
    monitor = fit_pca_monitor(complete, variance=variance, variables=[str(s) for s in sensor_ids])
    model = PcaModel(equipment_id=equipment_id, phase=phase, sensor_ids=sensor_ids, bucket_s=bucket_s,
                     document=monitor.to_dict(), model_version=monitor.model_version,
                     trained_from=start, trained_to=end)
    session.add(model)
    session.flush()
    # The model decides which multivariate excursions become exceptions: who trained it, on what, is audited.
    record(session, action="create", record_type="sensor_pca_model", record_id=model.id,
           new={"equipment_id": equipment_id, "phase": phase, "sensor_ids": sensor_ids, "bucket_s": bucket_s,
                "model_version": model.model_version, "trained_from": start, "trained_to": end,
                "samples": int(complete.shape[0]), "variance": variance})
    return model


def aligned_matrix(session: Session, *, sensor_ids: list[int], start: datetime, end: datetime,
                   bucket_s: int) -> tuple[np.ndarray, np.ndarray]:
    """Return bucket start times and a (buckets x sensors) matrix of bucket means (NaN where a sensor is silent)."""
    rows = session.execute(text(
        "SELECT date_bin(make_interval(secs => :b), ts, TIMESTAMPTZ '2000-01-01 00:00:00+00') AS bucket, "
        "sensor_id, avg(value) FROM sensor_readings "
        "WHERE sensor_id = ANY(:ids) AND ts >= :a AND ts < :z AND quality = 0 GROUP BY 1, 2 ORDER BY 1"),
        {"b": bucket_s, "ids": sensor_ids, "a": start, "z": end}).all()
    buckets = sorted({r[0] for r in rows})
    index = {b: i for i, b in enumerate(buckets)}
    column = {s: j for j, s in enumerate(sensor_ids)}
    matrix = np.full((len(buckets), len(sensor_ids)), np.nan)
    for bucket, sensor_id, mean in rows:
        matrix[index[bucket], column[sensor_id]] = mean
    return np.asarray(buckets, dtype=object), matrix
