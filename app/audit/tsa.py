"""RFC 3161 time-stamping: ask a Time Stamping Authority to sign a digest, and check the tokens it returned."""

from __future__ import annotations

import hashlib
import urllib.error
import urllib.request
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from pathlib import Path

from cryptography import x509
from rfc3161_client import (
    HashAlgorithm,
    PKIStatus,
    TimestampRequestBuilder,
    VerificationError,
    VerifierBuilder,
    decode_timestamp_response,
)

from app.core.errors import BatchlineError


class TimestampError(BatchlineError):
    """The TSA could not be reached or answered something unusable (the anchor job retries)."""

    status_code = 502


@dataclass(frozen=True)
class Timestamp:
    """A granted time-stamp: the DER response as the TSA sent it, with the fields we index."""

    token: bytes
    gen_time: datetime
    serial: str


def request_timestamp(url: str, message: bytes, *, timeout_s: float = 10.0) -> Timestamp:
    """Have the TSA at `url` time-stamp SHA-256(message); check the answer before returning it."""
    if not url.startswith(("http://", "https://")):
        raise TimestampError(f"TSA_URL must be an http(s) URL, got {url!r}")
    query = TimestampRequestBuilder().data(message).hash_algorithm(HashAlgorithm.SHA256).build()
    request = urllib.request.Request(  # noqa: S310 (scheme checked above)
        url, data=query.as_bytes(), method="POST",
        headers={"Content-Type": "application/timestamp-query", "Accept": "application/timestamp-reply"},
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as answer:  # noqa: S310 (scheme checked above)
            body = answer.read()
    except (urllib.error.URLError, TimeoutError, OSError) as exc:
        raise TimestampError(f"time stamping authority at {url} did not answer: {exc}") from exc
    try:
        response = decode_timestamp_response(body)
    except ValueError as exc:
        raise TimestampError(f"time stamping authority at {url} sent something that is not a TSA reply") from exc
    if PKIStatus(response.status) not in (PKIStatus.GRANTED, PKIStatus.GRANTED_WITH_MODS):
        raise TimestampError(f"time stamping authority refused the request: {response.status_string}")
    if response.tst_info.message_imprint.message != hashlib.sha256(message).digest():
        raise TimestampError("time stamping authority signed a different digest than the one asked for")
    if query.nonce is not None and response.tst_info.nonce != query.nonce:
        raise TimestampError("time stamping authority answered with the wrong nonce (replayed answer?)")
    return Timestamp(token=body, gen_time=response.tst_info.gen_time, serial=str(response.tst_info.serial_number))


@lru_cache(maxsize=8)
def _roots(ca_file: str) -> tuple[x509.Certificate, ...]:
    return tuple(x509.load_pem_x509_certificates(Path(ca_file).read_bytes()))


def check_timestamp(token: bytes, message: bytes, *, ca_file: str = "") -> str | None:
    """None if `token` time-stamps SHA-256(message) (signed by a TSA under `ca_file` when given), else why not."""
    try:
        response = decode_timestamp_response(token)
    except ValueError:
        return "the stored token is not a time-stamp reply"
    if response.tst_info.message_imprint.message != hashlib.sha256(message).digest():
        return "the time-stamp covers a different chain head"
    if not ca_file:
        return None
    builder = VerifierBuilder()
    for root in _roots(ca_file):
        builder = builder.add_root_certificate(root)
    try:
        builder.build().verify_message(response, message)
    except VerificationError as exc:
        return f"the time-stamp signature does not verify against TSA_CA_FILE: {exc}"
    return None
