"""Record audit events inside the caller's transaction, and verify a tenant's chain."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from enum import Enum
from typing import Any

from sqlalchemy import text
from sqlalchemy.orm import Session

from app.audit.models import GENESIS_HASH, AuditEvent
from app.core.errors import ValidationError
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


@dataclass(frozen=True)
class ChainReport:
    """Result of a chain verification."""

    ok: bool
    events: int
    head_seq: int
    head_hash: str
    first_broken_seq: int | None = None
    problem: str | None = None

    def as_dict(self) -> dict[str, Any]:
        """JSON-able form for `audit verify --json`."""
        return {"ok": self.ok, "events": self.events, "head_seq": self.head_seq, "head_hash": self.head_hash,
                "first_broken_seq": self.first_broken_seq, "problem": self.problem}


VERIFY_SQL = text("""
WITH chain AS (
  SELECT seq, prev_hash, hash,
         encode(sha256(convert_to(prev_hash || audit_canonical(e), 'UTF8')), 'hex') AS expected,
         lag(hash) OVER (ORDER BY seq) AS lag_hash,
         lag(seq) OVER (ORDER BY seq) AS lag_seq
  FROM audit_events e
)
SELECT seq,
       CASE WHEN seq <> coalesce(lag_seq, 0) + 1 THEN 'sequence gap or reorder before this event'
            WHEN prev_hash <> coalesce(lag_hash, :genesis) THEN 'previous-hash link broken'
            ELSE 'content does not match its hash' END AS problem
FROM chain
WHERE seq <> coalesce(lag_seq, 0) + 1 OR prev_hash <> coalesce(lag_hash, :genesis) OR hash <> expected
ORDER BY seq
LIMIT 1
""")


def verify_chain(session: Session) -> ChainReport:
    """Walk the tenant's whole chain in the database and report `ok` or the first broken sequence number."""
    count, last_seq, last_hash = session.execute(
        text("SELECT count(*), coalesce(max(seq), 0), "
             "coalesce((SELECT hash FROM audit_events ORDER BY seq DESC LIMIT 1), :g) FROM audit_events"),
        {"g": GENESIS_HASH},
    ).one()
    broken = session.execute(VERIFY_SQL, {"genesis": GENESIS_HASH}).first()
    if broken is not None:
        return ChainReport(False, count, last_seq, last_hash, broken.seq, broken.problem)
    head_seq, head_hash = session.execute(text("SELECT seq, hash FROM audit_head WHERE id = 1")).one()
    if (head_seq, head_hash) != (last_seq, last_hash):
        # Events after the last stored one were removed (or the head was rewritten).
        return ChainReport(False, count, last_seq, last_hash, last_seq + 1,
                           f"chain head says seq {head_seq}; the trail ends at {last_seq}")
    return ChainReport(True, count, last_seq, last_hash)
