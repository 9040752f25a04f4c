"""Time helpers: every timestamp is timezone-aware UTC."""

from __future__ import annotations

from datetime import UTC, datetime


def utcnow() -> datetime:
    """Return the current UTC time, timezone-aware (GMP records use the database clock instead)."""
    return datetime.now(UTC)
