"""Python exception classes of the batch area (not manufacturing exceptions, which are `BatchException` rows)."""

from __future__ import annotations

from typing import Any

from app.core.errors import Conflict


class EntryNeedsDecision(Conflict):
    """An entry cannot be recorded as it stands: it needs the operator's acknowledgement or a supervisor override.

    Nothing was recorded. `check` carries the live check result so the tablet can show why.
    """

    #: "acknowledgement" or "override".
    needs = "acknowledgement"

    def __init__(self, message: str, *, check: dict[str, Any]) -> None:
        super().__init__(message)
        self.check = check


class AcknowledgementRequired(EntryNeedsDecision):
    """A red value, an unacceptable choice or a soft-blocked scan: record it only with a comment."""

    needs = "acknowledgement"


class OverrideRequired(EntryNeedsDecision):
    """A hard block (wrong material, unusable lot, equipment not ready, identity mismatch, out of order)."""

    needs = "override"
