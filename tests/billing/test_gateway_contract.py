"""Contract of the two Stripe calls localstripe cannot serve (Checkout and Customer Portal sessions).

The official `stripe` library talks real HTTP to a loopback server that answers with responses in the shape
Stripe documents for these endpoints (tests/billing/recorded/, transcribed from Stripe's API reference; no
live Stripe account is reachable from here) and records what the library sent.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs

import pytest

from app.billing.gateway import StripeGateway, idempotency_key

RECORDED = Path(__file__).parent / "recorded"
ROUTES = {"/v1/checkout/sessions": "checkout_session.json", "/v1/billing_portal/sessions": "portal_session.json"}


@pytest.fixture
def recorded_stripe():
    seen: list[dict] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0)).decode()
            seen.append({"path": self.path, "headers": dict(self.headers), "form": parse_qs(body)})
            name = ROUTES.get(self.path)
            payload = (RECORDED / name).read_bytes() if name else b'{"error": {"message": "no route"}}'
            self.send_response(200 if name else 404)
            self.send_header("Content-Type", "application/json")
            self.send_header("Request-Id", "req_recorded")
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, *_args: object) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", seen
    finally:
        server.shutdown()
        server.server_close()


def test_checkout_session_request_and_response(recorded_stripe) -> None:
    base, seen = recorded_stripe
    gw = StripeGateway("sk_test_contract", api_base=base)
    key = idempotency_key("tenant", 42, "checkout", "op-123")
    made = gw.create_checkout_session(customer_id="cus_RecordedCustomer1", price="batchline-starter-2026",
                                      tenant_id=42, success_url="http://localhost/t/acme/billing?checkout=done",
                                      cancel_url="http://localhost/t/acme/billing", key=key)
    assert made["url"].startswith("https://checkout.stripe.com/")
    [request] = seen
    assert request["path"] == "/v1/checkout/sessions"
    assert request["headers"]["Idempotency-Key"] == "bl-tenant-42-checkout-op-123"
    form = request["form"]
    assert form["mode"] == ["subscription"] and form["client_reference_id"] == ["42"]
    assert form["line_items[0][price]"] == ["batchline-starter-2026"] and form["line_items[0][quantity]"] == ["1"]
    assert form["subscription_data[metadata][tenant_id]"] == ["42"]
    assert form["customer"] == ["cus_RecordedCustomer1"]


def test_portal_session_request_and_response(recorded_stripe) -> None:
    base, seen = recorded_stripe
    gw = StripeGateway("sk_test_contract", api_base=base)
    made = gw.create_portal_session(customer_id="cus_RecordedCustomer1", return_url="http://localhost/t/acme/billing",
                                    key="bl-tenant-42-portal-op-9")
    assert made["url"].startswith("https://billing.stripe.com/")
    [request] = seen
    assert request["path"] == "/v1/billing_portal/sessions"
    assert request["headers"]["Idempotency-Key"] == "bl-tenant-42-portal-op-9"
    assert request["form"] == {"customer": ["cus_RecordedCustomer1"], "return_url": ["http://localhost/t/acme/billing"]}


def test_recorded_responses_are_valid_json() -> None:
    for name in ROUTES.values():
        assert json.loads((RECORDED / name).read_text())["url"].startswith("https://")
