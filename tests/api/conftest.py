"""API credentials for the tests, issued through the real services, and a tenant holding a record of every
kind the public API serves (built through the areas' real services)."""

from __future__ import annotations

import itertools
import os
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import select, update

from app.accounts.models import User
from app.api import services
from app.audit.models import AuditEvent
from app.batches import services as batch_services
from app.core.permissions import BUILTIN_ROLES
from app.core.tenancy import control_session, tenant_transaction
from app.plant import services as plant
from app.tenancy.models import Tenant
from app.tenancy.services import create_tenant
from tests.batches.conftest import SHORT_RECIPE, make_recipe_version
from tests.conftest import TEST_PASSWORD
from tests.factories import admin_actor, make_equipment, make_line, make_lot, make_material


def admin_token(tenant: Any, scopes: list[str] | None = None, **kwargs: Any) -> str:
    """A personal token of the tenant's admin with the given scopes (all by default)."""
    with control_session() as session:
        user_id = session.scalar(select(User.id).where(User.email == tenant.admin_email))
        return services.create_personal_token(
            session, tenant_id=tenant.ref.id, user_id=user_id, name="test",
            scopes=scopes or sorted(BUILTIN_ROLES["Admin"]), holder_permissions=BUILTIN_ROLES["Admin"],
            **kwargs).secret


@pytest.fixture
def issue_token(app):
    """Factory: a personal token of the tenant's admin with the given scopes."""
    return admin_token


@dataclass(frozen=True)
class Seeded:
    """Ids of the records `seed_every_kind` made."""

    site_id: int
    line_id: int
    equipment_id: int
    sensor_id: int
    material_id: int
    lot_id: int
    lot_number: str
    master_recipe_id: int
    version_id: int
    batch_id: int
    exception_id: int


def seed_every_kind(tenant: Any) -> Seeded:
    """A site, line, bioreactor with a sensor, SHORT_RECIPE's materials with released lots, an effective version
    of SHORT_RECIPE, a planned batch of it with one exception, and the audit events all of them wrote."""
    with tenant_transaction(tenant.ref, actor=admin_actor(tenant)) as session:
        line = make_line(session)
        reactor = make_equipment(session, line, capacity="20", capacity_unit="L")
        sensor = plant.create_sensor(session, tag=f"TT-{reactor.tag}", equipment_id=reactor.id,
                                     quantity_kind="temperature", unit="degC", range_low="0", range_high="100",
                                     sampling_period_s="1")
        lot = None
        for code in ("MED-T", "GLC-T"):
            material = make_material(session, code=code, name=code, unit="L")
            lot = make_lot(session, material, "100")
        version = make_recipe_version(session, SHORT_RECIPE)
        batch = batch_services.plan_batch(session, master_recipe_id=version.master_recipe_id, batch_size="10",
                                          unit="L", line_id=line.id, planned_start=datetime.now(UTC),
                                          equipment={"bioreactor": reactor.id})
        exception = batch_services.raise_exception(
            session, batch=batch, finding=batch_services.finding("late_entry", "Charge entered 40 min late"))
        assert lot is not None and exception is not None
        return Seeded(site_id=line.site_id, line_id=line.id, equipment_id=reactor.id, sensor_id=sensor.id,
                      material_id=lot.material_id, lot_id=lot.id, lot_number=lot.lot_number,
                      master_recipe_id=version.master_recipe_id, version_id=version.id, batch_id=batch.id,
                      exception_id=exception.id)


_tenants = itertools.count(1)


def new_tenant(app: Any, label: str) -> Any:
    """A bare tenant made directly (for fixtures wider than one test, where `make_tenant` cannot be used)."""
    n = next(_tenants)
    slug = f"api-{label}-{os.getpid()}-{n}"
    return create_tenant(app.extensions["batchline.db"], slug=slug, name=f"API {label} {n}",
                         admin_email=f"admin-{slug}@example.com", admin_password=TEST_PASSWORD)


@dataclass(frozen=True)
class World:
    """Two seeded tenants: A (with an all-scope token of its admin) and B, whose records A must never see."""

    a: Any
    b: Any
    seeded_a: Seeded
    seeded_b: Seeded
    token_a: str


@pytest.fixture(scope="session")
def world(app) -> World:
    """Tenants A and B with a record of every kind (read-only tests share them; writes make their own)."""
    a, b = new_tenant(app, "a"), new_tenant(app, "b")
    seeded_b = seed_every_kind(b)
    seeded_a = seed_every_kind(a)
    return World(a=a, b=b, seeded_a=seeded_a, seeded_b=seeded_b, token_a=admin_token(a))


def bearer(token: str) -> dict[str, str]:
    """The Authorization header of a token."""
    return {"Authorization": f"Bearer {token}"}


def make_read_only(tenant: Any) -> None:
    """Put a tenant in the read-only state an ended subscription leaves it in."""
    with control_session() as session:
        session.execute(update(Tenant).where(Tenant.id == tenant.ref.id).values(status="read_only"))


def all_pages(client: Any, url: str, token: str, limit: int = 1) -> list[dict[str, Any]]:
    """Every item of a list, walked page by page with `after` = `next_after`."""
    items: list[dict[str, Any]] = []
    after = None
    for _ in range(1000):
        sep = "&" if "?" in url else "?"
        page = client.get(f"{url}{sep}limit={limit}" + (f"&after={after}" if after is not None else ""),
                          headers=bearer(token))
        assert page.status_code == 200, page.get_json()
        body = page.get_json()
        assert len(body["items"]) <= limit
        items += body["items"]
        after = body["next_after"]
        if after is None:
            return items
    raise AssertionError("pagination never ended")


def audit_events(tenant: Any, record_type: str, record_id: Any) -> list[Any]:
    """The audit events of one record, oldest first."""
    with tenant_transaction(tenant.ref) as session:
        return list(session.scalars(select(AuditEvent).where(AuditEvent.record_type == record_type,
                                                             AuditEvent.record_id == str(record_id))
                                    .order_by(AuditEvent.seq)))
