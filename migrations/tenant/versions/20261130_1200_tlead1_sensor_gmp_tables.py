"""Sensor ingests, exception episodes and PCA models are GMP records: refuse DELETE and TRUNCATE.

Revision ID: tlead1
Revises: trv01
Create Date: 2026-11-30 12:00
"""

from alembic import op

revision = "tlead1"
down_revision = "trv01"
branch_labels = None
depends_on = None

TABLES = ("sensor_ingests", "sensor_episodes", "sensor_pca_models")


def upgrade() -> None:
    for table in TABLES:
        op.execute(f"CREATE TRIGGER {table}_no_delete BEFORE DELETE ON {table} FOR EACH ROW "
                   "EXECUTE FUNCTION gmp_refuse_change()")
        op.execute(f"CREATE TRIGGER {table}_no_truncate BEFORE TRUNCATE ON {table} FOR EACH STATEMENT "
                   "EXECUTE FUNCTION gmp_refuse_change()")


def downgrade() -> None:
    for table in TABLES:
        op.execute(f"DROP TRIGGER {table}_no_truncate ON {table}")
        op.execute(f"DROP TRIGGER {table}_no_delete ON {table}")
