"""Record audit events inside the caller's transaction, and verify a tenant's chain."""

from __future__ import annotations

import json
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from enum import Enum
from typing import Any

import orjson
from flask import current_app
from sqlalchemy import select, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from app.audit.models import GENESIS_HASH, AuditAnchor, AuditEvent, AuditReview, AuditSelftest
from app.audit.tsa import check_timestamp, request_timestamp
from app.core.errors import ConfigurationError, Conflict, ValidationError
from app.core.tenancy import SYSTEM_ACTOR, Actor

#: Actions that change an existing record must say why (21 CFR 11.10(e), ALCOA+ "attributable").
ACTIONS_NEEDING_REASON = frozenset({"correct", "status_change", "delete_attempt", "void", "supersede"})


def _jsonable(value: Any) -> Any:
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, set | frozenset):
        return sorted(value)
    raise TypeError(f"cannot audit a value of type {type(value).__name__}")


def _plain(values: dict[str, Any] | None) -> dict[str, Any] | None:
    """Turn values into plain JSON types now, so what is hashed is exactly what is stored."""
    return None if values is None else json.loads(json.dumps(values, default=_jsonable))


def plain_json(values: dict[str, Any] | None) -> dict[str, Any] | None:
    """Values reduced to plain JSON types exactly as the audit trail stores them (dates ISO, decimals as text)."""
    return _plain(values)


def current_actor(session: Session) -> Actor:
    """The actor of the session's unit of work (set by `tenant_transaction(..., actor=...)`), or the system."""
    return session.info.get("actor") or SYSTEM_ACTOR


def record(session: Session, *, action: str, record_type: str, record_id: Any,
           old: dict[str, Any] | None = None, new: dict[str, Any] | None = None, reason: str | None = None,
           actor: Actor | None = None) -> AuditEvent:
    """Append one audit event to the tenant's chain, in the caller's transaction."""
    reason = (reason or "").strip() or None
    if action in ACTIONS_NEEDING_REASON and not reason:
        raise ValidationError(f"a reason is required to {action.replace('_', ' ')} a {record_type} record")
    actor = actor or current_actor(session)
    event = AuditEvent(
        actor_member_id=actor.member_id, actor_label=actor.label[:300], action=action, record_type=record_type,
        record_id=str(record_id), old_values=_plain(old), new_values=_plain(new), reason=reason,
        request_id=actor.request_id, client_addr=actor.client_addr,
    )
    session.add(event)
    session.flush()  # the trigger assigns seq, time and hashes now, inside this transaction
    session.refresh(event, ["seq", "occurred_at", "prev_hash", "hash"])
    return event


def record_many(session: Session, entries: Sequence[dict[str, Any]], *, actor: Actor | None = None) -> list[int]:
    """Append many events in one statement (imports, sensor evidence); return their sequence numbers."""
    actor = actor or current_actor(session)
    rows = []
    for entry in entries:
        action, record_type = entry["action"], entry["record_type"]
        reason = (entry.get("reason") or "").strip() or None
        if action in ACTIONS_NEEDING_REASON and not reason:
            raise ValidationError(f"a reason is required to {action.replace('_', ' ')} a {record_type} record")
        rows.append({"actor_member_id": actor.member_id, "actor_label": actor.label[:300], "action": action,
                     "record_type": record_type, "record_id": str(entry["record_id"]),
                     "old_values": entry.get("old"), "new_values": entry.get("new"),
                     "reason": reason, "request_id": actor.request_id, "client_addr": actor.client_addr})
    if not rows:
        return []
    # One statement with the rows as one JSON parameter: a thousand events cost one round trip and no client-side
    # rendering of a thousand-row VALUES list. Old and new values are reduced to plain JSON in that one pass, as
    # `_plain` would. `audit_append` chains the rows in the order given, so the sorted seqs map back to `entries`.
    return sorted(session.scalars(RECORD_MANY_SQL, {"rows": plain_json_text(rows)}))


def plain_json_text(values: Any) -> str:
    """JSON text of values reduced to plain JSON types as the audit trail stores them (dates ISO, decimals text)."""
    # orjson: a thousand rows (an RBE run's exceptions) in a few milliseconds where `json` takes tens. Dates go
    # through `_jsonable` as with `json`, and keys that are not strings become strings as `json` makes them.
    return orjson.dumps(values, default=_jsonable,
                        option=orjson.OPT_NON_STR_KEYS | orjson.OPT_PASSTHROUGH_DATETIME).decode()


