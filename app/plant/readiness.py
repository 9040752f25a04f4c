"""The equipment gate the batch area calls before a step uses an item: ready, or every reason it is not."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

from app.plant.models import EQUIPMENT_STATUSES, Equipment


@dataclass(frozen=True)
class Reason:
    """One reason a record may not be used: a stable code for programs and a message for people."""

    code: str
    message: str


@dataclass(frozen=True)
class Readiness:
    """Ready when there is no reason against it."""

    reasons: tuple[Reason, ...] = ()

    @property
    def ready(self) -> bool:
        """True when nothing stands against use."""
        return not self.reasons

    @property
    def codes(self) -> list[str]:
        """The reason codes, in the order found."""
        return [r.code for r in self.reasons]

    def __bool__(self) -> bool:
        return self.ready


_STATUS_REASONS = {
    "dirty": "is dirty: clean it first",
    "in_use": "is in use by another batch",
    "maintenance": "is under maintenance",
    "out_of_service": "is out of service",
}


def local_date(at: datetime, timezone: str | None) -> date:
    """The calendar date of `at` at a site (UTC when the site is unknown)."""
    if at.tzinfo is None:
        raise ValueError("readiness is judged at a timezone-aware time")
    return at.astimezone(ZoneInfo(timezone or "UTC")).date()


def equipment_ready(equipment: Equipment, at: datetime, *, timezone: str | None = None) -> Readiness:
    """Return ready, or every reason the equipment may not be used at `at`; dates are read in the site timezone."""
    if timezone is None:
        line = equipment.line
        timezone = line.site.timezone if line is not None and line.site is not None else None
    today = local_date(at, timezone)
    tag = equipment.tag
    reasons: list[Reason] = []
    if equipment.status in _STATUS_REASONS:
        code = "under_maintenance" if equipment.status == "maintenance" else equipment.status
        reasons.append(Reason(code, f"{tag} {_STATUS_REASONS[equipment.status]}"))
    elif equipment.status == "clean" and equipment.clean_hold_hours:
        cleaned = equipment.cleaned_at or equipment.status_changed_at
        if cleaned is not None:
            expires = cleaned + timedelta(hours=equipment.clean_hold_hours)
            if at > expires:
                reasons.append(Reason("clean_hold_expired",
                                      f"{tag} clean-hold time of {equipment.clean_hold_hours} h expired at "
                                      f"{expires.astimezone(ZoneInfo(timezone or 'UTC')):%Y-%m-%d %H:%M %Z}: "
                                      "clean it again"))
    elif equipment.status not in EQUIPMENT_STATUSES:
        reasons.append(Reason("unknown_status", f"{tag} has an unknown status {equipment.status!r}"))
    if equipment.calibration_due is not None and today > equipment.calibration_due:
        reasons.append(Reason("calibration_overdue",
                              f"{tag} calibration was due on {equipment.calibration_due.isoformat()}"))
    if equipment.qualification_status != "qualified":
        reasons.append(Reason("not_qualified", f"{tag} is not qualified ({equipment.qualification_status})"))
    elif equipment.qualified_until is not None and today > equipment.qualified_until:
        reasons.append(Reason("qualification_expired",
                              f"{tag} qualification expired on {equipment.qualified_until.isoformat()}"))
    return Readiness(tuple(reasons))
