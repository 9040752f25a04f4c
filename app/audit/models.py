"""Audit trail tables and the triggers that make them append-only and hash-chained."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import DDL, BigInteger, CheckConstraint, FetchedValue, Identity, LargeBinary, String, Text, event, text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from app.audit.registry import gmp_table_info, install_gmp_functions, protect_gmp_table, register_record_type
from app.core.db import TenantBase

GENESIS_HASH = "0" * 64

#: The canonical text of an event is PostgreSQL's own jsonb rendering of these fields, with the time in UTC
#: at microsecond precision: independent of the session's TimeZone and of any client library.
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

#: The same text, written out: jsonb prints an object's keys shortest first (then bytewise) with ", " and ": "
#: between them, and escapes strings as to_json does. When to_json of the text fields adds only the two quotes
#: (nothing to escape), concatenating the fields in that order yields jsonb's text byte for byte at under half
#: the cost of building the jsonb object, the largest part of what the chain adds to an insert; otherwise jsonb
#: renders it itself. The pieces are joined with `||` on text, not concat(): concat looks up each argument's
#: output function on every call, a tenth of the trigger's cost. tests/audit/test_chain.py holds the two forms
#: equal. `{row}` is `NEW` in the trigger, `e` in audit_canonical.
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

CANONICAL_SQL = """
CREATE FUNCTION audit_canonical(e audit_events) RETURNS text
LANGUAGE sql STABLE PARALLEL SAFE AS $$
  SELECT """ + CANONICAL_TEXT.format(row="e") + """
$$
"""

#: Assign seq / prev_hash / hash from the chain head. The head row is locked for the rest of the transaction
#: (concurrent writers in one tenant queue here; other tenants have their own head). Within a transaction the
#: head travels in a transaction-local setting, and one statement-level trigger writes it back, so a bulk
#: insert does not update the head row once per event.
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
  -- audit_canonical(NEW), written out: plpgsql evaluates it as a simple expression instead of calling a SQL
  -- function per row (about 20% of the trigger's cost). verify_chain checks the two stay identical.
  NEW.hash := encode(sha256(convert_to(prev_hash || """ + CANONICAL_TEXT.format(row="NEW") + """, 'UTF8')), 'hex');
  head := set_config('batchline.audit_head', NEW.seq || ':' || NEW.hash, true);
  RETURN NEW;
END
$$
"""  # noqa: S608 (constants, no input)

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

#: The columns a tenant role may name when it inserts an event: never seq, time or hashes, which only the chain
#: assigns (the trigger, or `audit_append` running as the schema's owner).
CONTENT_COLUMNS = ("actor_member_id", "actor_label", "action", "record_type", "record_id", "old_values",
                   "new_values", "reason", "request_id", "client_addr")
_RECORDSET = ("ROWS FROM (jsonb_to_recordset(rows) AS (actor_member_id bigint, actor_label varchar(300), "
              "action varchar(40), record_type varchar(60), record_id varchar(100), old_values jsonb, "
              "new_values jsonb, reason text, request_id varchar(64), client_addr varchar(64))) WITH ORDINALITY "
              "AS j(" + ", ".join(CONTENT_COLUMNS) + ", n)")
_NUMBERED = f"SELECT prev_seq + j.n AS seq, now() AS occurred_at, j.{', j.'.join(CONTENT_COLUMNS)} FROM {_RECORDSET}"  # noqa: S608

#: How the canonical text writes the time (once per batch in `audit_append`: every event of a transaction has its
#: start time, now()).
_UTC_TEXT = """to_char({row}.occurred_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')"""

_BATCH_CANONICAL = CANONICAL_TEXT.format(row="r").replace(_UTC_TEXT.format(row="r"), "at_text")

