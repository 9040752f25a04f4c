"""Signed, expiring links (invitations, password resets): itsdangerous over SECRET_KEY, one salt per purpose.

The signature proves the link was made by us and not altered; the record it names (and a random nonce kept
with it) makes it single-use and revocable.
"""

from __future__ import annotations

from typing import Any

from flask import current_app
from itsdangerous import BadSignature, SignatureExpired, URLSafeTimedSerializer

from app.core.errors import ValidationError

INVITE, RESET = "batchline.invitation", "batchline.password-reset"


class ExpiredLink(ValidationError):
    """A link whose signature is valid but whose time is up."""


def _serializer(purpose: str) -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(current_app.config["SECRET_KEY"], salt=purpose)


def make_token(purpose: str, payload: dict[str, Any]) -> str:
    """Sign a payload for a link."""
    return str(_serializer(purpose).dumps(payload))


def read_token(purpose: str, token: str, *, max_age_s: int) -> dict[str, Any]:
    """Return the payload of a link we made for `purpose`, or raise with a message a person can act on."""
    if not token or len(token) > 512:
        raise ValidationError("this link is not valid: it may have been altered or cut off; ask for a new one")
    try:
        payload = _serializer(purpose).loads(token, max_age=max_age_s)
    except SignatureExpired as exc:
        raise ExpiredLink("this link has expired; ask for a new one") from exc
    except BadSignature as exc:
        raise ValidationError("this link is not valid: it may have been altered or cut off; ask for a new one") from exc
    if not isinstance(payload, dict):
        raise ValidationError("this link is not valid; ask for a new one")
    return payload
