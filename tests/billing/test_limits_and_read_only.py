"""Plans and limits, trials, and read-only tenants: readable and exportable, no new work."""

from __future__ import annotations

import json
import re

import pytest
from sqlalchemy import func, update

from app.billing import services
from app.billing.models import Subscription
from app.billing.plans import REPO_ROOT, catalogue
from app.core.errors import PaymentRequired
from app.core.tenancy import control_session
from app.core.web import write_refused_in_read_only
from app.tenancy.models import Tenant
from tests.conftest import csrf_token, sign_in


@pytest.fixture
def billing_keys(app, monkeypatch) -> None:
    """Billing on (no Stripe call is made by these tests)."""
    monkeypatch.setitem(app.config, "STRIPE_SECRET_KEY", "sk_test_unused")
    monkeypatch.setitem(app.config, "STRIPE_WEBHOOK_SECRET", "whsec_unused")


def test_without_stripe_every_tenant_is_unlimited(app, make_tenant) -> None:
    tenant = make_tenant()
    with control_session() as session:
        sub = services.start_trial(session, tenant_id=tenant.ref.id, plan="starter")
        assert (sub.plan, sub.status, sub.trial_ends_at) == ("local", "local", None)
        services.require_capacity(session, tenant_id=tenant.ref.id, entitlement="users", adding=10_000)
        services.require_feature(session, tenant_id=tenant.ref.id, feature="sso")
        assert services.meter_usage(session, tenant_id=tenant.ref.id, metric="readings_per_month",
                                    amount=10**9).over_allowance == 0


def test_plans_are_data_with_entitlements() -> None:
    cat = catalogue()
    assert set(cat.plans) == {"starter", "growth", "scale"} and cat.trial_days == 14
    assert cat.get("starter").limit("users") == 10 and not cat.get("starter").allows("sso")
    assert cat.get("scale").allows("validation_report") and cat.local.limit("users") is None


def test_trial_on_the_chosen_plan_then_read_only_when_it_ends(app, billing_keys, make_tenant) -> None:
    tenant = make_tenant()
    with control_session() as session:
        sub = services.start_trial(session, tenant_id=tenant.ref.id, plan="growth")
        assert sub.status == "trialing" and sub.plan == "growth"
        assert 13.9 < (sub.trial_ends_at - services.now(session)).total_seconds() / 86400 <= 14
    with control_session() as session:
        assert tenant.ref.id not in services.enforce_deadlines(session)
        session.execute(update(Subscription).where(Subscription.tenant_id == tenant.ref.id)
                        .values(trial_ends_at=func.now()))
    with control_session() as session:
        assert tenant.ref.id in services.enforce_deadlines(session)
        assert session.get(Tenant, tenant.ref.id).status == "read_only"


def test_user_limit_bites_with_an_upgrade_path(app, billing_keys, make_tenant) -> None:
    tenant = make_tenant()
    with control_session() as session:
        services.start_trial(session, tenant_id=tenant.ref.id, plan="starter")
        services.require_capacity(session, tenant_id=tenant.ref.id, entitlement="users", adding=9)
        with pytest.raises(PaymentRequired, match=rf"This would add 10 users; your Starter plan includes 10 users "
                                                  rf"\(members plus open invitations\) and you have 1, so there is "
                                                  rf"room for 9: 1 too many\. Nothing was stored\. The Growth plan "
                                                  rf"includes 50\. Upgrade your plan at /t/{tenant.ref.slug}/billing"):
            services.require_capacity(session, tenant_id=tenant.ref.id, entitlement="users", adding=10)
        with pytest.raises(PaymentRequired, match="Single sign-on is not included in your Starter plan"):
            services.require_feature(session, tenant_id=tenant.ref.id, feature="sso")


def test_line_limit_uses_the_counter_an_area_registers(app, billing_keys, make_tenant, monkeypatch) -> None:
    tenant = make_tenant()
    monkeypatch.setitem(services.USAGE_COUNTERS, "lines",
                        services.UsageCounterFn(count=lambda session, tenant_id: 1, plane="control"))
    with control_session() as session:
        services.start_trial(session, tenant_id=tenant.ref.id, plan="starter")
        with pytest.raises(PaymentRequired, match="includes 1 lines; you have 1"):
            services.require_capacity(session, tenant_id=tenant.ref.id, entitlement="lines")