#: Append a batch of events (a JSON array of their content columns) to the chain in one statement and return
#: their sequence numbers. The same chain as the row trigger, with the same canonical text, but computed for the
#: whole batch at once: the canonical texts in one set-based query, the hashes in one loop, the rows in one
#: INSERT that arrives chained (the trigger's WHEN skips it). That leaves out the trigger call and the head's
#: round trip through a setting on every row, most of what chaining adds to a batch insert. SECURITY DEFINER:
#: only the schema's owner may write seq, time and hashes (the tenant role's INSERT covers CONTENT_COLUMNS); the
#: search_path is pinned to the schema it was made in, with pg_temp last.
APPEND_SQL = """
CREATE FUNCTION audit_append(rows jsonb) RETURNS SETOF bigint
LANGUAGE plpgsql SECURITY DEFINER SET search_path FROM CURRENT AS $$
DECLARE
  head text := current_setting('batchline.audit_head', true);
  prev_seq bigint;
  prev_hash text;
  canonicals text[];
  hashes text[];
  h text;
  at_text text := """ + _UTC_TEXT.format(row="NEW").replace("NEW.occurred_at", "now()") + """;
BEGIN
  IF head IS NULL OR head = '' THEN
    SELECT a.seq, a.hash INTO prev_seq, prev_hash FROM audit_head a WHERE a.id = 1 FOR UPDATE;
  ELSE
    prev_seq := split_part(head, ':', 1)::bigint;
    prev_hash := split_part(head, ':', 2);
  END IF;
  SELECT array_agg(""" + _BATCH_CANONICAL + """ ORDER BY r.seq)
    INTO canonicals FROM (""" + _NUMBERED + """) r;
  IF canonicals IS NULL THEN
    RETURN;
  END IF;
  hashes := array_fill(NULL::text, ARRAY[cardinality(canonicals)]);
  h := prev_hash;
  FOR i IN 1 .. cardinality(canonicals) LOOP
    h := encode(sha256(convert_to(h || canonicals[i], 'UTF8')), 'hex');
    hashes[i] := h;
  END LOOP;
  -- The head moves first: the statement trigger audit_save_head writes it back once the rows are in.
  PERFORM set_config('batchline.audit_head', (prev_seq + cardinality(hashes)) || ':' || h, true);
  RETURN QUERY INSERT INTO audit_events (seq, occurred_at, """ + ", ".join(CONTENT_COLUMNS) + """, prev_hash, hash)
    SELECT r.seq, r.occurred_at, """ + ", ".join(f"r.{c}" for c in CONTENT_COLUMNS) + """,
           coalesce(hashes[r.seq - prev_seq - 1], prev_hash), hashes[r.seq - prev_seq]
    FROM (""" + _NUMBERED + """) r ORDER BY r.seq
    RETURNING seq;
END
$$
"""  # noqa: S608 (constants, no input)

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
    "CREATE TRIGGER audit_events_chain BEFORE INSERT ON audit_events FOR EACH ROW WHEN (NEW.hash = '') "
    "EXECUTE FUNCTION audit_chain()",
    "CREATE TRIGGER audit_events_save_head AFTER INSERT ON audit_events FOR EACH STATEMENT "
    "EXECUTE FUNCTION audit_save_head()",
    "CREATE TRIGGER audit_events_no_update BEFORE UPDATE OR DELETE ON audit_events FOR EACH ROW "
    "EXECUTE FUNCTION audit_refuse_change()",
    "CREATE TRIGGER audit_events_no_truncate BEFORE TRUNCATE ON audit_events FOR EACH STATEMENT "
    "EXECUTE FUNCTION audit_refuse_change()",
]


class AuditHead(TenantBase):
    """The chain head: the last sequence number and hash (a cache; verification never trusts it)."""

    __tablename__ = "audit_head"
    __table_args__ = (CheckConstraint("id = 1", name="single_row"), {"info": {"gmp": False}})

    #: Always 1.
    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    #: Sequence number of the last event (0 before the first).
    seq: Mapped[int] = mapped_column(BigInteger)
    #: SHA-256 (hex) of the last event.
    hash: Mapped[str] = mapped_column(String(64))


