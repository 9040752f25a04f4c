"""localstripe, the stateful fake Stripe server, run for real on loopback; billing switched on against it."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest
import requests
import stripe

WEBHOOK_SECRET = "whsec_batchline_test_secret"
API_KEY = "sk_test_batchline"
# localstripe's own start() binds every interface; bind loopback only.
_SERVER = """
import sys
from aiohttp import web
from localstripe.server import app
web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), print=None)
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def localstripe_url() -> Iterator[str]:
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-c", _SERVER, str(port)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(100):
            try:
                requests.get(url + "/v1/customers", auth=(API_KEY, ""), timeout=1)
                break
            except requests.ConnectionError:
                time.sleep(0.1)
        else:
            raise RuntimeError("localstripe did not start")
        yield url
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.fixture
def billing_on(app, localstripe_url, monkeypatch) -> str:
    """Billing enabled, pointed at localstripe, with the catalogue's plans created there."""
    for key, value in {"STRIPE_SECRET_KEY": API_KEY, "STRIPE_API_BASE": localstripe_url,
                       "STRIPE_WEBHOOK_SECRET": WEBHOOK_SECRET, "STRIPE_PRICE_PARAM": "plan"}.items():
        monkeypatch.setitem(app.config, key, value)
    from app.billing.services import sync_plans

    sync_plans()
    return localstripe_url


@pytest.fixture
def stripe_client(localstripe_url) -> stripe.StripeClient:
    return stripe.StripeClient(API_KEY, base_addresses={"api": localstripe_url})  # type: ignore[arg-type]


def signed(event: dict, *, secret: str = WEBHOOK_SECRET, timestamp: int | None = None) -> tuple[bytes, str]:
    """Payload and `Stripe-Signature` header made with Stripe's real signing scheme."""
    payload = json.dumps(event).encode()
    ts = int(time.time()) if timestamp is None else timestamp
    signature = stripe.WebhookSignature._compute_signature(f"{ts}.{payload.decode()}", secret)
    return payload, f"t={ts},v1={signature}"
