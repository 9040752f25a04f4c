"""SSO policy per tenant: `tenant_sso_providers.sso_required` (members with a linked identity e-sign through the
provider, never with a password).

Revision ID: psr1
Revises: pacc1
Create Date: 2026-11-27 10:00
"""

import sqlalchemy as sa
from alembic import op

revision = "psr1"
down_revision = "pacc1"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # A constant server default fills existing rows without a rewrite; code that predates the column inserts false.
    op.add_column("tenant_sso_providers",
                  sa.Column("sso_required", sa.Boolean(), server_default=sa.text("false"), nullable=False),
                  schema="public")


def downgrade() -> None:
    op.drop_column("tenant_sso_providers", "sso_required", schema="public")
