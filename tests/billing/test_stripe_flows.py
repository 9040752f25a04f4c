"""Billing against localstripe over real HTTP: subscribe, change plan, payment failure, cancel, webhooks."""

from __future__ import annotations

import time

import pytest
from sqlalchemy import func, select

from app.accounts.models import Membership, User
from app.billing import services
from app.billing.models import StripeEvent
from app.core.errors import Conflict
from app.core.jobs import ControlOutboxMessage
from app.core.tenancy import control_session
from app.tenancy.models import Tenant
from tests.billing.conftest import signed
from tests.conftest import sign_in
from tests.support_saas import run_jobs


def _card(stripe_client, number: str) -> str:
    pm = stripe_client.v1.payment_methods.create(params={
        "type": "card", "card": {"number": number, "exp_month": 12, "exp_year": 2031, "cvc": "123"}})
    return pm.id


def _subscribed(make_tenant, stripe_client, plan: str = "starter"):
    tenant = make_tenant()
    with control_session() as session:
        services.start_trial(session, tenant_id=tenant.ref.id, plan=plan)
        sub = services.subscribe(session, tenant_id=tenant.ref.id, plan=plan, operation_id=f"op-{tenant.ref.id}",
                                 payment_method=_card(stripe_client, "4242424242424242"))
    return tenant, sub


def _events(stripe_client, *, type_: str, subscription_id: str) -> list[dict]:
    found = []
    for ev in stripe_client.v1.events.list(params={"type": type_, "limit": 100}).data:
        event = ev.to_dict()
        obj = event["data"]["object"]
        if subscription_id in (obj.get("id"), obj.get("subscription")):
            found.append(event)
    return found


def _deliver(client, event: dict):
    payload, header = signed(event)
    return client.post("/billing/webhook", data=payload, headers={"Stripe-Signature": header},
                       content_type="application/json")


def _tenant_status(tenant_id: int) -> str:
    with control_session() as session:
        return session.scalar(select(Tenant.status).where(Tenant.id == tenant_id))


def test_subscribe_creates_customer_and_subscription(billing_on, make_tenant, stripe_client) -> None:
    tenant, sub = _subscribed(make_tenant, stripe_client)
    assert sub.status == "active" and sub.plan == "starter"
    assert sub.stripe_customer_id.startswith("cus_") and sub.stripe_subscription_id.startswith("sub_")
    remote = stripe_client.v1.subscriptions.retrieve(sub.stripe_subscription_id).to_dict()
    assert remote["metadata"]["tenant_id"] == str(tenant.ref.id)
    assert remote["items"]["data"][0]["plan"]["id"] == "batchline-starter-2026"
    customer = stripe_client.v1.customers.retrieve(sub.stripe_customer_id).to_dict()
    assert customer["email"] == tenant.admin_email
    # A second subscribe is refused, not a second subscription.
    with control_session() as session, pytest.raises(Conflict, match="already has a subscription"):
        services.subscribe(session, tenant_id=tenant.ref.id, plan="growth", operation_id="op-again")


def test_upgrade_then_downgrade_below_usage_is_refused(billing_on, make_tenant, stripe_client) -> None:
    tenant, sub = _subscribed(make_tenant, stripe_client)
    with control_session() as session:
        changed = services.change_plan(session, tenant_id=tenant.ref.id, plan="growth", operation_id="up-1")
    assert changed.plan == "growth"
    remote = stripe_client.v1.subscriptions.retrieve(sub.stripe_subscription_id).to_dict()
    assert remote["items"]["data"][0]["plan"]["id"] == "batchline-growth-2026"
    with control_session() as session:  # 11 active members: more than Starter's 10 users
        for i in range(10):
            user = User(email=f"m{i}-{tenant.ref.id}@team.example.com", name=f"Member {i}", password_hash=None)
            session.add(user)
            session.flush()
            session.add(Membership(user_id=user.id, tenant_id=tenant.ref.id, roles=["Operator"]))
    with control_session() as session, pytest.raises(Conflict, match=r"11 users \(the Starter plan allows 10\)"):
        services.change_plan(session, tenant_id=tenant.ref.id, plan="starter", operation_id="down-1")
    remote = stripe_client.v1.subscriptions.retrieve(sub.stripe_subscription_id).to_dict()
    assert remote["items"]["data"][0]["plan"]["id"] == "batchline-growth-2026"  # nothing changed at Stripe