#: The batch path of the chain (see APPEND_SQL in app/audit/models.py).
RECORD_MANY_SQL = text("SELECT * FROM audit_append(CAST(:rows AS jsonb))")


def refuse_deletion(session: Session, *, record_type: str, record_id: Any, reason: str) -> AuditEvent:
    """Record an attempt to delete a GMP record (which is refused); the caller commits, then answers 409."""
    return record(session, action="delete_attempt", record_type=record_type, record_id=record_id, reason=reason)


@dataclass(frozen=True)
class ChainReport:
    """Result of a chain verification."""

    ok: bool
    events: int
    head_seq: int
    head_hash: str
    first_broken_seq: int | None = None
    problem: str | None = None
    #: Time-stamp anchors checked against the chain.
    anchors: int = 0
    #: Highest sequence number an anchor proves (None without anchors).
    anchored_seq: int | None = None
    warnings: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        """JSON-able form for `audit verify --json`."""
        return {"ok": self.ok, "events": self.events, "head_seq": self.head_seq, "head_hash": self.head_hash,
                "first_broken_seq": self.first_broken_seq, "problem": self.problem, "anchors": self.anchors,
                "anchored_seq": self.anchored_seq, "warnings": list(self.warnings)}


#: Links and sequence: cheap (no hashing), walks the primary key in order.
LINKS_SQL = text("""
SELECT seq,
       CASE WHEN seq <> coalesce(lag_seq, 0) + 1 THEN 'sequence gap or reorder before this event'
            ELSE 'previous-hash link broken' END AS problem
FROM (SELECT seq, prev_hash, lag(hash) OVER w AS lag_hash, lag(seq) OVER w AS lag_seq
      FROM audit_events WHERE seq <= :upper WINDOW w AS (ORDER BY seq)) chain
WHERE seq <> coalesce(lag_seq, 0) + 1 OR prev_hash <> coalesce(lag_hash, :genesis)
ORDER BY seq
LIMIT 1
""")

#: Content: every row's hash recomputed; no ordering needed, so PostgreSQL spreads it over parallel workers
#: (`seq + 0` keeps the planner from turning min() into an ordered index walk).
CONTENT_SQL = text("""
SELECT min(seq + 0) FROM audit_events e
WHERE seq <= :upper AND hash <> encode(sha256(convert_to(prev_hash || audit_canonical(e), 'UTF8')), 'hex')
""")


def anchor_message(tenant_id: int, seq: int, head_hash: str) -> bytes:
    """The bytes a TSA time-stamps for a chain head: bound to the tenant, so anchors cannot be moved."""
    return f"batchline-audit-anchor/v1 tenant={int(tenant_id)} seq={int(seq)} hash={head_hash}".encode()


def _tsa_ca_file() -> str:
    try:
        return current_app.config.get("TSA_CA_FILE", "")
    except RuntimeError:  # no app context (library use): content checks only
        return ""


def _check_anchors(session: Session, last_seq: int) -> tuple[int, int | None, int | None, str | None]:
    """Compare the trail with its time-stamped heads; return (anchors, anchored_seq, broken_seq, problem)."""
    tenant = session.info["tenant"]
    anchors = session.scalars(select(AuditAnchor).order_by(AuditAnchor.seq, AuditAnchor.id)).all()
    if not anchors:
        return 0, None, None, None
    hashes = dict(session.execute(select(AuditEvent.seq, AuditEvent.hash)
                                  .where(AuditEvent.seq.in_({a.seq for a in anchors}))).all())
    ca_file, last_good = _tsa_ca_file(), 0
    for anchor in anchors:
        when = anchor.gen_time.isoformat()
        why = check_timestamp(anchor.token, anchor_message(tenant.id, anchor.seq, anchor.head_hash), ca_file=ca_file)
        if why:
            return len(anchors), last_good or None, last_good + 1, f"anchor #{anchor.id} (seq {anchor.seq}): {why}"
        if anchor.seq > last_seq:
            return (len(anchors), last_good or None, last_seq + 1,
                    f"the trail ends at seq {last_seq} but anchor #{anchor.id} proves seq {anchor.seq} existed "
                    f"at {when}")
        if hashes.get(anchor.seq) != anchor.head_hash:
            return (len(anchors), last_good or None, last_good + 1,
                    f"the trail was rewritten: anchor #{anchor.id} time-stamped seq {anchor.seq} with hash "
                    f"{anchor.head_hash[:16]}... at {when}; the trail now holds {str(hashes.get(anchor.seq))[:16]}... "
                    f"(the change lies within seq {last_good + 1}..{anchor.seq})")
        last_good = anchor.seq
    return len(anchors), last_good, None, None


