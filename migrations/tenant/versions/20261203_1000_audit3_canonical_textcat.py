"""Audit: the canonical text of an event joined with `||` on text instead of concat().

concat() looks up every argument's output function on each call; `||` on text values does not. The text, and so
every hash, is unchanged: existing chains verify as before.

Revision ID: audit3
Revises: rbe2
Create Date: 2026-12-03 10:00

The SQL is copied from app/audit/models.py on purpose: a migration is history and must not change when the
model code does.
"""

from alembic import op

revision = "audit3"
down_revision = "rbe2"
branch_labels = None
depends_on = None

JSONB_CANONICAL = """jsonb_build_object(
    'seq', {row}.seq,
    'occurred_at', to_char({row}.occurred_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
    'actor_member_id', {row}.actor_member_id,
    'actor_label', {row}.actor_label,
    'action', {row}.action,
    'record_type', {row}.record_type,
    'record_id', {row}.record_id,
    'old', {row}.old_values,
    'new', {row}.new_values,
    'reason', {row}.reason,
    'request_id', {row}.request_id,
    'client_addr', {row}.client_addr
  )::text"""

TEXT_FIELDS = ("({row}.actor_label || {row}.action || {row}.record_type || {row}.record_id "
               "|| coalesce({row}.reason, '') || coalesce({row}.request_id, '') || coalesce({row}.client_addr, ''))")
CANONICAL_TEXT = """CASE WHEN octet_length(to_json(""" + TEXT_FIELDS + """)::text)
           <> octet_length(""" + TEXT_FIELDS + """) + 2
  THEN """ + JSONB_CANONICAL + """
  ELSE '{{"new": ' || coalesce({row}.new_values::text, 'null')
    || ', "old": ' || coalesce({row}.old_values::text, 'null')
    || ', "seq": ' || {row}.seq::text
    || ', "action": "' || {row}.action
    || '", "reason": ' || coalesce('"' || {row}.reason || '"', 'null')
    || ', "record_id": "' || {row}.record_id
    || '", "request_id": ' || coalesce('"' || {row}.request_id || '"', 'null')
    || ', "actor_label": "' || {row}.actor_label
    || '", "client_addr": ' || coalesce('"' || {row}.client_addr || '"', 'null')
    || ', "occurred_at": "' || to_char({row}.occurred_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')
    || '", "record_type": "' || {row}.record_type
    || '", "actor_member_id": ' || coalesce({row}.actor_member_id::text, 'null') || '}}'
  END"""

#: audit2's form, for the downgrade.
CONCAT_TEXT_FIELDS = ("concat({row}.actor_label, {row}.action, {row}.record_type, {row}.record_id, {row}.reason, "
                      "{row}.request_id, {row}.client_addr)")
CONCAT_CANONICAL_TEXT = """CASE WHEN octet_length(to_json(""" + CONCAT_TEXT_FIELDS + """)::text)
           <> octet_length(""" + CONCAT_TEXT_FIELDS + """) + 2
  THEN """ + JSONB_CANONICAL + """
  ELSE concat('{{"new": ', coalesce({row}.new_values::text, 'null'),
              ', "old": ', coalesce({row}.old_values::text, 'null'),
              ', "seq": ', {row}.seq,
              ', "action": "', {row}.action,
              '", "reason": ', coalesce('"' || {row}.reason || '"', 'null'),
              ', "record_id": "', {row}.record_id,
              '", "request_id": ', coalesce('"' || {row}.request_id || '"', 'null'),
              ', "actor_label": "', {row}.actor_label,
              '", "client_addr": ', coalesce('"' || {row}.client_addr || '"', 'null'),
              ', "occurred_at": "', to_char({row}.occurred_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
              '", "record_type": "', {row}.record_type,
              '", "actor_member_id": ', coalesce({row}.actor_member_id::text, 'null'), '}}')
  END"""

CANONICAL_SQL = """
CREATE OR REPLACE FUNCTION audit_canonical(e audit_events) RETURNS text
LANGUAGE sql STABLE PARALLEL SAFE AS $$
  SELECT {text}
$$
"""

CHAIN_SQL = """
CREATE OR REPLACE FUNCTION audit_chain() RETURNS trigger
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
  -- audit_canonical(NEW), written out: plpgsql evaluates it as a simple expression instead of calling a SQL
  -- function per row (about 20% of the trigger's cost). verify_chain checks the two stay identical.
  NEW.hash := encode(sha256(convert_to(prev_hash || {text}, 'UTF8')), 'hex');
  head := set_config('batchline.audit_head', NEW.seq || ':' || NEW.hash, true);
  RETURN NEW;
END
$$
"""


def upgrade() -> None:
    op.execute(CANONICAL_SQL.format(text=CANONICAL_TEXT.format(row="e")))
    op.execute(CHAIN_SQL.format(text=CANONICAL_TEXT.format(row="NEW")))


def downgrade() -> None:
    op.execute(CANONICAL_SQL.format(text=CONCAT_CANONICAL_TEXT.format(row="e")))
    op.execute(CHAIN_SQL.format(text=CONCAT_CANONICAL_TEXT.format(row="NEW")))
