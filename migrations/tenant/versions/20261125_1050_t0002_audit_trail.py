"""Audit trail: append-only, hash-chained events per tenant.

Revision ID: t0002
Revises: t0001
Create Date: 2026-11-25 10:50

The SQL is copied from app/audit/models.py on purpose: a migration is history and must not change when the
model code does.
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "t0002"
down_revision = "t0001"
branch_labels = None
depends_on = None

CANONICAL_SQL = """
CREATE FUNCTION audit_canonical(e audit_events) RETURNS text
LANGUAGE sql STABLE AS $$
  SELECT jsonb_build_object(
    'seq', e.seq,
    'occurred_at', to_char(e.occurred_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
    'actor_member_id', e.actor_member_id,
    'actor_label', e.actor_label,
    'action', e.action,
    'record_type', e.record_type,
    'record_id', e.record_id,
    'old', e.old_values,
    'new', e.new_values,
    'reason', e.reason,
    'request_id', e.request_id,
    'client_addr', e.client_addr
  )::text
$$
"""

CHAIN_SQL = """
CREATE FUNCTION audit_chain() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
  head text := current_setting('batchline.audit_head', true);
  prev_seq bigint;
  prev_hash text;
BEGIN
  IF head IS NULL OR head = '' THEN
    SELECT h.seq, h.hash INTO prev_seq, prev_hash FROM audit_head h WHERE h.id = 1 FOR UPDATE;
  ELSE
    prev_seq := split_part(head, ':', 1)::bigint;
    prev_hash := split_part(head, ':', 2);
  END IF;
  NEW.seq := prev_seq + 1;
  NEW.occurred_at := now();
  NEW.prev_hash := prev_hash;
  NEW.hash := encode(sha256(convert_to(prev_hash || audit_canonical(NEW), 'UTF8')), 'hex');
  PERFORM set_config('batchline.audit_head', NEW.seq || ':' || NEW.hash, true);
  RETURN NEW;
END
$$
"""

SAVE_HEAD_SQL = """
CREATE FUNCTION audit_save_head() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
  head text := current_setting('batchline.audit_head', true);
BEGIN
  IF head IS NOT NULL AND head <> '' THEN
    UPDATE audit_head SET seq = split_part(head, ':', 1)::bigint, hash = split_part(head, ':', 2) WHERE id = 1;
  END IF;
  RETURN NULL;
END
$$
"""

REFUSE_SQL = """
CREATE FUNCTION audit_refuse_change() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
  RAISE EXCEPTION 'audit trail is append-only: % refused on %', TG_OP, TG_TABLE_NAME
    USING ERRCODE = 'insufficient_privilege';
END
$$
"""

TRIGGERS_SQL = [
    "CREATE TRIGGER audit_events_chain BEFORE INSERT ON audit_events FOR EACH ROW EXECUTE FUNCTION audit_chain()",
    "CREATE TRIGGER audit_events_save_head AFTER INSERT ON audit_events FOR EACH STATEMENT "
    "EXECUTE FUNCTION audit_save_head()",
    "CREATE TRIGGER audit_events_no_update BEFORE UPDATE OR DELETE ON audit_events FOR EACH ROW "
    "EXECUTE FUNCTION audit_refuse_change()",
    "CREATE TRIGGER audit_events_no_truncate BEFORE TRUNCATE ON audit_events FOR EACH STATEMENT "
    "EXECUTE FUNCTION audit_refuse_change()",
]


def upgrade() -> None:
    op.create_table(
        "audit_head",
        sa.Column("id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("hash", sa.String(64), nullable=False),
        sa.CheckConstraint("id = 1", name=op.f("ck_audit_head_single_row")),
        sa.PrimaryKeyConstraint("id", name="pk_audit_head"),
    )
    op.execute("INSERT INTO audit_head (id, seq, hash) VALUES (1, 0, '0000000000000000000000000000000000000000000000000000000000000000')")
    op.create_table(
        "audit_events",
        sa.Column("seq", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("occurred_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("actor_member_id", sa.BigInteger(), nullable=True),
        sa.Column("actor_label", sa.String(300), nullable=False),
        sa.Column("action", sa.String(40), nullable=False),
        sa.Column("record_type", sa.String(60), nullable=False),
        sa.Column("record_id", sa.String(100), nullable=False),
        sa.Column("old_values", postgresql.JSONB(), nullable=True),
        sa.Column("new_values", postgresql.JSONB(), nullable=True),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("request_id", sa.String(64), nullable=True),
        sa.Column("client_addr", sa.String(64), nullable=True),
        sa.Column("prev_hash", sa.String(64), server_default=sa.text("''"), nullable=False),
        sa.Column("hash", sa.String(64), server_default=sa.text("''"), nullable=False),
        sa.PrimaryKeyConstraint("seq", name="pk_audit_events"),
    )
    for statement in [CANONICAL_SQL, CHAIN_SQL, SAVE_HEAD_SQL, REFUSE_SQL, *TRIGGERS_SQL]:
        op.execute(statement)


def downgrade() -> None:
    op.execute("DROP TABLE audit_events CASCADE")  # also drops audit_canonical(audit_events)
    op.drop_table("audit_head")
    for name in ("audit_refuse_change()", "audit_save_head()", "audit_chain()"):
        op.execute(f"DROP FUNCTION {name}")