class AuditEvent(TenantBase):
    """One audit event. Inserted only; seq, time and hashes are assigned by the database (the row trigger, or
    `audit_append` for a batch), never by the tenant role, which may name only CONTENT_COLUMNS."""

    __tablename__ = "audit_events"
    __table_args__ = {"info": {"privileges": "append_only", "insert_columns": CONTENT_COLUMNS, "gmp": False}}

    #: Gapless sequence number within the tenant (assigned by the trigger).
    seq: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False, server_default=FetchedValue())
    #: Database server time (UTC) of the transaction that recorded the event.
    occurred_at: Mapped[datetime] = mapped_column(server_default=text("now()"))
    #: Membership that acted (None for the system: jobs, sensors).
    actor_member_id: Mapped[int | None] = mapped_column(BigInteger)
    #: Who acted as a person reads it, frozen at the time (name and email, or `system:<job>`).
    actor_label: Mapped[str] = mapped_column(String(300))
    #: create / correct / status_change / delete_attempt / sign / ... .
    action: Mapped[str] = mapped_column(String(40))
    #: Kind of GMP record (e.g. `equipment`, `lot`, `batch_entry`).
    record_type: Mapped[str] = mapped_column(String(60))
    #: Id of the record (text: some records have composite or external ids).
    record_id: Mapped[str] = mapped_column(String(100))
    #: Values before the change (None for a create).
    old_values: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    #: Values after the change.
    new_values: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    #: Why (required for corrections and status changes).
    reason: Mapped[str | None] = mapped_column(Text)
    #: Request id of the web request or job that recorded it.
    request_id: Mapped[str | None] = mapped_column(String(64))
    #: Client address of the request.
    client_addr: Mapped[str | None] = mapped_column(String(64))
    #: Hash of the previous event (genesis: 64 zeros).
    prev_hash: Mapped[str] = mapped_column(String(64), server_default=text("''"))
    #: SHA-256 of prev_hash + canonical text of this event.
    hash: Mapped[str] = mapped_column(String(64), server_default=text("''"))


class AuditAnchor(TenantBase):
    """An RFC 3161 time-stamp of the chain head: proof from outside the database of what the trail held then."""

    __tablename__ = "audit_anchors"
    __table_args__ = {"info": {"privileges": "append_only", "gmp": False}}

    #: Never reused.
    id: Mapped[int] = mapped_column(Identity(), primary_key=True)
    #: Sequence number of the anchored event (the head at the time).
    seq: Mapped[int] = mapped_column(BigInteger)
    #: Its hash, as time-stamped.
    head_hash: Mapped[str] = mapped_column(String(64))
    #: periodic / batch_release / manual.
    reason: Mapped[str] = mapped_column(String(40))
    #: Record that asked for the anchor (e.g. the released batch), if any.
    record_type: Mapped[str | None] = mapped_column(String(60))
    #: Its id.
    record_id: Mapped[str | None] = mapped_column(String(100))
    #: The TSA that signed it.
    tsa_url: Mapped[str] = mapped_column(String(500))
    #: The DER time-stamp reply exactly as the TSA sent it.
    token: Mapped[bytes] = mapped_column(LargeBinary)
    #: Time the TSA asserts (genTime).
    gen_time: Mapped[datetime] = mapped_column()
    #: Serial number of the time-stamp at the TSA.
    tsa_serial: Mapped[str] = mapped_column(String(64))
    #: Database time the anchor was stored.
    created_at: Mapped[datetime] = mapped_column(server_default=text("now()"))


class AuditSelftest(TenantBase):
    """A known change made by `batchline audit selftest` to prove the trail records changes (PIC/S PI 041)."""

    __tablename__ = "audit_selftests"
    __table_args__ = {"info": gmp_table_info("audit_selftest", privileges="append_only")}

    #: Never reused.
    id: Mapped[int] = mapped_column(Identity(), primary_key=True)
    #: Random value written by the test and looked for in the trail.
    nonce: Mapped[str] = mapped_column(String(64))
    #: Who ran it.
    performed_by: Mapped[str] = mapped_column(String(300))
    #: Database time of the change.
    created_at: Mapped[datetime] = mapped_column(server_default=text("now()"))