def _fail_next_payment(stripe_client, sub) -> dict:
    """Make Stripe (localstripe) fail a renewal charge; return the failed invoice.

    localstripe charges a subscription again only when its billing interval changes, so the test moves the
    subscription to a yearly price with a card whose charges are declined. localstripe then marks the
    subscription past_due but emits no `invoice.payment_failed` event for a declined card, so the test wraps
    localstripe's real invoice in the envelope Stripe sends.
    """
    bad = _card(stripe_client, "4000000000000341")  # attaches, then every charge is declined
    stripe_client.v1.payment_methods.attach(bad, params={"customer": sub.stripe_customer_id})
    stripe_client.v1.customers.update(sub.stripe_customer_id,
                                      params={"invoice_settings": {"default_payment_method": bad}})
    yearly = f"test-yearly-{sub.tenant_id}"
    product = stripe_client.v1.products.create(params={"name": "Yearly test"})
    stripe_client.v1.plans.create(params={"id": yearly, "product": product.id, "amount": 500000, "currency": "eur",
                                          "interval": "year"})
    current = stripe_client.v1.subscriptions.retrieve(sub.stripe_subscription_id).to_dict()
    stripe_client.v1.subscriptions.update(sub.stripe_subscription_id, params={
        "items": [{"id": current["items"]["data"][0]["id"], "plan": yearly}]})
    assert stripe_client.v1.subscriptions.retrieve(sub.stripe_subscription_id).status == "past_due"
    invoices = stripe_client.v1.invoices.list(params={"customer": sub.stripe_customer_id, "limit": 10}).to_dict()
    failed = [i for i in invoices["data"] if i["status"] == "open"]
    assert failed, invoices
    return {"id": f"evt_test_failed_{sub.tenant_id}", "object": "event", "type": "invoice.payment_failed",
            "created": int(time.time()), "data": {"object": failed[0]}}


def test_payment_failure_webhook_starts_grace_with_banner(app, billing_on, client, make_tenant,
                                                          stripe_client) -> None:
    tenant, sub = _subscribed(make_tenant, stripe_client)
    event = _fail_next_payment(stripe_client, sub)
    response = _deliver(client, event)
    assert response.status_code == 200 and response.get_json() == {"received": event["id"], "duplicate": False}
    run_jobs()
    with control_session() as session:
        mirrored = services.subscription_of(session, tenant.ref.id)
        stored = session.get(StripeEvent, event["id"])
    assert mirrored.status == "past_due" and mirrored.grace_until is not None
    assert stored.processed_at is not None and "past_due" in stored.outcome
    assert _tenant_status(tenant.ref.id) == "active"  # grace period: still working
    assert sign_in(client, tenant.admin_email).status_code == 302
    home = client.get(f"/t/{tenant.ref.slug}/").get_data(as_text=True)
    assert "Payment failed" in home and "read-only" in home

    # Grace over: the deadline sweep turns the tenant read-only.
    with control_session() as session:
        services.subscription_of(session, tenant.ref.id).grace_until = func.now()
    with control_session() as session:
        assert tenant.ref.id in services.enforce_deadlines(session)
    assert _tenant_status(tenant.ref.id) == "read_only"


def test_duplicate_delivery_is_processed_once(billing_on, client, make_tenant, stripe_client) -> None:
    _tenant, sub = _subscribed(make_tenant, stripe_client)
    [event] = _events(stripe_client, type_="customer.subscription.created", subscription_id=sub.stripe_subscription_id)
    first, second = _deliver(client, event), _deliver(client, event)
    assert first.get_json()["duplicate"] is False and second.get_json()["duplicate"] is True
    with control_session() as session:
        jobs = session.scalar(select(func.count()).select_from(ControlOutboxMessage).where(
            ControlOutboxMessage.kwargs["event_id"].astext == event["id"]))
    assert jobs == 1
    run_jobs()
    with control_session() as session:
        assert session.get(StripeEvent, event["id"]).outcome.endswith("-> active (starter)")


def test_out_of_order_delivery_ends_in_the_current_state(billing_on, client, make_tenant, stripe_client) -> None:
    tenant, sub = _subscribed(make_tenant, stripe_client)
    [created] = _events(stripe_client, type_="customer.subscription.created",
                        subscription_id=sub.stripe_subscription_id)
    stripe_client.v1.subscriptions.cancel(sub.stripe_subscription_id)  # canceled at Stripe (e.g. in the portal)
    [deleted] = _events(stripe_client, type_="customer.subscription.deleted",
                        subscription_id=sub.stripe_subscription_id)
    # The newer event arrives first, the older one after it.
    assert _deliver(client, deleted).status_code == 200
    run_jobs()
    assert _tenant_status(tenant.ref.id) == "read_only"
    assert _deliver(client, created).status_code == 200
    run_jobs()
    with control_session() as session:
        assert services.subscription_of(session, tenant.ref.id).status == "canceled"
    assert _tenant_status(tenant.ref.id) == "read_only"  # the stale "created" event did not revive it