def verify_chain(session: Session) -> ChainReport:
    """Walk the tenant's whole chain in the database and report `ok` or the first broken sequence number."""
    last = session.execute(text("SELECT seq, hash FROM audit_events ORDER BY seq DESC LIMIT 1")).first()
    last_seq, last_hash = (last.seq, last.hash) if last is not None else (0, GENESIS_HASH)
    count = session.execute(text("SELECT count(*) FROM audit_events WHERE seq <= :u"), {"u": last_seq}).scalar_one()
    link = session.execute(LINKS_SQL, {"upper": last_seq, "genesis": GENESIS_HASH}).first()
    content_seq = session.execute(CONTENT_SQL, {"upper": last_seq}).scalar_one()
    candidates = []
    if link is not None:
        candidates.append((link.seq, 0, link.problem))
    if content_seq is not None:
        candidates.append((content_seq, 1, "content does not match its hash"))
    anchors, anchored_seq, anchor_broken, anchor_problem = _check_anchors(session, last_seq)
    if candidates:
        seq, _, problem = min(candidates)
        return ChainReport(False, count, last_seq, last_hash, seq, problem, anchors, anchored_seq)
    head_seq, head_hash = session.execute(text("SELECT seq, hash FROM audit_head WHERE id = 1")).one()
    if (head_seq, head_hash) != (last_seq, last_hash):
        # Events after the last stored one were removed (or the head was rewritten).
        return ChainReport(False, count, last_seq, last_hash, last_seq + 1,
                           f"chain head says seq {head_seq}; the trail ends at {last_seq}", anchors, anchored_seq)
    if anchor_problem is not None:
        return ChainReport(False, count, last_seq, last_hash, anchor_broken, anchor_problem, anchors, anchored_seq)
    warnings = []
    if anchors == 0 and count:
        warnings.append("no time-stamp anchor yet: a rewrite of the whole chain would not be detected")
    elif anchors and not _tsa_ca_file():
        warnings.append("TSA_CA_FILE is not set: anchors were checked for content, not for the TSA's signature")
    return ChainReport(True, count, last_seq, last_hash, anchors=anchors, anchored_seq=anchored_seq,
                       warnings=tuple(warnings))


def anchor_chain(session: Session, *, reason: str = "manual", record_type: str | None = None,
                 record_id: Any = None, only_if_new: bool = False) -> AuditAnchor | None:
    """Have the TSA (`TSA_URL`) time-stamp the chain head and store the token; None when the trail is empty."""
    url = current_app.config.get("TSA_URL") or ""
    if not url:
        raise ConfigurationError("TSA_URL is not set: configure the RFC 3161 Time Stamping Authority to anchor "
                                 "the audit trail")
    head = session.execute(text("SELECT seq, hash FROM audit_events ORDER BY seq DESC LIMIT 1")).first()
    if head is None:
        return None
    if only_if_new:
        done = session.scalar(select(AuditAnchor).where(AuditAnchor.seq >= head.seq).order_by(AuditAnchor.id)
                              .limit(1))
        if done is not None:
            return done
    tenant = session.info["tenant"]
    stamp = request_timestamp(url, anchor_message(tenant.id, head.seq, head.hash),
                              timeout_s=float(current_app.config.get("TSA_TIMEOUT_S", 10.0)))
    anchor = AuditAnchor(seq=head.seq, head_hash=head.hash, reason=reason[:40], record_type=record_type,
                         record_id=None if record_id is None else str(record_id), tsa_url=url[:500],
                         token=stamp.token, gen_time=stamp.gen_time, tsa_serial=stamp.serial[:64])
    session.add(anchor)
    session.flush()
    return anchor


def request_anchor(session: Session, *, reason: str, record_type: str | None = None,
                   record_id: Any = None) -> None:
    """Anchor the chain once this transaction commits (e.g. at batch release), through the job outbox."""
    from app.core.jobs import enqueue

    enqueue(session, "app.audit.jobs:anchor_audit_chain", reason=reason, record_type=record_type,
            record_id=None if record_id is None else str(record_id))


@dataclass(frozen=True)
class SelftestResult:
    """Outcome of `batchline audit selftest`."""

    ok: bool
    selftest_id: int
    seq: int | None
    checks: tuple[tuple[str, bool], ...]


