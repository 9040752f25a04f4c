"""Tenant provisioning and decommissioning (owner connection, one transaction each).

Tenant defaults: `TENANT_DEFAULTS` lists, as ``"module:function"`` strings, the functions that seed a new
tenant's starting data (signature routes, meanings, settings...). `create_tenant` runs them in order, in the
provisioning transaction, right after the schema is built: each gets a `Session` on the new schema (as the
schema owner, attributed to the system in the audit trail) and must flush, never commit, and be idempotent.
If one fails, the whole provisioning rolls back, so a tenant never exists half-seeded. An area adds its
function to the list; data it needs ships under ``tenants/`` (e.g. ``tenants/defaults/signature_routes.json``).
Tenants that existed before a default was added get it from a tenant migration instead.
"""

from __future__ import annotations

import importlib
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import Connection, select, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app.accounts.models import Membership, User
from app.accounts.passwords import hash_password_in_background
from app.core.db import Database, quote_ident
from app.core.errors import Conflict, NotFound, ValidationError
from app.core.tenancy import SYSTEM_ACTOR, TenantRef, tenant_ref
from app.tenancy.models import Tenant
from app.tenancy.schema import build_tenant_schema, create_tenant_role

SLUG_RE = re.compile(r"^[a-z][a-z0-9-]{1,39}$")
RESERVED_SLUGS = frozenset({
    "admin", "api", "app", "apps", "assets", "auth", "billing", "docs", "health", "healthz", "help", "login",
    "logout", "mail", "oauth", "public", "readyz", "root", "signup", "sso", "static", "status", "support",
    "system", "t", "tenant", "tenants", "www",
})
#: Functions `fn(session) -> Any` seeding a new tenant's defaults, run in order inside the provisioning transaction.
TENANT_DEFAULTS: list[str] = [
    "app.esign.defaults:seed_default_routes",  # e.g. the recipe_version route: authored -> reviewed -> approved
]

EMAIL_RE = re.compile(r"^[^@\s]{1,64}@[A-Za-z0-9](?:[A-Za-z0-9-]{0,62}\.)+[A-Za-z]{2,63}$")


def validate_slug(slug: str) -> str:
    """Return the slug if it can name a tenant, else raise with a message a person can act on."""
    if not SLUG_RE.match(slug or ""):
        raise ValidationError(
            f"tenant slug {slug!r} is invalid: use 2-40 characters, lower-case letters, digits and '-', "
            "starting with a letter"
        )
    if slug.endswith("-") or "--" in slug:
        raise ValidationError(f"tenant slug {slug!r} is invalid: no trailing or doubled '-'")
    if slug in RESERVED_SLUGS:
        raise ValidationError(f"tenant slug {slug!r} is reserved; choose another")
    return slug


def validate_email(email: str) -> str:
    """Return the normalised (lower-case) email or raise."""
    email = (email or "").strip().lower()
    if len(email) > 254 or not EMAIL_RE.match(email):
        raise ValidationError(f"{email!r} is not a valid email address")
    return email


@dataclass(frozen=True)
class ProvisionedTenant:
    """What `create_tenant` made: the directory entry, the admin and (if generated) their password."""

    ref: TenantRef
    revision: str
    admin_email: str
    admin_password: str | None


def create_tenant(db: Database, *, slug: str, name: str, admin_email: str, admin_name: str = "",
                  admin_password: str | None = None, migrations_dir: str = "",
                  admin_password_hash: str | None = None, apply_defaults: bool = True) -> ProvisionedTenant:
    """Create the tenant's row, role, schema at head (with its defaults) and its first admin, in one transaction.

    `admin_password_hash` (an argon2id hash, e.g. from a verified sign-up) is used for a new account instead of
    hashing `admin_password`. `apply_defaults=False` builds a bare schema without the `TENANT_DEFAULTS` seed (tests
    of the platform mechanics that need an empty audit trail); every real tenant gets its defaults.
    """
    slug = validate_slug(slug)
    name = (name or "").strip()
    if not name or len(name) > 200:
        raise ValidationError("tenant name is required (at most 200 characters)")
    admin_email = validate_email(admin_email)
    generated = None
    with db.owner.connect() as conn, conn.begin():
        session = Session(bind=conn)
        if session.scalar(select(Tenant.id).where(Tenant.slug == slug)) is not None:
            raise Conflict(f"a tenant with slug {slug!r} already exists")
        tenant = Tenant(slug=slug, name=name, schema="pending", role="pending", status="provisioning")
        session.add(tenant)
        try:
            session.flush()
        except IntegrityError as exc:  # a concurrent sign-up took the slug between check and insert
            raise Conflict(f"a tenant with slug {slug!r} already exists") from exc
        ref = tenant_ref(tenant.id, db=db, slug=slug)
        tenant.schema, tenant.role = ref.schema, ref.role
        user = session.scalar(select(User).where(User.email == admin_email))
        password_hash = None
        if user is None and admin_password_hash is None:
            if admin_password is None:
                admin_password = generated = secrets.token_urlsafe(12)
            # The argon2id hash (~0.15 s of CPU) runs while the server builds the schema below.
            password_hash = hash_password_in_background(admin_password)
        create_tenant_role(conn, ref, db.roles)
        revision = build_tenant_schema(conn, ref, migrations_dir=migrations_dir)
        if apply_defaults:
            apply_tenant_defaults(conn, ref)
        tenant.revision, tenant.status = revision, "active"
        tenant.migrated_at = conn.execute(text("SELECT now()")).scalar_one()
        if user is None:
            user = User(email=admin_email, name=admin_name or admin_email.split("@")[0],
                        password_hash=admin_password_hash or password_hash.result())  # type: ignore[union-attr]
            session.add(user)
            session.flush()
        session.add(Membership(user_id=user.id, tenant_id=tenant.id, roles=["Admin"]))
        session.flush()
    return ProvisionedTenant(ref=ref, revision=revision, admin_email=admin_email, admin_password=generated)


def _resolve(path: str) -> Callable[[Session], object]:
    module, _, name = path.partition(":")
    return getattr(importlib.import_module(module), name)


def apply_tenant_defaults(conn: Connection, ref: TenantRef) -> None:
    """Run every `TENANT_DEFAULTS` function on a freshly built schema, in the caller's transaction."""
    # The schema's search_path is set by build_tenant_schema for this transaction; schema-less tenant models
    # resolve to it, control-plane models keep their explicit `public` schema.
    session = Session(bind=conn)
    session.info["tenant"] = ref
    session.info["actor"] = SYSTEM_ACTOR
    for path in TENANT_DEFAULTS:
        _resolve(path)(session)
        session.flush()


def drop_tenant(db: Database, *, slug: str) -> None:
    """Decommission a tenant: drop its schema and role; the directory row stays so the id and slug are never reused."""
    with db.owner.connect() as conn, conn.begin():
        session = Session(bind=conn)
        tenant = session.scalar(select(Tenant).where(Tenant.slug == slug).with_for_update())
        if tenant is None or tenant.status == "dropped":
            raise NotFound(f"no tenant {slug!r}")
        role = quote_ident(tenant.role)
        conn.execute(text(f"DROP SCHEMA IF EXISTS {quote_ident(tenant.schema)} CASCADE"))
        if conn.execute(text("SELECT 1 FROM pg_roles WHERE rolname = :r"), {"r": tenant.role}).first():
            conn.execute(text(f"DROP OWNED BY {role}"))
            conn.execute(text(f"DROP ROLE {role}"))
        tenant.status = "dropped"
        session.flush()
