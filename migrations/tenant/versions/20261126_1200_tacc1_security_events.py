"""Per-tenant security event log, append-only by privileges and by trigger.

Revision ID: tacc1
Revises: tp11b
Create Date: 2026-11-26 09:00
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "tacc1"
down_revision = "tp11b"
branch_labels = None
depends_on = None

# Frozen copies of the DDL in app.accounts.models (history must not change when the model does; the
# built-equals-migrated test catches any drift).
APPEND_ONLY_FUNCTION = """\
CREATE FUNCTION security_events_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  RAISE EXCEPTION USING MESSAGE = 'security_events is append-only: ' || TG_OP || ' refused',
    ERRCODE = 'insufficient_privilege';
END;
$$"""
APPEND_ONLY_TRIGGER = (
    "CREATE TRIGGER security_events_append_only BEFORE UPDATE OR DELETE ON security_events "
    "FOR EACH ROW EXECUTE FUNCTION security_events_refuse_change()"
)


def upgrade() -> None:
    op.create_table(
        "security_events",
        sa.Column("id", sa.BigInteger(), sa.Identity(), nullable=False),
        sa.Column("occurred_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("kind", sa.String(60), nullable=False),
        sa.Column("user_id", sa.BigInteger(), nullable=True),
        sa.Column("membership_id", sa.BigInteger(), nullable=True),
        sa.Column("user_label", sa.String(460), nullable=False),
        sa.Column("actor_user_id", sa.BigInteger(), nullable=True),
        sa.Column("actor_label", sa.String(460), nullable=False),
        sa.Column("source", sa.String(40), nullable=False),
        sa.Column("ip", sa.String(45), nullable=True),
        sa.Column("user_agent", sa.String(300), nullable=True),
        sa.Column("detail", postgresql.JSONB(), nullable=False),
        sa.Column("alert", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_security_events"),
    )
    op.create_index("ix_security_events_kind_id", "security_events", ["kind", "id"])
    op.create_index("ix_security_events_user_id_id", "security_events", ["user_id", "id"])
    op.create_index("ix_security_events_open_alerts", "security_events", ["id"], postgresql_where=sa.text("alert"))
    op.execute(APPEND_ONLY_FUNCTION)
    op.execute(APPEND_ONLY_TRIGGER)


def downgrade() -> None:
    op.drop_table("security_events")
    op.execute("DROP FUNCTION security_events_refuse_change()")
