"""Python exception classes of the platform (not to be confused with manufacturing exceptions)."""

from __future__ import annotations


class BatchlineError(Exception):
    """Base class: an error whose message a person can act on."""

    status_code = 400


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
