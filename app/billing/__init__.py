"""Billing area: plans and entitlements, the trial, Stripe subscriptions and webhooks, read-only tenants.

Owns: plans loaded from `tenants/plans.json`, `Subscription` (public.subscriptions), `StripeEvent`
(public.stripe_events, each processed once), `UsageCounter` (metered usage per month), the Stripe adapter
(`app.billing.gateway`), the billing page and `POST /billing/webhook`.
Enforces plan limits for the areas that call `require_capacity` / `require_feature` in their services.
Does not own: what a read-only tenant may still do (that rule is enforced in `app.core.web`); the counting of
users, lines and sensors (accounts and plant register counters with `register_usage_counter`).
"""