#: Anchors use the metadata-wide refusal function: it exists before any table (audit_refuse_change comes later).
class AuditReview(TenantBase):
    """A reviewer's sign-off of a stretch of the trail (Annex 11 §9: audit trails are reviewed); signed via esign."""

    __tablename__ = "audit_reviews"
    __table_args__ = {"info": gmp_table_info("audit_review", privileges="append_only")}

    #: Never reused.
    id: Mapped[int] = mapped_column(Identity(), primary_key=True)
    #: The filters the reviewer applied (record, user, action, time range).
    filters: Mapped[dict[str, Any]] = mapped_column(JSONB)
    #: First and last sequence number reviewed (inclusive), and how many events matched.
    first_seq: Mapped[int] = mapped_column(BigInteger)
    last_seq: Mapped[int] = mapped_column(BigInteger)
    events: Mapped[int] = mapped_column(BigInteger)
    #: Hash of the event at last_seq: ties the review to the exact trail reviewed.
    head_hash: Mapped[str] = mapped_column(String(64))
    #: The reviewer's conclusion.
    conclusion: Mapped[str] = mapped_column(Text)
    #: Membership that reviewed.
    reviewer_member_id: Mapped[int | None] = mapped_column(BigInteger)
    #: Database time of the review.
    created_at: Mapped[datetime] = mapped_column(server_default=text("now()"))

    def signed_content(self) -> dict[str, Any]:
        """What the reviewer's signature attests to."""
        return {"filters": self.filters, "first_seq": self.first_seq, "last_seq": self.last_seq,
                "events": self.events, "head_hash": self.head_hash, "conclusion": self.conclusion}


ANCHOR_TRIGGERS_SQL = [
    "CREATE TRIGGER audit_anchors_no_update BEFORE UPDATE OR DELETE ON audit_anchors FOR EACH ROW "
    "EXECUTE FUNCTION gmp_refuse_change()",
    "CREATE TRIGGER audit_anchors_no_truncate BEFORE TRUNCATE ON audit_anchors FOR EACH STATEMENT "
    "EXECUTE FUNCTION gmp_refuse_change()",
]

INSTALL_SQL = [CANONICAL_SQL, CHAIN_SQL, SAVE_HEAD_SQL, APPEND_SQL, REFUSE_SQL, *TRIGGERS_SQL]
SEED_HEAD_SQL = f"INSERT INTO audit_head (id, seq, hash) VALUES (1, 0, '{GENESIS_HASH}')"  # noqa: S608 (a constant, no input)

install_gmp_functions(TenantBase.metadata)
# `create_all` builds new tenants at head: the same DDL as the migration, attached to the tables.
for _statement in INSTALL_SQL:
    event.listen(AuditEvent.__table__, "after_create", DDL(_statement.replace("%", "%%")))
event.listen(AuditHead.__table__, "after_create", DDL(SEED_HEAD_SQL))
for _statement in ANCHOR_TRIGGERS_SQL:
    event.listen(AuditAnchor.__table__, "after_create", DDL(_statement))
protect_gmp_table(AuditSelftest.__table__)  # type: ignore[arg-type]
protect_gmp_table(AuditReview.__table__)  # type: ignore[arg-type]
register_record_type("audit_selftest", label="Audit trail self-test", table="audit_selftests")


def _review_content(session: Any, record_id: str) -> dict[str, Any] | None:
    review = session.get(AuditReview, int(record_id)) if record_id.isdigit() else None
    return review.signed_content() if review is not None else None


register_record_type("audit_review", label="Audit trail review", table="audit_reviews", endpoint="audit.review",
                     id_arg="review_id", content=_review_content)
