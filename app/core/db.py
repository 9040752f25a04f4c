"""Database bases, engines and role names.

Two metadata trees: `PublicBase` (control plane, schema `public`) and `TenantBase` (tables with no schema,
translated to the tenant's schema per transaction). Two engines: the *owner* engine (migrations and
provisioning) and the *runtime* engine, which logs in as a NOINHERIT role that can read no tenant schema
unless it `SET LOCAL ROLE`s to that tenant's role (see `app.core.tenancy`).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, DateTime, Engine, MetaData, create_engine, func
from sqlalchemy.engine import URL, make_url
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from app.core.errors import ConfigurationError

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_N_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class PublicBase(DeclarativeBase):
    """Control-plane models: tenants, global accounts, memberships. Always schema `public`."""

    metadata = MetaData(schema="public", naming_convention=NAMING_CONVENTION)
    type_annotation_map = {datetime: DateTime(timezone=True), int: BigInteger}


class TenantBase(DeclarativeBase):
    """Tenant models: no schema of their own; each transaction maps them to `t_<id>`."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {datetime: DateTime(timezone=True), int: BigInteger}


class CreatedAt:
    """Mixin: creation time from the database server's clock (ALCOA+: contemporaneous, not the client's)."""

    #: When the row was created, by the database clock (UTC).
    created_at: Mapped[datetime] = mapped_column(server_default=func.now(), nullable=False)


#: Table privilege profiles for tenant roles; a table opts in with `info={"privileges": ...}`.
TENANT_PRIVILEGES = {
    "read_write": "SELECT, INSERT, UPDATE",
    "append_only": "SELECT, INSERT",
    "read_only": "SELECT",
}


_IDENT_RE = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


def quote_ident(name: str) -> str:
    """Quote an SQL identifier that we generated ourselves; refuse anything outside our own alphabet."""
    if not _IDENT_RE.match(name):
        raise ValueError(f"refusing unsafe SQL identifier {name!r}")
    return f'"{name}"'


def role_prefix_for(database: str) -> str:
    """Derive a cluster-unique role prefix from the database name (roles are cluster-wide, schemas are not)."""
    slug = re.sub(r"[^a-z0-9]+", "_", database.lower()).strip("_")[:24] or "db"
    digest = hashlib.sha256(database.encode()).hexdigest()[:6]
    return f"bl_{slug}_{digest}"


@dataclass(frozen=True)
class RoleNames:
    """Names of the database roles of one deployment (one database)."""

    prefix: str

    @property
    def runtime(self) -> str:
        """The NOINHERIT login role the web, workers and CLI use at run time."""
        return f"{self.prefix}_app"

    def tenant(self, tenant_id: int) -> str:
        """The role that owns privileges on one tenant's schema and nothing else."""
        return f"{self.prefix}_t{int(tenant_id)}"


def tenant_schema(tenant_id: int) -> str:
    """Schema name of a tenant: derived from its never-reused id, so no user input reaches SQL names."""
    return f"t_{int(tenant_id)}"


def normalise_url(url: str) -> URL:
    """Parse a PostgreSQL URL and pin the psycopg 3 driver."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "postgresql":
        raise ConfigurationError(f"DATABASE_URL must be a PostgreSQL URL, got {parsed.get_backend_name()!r}")
    return parsed.set(drivername="postgresql+psycopg")


class Database:
    """Holds the owner and runtime engines of one deployment; bound to a Flask app in `init_app`."""

    def __init__(self) -> None:
        self.owner_engine: Engine | None = None
        self.runtime_engine: Engine | None = None
        self._roles: RoleNames | None = None

    def configure(self, config: dict[str, Any]) -> None:
        """Create both engines from the settings (idempotent per URL)."""
        owner = normalise_url(config["DATABASE_URL"])
        prefix = config.get("DB_ROLE_PREFIX") or role_prefix_for(owner.database or "postgres")
        self._roles = RoleNames(prefix)
        if config.get("RUNTIME_DATABASE_URL"):
            runtime = normalise_url(config["RUNTIME_DATABASE_URL"])
        else:
            runtime = owner.set(username=self._roles.runtime, password=config.get("RUNTIME_DB_PASSWORD") or None)
        # pre_ping: a pooled connection may have been closed by a PostgreSQL restart or an idle timeout (psycopg
        # pings with an empty query: one round trip per checkout, which is why a request checks out few).
        # prepare_threshold: psycopg prepares a statement on a connection once it ran that many times there, so
        # the hot statements of a request skip parsing and planning in the server.
        # use_lifo: the connection returned last is handed out next. An ingest job holds its tenant connection
        # while it meters usage in a control-plane session, so it returns two: first-in-first-out alternated the
        # worker's next jobs between both backends, each with its own cold caches and half the prepared
        # statements; last-in-first-out keeps reusing the warm one (and lets spare ones idle).
        prepared = {"prepare_threshold": config.get("DB_PREPARE_THRESHOLD", 5)}
        self.owner_engine = create_engine(owner, pool_pre_ping=True, pool_size=5, max_overflow=20)
        self.runtime_engine = create_engine(runtime, pool_pre_ping=True, pool_size=10, max_overflow=40,
                                            pool_use_lifo=True, connect_args=prepared)

    def init_app(self, app: Any) -> None:
        """Bind to a Flask app."""
        self.configure(app.config)
        app.extensions["batchline.db"] = self

    def dispose(self) -> None:
        """Close pooled connections (tests, forks)."""
        for engine in (self.owner_engine, self.runtime_engine):
            if engine is not None:
                engine.dispose()

    @property
    def roles(self) -> RoleNames:
        """Role names of this deployment."""
        if self._roles is None:
            raise ConfigurationError("database not configured")
        return self._roles

    @property
    def owner(self) -> Engine:
        """The owner engine (migrations, provisioning)."""
        if self.owner_engine is None:
            raise ConfigurationError("database not configured")
        return self.owner_engine

    @property
    def runtime(self) -> Engine:
        """The runtime engine (NOINHERIT role)."""
        if self.runtime_engine is None:
            raise ConfigurationError("database not configured")
        return self.runtime_engine