def test_cancel_turns_tenant_read_only_never_deleted(billing_on, make_tenant, stripe_client) -> None:
    tenant, _sub = _subscribed(make_tenant, stripe_client)
    with control_session() as session:
        at_end = services.cancel_subscription(session, tenant_id=tenant.ref.id, operation_id="c1")
    assert at_end.cancel_at_period_end and at_end.status == "active"
    assert _tenant_status(tenant.ref.id) == "active"
    with control_session() as session:
        now = services.cancel_subscription(session, tenant_id=tenant.ref.id, operation_id="c2", at_period_end=False)
    assert now.status == "canceled"
    assert _tenant_status(tenant.ref.id) == "read_only"
    with control_session() as session:
        assert session.get(Tenant, tenant.ref.id) is not None


def test_resubscribing_reactivates_a_read_only_tenant(billing_on, make_tenant, stripe_client) -> None:
    tenant, _sub = _subscribed(make_tenant, stripe_client)
    with control_session() as session:
        services.cancel_subscription(session, tenant_id=tenant.ref.id, operation_id="c", at_period_end=False)
    assert _tenant_status(tenant.ref.id) == "read_only"
    with control_session() as session:
        again = services.subscribe(session, tenant_id=tenant.ref.id, plan="scale", operation_id="again")
    assert again.status == "active" and again.plan == "scale"
    assert _tenant_status(tenant.ref.id) == "active"


def test_webhook_refuses_bad_signatures_and_stores_nothing(billing_on, client) -> None:
    event = {"id": "evt_forged_1", "type": "customer.subscription.deleted", "created": int(time.time()),
             "data": {"object": {"object": "subscription", "id": "sub_x"}}}
    payload, header = signed(event, secret="whsec_someone_else")
    response = client.post("/billing/webhook", data=payload, headers={"Stripe-Signature": header},
                           content_type="application/json")
    assert response.status_code == 400 and response.mimetype == "application/problem+json"
    payload, header = signed(event, timestamp=int(time.time()) - 3600)  # replayed an hour later
    assert client.post("/billing/webhook", data=payload, headers={"Stripe-Signature": header}).status_code == 400
    with control_session() as session:
        assert session.get(StripeEvent, "evt_forged_1") is None


def test_event_for_an_unknown_subscription_is_recorded_and_ignored(billing_on, client, stripe_client) -> None:
    customer = stripe_client.v1.customers.create(params={"email": "nobody@elsewhere.example.com"})
    plan = "batchline-starter-2026"
    pm = _card(stripe_client, "4242424242424242")
    stripe_client.v1.payment_methods.attach(pm, params={"customer": customer.id})
    stripe_client.v1.customers.update(customer.id, params={"invoice_settings": {"default_payment_method": pm}})
    foreign = stripe_client.v1.subscriptions.create(params={"customer": customer.id, "items": [{"plan": plan}]})
    [event] = _events(stripe_client, type_="customer.subscription.created", subscription_id=foreign.id)
    assert _deliver(client, event).status_code == 200
    run_jobs()
    with control_session() as session:
        assert "belongs to no tenant" in session.get(StripeEvent, event["id"]).outcome


def test_webhook_is_off_without_stripe_keys(client) -> None:
    response = client.post("/billing/webhook", data=b"{}", headers={"Stripe-Signature": "t=1,v1=x"})
    assert response.status_code == 404 and "Billing is off" in response.get_json()["title"]


def test_webhooks_sent_and_signed_by_the_stripe_stand_in_are_processed(app, billing_on, make_tenant,
                                                                       stripe_client) -> None:
    """localstripe itself signs and POSTs its events to our endpoint served over real HTTP."""
    import requests

    from tests.billing.conftest import WEBHOOK_SECRET
    from tests.support import serve

    with serve(app) as base:
        requests.post(f"{billing_on}/_config/webhooks/batchline-test",
                      data={"url": f"{base}/billing/webhook", "secret": WEBHOOK_SECRET,
                            "events[]": ["customer.subscription.created", "customer.subscription.deleted"]},
                      timeout=10).raise_for_status()
        try:
            tenant, sub = _subscribed(make_tenant, stripe_client)
            stripe_client.v1.subscriptions.cancel(sub.stripe_subscription_id)
            deadline = time.monotonic() + 15  # localstripe delivers about a second after each event
            while time.monotonic() < deadline:
                with control_session() as session:
                    received = session.scalars(select(StripeEvent.type).where(
                        StripeEvent.payload["data"]["object"]["id"].astext == sub.stripe_subscription_id)).all()
                if {"customer.subscription.created", "customer.subscription.deleted"} <= set(received):
                    break
                time.sleep(0.2)
            else:
                raise AssertionError(f"localstripe's webhooks did not arrive: {received}")
        finally:  # point the stand-in somewhere harmless: later events must not reach a stopped server
            requests.post(f"{billing_on}/_config/webhooks/batchline-test",
                          data={"url": "http://127.0.0.1:9/", "secret": WEBHOOK_SECRET, "events[]": ["none"]},
                          timeout=10)
    run_jobs()
    with control_session() as session:
        assert services.subscription_of(session, tenant.ref.id).status == "canceled"
    assert _tenant_status(tenant.ref.id) == "read_only"
