"""Factories that build plant and material records through the real services (real PostgreSQL)."""

from __future__ import annotations

import itertools
from typing import Any

from sqlalchemy import select

from app.accounts.models import Membership, User
from app.core.tenancy import Actor, control_session
from app.materials import services as materials
from app.plant import services as plant

ALICE = Actor(member_id=7, label="Alice Admin <alice@example.com>", request_id="req-test", client_addr="127.0.0.1")
_n = itertools.count(1)
PASSWORD = "correct horse battery staple 42"  # tests.conftest.TEST_PASSWORD


def admin_actor(tenant: Any) -> Actor:
    """The tenant's first admin (a real member with a password), as the actor of a unit of work."""
    with control_session() as session:
        member_id, name = session.execute(
            select(Membership.id, User.name).join(User, User.id == Membership.user_id)
            .where(Membership.tenant_id == tenant.ref.id, User.email == tenant.admin_email)).one()
    return Actor(member_id=member_id, label=f"{name} <{tenant.admin_email}>", request_id="req-test",
                 client_addr="127.0.0.1")


def credentials(session: Any) -> dict[str, Any]:
    """Signing credentials of the session's actor (a member whose password is the test password)."""
    member_id = session.info["actor"].member_id
    with control_session() as control:
        user_id = control.scalar(select(Membership.user_id).where(Membership.id == member_id))
    return {"user_id": user_id, "password": PASSWORD, "identification": None, "identification_required": False}


def make_line(session: Any, *, timezone: str = "Europe/Zurich", signature_routes: tuple[str, ...] = ()) -> Any:
    """A site with one line."""
    n = next(_n)
    site = plant.create_site(session, code=f"S{n}", name=f"Site {n}", timezone=timezone,
                             signature_routes=signature_routes)
    return plant.create_line(session, site_id=site.id, code=f"L{n}", name=f"Line {n}")


def make_equipment(session: Any, line: Any, **overrides: Any) -> Any:
    """A qualified, clean bioreactor unless told otherwise."""
    n = next(_n)
    values: dict[str, Any] = {"tag": f"BR-{n}", "name": f"Bioreactor {n}", "equipment_class": "bioreactor",
                              "line_id": line.id, "capacity": "50", "capacity_unit": "L",
                              "qualification_status": "qualified", "status": "clean"}
    values.update(overrides)
    return plant.create_equipment(session, **values)


def make_material(session: Any, **overrides: Any) -> Any:
    """A raw material counted in kg unless told otherwise."""
    n = next(_n)
    values: dict[str, Any] = {"code": f"M-{n}", "name": f"Material {n}", "material_type": "raw", "unit": "kg"}
    values.update(overrides)
    return materials.create_material(session, **values)


def make_lot(session: Any, material: Any, quantity: Any = "10", *, release: bool = True, **overrides: Any) -> Any:
    """A received lot, released by QA unless told otherwise."""
    n = next(_n)
    values: dict[str, Any] = {"material_id": material.id, "lot_number": f"LOT-{n}", "quantity": quantity,
                              "received_on": "2026-01-05", "supplier": "Acme Chemicals", "supplier_lot": f"AC{n}"}
    values.update(overrides)
    lot = materials.receive_lot(session, **values)
    if release:
        materials.change_lot_status(session, lot_id=lot.id, to_status="released", reason="CoA reviewed",
                                    credentials=credentials(session))
    return lot
