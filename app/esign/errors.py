"""Python exception classes of the e-signature area (not manufacturing exceptions)."""

from __future__ import annotations

from app.core.errors import BatchlineError, Conflict


class SignatureRefused(BatchlineError):
    """The signer's credentials did not verify (wrong password or user ID, locked or deactivated account)."""

    status_code = 403


class SignerNotPermitted(BatchlineError):
    """The signer may not sign this step: missing role, or separation of duties."""

    status_code = 403


class RouteViolation(Conflict):
    """The signature does not fit the record's route now (wrong order, route finished or rejected)."""
