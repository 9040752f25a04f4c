"""Read-side queries of the audit trail: the review screens' filters, pages and exports."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import UTC, date, datetime, time
from typing import Any

from sqlalchemy import Select, select
from sqlalchemy.orm import Session

from app.audit.models import AuditAnchor, AuditEvent, AuditReview
from app.core.errors import ValidationError

PAGE_SIZE = 100
#: Exports hold at most this many events; narrow the filter for more (the CSV says so in its last line).
EXPORT_LIMIT = 50_000
PDF_LIMIT = 5_000


def _moment(value: str, *, end: bool) -> datetime | None:
    value = (value or "").strip()
    if not value:
        return None
    try:
        if len(value) == 10:
            day = date.fromisoformat(value)
            return datetime.combine(day, time.max if end else time.min, tzinfo=UTC)
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError as exc:
        raise ValidationError(f"{value!r} is not a date (YYYY-MM-DD) or an ISO date-time") from exc
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


@dataclass(frozen=True)
class AuditFilters:
    """What a reviewer narrowed the trail to (all optional; times in UTC unless a zone is given)."""

    record_type: str = ""
    record_id: str = ""
    user: str = ""
    action: str = ""
    since: str = ""
    until: str = ""

    @classmethod
    def from_args(cls, args: Any) -> AuditFilters:
        """Read the filters from a query string, trimmed; refuse dates a person mistyped."""
        filters = cls(**{k: (args.get(k) or "").strip()[:200] for k in cls.__dataclass_fields__})
        _moment(filters.since, end=False)
        _moment(filters.until, end=True)
        return filters

    def as_dict(self) -> dict[str, str]:
        """Only the filters that are set (for URLs and the signed review content)."""
        return {k: v for k, v in asdict(self).items() if v}

    def apply(self, query: Select[Any]) -> Select[Any]:
        """Narrow an audit event query."""
        if self.record_type:
            query = query.where(AuditEvent.record_type == self.record_type)
        if self.record_id:
            query = query.where(AuditEvent.record_id == self.record_id)
        if self.action:
            query = query.where(AuditEvent.action == self.action)
        if self.user:
            if self.user.isdigit():
                query = query.where(AuditEvent.actor_member_id == int(self.user))
            else:
                query = query.where(AuditEvent.actor_label.ilike(f"%{self.user}%"))
        since, until = _moment(self.since, end=False), _moment(self.until, end=True)
        if since:
            query = query.where(AuditEvent.occurred_at >= since)
        if until:
            query = query.where(AuditEvent.occurred_at <= until)
        return query


def audit_page(session: Session, filters: AuditFilters, *, before_seq: int | None = None,
               size: int = PAGE_SIZE) -> list[AuditEvent]:
    """One page of matching events, newest first (keyset paging on seq)."""
    query = filters.apply(select(AuditEvent))
    if before_seq:
        query = query.where(AuditEvent.seq < before_seq)
    return list(session.scalars(query.order_by(AuditEvent.seq.desc()).limit(size)))


def audit_export_rows(session: Session, filters: AuditFilters, *, limit: int = EXPORT_LIMIT) -> list[AuditEvent]:
    """Matching events oldest first, for CSV and PDF exports."""
    query = filters.apply(select(AuditEvent)).order_by(AuditEvent.seq).limit(limit + 1)
    return list(session.scalars(query))


def filter_choices(session: Session) -> dict[str, list[str]]:
    """Record types and actions present in the trail, for the filter form."""
    types = session.scalars(select(AuditEvent.record_type).distinct().order_by(AuditEvent.record_type)).all()
    actions = session.scalars(select(AuditEvent.action).distinct().order_by(AuditEvent.action)).all()
    return {"record_types": list(types), "actions": list(actions)}


def recent_anchors(session: Session, *, limit: int = 20) -> list[AuditAnchor]:
    """The latest time-stamp anchors."""
    return list(session.scalars(select(AuditAnchor).order_by(AuditAnchor.id.desc()).limit(limit)))


def review(session: Session, review_id: int) -> AuditReview | None:
    """One signed-off audit trail review."""
    return session.get(AuditReview, review_id)


def changed_fields(event: AuditEvent) -> list[tuple[str, Any, Any]]:
    """(field, old, new) for every field the event changed or set, in a stable order."""
    old, new = event.old_values or {}, event.new_values or {}
    return [(key, old.get(key), new.get(key)) for key in sorted(set(old) | set(new))
            if old.get(key) != new.get(key) or key not in old]
