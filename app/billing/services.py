"""Billing state changes: trials, limits, metering, subscriptions through Stripe, webhook events.

Every function takes a control-plane session (`control_session`) and flushes; the caller commits.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from flask import Flask
from sqlalchemy import any_, select, text, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from app.accounts.models import Membership, User
from app.billing.gateway import billing_enabled, gateway, idempotency_key
from app.billing.models import StripeEvent, Subscription, UsageCounter
from app.billing.plans import LOCAL_PLAN, Plan, catalogue
from app.core.errors import ConfigurationError, Conflict, NotFound, PaymentRequired, ValidationError
from app.core.tenancy import control_session, tenant_transaction
from app.tenancy.models import Tenant

#: Stripe statuses (and our own trial_expired) that make a tenant read-only: data stays, new work stops.
READ_ONLY_STATUSES = frozenset({"canceled", "unpaid", "incomplete_expired", "trial_expired"})
#: Tenant statuses billing may switch between; `suspended` (an operator's decision) is never touched.
_BILLING_TENANT_STATUSES = ("active", "read_only")

#: What each limited entitlement is called in messages.
_NOUNS = {"users": "users (members plus open invitations)", "lines": "lines", "sensors": "sensors"}
#: Features in messages.
_FEATURES = {"validation_report": "The validation report", "sso": "Single sign-on"}


@dataclass(frozen=True)
class UsageCounterFn:
    """How an area counts one entitlement, and on which plane its rows live."""

    count: Callable[[Session, int], int]
    #: `tenant`: the counter gets a session inside the tenant's transaction (schema and role set);
    #: `control`: a control-plane session (`public`).
    plane: str


#: Counters of usage the owning areas register: entitlement -> counter (accounts: users; plant: lines, sensors).
USAGE_COUNTERS: dict[str, UsageCounterFn] = {}


def register_usage_counter(entitlement: str, counter: Callable[[Session, int], int], *,
                           plane: str = "tenant") -> None:
    """Let the area owning the data tell billing how many of something a tenant has: `counter(session, tenant_id)`.

    A `tenant` counter runs in the caller's tenant transaction when there is one, so it sees rows that
    transaction added and has not committed yet (an import's earlier rows), and rows a concurrent transaction
    committed after the capacity lock was taken.
    """
    if plane not in ("tenant", "control"):
        raise ValueError(f"plane must be 'tenant' or 'control', not {plane!r}")
    USAGE_COUNTERS[entitlement] = UsageCounterFn(count=counter, plane=plane)


def _in_tenant(session: Session) -> bool:
    """Whether `session` runs as a tenant's role (it cannot read `public`; see `tenant_transaction`)."""
    return "tenant" in session.info


def now(session: Session) -> datetime:
    """The database server's clock."""
    return session.execute(text("SELECT now()")).scalar_one()


def subscription_of(session: Session, tenant_id: int) -> Subscription | None:
    """The tenant's subscription row, if any."""
    return session.get(Subscription, tenant_id)


def plan_of(session: Session, tenant_id: int, *, app: Flask | None = None) -> Plan:
    """The plan in force: the local unlimited plan whenever billing is off."""
    cat = catalogue(app)
    if not billing_enabled(app):
        return cat.local
    sub = subscription_of(session, tenant_id)
    return cat.get(sub.plan) if sub is not None else cat.local


def start_trial(session: Session, *, tenant_id: int, plan: str) -> Subscription:
    """Put a new tenant on its plan: a trial when billing is on, the unlimited local plan when off."""
    cat = catalogue()
    existing = subscription_of(session, tenant_id)
    if existing is not None:
        return existing  # provisioning re-run: the trial started the first time
    moment = now(session)
    if billing_enabled():
        chosen = cat.get(plan)
        sub = Subscription(tenant_id=tenant_id, plan=chosen.key, status="trialing",
                           trial_ends_at=moment + timedelta(days=cat.trial_days), updated_at=moment)
    else:
        sub = Subscription(tenant_id=tenant_id, plan=LOCAL_PLAN, status="local", updated_at=moment)
    session.add(sub)
    session.flush()
    return sub


def _period(session: Session) -> str:
    return now(session).astimezone(UTC).strftime("%Y-%m")


def metered_this_month(session: Session, tenant_id: int, metric: str = "readings_per_month") -> tuple[int, int]:
    """(units counted this month, units of them beyond the allowance) of a metered entitlement (control plane)."""
    counter = session.get(UsageCounter, (tenant_id, metric, _period(session)))
    return (counter.used, counter.over_allowance) if counter else (0, 0)


def usage_of(session: Session, tenant_id: int, entitlement: str) -> int | None:
    """Current usage of a limited entitlement (None when no area counts it).

    `session` may be a control-plane session or a tenant session: a counter whose rows live on the other plane
    reads them in a short transaction of its own.
    """
    if entitlement == "readings_per_month":
        if _in_tenant(session):
            with control_session() as control:
                return metered_this_month(control, tenant_id)[0]
        return metered_this_month(session, tenant_id)[0]
    counter = USAGE_COUNTERS.get(entitlement)
    if counter is None:
        return None
    if counter.plane == "tenant" and not _in_tenant(session):
        with tenant_transaction(tenant_id) as tenant_session:
            return counter.count(tenant_session, tenant_id)
    if counter.plane == "control" and _in_tenant(session):
        with control_session() as control:
            return counter.count(control, tenant_id)
    return counter.count(session, tenant_id)


def _plan_and_slug(session: Session, tenant_id: int) -> tuple[Plan, str]:
    """The plan in force and the tenant's slug."""
    if not _in_tenant(session):
        return plan_of(session, tenant_id), _slug(session, tenant_id)
    # The tenant's role cannot read public.subscriptions: ask the control plane, once per tenant transaction
    # (a bulk import checks every row).
    cache = session.info.setdefault("billing_plan", {})
    if tenant_id not in cache:
        with control_session() as control:
            cache[tenant_id] = (plan_of(control, tenant_id), _slug(control, tenant_id))
    return cache[tenant_id]


def _slug(session: Session, tenant_id: int) -> str:
    return session.scalar(select(Tenant.slug).where(Tenant.id == tenant_id)) or str(tenant_id)


def billing_path(slug: str) -> str:
    """The tenant's billing page (where an administrator changes the plan)."""
    return f"/t/{slug}/billing"


def _roomier_plan(plan: Plan, entitlement: str, needed: int) -> Plan | None:
    """The cheapest plan of the catalogue that would hold `needed` (None if none does)."""
    fits = [p for p in catalogue().plans.values() if p.key != plan.key and
            (p.limit(entitlement) is None or p.limit(entitlement) >= needed)]  # type: ignore[operator]
    return min(fits, key=lambda p: p.amount_cents, default=None)


def require_capacity(session: Session, *, tenant_id: int, entitlement: str, adding: int = 1) -> None:
    """Refuse (402, with the upgrade path) an addition the plan does not allow; nothing is stored on refusal.

    Call it in the transaction that stores the addition, before storing it: a control-plane session for users,
    the tenant session for lines and sensors. Checks of one tenant and entitlement are serialised by a
    transaction-scoped advisory lock, so two concurrent additions cannot both take the last place.
    With billing off (the local plan) nothing is counted and nothing is locked.
    """
    if not billing_enabled():
        return
    plan, slug = _plan_and_slug(session, tenant_id)
    limit = plan.limit(entitlement)
    if limit is None:
        return
    if entitlement not in USAGE_COUNTERS:
        raise ConfigurationError(f"no area counts {entitlement!r}: the limit cannot be enforced")
    session.execute(text("SELECT pg_advisory_xact_lock(:t, hashtext(:k))"),
                    {"t": tenant_id, "k": f"billing.capacity:{entitlement}"})
    used = usage_of(session, tenant_id, entitlement) or 0
    if used + adding <= limit:
        return
    noun = _NOUNS.get(entitlement, entitlement.replace("_", " "))
    if adding == 1:
        said = f"Your {plan.name} plan includes {limit} {noun}; you have {used}."
    else:
        room = max(limit - used, 0)
        said = (f"This would add {adding} {entitlement}; your {plan.name} plan includes {limit} {noun} and you "
                f"have {used}, so there is room for {room}: {used + adding - limit} too many. Nothing was stored.")
    better = _roomier_plan(plan, entitlement, used + adding)
    offer = f"The {better.name} plan includes {better.limit(entitlement) or 'unlimited'}. " if better else ""
    raise PaymentRequired(f"{said} {offer}Upgrade your plan at {billing_path(slug)} to add more.",
                          upgrade_url=billing_path(slug), entitlement=entitlement, limit=limit, used=used,
                          adding=adding)


def require_feature(session: Session, *, tenant_id: int, feature: str) -> None:
    """Refuse (402, with the upgrade path) a feature (validation_report, sso) the plan does not include."""
    if not billing_enabled():
        return
    plan, slug = _plan_and_slug(session, tenant_id)
    if plan.allows(feature):
        return
    with_it = [p.name for p in sorted(catalogue().plans.values(), key=lambda p: p.amount_cents) if p.allows(feature)]
    offer = f" It is part of the {' and '.join(with_it)} plan{'s' if len(with_it) > 1 else ''}." if with_it else ""
    raise PaymentRequired(f"{_FEATURES.get(feature, feature.replace('_', ' ').capitalize())} is not included in "
                          f"your {plan.name} plan.{offer} Upgrade at {billing_path(slug)}.",
                          upgrade_url=billing_path(slug), feature=feature)


@dataclass(frozen=True)
class MeterResult:
    """What metering did: everything is kept; `over_allowance` units are beyond the plan and flagged."""

    used: int
    allowance: int | None
    over_allowance: int


def meter_usage(session: Session, *, tenant_id: int, metric: str, amount: int) -> MeterResult:
    """Count usage (e.g. readings ingested) for this month; never refuse: report how much is over the plan."""
    if amount < 0:
        raise ValidationError("usage cannot be negative")
    allowance = plan_of(session, tenant_id).limit(metric)
    period = _period(session)
    # One atomic upsert: concurrent ingest jobs never lose a count.
    used = session.execute(
        insert(UsageCounter).values(tenant_id=tenant_id, metric=metric, period=period, used=amount, over_allowance=0)
        .on_conflict_do_update(index_elements=["tenant_id", "metric", "period"],
                               set_={"used": UsageCounter.used + amount})
        .returning(UsageCounter.used)
    ).scalar_one()
    over = 0 if allowance is None else max(0, min(amount, used - allowance))
    if over:
        session.execute(update(UsageCounter).where(
            UsageCounter.tenant_id == tenant_id, UsageCounter.metric == metric, UsageCounter.period == period,
        ).values(over_allowance=UsageCounter.over_allowance + over))
    return MeterResult(used=used, allowance=allowance, over_allowance=over)


# --- Stripe -----------------------------------------------------------------------------------------------


def _require_billing() -> None:
    if not billing_enabled():
        raise Conflict("billing is off in this deployment (no STRIPE_SECRET_KEY): every tenant has the local plan")


def _admin_contact(session: Session, tenant_id: int) -> tuple[str, str]:
    row = session.execute(
        select(User.email, Tenant.name).join(Membership, Membership.user_id == User.id)
        .join(Tenant, Tenant.id == Membership.tenant_id)
        .where(Membership.tenant_id == tenant_id, any_(Membership.roles) == "Admin")
        .order_by(Membership.id).limit(1)
    ).first()
    if row is None:
        raise NotFound(f"tenant {tenant_id} has no admin to bill")
    return row.email, row.name


def ensure_customer(session: Session, *, tenant_id: int) -> Subscription:
    """Create the tenant's Stripe customer once (idempotency key: the tenant id)."""
    _require_billing()
    sub = subscription_of(session, tenant_id) or start_trial(session, tenant_id=tenant_id,
                                                              plan=catalogue().default_plan)
    if sub.stripe_customer_id is None:
        email, name = _admin_contact(session, tenant_id)
        customer = gateway().create_customer(email=email, name=name, tenant_id=tenant_id,
                                             key=idempotency_key("tenant", tenant_id, "customer"))
        sub.stripe_customer_id = customer["id"]
        session.flush()
    return sub


def _customer_id(sub: Subscription) -> str:
    if sub.stripe_customer_id is None:  # ensure_customer always sets it; this guards against misuse
        raise Conflict("the tenant has no Stripe customer yet")
    return sub.stripe_customer_id


def _price(plan_key: str) -> str:
    plan = catalogue().get(plan_key)
    if not plan.stripe_price:
        raise ValidationError(f"plan {plan_key!r} cannot be bought (no stripe_price in the plan catalogue)")
    return plan.stripe_price


def subscribe(session: Session, *, tenant_id: int, plan: str, operation_id: str,
              payment_method: str | None = None) -> Subscription:
    """Start a paid subscription directly (payment method collected by Stripe); Checkout is the UI path."""
    sub = ensure_customer(session, tenant_id=tenant_id)
    if sub.stripe_subscription_id and sub.status not in READ_ONLY_STATUSES:
        raise Conflict("this tenant already has a subscription: change its plan instead")
    if payment_method:
        gateway().set_default_payment_method(customer_id=_customer_id(sub), payment_method=payment_method,
                                             key=idempotency_key("tenant", tenant_id, "pm", operation_id))
    created = gateway().create_subscription(customer_id=_customer_id(sub), price=_price(plan),
                                            tenant_id=tenant_id,
                                            key=idempotency_key("tenant", tenant_id, "subscribe", operation_id))
    sub.stripe_subscription_id = created["id"]
    return sync_subscription(session, stripe_sub=created, tenant_hint=tenant_id) or sub


def checkout_url(session: Session, *, tenant_id: int, plan: str, operation_id: str, success_url: str,
                 cancel_url: str) -> str:
    """A Stripe Checkout page for this tenant and plan (the card never touches our servers)."""
    sub = ensure_customer(session, tenant_id=tenant_id)
    made = gateway().create_checkout_session(
        customer_id=_customer_id(sub), price=_price(plan), tenant_id=tenant_id, success_url=success_url,
        cancel_url=cancel_url, key=idempotency_key("tenant", tenant_id, "checkout", operation_id))
    return str(made["url"])


def portal_url(session: Session, *, tenant_id: int, return_url: str, operation_id: str) -> str:
    """A Stripe Customer Portal page (cards, invoices) for the tenant."""
    sub = ensure_customer(session, tenant_id=tenant_id)
    made = gateway().create_portal_session(customer_id=_customer_id(sub), return_url=return_url,
                                           key=idempotency_key("tenant", tenant_id, "portal", operation_id))
    return str(made["url"])


#: Features that hold state a downgrade would strand: feature -> fn(session, tenant_id) -> whether it is in use.
FEATURES_IN_USE: dict[str, Callable[[Session, int], bool]] = {}


def _over_limits(session: Session, tenant_id: int, plan: Plan) -> list[str]:
    problems = []
    for entitlement in ("users", "lines", "sensors"):
        limit, used = plan.limit(entitlement), usage_of(session, tenant_id, entitlement)
        if limit is not None and used is not None and used > limit:
            problems.append(f"{used} {entitlement} (the {plan.name} plan allows {limit})")
    for feature, in_use in FEATURES_IN_USE.items():
        if not plan.allows(feature) and in_use(session, tenant_id):
            problems.append(f"{_FEATURES.get(feature, feature).lower()} switched on (the {plan.name} plan "
                            "does not include it)")
    return problems


def change_plan(session: Session, *, tenant_id: int, plan: str, operation_id: str) -> Subscription:
    """Upgrade or downgrade; a downgrade below current usage is refused with what to remove first."""
    _require_billing()
    target = catalogue().get(plan)
    sub = subscription_of(session, tenant_id)
    problems = _over_limits(session, tenant_id, target)
    if problems:
        raise Conflict(f"cannot move to {target.name}: you have {', '.join(problems)}. "
                       "Deactivate members, withdraw invitations or switch the feature off first, or choose a "
                       "larger plan.")
    if sub is None or not sub.stripe_subscription_id:
        if sub is not None and sub.status == "trialing":
            sub.plan = target.key  # still in the trial: just change what the trial is of
            sub.updated_at = now(session)
            session.flush()
            return sub
        raise Conflict("no subscription yet: subscribe first")
    changed = gateway().change_price(subscription_id=sub.stripe_subscription_id, price=_price(plan),
                                     key=idempotency_key("tenant", tenant_id, "change", operation_id))
    return sync_subscription(session, stripe_sub=changed, tenant_hint=tenant_id) or sub


def cancel_subscription(session: Session, *, tenant_id: int, operation_id: str, at_period_end: bool = True
                        ) -> Subscription:
    """Cancel (by default at the end of the paid period); the tenant turns read-only, never deleted."""
    _require_billing()
    sub = subscription_of(session, tenant_id)
    if sub is None or not sub.stripe_subscription_id:
        raise Conflict("there is no paid subscription to cancel")
    canceled = gateway().cancel(subscription_id=sub.stripe_subscription_id, at_period_end=at_period_end,
                                key=idempotency_key("tenant", tenant_id, "cancel", operation_id))
    return sync_subscription(session, stripe_sub=canceled, tenant_hint=tenant_id) or sub


def _ts(value: Any) -> datetime | None:
    return datetime.fromtimestamp(int(value), UTC) if value else None


def _price_id(stripe_sub: dict[str, Any]) -> str | None:
    items = (stripe_sub.get("items") or {}).get("data") or []
    if not items:
        return None
    item = items[0]
    return ((item.get("price") or {}).get("id")) or ((item.get("plan") or {}).get("id"))


def _period_end(stripe_sub: dict[str, Any]) -> datetime | None:
    # Newer API versions moved current_period_end from the subscription onto its items.
    items = (stripe_sub.get("items") or {}).get("data") or [{}]
    return _ts(stripe_sub.get("current_period_end") or items[0].get("current_period_end"))


def _apply_tenant_status(session: Session, sub: Subscription, moment: datetime) -> None:
    read_only = sub.status in READ_ONLY_STATUSES or (
        sub.status == "past_due" and sub.grace_until is not None and sub.grace_until <= moment)
    session.execute(
        update(Tenant).where(Tenant.id == sub.tenant_id, Tenant.status.in_(_BILLING_TENANT_STATUSES))
        .values(status="read_only" if read_only else "active")
    )


def sync_subscription(session: Session, *, stripe_sub: dict[str, Any], tenant_hint: int | None = None
                      ) -> Subscription | None:
    """Mirror Stripe's *current* subscription state onto the tenant (order of events does not matter)."""
    metadata = stripe_sub.get("metadata") or {}
    tenant_id = int(metadata["tenant_id"]) if metadata.get("tenant_id") else tenant_hint
    if tenant_id is None:
        tenant_id = session.scalar(select(Subscription.tenant_id).where(
            (Subscription.stripe_subscription_id == stripe_sub["id"])
            | (Subscription.stripe_customer_id == stripe_sub.get("customer"))))
    if tenant_id is None:
        return None
    sub = subscription_of(session, tenant_id)
    moment = now(session)
    if sub is None:
        sub = Subscription(tenant_id=tenant_id, plan=catalogue().default_plan, status="incomplete")
        session.add(sub)
    elif (sub.stripe_subscription_id and sub.stripe_subscription_id != stripe_sub["id"]
          and sub.status not in READ_ONLY_STATUSES and stripe_sub.get("status") in READ_ONLY_STATUSES):
        return sub  # a stale, ended subscription must not override the live one
    plan = catalogue().by_stripe_price(_price_id(stripe_sub) or "")
    if plan is not None:
        sub.plan = plan.key
    sub.stripe_subscription_id = stripe_sub["id"]
    sub.stripe_customer_id = stripe_sub.get("customer") or sub.stripe_customer_id
    sub.status = str(stripe_sub.get("status") or "incomplete")
    sub.current_period_end = _period_end(stripe_sub)
    sub.cancel_at_period_end = bool(stripe_sub.get("cancel_at_period_end"))
    if sub.status == "past_due":
        sub.grace_until = sub.grace_until or moment + timedelta(days=catalogue().grace_days)
    else:
        sub.grace_until = None
    if sub.status in ("active", "trialing"):
        sub.trial_ends_at = _ts(stripe_sub.get("trial_end"))
    sub.synced_at = sub.updated_at = moment
    session.flush()
    _apply_tenant_status(session, sub, moment)
    return sub


def record_stripe_event(session: Session, *, payload: bytes) -> tuple[str, bool]:
    """Store a verified event once; return (event id, whether this delivery is the first)."""
    event = json.loads(payload)
    inserted = session.execute(
        insert(StripeEvent).values(id=event["id"], type=event["type"], payload=event,
                                   stripe_created=_ts(event.get("created")))
        .on_conflict_do_nothing(index_elements=["id"]).returning(StripeEvent.id)
    ).scalar_one_or_none()
    return event["id"], inserted is not None


def _subscription_id_of(event: dict[str, Any]) -> tuple[str | None, int | None]:
    obj = event["data"]["object"]
    kind = obj.get("object")
    if kind == "subscription":
        return obj["id"], None
    if kind == "invoice":
        parent = ((obj.get("parent") or {}).get("subscription_details") or {}).get("subscription")
        return obj.get("subscription") or parent, None
    if kind == "checkout.session":
        ref = obj.get("client_reference_id")
        return obj.get("subscription"), int(ref) if ref and str(ref).isdigit() else None
    return None, None


def process_stripe_event(session: Session, *, event_id: str, app: Flask | None = None) -> str:
    """Apply one stored event by re-fetching the subscription it concerns; a processed event is a no-op."""
    event = session.execute(select(StripeEvent).where(StripeEvent.id == event_id).with_for_update()).scalar_one()
    if event.processed_at is not None:
        return event.outcome or ""
    subscription_id, tenant_hint = _subscription_id_of(event.payload)
    if subscription_id is None:
        outcome = f"ignored: {event.type} concerns no subscription"
    else:
        current = gateway(app).retrieve_subscription(subscription_id)
        sub = sync_subscription(session, stripe_sub=current, tenant_hint=tenant_hint)
        outcome = (f"tenant {sub.tenant_id} -> {sub.status} ({sub.plan})" if sub is not None
                   else f"ignored: subscription {subscription_id} belongs to no tenant")
    event.processed_at = now(session)
    event.outcome = outcome
    session.flush()
    return outcome


def enforce_deadlines(session: Session) -> list[int]:
    """Expire ended trials and past-due grace periods: those tenants turn read-only. Return their ids."""
    moment = now(session)
    changed: list[int] = []
    expired_trials = session.scalars(select(Subscription).where(
        Subscription.status == "trialing", Subscription.stripe_subscription_id.is_(None),
        Subscription.trial_ends_at <= moment)).all()
    for sub in expired_trials:
        sub.status, sub.updated_at = "trial_expired", moment
        changed.append(sub.tenant_id)
    lapsed = session.scalars(select(Subscription).where(
        Subscription.status == "past_due", Subscription.grace_until <= moment)).all()
    changed += [sub.tenant_id for sub in lapsed]
    session.flush()
    for sub in [*expired_trials, *lapsed]:
        _apply_tenant_status(session, sub, moment)
    return changed


def sync_plans(app: Flask | None = None) -> list[str]:
    """Create every plan of the catalogue in Stripe (idempotent); return the Stripe plan ids."""
    cat = catalogue(app)
    gw = gateway(app)
    made = []
    for plan in cat.plans.values():
        if plan.stripe_price:
            gw.ensure_plan(plan_id=plan.stripe_price, name=plan.name, amount_cents=plan.amount_cents,
                           currency=cat.currency, key=idempotency_key("plan", plan.stripe_price))
            made.append(plan.stripe_price)
    return made
