"""Plans and entitlements, loaded from `tenants/plans.json` (data, not code)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from flask import Flask, current_app

from app.core.errors import ConfigurationError, ValidationError

REPO_ROOT = Path(__file__).resolve().parents[2]
#: Entitlements every plan defines; numbers are limits (None = unlimited), booleans are features.
ENTITLEMENTS = ("users", "lines", "sensors", "readings_per_month", "validation_report", "sso")
LOCAL_PLAN = "local"


@dataclass(frozen=True)
class Plan:
    """One plan: its price and what it entitles a tenant to."""

    key: str
    name: str
    amount_cents: int
    stripe_price: str | None
    entitlements: dict[str, Any]

    def limit(self, entitlement: str) -> int | None:
        """The numeric limit of an entitlement (None: unlimited)."""
        value = self.entitlements.get(entitlement)
        return None if value is None or isinstance(value, bool) else int(value)

    def allows(self, feature: str) -> bool:
        """Whether a feature entitlement (validation_report, sso) is included."""
        return bool(self.entitlements.get(feature))


@dataclass(frozen=True)
class Catalogue:
    """Every sellable plan plus the local unlimited plan, and the trial/grace settings."""

    plans: dict[str, Plan]
    local: Plan
    trial_days: int
    grace_days: int
    default_plan: str
    currency: str

    def get(self, key: str) -> Plan:
        """Return a plan by key (the local plan included)."""
        if key == LOCAL_PLAN:
            return self.local
        try:
            return self.plans[key]
        except KeyError:
            raise ValidationError(f"unknown plan {key!r}: choose one of {', '.join(self.plans)}") from None

    def by_stripe_price(self, price_id: str) -> Plan | None:
        """The plan sold under a Stripe price/plan id."""
        return next((p for p in self.plans.values() if p.stripe_price == price_id), None)


def _plan(key: str, raw: dict[str, Any]) -> Plan:
    missing = [e for e in ENTITLEMENTS if e not in raw.get("entitlements", {})]
    if missing:
        raise ConfigurationError(f"plan {key!r} lacks entitlements {missing}")
    return Plan(key=key, name=raw["name"], amount_cents=int(raw.get("amount_cents", 0)),
                stripe_price=raw.get("stripe_price"), entitlements=dict(raw["entitlements"]))


@lru_cache(maxsize=8)
def _load(path: str) -> Catalogue:
    raw = json.loads(Path(path).read_text())
    plans = {key: _plan(key, value) for key, value in raw["plans"].items()}
    if raw.get("default_plan") not in plans:
        raise ConfigurationError(f"{path}: default_plan must be one of {list(plans)}")
    return Catalogue(plans=plans, local=_plan(LOCAL_PLAN, raw["local"]), trial_days=int(raw.get("trial_days", 14)),
                     grace_days=int(raw.get("grace_days", 7)), default_plan=raw["default_plan"],
                     currency=raw.get("currency", "eur"))


def catalogue(app: Flask | None = None) -> Catalogue:
    """The plan catalogue of this deployment (PLANS_FILE, else tenants/plans.json)."""
    app = app or current_app
    return _load(app.config.get("PLANS_FILE") or str(REPO_ROOT / "tenants" / "plans.json"))