def make_selftest_change(session: Session) -> tuple[int, str]:
    """Make the known change of the self-test (a new `audit_selftest` record); return its id and nonce."""
    actor = current_actor(session)
    nonce = secrets.token_hex(16)
    row = AuditSelftest(nonce=nonce, performed_by=actor.label[:300])
    session.add(row)
    session.flush()
    record(session, action="create", record_type="audit_selftest", record_id=row.id,
           new={"nonce": nonce, "performed_by": row.performed_by})
    return row.id, nonce


def check_selftest_change(session: Session, *, selftest_id: int, nonce: str) -> SelftestResult:
    """Check, in a later transaction, that the known change is in the trail exactly once and the chain holds."""
    row = session.get(AuditSelftest, selftest_id)
    events = session.scalars(select(AuditEvent).where(AuditEvent.record_type == "audit_selftest",
                                                      AuditEvent.record_id == str(selftest_id))).all()
    event = events[0] if len(events) == 1 else None
    checks = [
        ("the self-test record was stored", row is not None and row.nonce == nonce),
        ("exactly one audit event names it", len(events) == 1),
        ("the event holds the new values", event is not None and (event.new_values or {}).get("nonce") == nonce),
        ("the event is attributed to who ran it",
         event is not None and row is not None and event.actor_label == row.performed_by),
        ("the event time is the database time of the change",
         event is not None and row is not None and event.occurred_at == row.created_at),
    ]
    for statement in ("UPDATE audit_events SET reason = 'selftest'", "DELETE FROM audit_selftests"):
        refused = False
        try:
            with session.begin_nested():
                session.execute(text(f"{statement} WHERE false"))
        except DBAPIError:
            refused = True
        checks.append((f"the runtime role is refused: {statement.split()[0]} {statement.split()[-1]}", refused))
    report = verify_chain(session)
    checks.append((f"the chain verifies ({report.events} events)", report.ok))
    ok = all(passed for _, passed in checks)
    return SelftestResult(ok=ok, selftest_id=selftest_id, seq=event.seq if event else None, checks=tuple(checks))


def draft_review(session: Session, *, filters: Any, conclusion: str, upto_seq: int | None = None,
                 review_id: int | None = None) -> AuditReview:
    """Build (without storing) a review of the events matching `filters`, up to `upto_seq` when given.

    Without `review_id` a new id is reserved, so a signer who must re-authenticate at the identity provider can
    bind the signature to this exact review (id and content) before it exists; an abandoned draft leaves a gap
    in the ids, never a row.
    """
    from sqlalchemy import func

    conclusion = (conclusion or "").strip()
    if not conclusion:
        raise ValidationError("write the review's conclusion (what was checked, what was found)")
    query = filters.apply(select(func.min(AuditEvent.seq), func.max(AuditEvent.seq), func.count()))
    if upto_seq is not None:
        query = query.where(AuditEvent.seq <= upto_seq)
    summary = session.execute(query).one()
    if not summary[2]:
        raise ValidationError("no audit events match these filters: there is nothing to review")
    head_hash = session.execute(select(AuditEvent.hash).where(AuditEvent.seq == summary[1])).scalar_one()
    if review_id is None:
        review_id = session.execute(text("SELECT nextval(pg_get_serial_sequence('audit_reviews', 'id'))")).scalar_one()
    actor = current_actor(session)
    return AuditReview(id=review_id, filters=filters.as_dict(), first_seq=summary[0], last_seq=summary[1],
                       events=summary[2], head_hash=head_hash, conclusion=conclusion[:4000],
                       reviewer_member_id=actor.member_id)


def create_review(session: Session, *, filters: Any, conclusion: str, upto_seq: int | None = None,
                  review_id: int | None = None) -> AuditReview:
    """Record a reviewer's sign-off of the events matching `filters` (the caller then signs it)."""
    if review_id is not None:  # a reserved id: a double submission waits here, then finds the first one's row
        session.execute(text("SELECT pg_advisory_xact_lock(:t, hashtext(:k))"),
                        {"t": session.info["tenant"].id, "k": f"audit_review:{review_id}"})
    review = draft_review(session, filters=filters, conclusion=conclusion, upto_seq=upto_seq, review_id=review_id)
    if review_id is not None and session.get(AuditReview, review_id) is not None:
        raise Conflict(f"audit review #{review_id} is already recorded; start a new review")
    session.add(review)
    session.flush()
    record(session, action="create", record_type="audit_review", record_id=review.id, new=review.signed_content())
    return review
