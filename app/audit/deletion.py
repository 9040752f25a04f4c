"""Requests to delete a GMP record: refused, and the attempt recorded in the audit trail (21 CFR 11.10(e)).

GMP records are never deleted (the tables refuse DELETE even for their owner); a client that asks anyway gets a 409
that says how to correct the record instead, and the trail keeps one `delete_attempt` event naming who asked, for
which record, and why. Areas route the DELETE of their records' API paths here:

    refuse_deletions(bp, permission="materials.manage", rules={f"{PREFIX}/lots/<int:record_id>": "lot"})
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, g, request
from sqlalchemy import select
from sqlalchemy.orm import Session

from app.audit.registry import RECORD_TYPES, record_type_label
from app.audit.services import refuse_deletion
from app.core.db import TenantBase
from app.core.errors import NotFound
from app.core.tenancy import Actor, TenantRef, tenant_transaction
from app.core.web import problem, request_actor, requires

#: What the refused client is told to do instead.
INSTEAD = "correct it or change its status with a reason instead"
#: Recorded when the client gives no reason: the attempt is kept all the same.
NO_REASON = "(no reason given)"


def _exists(session: Session, record_type: str, record_id: int) -> bool:
    kind = RECORD_TYPES.get(record_type)
    if kind is None or kind.table is None:
        raise ValueError(f"{record_type!r} is not a registered GMP record type with a table")
    table = TenantBase.metadata.tables[kind.table]
    return session.scalar(select(table.c.id).where(table.c.id == record_id)) is not None


def record_deletion_attempt(tenant: TenantRef, actor: Actor, *, record_type: str, record_id: int,
                            reason: str | None) -> int:
    """Record a refused deletion of an existing record in its own committed transaction; return the event's seq."""
    with tenant_transaction(tenant, actor=actor) as session:
        if not _exists(session, record_type, record_id):
            raise NotFound(f"no {record_type_label(record_type).lower()} {record_id}")
        event = refuse_deletion(session, record_type=record_type, record_id=record_id,
                                reason=(reason or "").strip()[:2000] or NO_REASON)
        return event.seq


def _reason_of_request() -> str | None:
    body = request.get_json(silent=True) if request.is_json else None
    reason = body.get("reason") if isinstance(body, dict) else None
    return reason if isinstance(reason, str) else request.args.get("reason")


def refuse_delete_request(record_type: str, record_id: int) -> Any:
    """Answer a DELETE of a GMP record over the tenant's JSON API: audit the attempt, then 409 (404 if unknown)."""
    try:
        seq = record_deletion_attempt(g.tenant, request_actor(), record_type=record_type, record_id=record_id,
                                      reason=_reason_of_request())
    except NotFound as exc:
        return problem(404, "Not Found", str(exc))
    label = record_type_label(record_type)
    return problem(409, "GMP records are never deleted",
                   f"{label} {record_id} is a GMP record and is never deleted: {INSTEAD}. "
                   f"The attempt is recorded in the audit trail (event {seq}).", audit_seq=seq)


def refuse_deletions(bp: Blueprint, *, permission: str, rules: dict[str, str]) -> None:
    """Answer `DELETE` on each rule of `bp` (ending in `<int:record_id>`) with `refuse_delete_request` of its type."""
    for rule, record_type in rules.items():
        def view(record_id: int, record_type: str = record_type) -> Any:
            return refuse_delete_request(record_type, record_id)

        view.__doc__ = f"Refuse to delete a {record_type_label(record_type).lower()}; the attempt is audited."
        bp.add_url_rule(rule, endpoint=f"delete_{record_type}_refused", view_func=requires(permission)(view),
                        methods=["DELETE"])
