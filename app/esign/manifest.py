"""The signature manifestation (§11.50(b)): printed name, date and time with zone, and meaning, as people read it."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any


def format_signed_at(moment: datetime) -> str:
    """Signing time in UTC with the zone spelled out (`2026-11-25 14:03:11 UTC`)."""
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def manifestation_text(signature: Any, *, valid: bool | None = None) -> str:
    """One line naming signer, role, meaning and time, for CSV, PDF and plain-text exports."""
    roles = ", ".join(signature.signer_roles or [])
    line = (f"{signature.meaning_label} by {signature.printed_name}"
            f"{f' ({roles})' if roles else ''} on {format_signed_at(signature.signed_at)}")
    if signature.reason:
        line += f" — {signature.reason}"
    if valid is False:
        line += " [INVALID: the record changed after signing]"
    return line
