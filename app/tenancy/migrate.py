"""Fleet migrations: upgrade every tenant schema, in parallel, one transaction per tenant, resumable."""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field

from sqlalchemy import Engine, create_engine, select, text, update
from sqlalchemy.orm import Session

from app.core.db import Database
from app.core.tenancy import TenantRef
from app.tenancy.models import Tenant
from app.tenancy.queries import LIVE_STATUSES
from app.tenancy.schema import alembic_config, head_revision, migrate_tenant_schema


@dataclass
class UpgradeReport:
    """Outcome of one fleet upgrade run."""

    head: str
    upgraded: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """True when no tenant failed."""
        return not self.failed


def _record(db: Database, tenant_id: int, **values: object) -> None:
    with db.owner.begin() as conn:
        conn.execute(update(Tenant).where(Tenant.id == tenant_id).values(**values))


def upgrade_tenant(engine: Engine, ref: TenantRef, *, migrations_dir: str = "", lock_timeout_s: int = 10) -> str:
    """Migrate one tenant to head in one transaction and record its revision in `public` atomically."""
    with engine.connect() as conn, conn.begin():
        # A migration must not queue behind a long-running batch transaction for ever.
        conn.execute(text(f"SET LOCAL lock_timeout = '{int(lock_timeout_s)}s'"))
        revision = migrate_tenant_schema(conn, ref, migrations_dir=migrations_dir)
        conn.execute(
            update(Tenant)
            .where(Tenant.id == ref.id)
            .values(revision=revision, last_migration_error=None, migrated_at=text("now()"))
        )
    return revision


_worker_engine: Engine | None = None


def _init_worker(owner_url: str) -> None:
    global _worker_engine  # one engine per migration process
    _worker_engine = create_engine(owner_url, pool_size=1, max_overflow=0)


def _upgrade_in_worker(ref: TenantRef, migrations_dir: str) -> str:
    if _worker_engine is None:
        raise RuntimeError("migration worker not initialised")
    return upgrade_tenant(_worker_engine, ref, migrations_dir=migrations_dir)


def upgrade_all_tenants(db: Database, *, jobs: int = 4, migrations_dir: str = "",
                        progress: Callable[[str], None] | None = None) -> UpgradeReport:
    """Upgrade every live tenant not yet at head; failures are recorded per tenant and do not stop others."""
    head = head_revision(alembic_config("tenant", directory=migrations_dir))
    report = UpgradeReport(head=head)
    with Session(db.owner) as session:
        tenants = session.execute(
            select(Tenant.id, Tenant.slug, Tenant.schema, Tenant.role, Tenant.revision)
            .where(Tenant.status.in_(LIVE_STATUSES))
            .order_by(Tenant.id)
        ).all()
    todo = []
    for t in tenants:
        if t.revision == head:
            report.skipped.append(t.slug)
        else:
            todo.append(TenantRef(id=t.id, slug=t.slug, schema=t.schema, role=t.role))
    say = progress or (lambda _msg: None)
    say(f"{len(todo)} to upgrade, {len(report.skipped)} already at {head}")
    done = 0
    if not todo:
        return report
    # Processes, not threads: Alembic's `op` and `context` are module-level proxies, unsafe across threads.
    owner_url = db.owner.url.render_as_string(hide_password=False)
    with ProcessPoolExecutor(max_workers=max(1, min(jobs, len(todo))), initializer=_init_worker,
                             initargs=(owner_url,), mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = {pool.submit(_upgrade_in_worker, ref, migrations_dir): ref for ref in todo}
        for future in as_completed(futures):
            ref = futures[future]
            done += 1
            try:
                future.result()
            except Exception as exc:
                message = f"{type(exc).__name__}: {exc}"[:4000]
                _record(db, ref.id, last_migration_error=message)
                report.failed[ref.slug] = message
                say(f"[{done}/{len(todo)}] {ref.slug}: FAILED {message.splitlines()[0]}")
            else:
                report.upgraded.append(ref.slug)
                say(f"[{done}/{len(todo)}] {ref.slug}: {head}")
    return report
