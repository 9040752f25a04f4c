"""Sensor coverage buckets kept by a trigger on `sensor_readings`, filled from the readings already stored.

The review's sensor-coverage check reads these few rows per sensor instead of every reading of the batch.

Revision ID: rbe2
Revises: ingperf1
Create Date: 2026-12-02 11:00
"""

import sqlalchemy as sa
from alembic import op

# The trigger's SQL is the model's (one text for new schemas and migrated ones); a later change to it comes with
# a migration of its own that replaces the function.
from app.sensors.models import BUCKET_ADD_SQL, BUCKET_TRIGGER_SQL

revision = "rbe2"
down_revision = "ingperf1"
branch_labels = None
depends_on = None


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
