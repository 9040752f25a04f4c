"""API credentials for the tests, issued through the real services, and a tenant holding a record of every
kind the public API serves (built through the areas' real services)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import select

from app.accounts.models import User
from app.api import services
from app.batches import services as batch_services
from app.core.permissions import BUILTIN_ROLES
from app.core.tenancy import control_session, tenant_transaction
from app.plant import services as plant
from tests.batches.conftest import SHORT_RECIPE, make_recipe_version
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
