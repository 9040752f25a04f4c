"""The Stripe adapter: every call Batchline makes to Stripe, through the official `stripe` library.

One `StripeClient` per deployment setting (`STRIPE_SECRET_KEY`, `STRIPE_API_BASE`); nothing touches the
module-level globals of `stripe`. Every POST carries an idempotency key derived from our own operation ids,
so a retried request (network error, double click, job redelivery) never creates a second customer or
subscription. Results are plain dicts.

Checkout Sessions and Customer Portal sessions are the two calls localstripe cannot serve; they are
`create_checkout_session` and `create_portal_session` below, and their contract is tested against recorded
Stripe responses served over HTTP (tests/billing/test_gateway_contract.py).
"""

from __future__ import annotations

from typing import Any

import stripe
from flask import Flask, current_app

from app.core.errors import ConfigurationError


def idempotency_key(*parts: object) -> str:
    """An idempotency key built from our own operation ids (Stripe keeps keys 24 hours)."""
    return "bl-" + "-".join(str(p) for p in parts)


class StripeGateway:
    """Typed wrapper over `stripe.StripeClient` for the calls billing needs."""

    def __init__(self, api_key: str, *, api_base: str = "", price_param: str = "price") -> None:
        if not api_key:
            raise ConfigurationError("billing is off: set STRIPE_SECRET_KEY")
        base = {"api": api_base.rstrip("/")} if api_base else None
        # Retries are safe: every POST below carries an idempotency key.
        self.client = stripe.StripeClient(api_key, base_addresses=base, max_network_retries=2)  # type: ignore[arg-type]
        self.price_param = price_param

    @staticmethod
    def _opts(key: str) -> dict[str, Any]:
        return {"idempotency_key": key}

    def ensure_plan(self, *, plan_id: str, name: str, amount_cents: int, currency: str, key: str) -> dict[str, Any]:
        """Create the Stripe product and plan of one of our plans unless it exists (ids are ours)."""
        try:
            return self.client.v1.plans.retrieve(plan_id).to_dict()
        except stripe.InvalidRequestError as exc:
            if exc.http_status != 404:
                raise
        product = self.client.v1.products.create(params={"name": f"Batchline {name}"},  # type: ignore[typeddict-item]
                                                 options=self._opts(key + "-product"))
        return self.client.v1.plans.create(
            params={"id": plan_id, "product": product.id, "amount": amount_cents, "currency": currency,
                    "interval": "month"},
            options=self._opts(key + "-plan"),
        ).to_dict()

    def create_customer(self, *, email: str, name: str, tenant_id: int, key: str) -> dict[str, Any]:
        """Create the Stripe customer of a tenant."""
        return self.client.v1.customers.create(
            params={"email": email, "name": name, "metadata": {"tenant_id": str(tenant_id)}},
            options=self._opts(key),
        ).to_dict()

    def set_default_payment_method(self, *, customer_id: str, payment_method: str, key: str) -> None:
        """Attach a payment method (collected by Stripe) and make it the customer's default."""
        self.client.v1.payment_methods.attach(payment_method, params={"customer": customer_id},
                                              options=self._opts(key + "-attach"))
        self.client.v1.customers.update(
            customer_id, params={"invoice_settings": {"default_payment_method": payment_method}},
            options=self._opts(key + "-default"))

    def create_subscription(self, *, customer_id: str, price: str, tenant_id: int, key: str) -> dict[str, Any]:
        """Subscribe a customer to one price."""
        return self.client.v1.subscriptions.create(
            params={"customer": customer_id, "items": [{self.price_param: price}],  # type: ignore[misc]
                    "metadata": {"tenant_id": str(tenant_id)}},
            options=self._opts(key),
        ).to_dict()

    def change_price(self, *, subscription_id: str, price: str, key: str) -> dict[str, Any]:
        """Move a subscription's single item to another price (upgrade or downgrade, prorated)."""
        current = self.retrieve_subscription(subscription_id)
        item_id = current["items"]["data"][0]["id"]
        return self.client.v1.subscriptions.update(
            subscription_id,
            # Stripe prorates by default (`create_prorations`); not naming it keeps localstripe compatible.
            params={"items": [{"id": item_id, self.price_param: price}]},  # type: ignore[misc]
            options=self._opts(key),
        ).to_dict()

    def cancel(self, *, subscription_id: str, at_period_end: bool, key: str) -> dict[str, Any]:
        """Cancel now, or at the end of the paid period."""
        if at_period_end:
            return self.client.v1.subscriptions.update(
                subscription_id, params={"cancel_at_period_end": True}, options=self._opts(key)).to_dict()
        return self.client.v1.subscriptions.cancel(subscription_id, options=self._opts(key)).to_dict()

    def retrieve_subscription(self, subscription_id: str) -> dict[str, Any]:
        """The current state of a subscription (webhooks re-fetch it: events may arrive out of order)."""
        return self.client.v1.subscriptions.retrieve(subscription_id).to_dict()

    def upcoming_invoice(self, *, customer_id: str, subscription_id: str) -> dict[str, Any] | None:
        """Preview of the next invoice, or None when Stripe has none to show."""
        try:
            return self.client.v1.invoices.create_preview(
                params={"customer": customer_id, "subscription": subscription_id}).to_dict()
        except stripe.InvalidRequestError:
            return None

    def create_checkout_session(self, *, customer_id: str, price: str, tenant_id: int, success_url: str,
                                cancel_url: str, key: str) -> dict[str, Any]:
        """A Stripe-hosted Checkout page that collects the card and starts the subscription."""
        return self.client.v1.checkout.sessions.create(
            params={"mode": "subscription", "customer": customer_id, "client_reference_id": str(tenant_id),
                    "line_items": [{"price": price, "quantity": 1}],
                    "subscription_data": {"metadata": {"tenant_id": str(tenant_id)}},
                    "success_url": success_url, "cancel_url": cancel_url},
            options=self._opts(key),
        ).to_dict()

    def create_portal_session(self, *, customer_id: str, return_url: str, key: str) -> dict[str, Any]:
        """A Stripe Customer Portal session (cards, invoices, cancellation)."""
        return self.client.v1.billing_portal.sessions.create(
            params={"customer": customer_id, "return_url": return_url}, options=self._opts(key)).to_dict()


def gateway(app: Flask | None = None) -> StripeGateway:
    """The deployment's Stripe adapter (raises when billing is off)."""
    app = app or current_app
    return StripeGateway(app.config.get("STRIPE_SECRET_KEY") or "", api_base=app.config.get("STRIPE_API_BASE") or "",
                         price_param=app.config.get("STRIPE_PRICE_PARAM") or "price")


def billing_enabled(app: Flask | None = None) -> bool:
    """Billing is on only when a Stripe secret key is configured (the embedded default has none)."""
    return bool((app or current_app).config.get("STRIPE_SECRET_KEY"))
