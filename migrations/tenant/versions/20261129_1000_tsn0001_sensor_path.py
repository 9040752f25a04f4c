"""Sensor path: ingest payloads, time-partitioned readings, analysis state, exception episodes, PCA models.

Revision ID: tsn0001
Revises: trc03
Create Date: 2026-11-29 10:00

The SQL is copied from app/sensors/models.py on purpose: a migration is history and must not change when the
model code does.
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "tsn0001"
down_revision = "trc03"
branch_labels = None
depends_on = None

DEFAULT_PARTITION_SQL = "CREATE TABLE sensor_readings_default PARTITION OF sensor_readings DEFAULT"

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


def upgrade() -> None:
    op.create_table(
        "sensor_ingests",
        sa.Column("id", sa.BigInteger(), sa.Identity(), nullable=False),
        sa.Column("source", sa.String(120), nullable=False),
        sa.Column("message_id", sa.String(200), nullable=True),
        sa.Column("content_type", sa.String(10), nullable=False),
        sa.Column("payload", sa.LargeBinary(), nullable=False),
        sa.Column("size_bytes", sa.BigInteger(), nullable=False),
        sa.Column("status", sa.String(10), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.Column("processed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("readings_total", sa.BigInteger(), nullable=True),
        sa.Column("readings_stored", sa.BigInteger(), nullable=True),
        sa.Column("readings_duplicate", sa.BigInteger(), nullable=True),
        sa.Column("readings_rejected", sa.BigInteger(), nullable=True),
        sa.Column("errors", postgresql.JSONB(), nullable=True),
        sa.Column("error_counts", postgresql.JSONB(), nullable=True),
        sa.Column("failure", sa.Text(), nullable=True),
        sa.CheckConstraint("status IN ('queued', 'processed', 'failed')", name=op.f("ck_sensor_ingests_status")),
        sa.PrimaryKeyConstraint("id", name="pk_sensor_ingests"),
    )
    op.create_index("uq_sensor_ingests_source_message_id", "sensor_ingests", ["source", "message_id"],
                    unique=True, postgresql_where=sa.text("message_id IS NOT NULL"))
    op.create_index("ix_sensor_ingests_received_at", "sensor_ingests", ["received_at"])

    op.create_table(
        "sensor_readings",
        sa.Column("sensor_id", sa.BigInteger(), nullable=False),
        sa.Column("ts", sa.DateTime(timezone=True), nullable=False),
        sa.Column("value", sa.Double(), nullable=True),
        sa.Column("quality", sa.SmallInteger(), nullable=False),
        sa.Column("ingest_id", sa.BigInteger(), nullable=False),
        sa.Column("batch_id", sa.BigInteger(), nullable=True),
        sa.Column("step_id", sa.BigInteger(), nullable=True),
        sa.PrimaryKeyConstraint("sensor_id", "ts", name="pk_sensor_readings"),
        postgresql_partition_by="RANGE (ts)",
    )
    op.create_index("ix_sensor_readings_ts_brin", "sensor_readings", ["ts"], postgresql_using="brin")
    op.execute(DEFAULT_PARTITION_SQL)
    op.execute(ENSURE_PARTITION_SQL)

    op.create_table(
        "sensor_analysis_state",
        sa.Column("sensor_id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("cursor_ts", sa.DateTime(timezone=True), nullable=True),
        sa.Column("n_seen", sa.BigInteger(), nullable=False),
        sa.Column("model", postgresql.JSONB(), nullable=True),
        sa.Column("chart_state", postgresql.JSONB(), nullable=True),
        sa.Column("open_episodes", postgresql.JSONB(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.PrimaryKeyConstraint("sensor_id", name="pk_sensor_analysis_state"),
    )

    op.create_table(
        "sensor_episodes",
        sa.Column("id", sa.BigInteger(), sa.Identity(), nullable=False),
        sa.Column("sensor_id", sa.BigInteger(), nullable=True),
        sa.Column("equipment_id", sa.BigInteger(), nullable=True),
        sa.Column("kind", sa.String(20), nullable=False),
        sa.Column("rule", sa.String(40), nullable=False),
        sa.Column("spec", postgresql.JSONB(), nullable=False),
        sa.Column("severity", sa.String(10), nullable=False),
        sa.Column("start_ts", sa.DateTime(timezone=True), nullable=False),
        sa.Column("end_ts", sa.DateTime(timezone=True), nullable=False),
        sa.Column("peak_ts", sa.DateTime(timezone=True), nullable=False),
        sa.Column("peak_value", sa.Double(), nullable=True),
        sa.Column("peak_deviation", sa.Double(), nullable=False),
        sa.Column("n_alarms", sa.BigInteger(), nullable=False),
        sa.Column("start_index", sa.BigInteger(), nullable=False),
        sa.Column("end_index", sa.BigInteger(), nullable=False),
        sa.Column("peak_index", sa.BigInteger(), nullable=False),
        sa.Column("is_open", sa.Boolean(), nullable=False),
        sa.Column("batch_id", sa.BigInteger(), nullable=True),
        sa.Column("step_id", sa.BigInteger(), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.CheckConstraint("kind IN ('process', 'health', 'multivariate')", name=op.f("ck_sensor_episodes_kind")),
        sa.PrimaryKeyConstraint("id", name="pk_sensor_episodes"),
    )
    op.create_index("ix_sensor_episodes_sensor_id_start_ts", "sensor_episodes", ["sensor_id", "start_ts"])
    op.create_index("ix_sensor_episodes_batch_id", "sensor_episodes", ["batch_id"])
    op.create_index("ix_sensor_episodes_open", "sensor_episodes", ["sensor_id"], postgresql_where=sa.text("is_open"))

    op.create_table(
        "sensor_pca_models",
        sa.Column("id", sa.BigInteger(), sa.Identity(), nullable=False),
        sa.Column("equipment_id", sa.BigInteger(), nullable=False),
        sa.Column("phase", sa.String(100), nullable=False),
        sa.Column("sensor_ids", postgresql.JSONB(), nullable=False),
        sa.Column("bucket_s", sa.Integer(), nullable=False),
        sa.Column("document", postgresql.JSONB(), nullable=False),
        sa.Column("model_version", sa.String(100), nullable=False),
        sa.Column("trained_from", sa.DateTime(timezone=True), nullable=False),
        sa.Column("trained_to", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_sensor_pca_models"),
    )
    op.create_index("ix_sensor_pca_models_equipment_id_phase", "sensor_pca_models", ["equipment_id", "phase"])

    op.create_table(
        "sensor_pca_state",
        sa.Column("model_id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("cursor_ts", sa.DateTime(timezone=True), nullable=True),
        sa.Column("n_seen", sa.BigInteger(), nullable=False),
        sa.Column("open_episodes", postgresql.JSONB(), nullable=False),
        sa.PrimaryKeyConstraint("model_id", name="pk_sensor_pca_state"),
    )


def downgrade() -> None:
    op.drop_table("sensor_pca_state")
    op.drop_table("sensor_pca_models")
    op.drop_table("sensor_episodes")
    op.drop_table("sensor_analysis_state")
    op.execute("DROP FUNCTION sensor_readings_ensure_partition(date)")
    op.execute("DROP TABLE sensor_readings CASCADE")  # with every partition
    op.drop_table("sensor_ingests")
