"""Sensor ingests say how many of their stored readings were beyond the plan's monthly allowance.

Revision ID: ingest1
Revises: tlead1
Create Date: 2026-12-01 10:00
"""

import sqlalchemy as sa
from alembic import op

revision = "ingest1"
down_revision = "tlead1"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("sensor_ingests", sa.Column("readings_over_allowance", sa.BigInteger(), nullable=True))


def downgrade() -> None:
    op.drop_column("sensor_ingests", "readings_over_allowance")
