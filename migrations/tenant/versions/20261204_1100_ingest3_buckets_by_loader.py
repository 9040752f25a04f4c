"""Coverage buckets are added by the loader that stores the readings, not by a trigger on `sensor_readings`.

A statement trigger with a transition table on a partitioned table makes every COPY insert row by row (about a
fifth of a payload's load time). The ingest job folds the readings it stores into bucket rows itself and adds
them through `sensor_reading_buckets_add(rows jsonb)` (SECURITY DEFINER: the tenant role still only reads the
buckets; the function refuses a row that cannot be a bucket of readings). The buckets kept so far are complete
and stay as they are.

Revision ID: ingest3
Revises: ingest2
Create Date: 2026-12-04 11:00

The SQL is copied from app/sensors/models.py on purpose: a migration is history and must not change when the
model does.
"""

from alembic import op

revision = "ingest3"
down_revision = "ingest2"
branch_labels = None
depends_on = None

ADD_FUNCTION_SQL = """
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
         AND bucket_start = date_bin(interval '60 seconds', bucket_start, TIMESTAMPTZ '2000-01-01 00:00:00+00')
         AND bucket_start <= first_ts AND first_ts <= last_ts AND last_ts < bucket_start + interval '60 seconds'
         AND (first_good IS NULL) = (bad = n) AND (first_good IS NULL) = (slots = 0)
         AND (first_good IS NULL OR first_ts <= first_good AND first_good <= last_good AND last_good <= last_ts)
        ) IS NOT TRUE
  LIMIT 1;
  IF bad_row IS NOT NULL THEN
    RAISE EXCEPTION 'not a coverage bucket of readings: %', bad_row USING ERRCODE = 'check_violation';
  END IF;
  INSERT INTO sensor_reading_buckets AS b (sensor_id, batch_key, bucket_start, bucket_s, n, bad, manual,
                                           first_ts, last_ts, first_good, last_good, slots)
  SELECT sensor_id, batch_key, bucket_start, 60, n, bad, manual, first_ts, last_ts, first_good, last_good,
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
"""

#: rbe2's trigger, for the downgrade.
TRIGGER_SQL = [
    """CREATE FUNCTION sensor_readings_to_buckets() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER
SET search_path FROM CURRENT AS $$ BEGIN
INSERT INTO sensor_reading_buckets AS b (sensor_id, batch_key, bucket_start, bucket_s, n, bad, manual,
first_ts, last_ts, first_good, last_good, slots)
WITH binned AS (
  SELECT r.sensor_id, coalesce(r.batch_id, 0) AS batch_key, r.ts,
         date_bin(interval '60 seconds', r.ts, TIMESTAMPTZ '2000-01-01 00:00:00+00') AS bucket_start,
         r.quality < 2 AND r.value IS NOT NULL AS good, coalesce(i.source LIKE 'member:%', false) AS manual
  FROM stored_readings r
  LEFT JOIN sensor_ingests i ON i.id = r.ingest_id
)
SELECT sensor_id, batch_key, bucket_start, 60::float8, count(*), count(*) FILTER (WHERE NOT good),
       bool_or(manual), min(ts), max(ts), min(ts) FILTER (WHERE good), max(ts) FILTER (WHERE good),
       coalesce(bit_or(1::bigint << least(64 - 1, floor((date_part('epoch', ts) - date_part('epoch', bucket_start))
                                                          * 64 / 60))::int) FILTER (WHERE good), 0)
FROM binned GROUP BY sensor_id, batch_key, bucket_start

ON CONFLICT (sensor_id, batch_key, bucket_start, bucket_s) DO UPDATE SET
  n = b.n + excluded.n, bad = b.bad + excluded.bad, manual = b.manual OR excluded.manual,
  first_ts = least(b.first_ts, excluded.first_ts), last_ts = greatest(b.last_ts, excluded.last_ts),
  first_good = least(b.first_good, excluded.first_good), last_good = greatest(b.last_good, excluded.last_good),
  slots = b.slots | excluded.slots;

RETURN NULL;
END $$""",
    "CREATE TRIGGER sensor_readings_buckets AFTER INSERT ON sensor_readings REFERENCING NEW TABLE AS "
    "stored_readings FOR EACH STATEMENT EXECUTE FUNCTION sensor_readings_to_buckets()",
]


def upgrade() -> None:
    op.execute("DROP TRIGGER sensor_readings_buckets ON sensor_readings")
    op.execute("DROP FUNCTION sensor_readings_to_buckets()")
    op.execute(ADD_FUNCTION_SQL)


def downgrade() -> None:
    op.execute("DROP FUNCTION sensor_reading_buckets_add(jsonb)")
    for statement in TRIGGER_SQL:
        op.execute(statement)
