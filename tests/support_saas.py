"""Helpers of the sign-up, billing and API tests (real Redis workers, real mail files)."""

from __future__ import annotations

import email
import json
import re
from pathlib import Path
from typing import Any

from flask import Flask
from rq import SimpleWorker
from rq.serializers import JSONSerializer

from app.core.jobs import QUEUES, redis_connection

LINK_RE = re.compile(r"https?://[^\s]+/signup/verify/[A-Za-z0-9._-]+")


def run_jobs() -> None:
    """Run every queued job with a real RQ worker in burst mode."""
    SimpleWorker(list(QUEUES), connection=redis_connection(), serializer=JSONSerializer).work(burst=True)


def mails(directory: Path) -> list[email.message.Message]:
    """Messages the file mail backend wrote, oldest first."""
    if not directory.exists():
        return []
    return [email.message_from_bytes(p.read_bytes()) for p in sorted(directory.glob("*.eml"))]


def last_verification_link(directory: Path, to: str) -> str:
    """The verification link of the newest mail to `to`."""
    for msg in reversed(mails(directory)):
        if msg["To"] == to:
            match = LINK_RE.search(msg.get_payload(decode=True).decode())
            assert match, "no verification link in the mail"
            return match.group(0)
    raise AssertionError(f"no mail to {to}")


def use_small_plans(app: Flask, monkeypatch: Any, directory: Path, **starter: Any) -> None:
    """Billing on (no Stripe call needed) with the catalogue's Starter plan shrunk to `starter`'s limits."""
    from app.billing.plans import REPO_ROOT

    raw = json.loads((REPO_ROOT / "tenants" / "plans.json").read_text())
    raw["plans"]["starter"]["entitlements"].update(starter)
    plans = directory / "plans.json"
    plans.write_text(json.dumps(raw))
    monkeypatch.setitem(app.config, "PLANS_FILE", str(plans))
    monkeypatch.setitem(app.config, "STRIPE_SECRET_KEY", "sk_test_unused")
    monkeypatch.setitem(app.config, "STRIPE_WEBHOOK_SECRET", "whsec_unused")


def put_on_plan(tenant_id: int, plan: str) -> None:
    """Start the tenant's trial, or change the plan the trial is of (no Stripe call while trialing)."""
    from app.billing import services
    from app.core.tenancy import control_session

    with control_session() as session:
        sub = services.start_trial(session, tenant_id=tenant_id, plan=plan)
        if sub.plan != plan:
            services.change_plan(session, tenant_id=tenant_id, plan=plan, operation_id=f"op-test-{tenant_id}-{plan}")
