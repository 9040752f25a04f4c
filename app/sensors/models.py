"""Sensor path tables: ingest payloads, time-partitioned readings, analysis state, exception episodes, PCA models.

Readings are data, not GMP records: they are inserted once and never changed (the tenant role may only SELECT
and INSERT them), but they are not audited one by one. Exception episodes are GMP records: opening and closing
one writes an audit event, and no one may delete them.

`sensor_readings` is partitioned by month on `ts` (native range partitioning). New tenants get only the DEFAULT
partition, so a reading is never refused for lack of a partition; monthly partitions are made on demand by
`sensor_readings_ensure_partition(month)`, a SECURITY DEFINER function (the tenant role cannot CREATE tables)
that moves any rows of that month out of the default partition before attaching the new one.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    DDL,
    BigInteger,
    Boolean,
    CheckConstraint,
    Double,
    Identity,
    Index,
    Integer,
    LargeBinary,
    PrimaryKeyConstraint,
    SmallInteger,
    String,
    Text,
    event,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from app.audit.registry import NOT_GMP, gmp_table_info, protect_gmp_table, register_record_type
from app.core.db import CreatedAt, TenantBase

INGEST_STATUSES = ("queued", "processed", "failed")


class SensorIngest(TenantBase):
    """One payload a gateway posted: stored as received before `202 Accepted`, then processed by a job."""

    __tablename__ = "sensor_ingests"
    __table_args__ = (
        Index("uq_sensor_ingests_source_message_id", "source", "message_id", unique=True,
              postgresql_where=text("message_id IS NOT NULL")),
        Index("ix_sensor_ingests_received_at", "received_at"),
        CheckConstraint("status IN ('queued', 'processed', 'failed')", name="status"),
        CheckConstraint("payload_encoding IN ('identity', 'zstd')", name="payload_encoding"),
        {"info": gmp_table_info("sensor_ingest")},
    )

    #: The ingest id returned to the gateway.
    id: Mapped[int] = mapped_column(Identity(), primary_key=True)
    #: Who posted it: `client:<oauth client id>`, `bridge:<name>`, `member:<id>`.
    source: Mapped[str] = mapped_column(String(120))
    #: The client's own message id; a repeated one is accepted once.
    message_id: Mapped[str | None] = mapped_column(String(200))
    #: `json` or `csv`.
    content_type: Mapped[str] = mapped_column(String(10))
    #: The body exactly as received (never altered; reprocessing reads it again), stored as `payload_encoding`
    #: says: read it with `app.sensors.services.stored_payload`.
    payload: Mapped[bytes] = mapped_column(LargeBinary)
    #: `zstd`: a zstd frame of the body, with its checksum, made by the web worker that accepted it (a tenth of the
    #: body's size). `identity`: the body itself (payloads stored before that).
    payload_encoding: Mapped[str] = mapped_column(String(10), server_default="identity")
    #: Size of the body in bytes.
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    #: queued / processed / failed.
    status: Mapped[str] = mapped_column(String(10), default="queued")
    #: When the database accepted the payload (server clock, UTC).
    received_at: Mapped[datetime] = mapped_column(server_default=func.now())
    #: When the ingest job finished.
    processed_at: Mapped[datetime | None]
    #: Readings found in the payload.
    readings_total: Mapped[int | None] = mapped_column(BigInteger)
    #: Readings newly stored by this payload.
    readings_stored: Mapped[int | None] = mapped_column(BigInteger)
    #: Readings already stored (same sensor and timestamp) and therefore not stored again.
    readings_duplicate: Mapped[int | None] = mapped_column(BigInteger)
    #: Readings refused (unknown sensor, non-numeric value, bad timestamp); see `errors`.
    readings_rejected: Mapped[int | None] = mapped_column(BigInteger)
    #: Refused readings, first `MAX_ERRORS_LISTED`: [{"index", "sensor", "reason"}].
    errors: Mapped[list[dict[str, Any]] | None] = mapped_column(JSONB)
    #: Count of refused readings per reason (complete, even when `errors` is truncated).
    error_counts: Mapped[dict[str, int] | None] = mapped_column(JSONB)
    #: Why the whole payload failed (unparseable), if it did.
    failure: Mapped[str | None] = mapped_column(Text)
    #: Stored readings beyond the plan's monthly allowance (kept all the same, and flagged); None: not metered.
    readings_over_allowance: Mapped[int | None] = mapped_column(BigInteger)


class SensorReading(TenantBase):
    """One reading of one sensor at one time; unique on (sensor, timestamp) across all partitions."""

    __tablename__ = "sensor_readings"
    __table_args__ = (
        PrimaryKeyConstraint("sensor_id", "ts", name="pk_sensor_readings"),
        # Time-ordered appends make BRIN tiny and enough for time-range scans across sensors.
        Index("ix_sensor_readings_ts_brin", "ts", postgresql_using="brin"),
        # Raw data, protected by privilege (the tenant role may only INSERT and SELECT): not a delete-refusing
        # GMP table, because partition maintenance moves rows out of the default partition as the owner.
        {"postgresql_partition_by": "RANGE (ts)", "info": {**NOT_GMP, "privileges": "append_only"}},
    )

    #: The sensor (plant area's `sensors.id`).
    sensor_id: Mapped[int] = mapped_column(BigInteger)
    #: Source timestamp of the reading (device or OPC UA server clock), UTC.
    ts: Mapped[datetime]
    #: The measured value in the sensor's unit; NULL only for a bad-quality reading that carried no number.
    value: Mapped[float | None] = mapped_column(Double)
    #: 0 good, 1 uncertain, 2 bad (a quality flag, never a process value).
    quality: Mapped[int] = mapped_column(SmallInteger, default=0)
    #: The payload that brought it.
    ingest_id: Mapped[int] = mapped_column(BigInteger)
    #: Batch running on the sensor's equipment at `ts`, if any.
    batch_id: Mapped[int | None] = mapped_column(BigInteger)
    #: Step of that batch running at `ts`, if any.
    step_id: Mapped[int | None] = mapped_column(BigInteger)


class SensorReadingBucket(TenantBase):
    """Coverage of one sensor over one minute, for readings of one batch (or of none): kept by the loader as it
    stores readings (`sensor_reading_buckets_add`), so the review reads a few rows per sensor instead of every
    reading."""

    __tablename__ = "sensor_reading_buckets"
    __table_args__ = (
        PrimaryKeyConstraint("sensor_id", "batch_key", "bucket_start", "bucket_s", name="pk_sensor_reading_buckets"),
        # Written only through sensor_reading_buckets_add (SECURITY DEFINER): the tenant role only reads it.
        {"info": {**NOT_GMP, "privileges": "read_only"}},
    )

    #: The sensor (plant area's `sensors.id`).
    sensor_id: Mapped[int] = mapped_column(BigInteger)
    #: The readings' batch (`sensor_readings.batch_id`), 0 for readings of no batch.
    batch_key: Mapped[int] = mapped_column(BigInteger)
    #: Start of the bucket (a multiple of its width since 2000-01-01 UTC).
    bucket_start: Mapped[datetime]
    #: Width of the bucket in seconds (`BUCKET_SECONDS`).
    bucket_s: Mapped[float] = mapped_column(Double)
    #: Readings in the bucket.
    n: Mapped[int] = mapped_column(BigInteger)
    #: Readings of bad quality or without a value.
    bad: Mapped[int] = mapped_column(BigInteger)
    #: Whether a person (a `member:` ingest source) rather than a gateway posted any of them.
    manual: Mapped[bool] = mapped_column(Boolean)
    #: First and last reading of any quality.
    first_ts: Mapped[datetime]
    last_ts: Mapped[datetime]
    #: First and last good reading (quality below 2, with a value); NULL when none is good.
    first_good: Mapped[datetime | None]
    last_good: Mapped[datetime | None]
    #: Which of the bucket's `BUCKET_SLOTS` equal slices of time hold a good reading (bit i: slice i), which
    #: bounds the longest time between good readings inside it.
    slots: Mapped[int] = mapped_column(BigInteger)


class SensorAnalysisState(TenantBase):
    """Where analysis of one sensor stands: cursor, in-control model and recursive chart state."""

    __tablename__ = "sensor_analysis_state"
    __table_args__ = {"info": {**NOT_GMP, "privileges": "read_write"}}

    #: The sensor.
    sensor_id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    #: Timestamp of the last analysed reading; later readings are analysed next.
    cursor_ts: Mapped[datetime | None]
    #: Readings analysed so far (global sample index of the next one).
    n_seen: Mapped[int] = mapped_column(BigInteger, default=0)
    #: In-control model {mean, sigma, phi, source, fitted_on}; None until enough readings were seen.
    model: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    #: `detection.ChartState` of the shift detector after the last analysed reading.
    chart_state: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    #: Open episode id per rule, e.g. {"shift": 12}.
    open_episodes: Mapped[dict[str, int]] = mapped_column(JSONB, default=dict)
    #: Last update.
    updated_at: Mapped[datetime] = mapped_column(server_default=func.now(), onupdate=func.now())


class SensorEpisode(CreatedAt, TenantBase):
    """One excursion of one rule on one sensor (or one equipment's PCA model): opened once, extended while it lasts."""

    __tablename__ = "sensor_episodes"
    __table_args__ = (
        Index("ix_sensor_episodes_sensor_id_start_ts", "sensor_id", "start_ts"),
        Index("ix_sensor_episodes_batch_id", "batch_id"),
        Index("ix_sensor_episodes_open", "sensor_id", postgresql_where=text("is_open")),
        CheckConstraint("kind IN ('process', 'health', 'multivariate')", name="kind"),
        {"info": gmp_table_info("sensor_episode")},
    )

    #: Never reused.
    id: Mapped[int] = mapped_column(Identity(), primary_key=True)
    #: Sensor (None for a multivariate episode of a whole equipment).
    sensor_id: Mapped[int | None] = mapped_column(BigInteger)
    #: Equipment the sensor is mounted on (or the PCA model's equipment).
    equipment_id: Mapped[int | None] = mapped_column(BigInteger)
    #: process (the process moved), health (the sensor cannot be trusted) or multivariate.
    kind: Mapped[str] = mapped_column(String(20))
    #: Rule name, e.g. `shift`, `nelson_1`, `limits`, `health.stuck`, `pca.spe`.
    rule: Mapped[str] = mapped_column(String(40))
    #: RuleSpec: rule, parameters and model version that reproduce the alarm.
    spec: Mapped[dict[str, Any]] = mapped_column(JSONB)
    #: amber / red for limit episodes, else amber.
    severity: Mapped[str] = mapped_column(String(10), default="amber")
    #: Timestamp of the first alarmed reading.
    start_ts: Mapped[datetime]
    #: Timestamp of the last alarmed reading so far.
    end_ts: Mapped[datetime]
    #: Timestamp of the reading with the largest deviation.
    peak_ts: Mapped[datetime]
    #: Reading value at the peak (None when the peak reading carried no number: a bad-quality flag).
    peak_value: Mapped[float | None] = mapped_column(Double)
    #: Charted statistic at the peak (sigma units for charts, distance for limits).
    peak_deviation: Mapped[float] = mapped_column(Double)
    #: Alarmed readings in the episode.
    n_alarms: Mapped[int] = mapped_column(BigInteger)
    #: Global sample indices (per sensor), so the episode can be replayed from the readings.
    start_index: Mapped[int] = mapped_column(BigInteger)
    #: Global index of the last alarmed sample.
    end_index: Mapped[int] = mapped_column(BigInteger)
    #: Global index of the peak sample.
    peak_index: Mapped[int] = mapped_column(BigInteger)
    #: True while a later alarm could still extend it.
    is_open: Mapped[bool] = mapped_column(Boolean, default=True)
    #: Batch running on the equipment at the start (None if none or not known).
    batch_id: Mapped[int | None] = mapped_column(BigInteger)
    #: Step running at the start.
    step_id: Mapped[int | None] = mapped_column(BigInteger)
    #: When it was last extended or closed.
    updated_at: Mapped[datetime] = mapped_column(server_default=func.now(), onupdate=func.now())


class PcaState(TenantBase):
    """Where scoring of one PCA model stands: last scored bucket and its open episodes."""

    __tablename__ = "sensor_pca_state"
    __table_args__ = {"info": {**NOT_GMP, "privileges": "read_write"}}

    #: The PCA model (`sensor_pca_models.id`).
    model_id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    #: Start of the last scored bucket.
    cursor_ts: Mapped[datetime | None]
    #: Buckets scored so far (global sample index of the next one).
    n_seen: Mapped[int] = mapped_column(BigInteger, default=0)
    #: Open episode id per rule (`pca.t2`, `pca.spe`).
    open_episodes: Mapped[dict[str, int]] = mapped_column(JSONB, default=dict)


class PcaModel(CreatedAt, TenantBase):
    """A PCA monitor fitted on reference readings of one equipment (and optionally one phase); append-only."""

    __tablename__ = "sensor_pca_models"
    __table_args__ = (
        Index("ix_sensor_pca_models_equipment_id_phase", "equipment_id", "phase"),
        {"info": gmp_table_info("sensor_pca_model", privileges="append_only")},
    )

    #: Never reused; the newest model of an equipment/phase is the one in force.
    id: Mapped[int] = mapped_column(Identity(), primary_key=True)
    #: Equipment whose sensors are the variables.
    equipment_id: Mapped[int] = mapped_column(BigInteger)
    #: Phase/step key the model applies to ('' for all).
    phase: Mapped[str] = mapped_column(String(100), default="")
    #: Sensor ids, in column order.
    sensor_ids: Mapped[list[int]] = mapped_column(JSONB)
    #: Seconds per aligned sample (readings are bucketed to this grid).
    bucket_s: Mapped[int] = mapped_column(Integer)
    #: `multivariate.PcaMonitor.to_dict()`.
    document: Mapped[dict[str, Any]] = mapped_column(JSONB)
    #: The monitor's `model_version` hash.
    model_version: Mapped[str] = mapped_column(String(100))
    #: Reference window the model was trained on.
    trained_from: Mapped[datetime]
    #: End of the reference window.
    trained_to: Mapped[datetime]


#: The default partition: catches any reading whose month has no partition yet, so none is ever refused.
DEFAULT_PARTITION_SQL = "CREATE TABLE sensor_readings_default PARTITION OF sensor_readings DEFAULT"

#: Create the partition of one month (UTC) if missing, moving that month's rows out of the default partition.
#: SECURITY DEFINER: it runs with its owner's rights so the tenant role can add partitions without CREATE on
#: the schema; `SET search_path FROM CURRENT` pins it to the tenant schema it was created in.
ENSURE_PARTITION_SQL = """
CREATE FUNCTION sensor_readings_ensure_partition(month date) RETURNS text
LANGUAGE plpgsql SECURITY DEFINER SET search_path FROM CURRENT AS $$
DECLARE
  lo timestamptz := date_trunc('month', month::timestamp) AT TIME ZONE 'UTC';
  hi timestamptz := (date_trunc('month', month::timestamp) + interval '1 month') AT TIME ZONE 'UTC';
  part text := 'sensor_readings_p' || to_char(date_trunc('month', month::timestamp), 'YYYY_MM');
BEGIN
  IF to_regclass(part) IS NOT NULL THEN
    RETURN part;
  END IF;
  PERFORM pg_advisory_xact_lock(hashtext(current_schema() || '.' || part));
  IF to_regclass(part) IS NOT NULL THEN
    RETURN part;
  END IF;
  EXECUTE format('CREATE TABLE %I (LIKE sensor_readings INCLUDING DEFAULTS INCLUDING CONSTRAINTS)', part);
  EXECUTE format('WITH moved AS (DELETE FROM sensor_readings_default WHERE ts >= %L AND ts < %L RETURNING *) '
                 'INSERT INTO %I SELECT * FROM moved', lo, hi, part);
  EXECUTE format('ALTER TABLE sensor_readings ATTACH PARTITION %I FOR VALUES FROM (%L) TO (%L)', part, lo, hi);
  RETURN part;
END
$$
"""


#: Width of a coverage bucket and the number of slices of it whose occupancy a bucket records (bits of a bigint).
BUCKET_SECONDS = 60
BUCKET_SLOTS = 64

#: The rows of `{source}` (stored readings) folded into one-minute buckets per sensor and batch: count, bad count,
#: manual, first and last reading, first and last good reading, and which slices of the minute hold a good
#: reading. The definition of a bucket: `app.sensors.services.bucket_rows` folds readings in hand the same way
#: (tests compare the two), and the migration that introduced buckets filled them with it.
BUCKET_ROWS_SQL = """
WITH binned AS (
  SELECT r.sensor_id, coalesce(r.batch_id, 0) AS batch_key, r.ts,
         date_bin(interval '{seconds} seconds', r.ts, TIMESTAMPTZ '2000-01-01 00:00:00+00') AS bucket_start,
         r.quality < 2 AND r.value IS NOT NULL AS good, coalesce(i.source LIKE 'member:%', false) AS manual
  FROM {source} r
  LEFT JOIN sensor_ingests i ON i.id = r.ingest_id
)
SELECT sensor_id, batch_key, bucket_start, {seconds}::float8, count(*), count(*) FILTER (WHERE NOT good),
       bool_or(manual), min(ts), max(ts), min(ts) FILTER (WHERE good), max(ts) FILTER (WHERE good),
       coalesce(bit_or(1::bigint << least({slots} - 1, floor((date_part('epoch', ts) - date_part('epoch', bucket_start))
                                                          * {slots} / {seconds}))::int) FILTER (WHERE good), 0)
FROM binned GROUP BY sensor_id, batch_key, bucket_start
""".replace("{seconds}", str(BUCKET_SECONDS)).replace("{slots}", str(BUCKET_SLOTS))

#: The columns of a bucket row, in the order `sensor_reading_buckets_add` takes them.
BUCKET_COLUMNS = ("sensor_id", "batch_key", "bucket_start", "n", "bad", "manual", "first_ts", "last_ts",
                  "first_good", "last_good", "slots")

#: Add readings just stored to their buckets: rows already folded per sensor, batch and minute by the loader that
#: stored the readings (`app.sensors.services.add_buckets`, from the readings in hand), merged into the buckets
#: kept. Readings are stored once (the primary key) and never changed, so counts add up and the rest merges
#: whatever the order of arrival. The loader, not a trigger, because a transition-table trigger on the
#: partitioned table made every COPY insert row by row (about a fifth of a payload's load time).
#: SECURITY DEFINER: the tenant role only reads buckets; it adds to them through this function, which refuses a
#: row that cannot be a bucket of readings.
BUCKET_ADD_FUNCTION_SQL = """
CREATE FUNCTION sensor_reading_buckets_add(rows jsonb) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path FROM CURRENT AS $$
DECLARE
  bad_row jsonb;
BEGIN
  SELECT to_jsonb(r) INTO bad_row
  FROM jsonb_to_recordset(rows) AS r(sensor_id bigint, batch_key bigint, bucket_start timestamptz, n bigint,
                                     bad bigint, manual boolean, first_ts timestamptz, last_ts timestamptz,
                                     first_good timestamptz, last_good timestamptz, slots bigint)
  WHERE (sensor_id IS NOT NULL AND batch_key >= 0 AND manual IS NOT NULL AND slots IS NOT NULL AND n > 0
         AND bad BETWEEN 0 AND n
         AND bucket_start = date_bin(interval '{seconds} seconds', bucket_start, TIMESTAMPTZ '2000-01-01 00:00:00+00')
         AND bucket_start <= first_ts AND first_ts <= last_ts AND last_ts < bucket_start + interval '{seconds} seconds'
         AND (first_good IS NULL) = (bad = n) AND (first_good IS NULL) = (slots = 0)
         AND (first_good IS NULL OR first_ts <= first_good AND first_good <= last_good AND last_good <= last_ts)
        ) IS NOT TRUE
  LIMIT 1;
  IF bad_row IS NOT NULL THEN
    RAISE EXCEPTION 'not a coverage bucket of readings: %', bad_row USING ERRCODE = 'check_violation';
  END IF;
  INSERT INTO sensor_reading_buckets AS b (sensor_id, batch_key, bucket_start, bucket_s, n, bad, manual,
                                           first_ts, last_ts, first_good, last_good, slots)
  SELECT sensor_id, batch_key, bucket_start, {seconds}, n, bad, manual, first_ts, last_ts, first_good, last_good,
         slots
  FROM jsonb_to_recordset(rows) AS r(sensor_id bigint, batch_key bigint, bucket_start timestamptz, n bigint,
                                     bad bigint, manual boolean, first_ts timestamptz, last_ts timestamptz,
                                     first_good timestamptz, last_good timestamptz, slots bigint)
  ON CONFLICT (sensor_id, batch_key, bucket_start, bucket_s) DO UPDATE SET
    n = b.n + excluded.n, bad = b.bad + excluded.bad, manual = b.manual OR excluded.manual,
    first_ts = least(b.first_ts, excluded.first_ts), last_ts = greatest(b.last_ts, excluded.last_ts),
    first_good = least(b.first_good, excluded.first_good), last_good = greatest(b.last_good, excluded.last_good),
    slots = b.slots | excluded.slots;
END
$$
""".replace("{seconds}", str(BUCKET_SECONDS))

INSTALL_SQL = [DEFAULT_PARTITION_SQL, ENSURE_PARTITION_SQL, BUCKET_ADD_FUNCTION_SQL]

for _statement in INSTALL_SQL:
    event.listen(SensorReading.__table__, "after_create", DDL(_statement.replace("%", "%%")))

#: Payloads arrive compressed (zstd, by the web worker, see `payload_encoding`), so the server stores them out of
#: line as they are instead of compressing them again: pglz, the default, spent 20-30 ms of database CPU per
#: 1.7 MB body, on the path of every `202 Accepted`. (Bodies stored before, without the application's
#: compression, were compressed by the server with lz4 where it has it: that setting is left as it was.)
PAYLOAD_COMPRESSION_SQL = """
DO $$
BEGIN
  IF EXISTS (SELECT 1 FROM pg_settings WHERE name = 'default_toast_compression' AND 'lz4' = ANY(enumvals)) THEN
    ALTER TABLE sensor_ingests ALTER COLUMN payload SET COMPRESSION lz4;
  END IF;
END
$$
"""
PAYLOAD_STORAGE_SQL = "ALTER TABLE sensor_ingests ALTER COLUMN payload SET STORAGE EXTERNAL"
for _statement in (PAYLOAD_COMPRESSION_SQL, PAYLOAD_STORAGE_SQL):
    event.listen(SensorIngest.__table__, "after_create", DDL(_statement))


for _model in (SensorIngest, SensorEpisode, PcaModel):
    protect_gmp_table(_model.__table__)
register_record_type("sensor_ingest", label="Sensor ingest", table="sensor_ingests")
register_record_type("sensor_episode", label="Sensor exception episode", table="sensor_episodes")
register_record_type("sensor_pca_model", label="PCA monitoring model", table="sensor_pca_models")
# A sensor's in-control model lives in its analysis state (working data); its history is the audit trail's.
register_record_type("sensor_baseline", label="Sensor in-control baseline")
