"""Python exception classes of the platform (not to be confused with manufacturing exceptions)."""

from __future__ import annotations


class BatchlineError(Exception):
    """Base class: an error whose message a person can act on."""

    status_code = 400
    #: Flash category a screen shows the message with (`upgrade` adds a link to the billing page).
    flash_category = "error"

    @property
    def problem_extra(self) -> dict[str, object]:
        """Members a JSON problem document carries besides title and detail."""
        return {}


class ValidationError(BatchlineError):
    """Input was refused; nothing was stored."""

    status_code = 422


class NotFound(BatchlineError):
    """The record does not exist in this tenant (or the caller may not know it exists)."""

    status_code = 404


class Conflict(BatchlineError):
    """The request clashes with what is already stored (duplicate, wrong state)."""

    status_code = 409


class ConfigurationError(BatchlineError):
    """The deployment is misconfigured; the message says which setting to fix."""

    status_code = 500


class PaymentRequired(BatchlineError):
    """The tenant's plan or subscription does not allow this; the message says how to upgrade or renew."""

    status_code = 402
    flash_category = "upgrade"

    def __init__(self, message: str, *, upgrade_url: str | None = None, **facts: object) -> None:
        super().__init__(message)
        #: Where an administrator changes the plan (the tenant's billing page).
        self.upgrade_url = upgrade_url
        #: What was refused: entitlement, limit, used, adding (for API clients to act on).
        self.facts = facts

    @property
    def problem_extra(self) -> dict[str, object]:
        """The upgrade path and the numbers behind the refusal."""
        return {**({"upgrade_url": self.upgrade_url} if self.upgrade_url else {}), **self.facts}
