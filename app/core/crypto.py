"""Sealing small secrets at rest (SSO client secrets) with a key derived from the app's SECRET_KEY.

AES-256-GCM, key from HKDF-SHA256 over SECRET_KEY: a database dump alone does not reveal the secrets. Rotating
SECRET_KEY means re-entering the sealed secrets (the admin pages say so when one no longer opens).
"""

from __future__ import annotations

import base64
import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from flask import current_app

from app.core.errors import ConfigurationError

_VERSION = b"v1"


def _key(purpose: str) -> bytes:
    secret = current_app.config["SECRET_KEY"]
    secret = secret.encode() if isinstance(secret, str) else secret
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=b"batchline.seal", info=purpose.encode()).derive(secret)


def seal(plaintext: str, *, purpose: str) -> str:
    """Encrypt and authenticate `plaintext` for storage; `purpose` binds it to one use."""
    nonce = os.urandom(12)
    sealed = AESGCM(_key(purpose)).encrypt(nonce, plaintext.encode(), _VERSION)
    return (_VERSION + b":" + base64.urlsafe_b64encode(nonce + sealed)).decode()


def unseal(token: str, *, purpose: str) -> str:
    """Decrypt a value made by `seal`; raise ConfigurationError when it no longer opens (SECRET_KEY changed)."""
    version, _, body = token.encode().partition(b":")
    if version != _VERSION:
        raise ConfigurationError("sealed value has an unknown format")
    raw = base64.urlsafe_b64decode(body)
    try:
        return AESGCM(_key(purpose)).decrypt(raw[:12], raw[12:], _VERSION).decode()
    except InvalidTag as exc:
        raise ConfigurationError("a stored secret no longer opens (was SECRET_KEY changed?); enter it again") from exc
