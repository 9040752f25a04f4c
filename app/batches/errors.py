"""Python exception classes of the batch area (not manufacturing exceptions, which are `BatchException` rows)."""

from __future__ import annotations

from typing import Any

from app.core.errors import Conflict, ValidationError
from app.esign.errors import SignerNotPermitted


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


class StepRefused(Conflict):
    """A step action the engine refuses as the batch stands; nothing was recorded.

    `code` names the refusal in the recipe scenario vocabulary (`app.recipes.scenarios`: out_of_order,
    skip_not_allowed, already_completed, missing_required_capture, missing_signature), so the validation-pack
    replay reads what the engine refused without parsing sentences; `captures` are the capture keys concerned.
    """

    def __init__(self, message: str, *, code: str, captures: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.code = code
        self.captures = captures


class IncompatibleUnit(ValidationError):
    """A value's unit measures something else than the limit's or requirement's unit (422; nothing recorded)."""


class SecondPersonRequired(SignerNotPermitted):
    """An independent signature (verified...) given by someone who performed, recorded or signed the step."""
