"""Audit trail endpoints of the public API (`/api/v1/audit/events`; read only, scope `audit.read`), and the refusal of
`DELETE` on the API's GMP records (each attempt a `delete_attempt` event).

The same filters as the audit review screen (`AuditFilters`): record type and id, actor, action, time range.
Events come oldest first by their gapless sequence number, so an integration (a SIEM, an archive) can follow
the trail with `after` = the last `seq` it holds; `hash` and `prev_hash` let it check the chain itself.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field
from sqlalchemy import select

from app.api.errors import ApiError
from app.api.registry import api_actor, operation, paginate
from app.api.schemas import Moment, Page, PageQuery, Query
from app.api.services import ApiPrincipal
from app.audit.deletion import INSTEAD, record_deletion_attempt
from app.audit.models import AuditEvent
from app.audit.queries import AuditFilters
from app.core.errors import NotFound
from app.core.tenancy import tenant_transaction

TAGS = ["audit"]
_FIELDS = ("seq", "occurred_at", "actor_member_id", "actor_label", "action", "record_type", "record_id",
           "old_values", "new_values", "reason", "request_id", "client_addr", "prev_hash", "hash")


class AuditEventOut(BaseModel):
    """One audit event: who did what to which record, when (database UTC clock) and why, with the values
    before and after, chained to the previous event by its hash."""

    seq: int = Field(description="Gapless sequence number in the tenant's trail")
    occurred_at: datetime
    actor_member_id: int | None = Field(description="Membership that acted (null: the system or an API client)")
    actor_label: str = Field(description="Who acted, as frozen at the time")
    action: str = Field(description="create, correct, status_change, sign, delete_attempt, ...")
    record_type: str
    record_id: str
    old_values: dict[str, Any] | None
    new_values: dict[str, Any] | None
    reason: str | None
    request_id: str | None
    client_addr: str | None
    prev_hash: str
    hash: str = Field(description="SHA-256 of prev_hash and this event's canonical text")


class AuditEventPage(Page[AuditEventOut]):
    """A page of audit events; `next_after` is the last `seq` of the page."""


class AuditEventQuery(PageQuery):
    """Filters of the audit trail (all optional, combined with AND); `after` is a `seq`."""

    record_type: str | None = Field(default=None, max_length=60, description="e.g. batch, lot, equipment")
    record_id: str | None = Field(default=None, max_length=100, description="Id of the record (with record_type)")
    actor: str | None = Field(default=None, max_length=200,
                              description="A membership id (digits), or part of the actor's name or email")
    action: str | None = Field(default=None, max_length=40, description="e.g. create, status_change, correct")
    since: Moment | None = Field(default=None, description="At or after this moment (with zone)")
    until: Moment | None = Field(default=None, description="At or before this moment (with zone)")

    def filters(self) -> AuditFilters:
        """The audit area's own filters."""
        return AuditFilters(record_type=self.record_type or "", record_id=self.record_id or "",
                            user=(self.actor or "").strip(), action=self.action or "",
                            since=self.since.isoformat() if self.since else "",
                            until=self.until.isoformat() if self.until else "")


def _event(row: Any) -> dict[str, Any]:
    event = row[0]
    return {name: getattr(event, name) for name in _FIELDS}


@operation("GET", "/audit/events", summary="Read the audit trail", permission="audit.read", query=AuditEventQuery,
           response=AuditEventPage, tags=TAGS)
def list_audit_events(principal: ApiPrincipal, *, query: AuditEventQuery) -> dict[str, Any]:
    """Audit events oldest first by `seq`, filterable by record (type and id), actor, action and time range —
    the filters of the audit review screen. Follow the trail with `after` = the last `seq` you hold."""
    with tenant_transaction(principal.tenant) as session:
        stmt = query.filters().apply(select(AuditEvent))
        return paginate(session, stmt, query, AuditEvent.seq, _event, cursor="seq")


@operation("GET", "/audit/events/<int:seq>", summary="One audit event", permission="audit.read",
           response=AuditEventOut, tags=TAGS, errors={404: "No event with this sequence number in this tenant"})
def get_audit_event(principal: ApiPrincipal, *, seq: int) -> dict[str, Any]:
    """An audit event by its sequence number, with the values before and after and its hashes."""
    with tenant_transaction(principal.tenant) as session:
        event = session.get(AuditEvent, seq)
        if event is None:
            raise NotFound(f"no audit event {seq} in this tenant")
        return _event((event,))


# -- deletion attempts -------------------------------------------------------------------------------------------


class DeletionQuery(Query):
    """Why the caller wants the record gone (kept in the audit trail with the refused attempt)."""

    reason: str | None = Field(default=None, max_length=2000, description="Why the record should be deleted")


#: The public API's GMP records: (path, path argument, record type, label, permission to manage them, tag).
DELETABLE_LOOKING = [
    ("/sites/<int:site_id>", "site_id", "site", "site", "plant.manage", "plant"),
    ("/lines/<int:line_id>", "line_id", "line", "line", "plant.manage", "plant"),
    ("/equipment/<int:equipment_id>", "equipment_id", "equipment", "equipment item", "plant.manage", "plant"),
    ("/sensors/<int:sensor_id>", "sensor_id", "sensor", "sensor", "plant.manage", "plant"),
    ("/materials/<int:material_id>", "material_id", "material", "material", "materials.manage", "materials"),
    ("/lots/<int:lot_id>", "lot_id", "lot", "lot", "materials.manage", "materials"),
]


def _refuse_deletion_operation(rule: str, arg: str, record_type: str, label: str, permission: str,
                               tag: str) -> None:
    def refuse(principal: ApiPrincipal, *, query: DeletionQuery, **path: int) -> None:
        seq = record_deletion_attempt(principal.tenant, api_actor(principal), record_type=record_type,
                                      record_id=path[arg], reason=query.reason)
        raise ApiError(409, "GMP records are never deleted",
                       f"{label} {path[arg]} is a GMP record and is never deleted: {INSTEAD}. The attempt is "
                       f"recorded in the audit trail (event {seq}).", audit_seq=seq)

    refuse.__name__ = refuse.__qualname__ = f"delete_{record_type}"
    operation("DELETE", rule, summary=f"Delete a {label} (always refused)", permission=permission,
              query=DeletionQuery, status=409, tags=[tag],
              errors={404: f"No such {label} in this tenant (nothing is recorded)",
                      409: f"Always: a {label} is a GMP record; the attempt is recorded in the audit trail"},
              description=f"GMP records are never deleted. The request is refused with 409 and recorded as a "
                          f"`delete_attempt` event naming the caller, the {label} and the reason given; correct the "
                          f"{label} or change its status with a reason instead.")(refuse)


for _spec in DELETABLE_LOOKING:
    _refuse_deletion_operation(*_spec)
