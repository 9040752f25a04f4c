"""Named permissions and the built-in roles that bundle them.

Every route declares one permission with `@requires(...)` (see `app.core.web`); `PUBLIC` and `MEMBER` are the
two pseudo-permissions for pages anyone / any member may open.
"""

from __future__ import annotations

from collections.abc import Iterable

PERMISSIONS: dict[str, str] = {
    "batches.read": "See batches and their records",
    "batches.plan": "Plan batches and release them to the floor",
    "batches.execute": "Execute batch steps and record data",
    "batches.verify": "Second-person verification of batch steps",
    "batches.override": "Supervisor override of a hard block (signed)",
    "batches.review": "Review batches by exception and disposition exceptions",
    "batches.release": "Release or reject batches",
    "recipes.read": "See master recipes",
    "recipes.author": "Author and change master recipes",
    "recipes.review": "Review master recipe versions",
    "recipes.approve": "Approve master recipe versions",
    "plant.read": "See sites, lines, equipment and sensors",
    "plant.manage": "Onboard and change sites, lines, equipment and sensors",
    "materials.read": "See materials, lots and genealogy",
    "materials.manage": "Receive lots and record movements",
    "materials.disposition": "Release or reject material lots",
    "deviations.manage": "Open and investigate deviations",
    "users.read": "See users, their memberships and roles",
    "users.manage": "Invite users, assign roles, deactivate",
    "audit.read": "Read the audit trail and security events",
    "jobs.read": "See background jobs and their failures",
    "settings.manage": "Change tenant settings and signature routes",
    "billing.manage": "Manage the subscription",
    "ingest": "Push sensor readings (the scope of sensor gateways)",
}

_ALL = frozenset(PERMISSIONS)
_READ = frozenset(p for p in PERMISSIONS if p.endswith(".read"))

BUILTIN_ROLES: dict[str, frozenset[str]] = {
    "Admin": _ALL,
    "Supervisor": _READ | {"batches.plan", "batches.execute", "batches.verify", "batches.override",
                           "materials.manage"},
    "Process Engineer": _READ | {"recipes.author", "recipes.review"},
    "Operator": frozenset({"batches.read", "batches.execute", "batches.verify", "recipes.read", "plant.read",
                           "materials.read"}),
    "QA": _READ | {"batches.review", "batches.release", "recipes.review", "recipes.approve",
                   "materials.disposition", "deviations.manage"},
    "Viewer": _READ - {"audit.read", "jobs.read"},
}


def changes_gmp_records(permissions: Iterable[str]) -> bool:
    """True when the permissions go beyond reading: such accounts get no "remember me" and strict timeouts."""
    return bool(frozenset(permissions) - _READ)


def permissions_of(roles: Iterable[str], custom: dict[str, Iterable[str]] | None = None) -> frozenset[str]:
    """Union of the permissions of the given role names (built-in or the tenant's custom roles)."""
    granted: set[str] = set()
    custom = custom or {}
    for role in roles:
        granted |= BUILTIN_ROLES.get(role, frozenset()) | frozenset(custom.get(role, ()))
    return frozenset(granted & _ALL)
