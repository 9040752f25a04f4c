"""Factories that build plant and material records through the real services (real PostgreSQL)."""

from __future__ import annotations

import itertools
from typing import Any

from app.core.tenancy import Actor
from app.materials import services as materials
from app.plant import services as plant

ALICE = Actor(member_id=7, label="Alice Admin <alice@example.com>", request_id="req-test", client_addr="127.0.0.1")
_n = itertools.count(1)


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
        materials.change_lot_status(session, lot_id=lot.id, to_status="released", reason="CoA reviewed")
    return lot
