"""HTTP client of the ingest API for gateways: OAuth2 client credentials, retries, idempotent message ids.

Every bridge (MQTT, OPC UA, the simulator) forwards through `IngestClient.post`, the same path a third-party
gateway uses. A batch gets its `message_id` once, before the first attempt, so a retry after a lost answer is
accepted once by the server; the call returns only when the server has acknowledged (202) the payload.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import orjson
import requests

log = logging.getLogger(__name__)


class IngestRefused(Exception):
    """The server refused the payload (4xx other than an expired token): retrying the same bytes cannot help."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(f"ingest refused ({status}): {detail}")
        self.status, self.detail = status, detail


@dataclass
class Reading:
    """One reading to forward."""

    sensor: str
    ts: datetime
    value: float | None  # None only for a bad-quality reading without a number
    quality: str = "good"

    def as_json(self) -> dict[str, Any]:
        """Return the reading as the ingest API's JSON."""
        return {"sensor": self.sensor, "ts": self.ts.isoformat(), "value": self.value, "quality": self.quality}


@dataclass
class IngestClient:
    """Post readings to `POST /api/v1/ingest` with a client-credentials token, retrying until acknowledged."""

    base_url: str
    client_id: str
    client_secret: str
    timeout_s: float = 30.0
    #: Seconds between attempts while the server cannot be reached (the last value repeats).
    backoff_s: Sequence[float] = (0.5, 1, 2, 5, 10)
    #: Give up after this many attempts (None: keep trying; a bridge must not drop data).
    max_attempts: int | None = None
    sleep: Callable[[float], None] = time.sleep
    http: requests.Session = field(default_factory=requests.Session)
    _token: str | None = None
    _token_expires: float = 0.0

    def token(self) -> str:
        """Return a valid access token, fetching a new one when it is about to expire."""
        if self._token is None or time.monotonic() > self._token_expires - 30:
            answer = self.http.post(f"{self.base_url}/oauth/token", timeout=self.timeout_s,
                                    data={"grant_type": "client_credentials", "scope": "ingest"},
                                    auth=(self.client_id, self.client_secret))
            if answer.status_code != 200:
                raise IngestRefused(answer.status_code, answer.text[:500])
            doc = answer.json()
            self._token = doc["access_token"]
            self._token_expires = time.monotonic() + float(doc.get("expires_in", 3600))
        return self._token

    def post(self, readings: Sequence[Reading], *, message_id: str | None = None) -> dict[str, Any]:
        """Post one batch and return the server's status document once it acknowledged it."""
        message_id = message_id or f"{self.client_id}-{uuid.uuid4().hex}"
        return self.post_body(orjson.dumps({"readings": [r.as_json() for r in readings], "message_id": message_id}))

    def post_body(self, body: bytes) -> dict[str, Any]:
        """Post a JSON payload already serialised (with its message id) until the server acknowledges it."""
        attempt = 0
        while True:
            attempt += 1
            try:
                answer = self.http.post(f"{self.base_url}/api/v1/ingest", data=body, timeout=self.timeout_s,
                                        headers={"Authorization": f"Bearer {self.token()}",
                                                 "Content-Type": "application/json"})
            except requests.RequestException as exc:
                error = f"{type(exc).__name__}: {exc}"
            else:
                if answer.status_code == 202:
                    return answer.json()
                if answer.status_code == 401:
                    self._token = None  # expired or rotated: fetch a new one and try again
                    error = "token refused"
                elif answer.status_code == 429 or answer.status_code >= 500:
                    error = f"server answered {answer.status_code}"
                else:
                    raise IngestRefused(answer.status_code, answer.text[:500])
            if self.max_attempts is not None and attempt >= self.max_attempts:
                raise ConnectionError(f"ingest not acknowledged after {attempt} attempts: {error}")
            delay = self.backoff_s[min(attempt - 1, len(self.backoff_s) - 1)]
            log.warning("ingest attempt %d failed (%s); retrying in %ss", attempt, error, delay)
            self.sleep(delay)

    def status(self, ingest_id: int) -> dict[str, Any]:
        """Return the status document of an ingest."""
        answer = self.http.get(f"{self.base_url}/api/v1/ingest/{ingest_id}", timeout=self.timeout_s,
                               headers={"Authorization": f"Bearer {self.token()}"})
        answer.raise_for_status()
        return answer.json()
