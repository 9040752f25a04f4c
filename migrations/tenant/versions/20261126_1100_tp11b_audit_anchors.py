"""Audit: RFC 3161 anchors of the chain head, self-test records, parallel-safe canonical text for fast verify.

Revision ID: tp11b
Revises: tp11a
Create Date: 2026-11-26 11:00
"""

import sqlalchemy as sa
from alembic import op

revision = "tp11b"
down_revision = "tp11a"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Lets `audit verify` hash the trail in parallel workers; the function's result is unchanged.
    op.execute("ALTER FUNCTION audit_canonical(audit_events) PARALLEL SAFE")
    op.create_table(
        "audit_anchors",
        sa.Column("id", sa.BigInteger(), sa.Identity(), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("head_hash", sa.String(64), nullable=False),
        sa.Column("reason", sa.String(40), nullable=False),
        sa.Column("record_type", sa.String(60), nullable=True),
        sa.Column("record_id", sa.String(100), nullable=True),
        sa.Column("tsa_url", sa.String(500), nullable=False),
        sa.Column("token", sa.LargeBinary(), nullable=False),
        sa.Column("gen_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("tsa_serial", sa.String(64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_audit_anchors"),
    )
    op.execute("CREATE TRIGGER audit_anchors_no_update BEFORE UPDATE OR DELETE ON audit_anchors FOR EACH ROW "
               "EXECUTE FUNCTION gmp_refuse_change()")
    op.execute("CREATE TRIGGER audit_anchors_no_truncate BEFORE TRUNCATE ON audit_anchors FOR EACH STATEMENT "
               "EXECUTE FUNCTION gmp_refuse_change()")
    op.create_table(
        "audit_selftests",
        sa.Column("id", sa.BigInteger(), sa.Identity(), nullable=False),
        sa.Column("nonce", sa.String(64), nullable=False),
        sa.Column("performed_by", sa.String(300), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_audit_selftests"),
    )
    op.execute("CREATE TRIGGER audit_selftests_no_delete BEFORE DELETE ON audit_selftests FOR EACH ROW "
               "EXECUTE FUNCTION gmp_refuse_change()")
    op.execute("CREATE TRIGGER audit_selftests_no_truncate BEFORE TRUNCATE ON audit_selftests FOR EACH STATEMENT "
               "EXECUTE FUNCTION gmp_refuse_change()")


def downgrade() -> None:
    op.drop_table("audit_selftests")
    op.drop_table("audit_anchors")
    op.execute("ALTER FUNCTION audit_canonical(audit_events) PARALLEL UNSAFE")
