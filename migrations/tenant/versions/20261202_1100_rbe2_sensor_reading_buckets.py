"""Sensor coverage buckets kept by a trigger on `sensor_readings`, filled from the readings already stored.

The review's sensor-coverage check reads these few rows per sensor instead of every reading of the batch.

Revision ID: rbe2
Revises: ingperf1
Create Date: 2026-12-02 11:00
"""

import sqlalchemy as sa
from alembic import op

revision = "rbe2"
down_revision = "ingperf1"
branch_labels = None
depends_on = None

# The SQL is copied from app/sensors/models.py on purpose: a migration is history and must not change when the
# model does.
BUCKET_ADD_SQL = (
    'INSERT INTO sensor_reading_buckets AS b (sensor_id, batch_key, bucket_start, bucket_s, n, bad, manual, '
    'first_ts, last_ts, first_good, last_good, slots) \n'
    'WITH binned AS (\n'
    '  SELECT r.sensor_id, coalesce(r.batch_id, 0) AS batch_key, r.ts,\n'
    "         date_bin(interval '60 seconds', r.ts, TIMESTAMPTZ '2000-01-01 00:00:00+00') AS bucket_start,\n"
    "         r.quality < 2 AND r.value IS NOT NULL AS good, coalesce(i.source LIKE 'member:%', false) AS manual\n"
    '  FROM {source} r\n'
    '  LEFT JOIN sensor_ingests i ON i.id = r.ingest_id\n'
    ')\n'
    'SELECT sensor_id, batch_key, bucket_start, 60::float8, count(*), count(*) FILTER (WHERE NOT good),\n'
    '       bool_or(manual), min(ts), max(ts), min(ts) FILTER (WHERE good), max(ts) FILTER (WHERE good),\n'
    "       coalesce(bit_or(1::bigint << least(64 - 1, floor((date_part('epoch', ts) - date_part('epoch', "
    'bucket_start))\n'
    '                                                          * 64 / 60))::int) FILTER (WHERE good), 0)\n'
    'FROM binned GROUP BY sensor_id, batch_key, bucket_start\n'
    '\n'
    'ON CONFLICT (sensor_id, batch_key, bucket_start, bucket_s) DO UPDATE SET\n'
    '  n = b.n + excluded.n, bad = b.bad + excluded.bad, manual = b.manual OR excluded.manual,\n'
    '  first_ts = least(b.first_ts, excluded.first_ts), last_ts = greatest(b.last_ts, excluded.last_ts),\n'
    '  first_good = least(b.first_good, excluded.first_good), last_good = greatest(b.last_good, '
    'excluded.last_good),\n'
    '  slots = b.slots | excluded.slots;\n'
)

BUCKET_TRIGGER_SQL = [
    ("CREATE FUNCTION sensor_readings_to_buckets() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER "
     "SET search_path FROM CURRENT AS $$ BEGIN\n" + BUCKET_ADD_SQL.format(source="stored_readings")
     + "\nRETURN NULL;\nEND $$"),
    ("CREATE TRIGGER sensor_readings_buckets AFTER INSERT ON sensor_readings REFERENCING NEW TABLE AS "
     "stored_readings FOR EACH STATEMENT EXECUTE FUNCTION sensor_readings_to_buckets()"),
]


def upgrade() -> None:
    op.create_table(
        "sensor_reading_buckets",
        sa.Column("sensor_id", sa.BigInteger(), nullable=False),
        sa.Column("batch_key", sa.BigInteger(), nullable=False),
        sa.Column("bucket_start", sa.DateTime(timezone=True), nullable=False),
        sa.Column("bucket_s", sa.Double(), nullable=False),
        sa.Column("n", sa.BigInteger(), nullable=False),
        sa.Column("bad", sa.BigInteger(), nullable=False),
        sa.Column("manual", sa.Boolean(), nullable=False),
        sa.Column("first_ts", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_ts", sa.DateTime(timezone=True), nullable=False),
        sa.Column("first_good", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_good", sa.DateTime(timezone=True), nullable=True),
        sa.Column("slots", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("sensor_id", "batch_key", "bucket_start", "bucket_s",
                                name="pk_sensor_reading_buckets"),
    )
    for statement in BUCKET_TRIGGER_SQL:
        op.execute(statement)
    op.execute(BUCKET_ADD_SQL.format(source="sensor_readings"))  # the readings stored so far


def downgrade() -> None:
    op.execute("DROP TRIGGER sensor_readings_buckets ON sensor_readings")
    op.execute("DROP FUNCTION sensor_readings_to_buckets()")
    op.drop_table("sensor_reading_buckets")