def test_ingestion_over_the_allowance_is_kept_and_flagged(app, billing_keys, make_tenant, tmp_path,
                                                          monkeypatch) -> None:
    raw = json.loads((REPO_ROOT / "tenants" / "plans.json").read_text())
    raw["plans"]["starter"]["entitlements"]["readings_per_month"] = 100
    plans = tmp_path / "plans.json"
    plans.write_text(json.dumps(raw))
    monkeypatch.setitem(app.config, "PLANS_FILE", str(plans))
    tenant = make_tenant()
    with control_session() as session:
        services.start_trial(session, tenant_id=tenant.ref.id, plan="starter")
        first = services.meter_usage(session, tenant_id=tenant.ref.id, metric="readings_per_month", amount=80)
        second = services.meter_usage(session, tenant_id=tenant.ref.id, metric="readings_per_month", amount=50)
        third = services.meter_usage(session, tenant_id=tenant.ref.id, metric="readings_per_month", amount=10)
    assert (first.used, first.over_allowance) == (80, 0)
    assert (second.used, second.over_allowance, second.allowance) == (130, 30, 100)
    assert (third.used, third.over_allowance) == (140, 10)  # every unit counted, none dropped


def _make_read_only(tenant_id: int) -> None:
    with control_session() as session:
        session.execute(update(Tenant).where(Tenant.id == tenant_id).values(status="read_only"))


def test_read_only_tenant_reads_but_refuses_writes(app, client, billing_keys, make_tenant) -> None:
    tenant = make_tenant()
    with control_session() as session:
        services.start_trial(session, tenant_id=tenant.ref.id, plan="starter")
    _make_read_only(tenant.ref.id)
    assert sign_in(client, tenant.admin_email).status_code == 302
    home = client.get(f"/t/{tenant.ref.slug}/")
    assert home.status_code == 200 and "This workspace is read-only" in home.get_data(as_text=True)
    assert client.get(f"/t/{tenant.ref.slug}/admin/jobs").status_code == 200
    assert client.get(f"/t/{tenant.ref.slug}/billing").status_code == 200
    token = csrf_token(client, f"/t/{tenant.ref.slug}/billing")
    # Billing stays writable (the way out of read-only): the request reaches the billing service.
    allowed = client.post(f"/t/{tenant.ref.slug}/billing/plan",
                          data={"csrf_token": token, "plan": "growth", "operation_id": "op-read-only-1"})
    assert allowed.status_code == 302
    with control_session() as session:
        assert services.subscription_of(session, tenant.ref.id).plan == "growth"
    # So does issuing an API token: it is how the data gets exported.
    token = csrf_token(client, f"/t/{tenant.ref.slug}/settings/api")
    issued = client.post(f"/t/{tenant.ref.slug}/settings/api/tokens",
                         data={"csrf_token": token, "name": "export", "scopes": ["jobs.read", "settings.manage"]})
    assert issued.status_code == 201
    secret = re.search(r'id="issued-secret">([^<]+)<', issued.get_data(as_text=True)).group(1)
    auth = {"Authorization": f"Bearer {secret}"}
    assert client.get("/api/v1/jobs", headers=auth).status_code == 200  # reads and exports work
    refused = client.post("/api/v1/jobs/diagnostics", json={"check": "whoami"}, headers=auth)
    assert refused.status_code == 402 and "read-only" in refused.get_json()["detail"]


def test_every_other_tenant_write_is_refused_in_read_only(app) -> None:
    from app.core.web import SAFE_METHODS

    writes = [(rule, app.view_functions[rule.endpoint]) for rule in app.url_map.iter_rules()
              if rule.rule.startswith("/t/<tenant_slug>") and set(rule.methods or ()) - SAFE_METHODS]
    assert writes
    for rule, view in writes:
        escape = rule.endpoint.startswith(("billing.", "api_tokens."))
        assert write_refused_in_read_only(view, "read_only", "POST") is not escape, rule.rule
        assert not write_refused_in_read_only(view, "active", "POST")
