"""Materials endpoints of the public API (`/api/v1/materials`, `/api/v1/lots`; bearer tokens).

Reads use the materials area's list queries and lot gate; receiving a lot goes through `receive_lot`, so the
lot lands in quarantine with its first ledger movement and audit event, exactly as on the receiving screen.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any, Literal

from pydantic import Field

from app.api.registry import api_actor, operation, page_of, paginate, record_of
from app.api.schemas import Page, PageQuery, Query
from app.api.services import ApiPrincipal
from app.core.errors import NotFound, ValidationError
from app.core.tenancy import tenant_transaction
from app.core.validation import db_now
from app.materials import queries, services
from app.materials.models import Lot, LotMovement, LotStatusChange, Material
from app.materials.schemas import LotIn, LotOut, LotStatusOut, MaterialIn, MaterialOut, MovementOut, UsabilityOut
from app.materials.usability import lot_expired, lot_usable

TAGS = ["materials"]


class MaterialQuery(PageQuery):
    """Filters of the material list."""

    material_type: Literal["raw", "intermediate", "product", "consumable"] | None = Field(
        default=None, description="Only materials of this type")
    q: str | None = Field(default=None, max_length=100, description="Part of the code or name")


class MaterialPage(Page[MaterialOut]):
    """A page of materials."""


class LotQuery(PageQuery):
    """Filters of the lot list."""

    material_id: int | None = Field(default=None, ge=1, le=2**62, description="Only lots of this material")
    status: Literal["quarantine", "released", "rejected"] | None = Field(
        default=None, description="Only lots in this QA status (expiry is the `expired` flag, not a status)")
    q: str | None = Field(default=None, max_length=100, description="Part of the lot number, supplier or supplier lot")


class LotPage(Page[LotOut]):
    """A page of lots (each with its QA status, balance and `expired` flag)."""


class MovementPage(Page[MovementOut]):
    """A page of a lot's ledger (receipt, consumptions, adjustments; `balance_after` after each)."""


class LotStatusPage(Page[LotStatusOut]):
    """A page of a lot's QA dispositions."""


class UsableQuery(Query):
    """What to check a lot against."""

    quantity: Decimal = Field(description="Quantity to use (greater than zero), in the material's unit")
    material_id: int | None = Field(default=None, ge=1, le=2**62,
                                    description="The material the step expects (default: the lot's own)")


def _lots_to(today: Any) -> Any:
    def to(row: Any) -> dict[str, Any]:
        lot = row[0]
        return LotOut.model_validate(lot).model_copy(update={"expired": lot_expired(lot, today)}).model_dump()

    return to


def _lot(session: Any, lot_id: int) -> Lot:
    lot = queries.lot_with_material(session, lot_id)
    if lot is None:
        raise NotFound(f"no lot {lot_id} in this tenant")
    return lot


# -- materials ---------------------------------------------------------------------------------------------------


@operation("GET", "/materials", summary="List materials", permission="materials.read", query=MaterialQuery,
           response=MaterialPage, tags=TAGS)
def list_materials(principal: ApiPrincipal, *, query: MaterialQuery) -> dict[str, Any]:
    """Material master records by id, filterable by type and by part of the code or name."""
    stmt = queries.materials_query(material_type=query.material_type, search=query.q)
    return page_of(principal, stmt, query, Material.id, MaterialOut)


@operation("GET", "/materials/<int:material_id>", summary="One material", permission="materials.read",
           response=MaterialOut, tags=TAGS, errors={404: "No such material in this tenant"})
def get_material(principal: ApiPrincipal, *, material_id: int) -> MaterialOut:
    """A material by id: code, name, type, unit, storage conditions and shelf life."""
    return record_of(principal, Material, material_id, "material", MaterialOut)


@operation("POST", "/materials", summary="Create a material", permission="materials.manage", body=MaterialIn,
           response=MaterialOut, status=201, tags=TAGS,
           errors={409: "A material with this code exists already"})
def create_material(principal: ApiPrincipal, *, body: MaterialIn) -> MaterialOut:
    """Create a material master record (code, name, type, unit; optional shelf life that sets lots' expiry).
    Recorded in the audit trail."""
    with tenant_transaction(principal.tenant, actor=api_actor(principal)) as session:
        return MaterialOut.model_validate(services.create_material(session, **body.model_dump()))


# -- lots --------------------------------------------------------------------------------------------------------


@operation("GET", "/lots", summary="List lots", permission="materials.read", query=LotQuery, response=LotPage,
           tags=TAGS)
def list_lots(principal: ApiPrincipal, *, query: LotQuery) -> dict[str, Any]:
    """Lots by id with their QA status, balance and expiry, filterable by material, status and text."""
    with tenant_transaction(principal.tenant) as session:
        stmt = queries.lots_query(material_id=query.material_id, status=query.status, search=query.q)
        return paginate(session, stmt, query, Lot.id, _lots_to(db_now(session).date()))


@operation("GET", "/lots/<int:lot_id>", summary="One lot: status and balance", permission="materials.read",
           response=LotOut, tags=TAGS, errors={404: "No such lot in this tenant"})
def get_lot(principal: ApiPrincipal, *, lot_id: int) -> dict[str, Any]:
    """A lot with its QA status (quarantine, released, rejected), `expired` flag, received quantity and current
    balance (the sum of its ledger)."""
    with tenant_transaction(principal.tenant) as session:
        return _lots_to(db_now(session).date())((_lot(session, lot_id),))


@operation("POST", "/lots", summary="Receive a lot", permission="materials.manage", body=LotIn, response=LotOut,
           status=201, tags=TAGS,
           errors={404: "No such material in this tenant", 409: "A lot with this number exists already"})
def receive_lot(principal: ApiPrincipal, *, body: LotIn) -> dict[str, Any]:
    """Receive a supplier lot into quarantine (QA releases it on the lot's page, with an e-signature). The
    expiry defaults from the material's shelf life; the quantity is in the material's unit. Recorded in the
    audit trail with the lot's first ledger movement."""
    with tenant_transaction(principal.tenant, actor=api_actor(principal)) as session:
        lot = services.receive_lot(session, **body.model_dump())
        return _lots_to(db_now(session).date())((lot,))


@operation("GET", "/lots/<int:lot_id>/movements", summary="A lot's ledger", permission="materials.read",
           query=PageQuery, response=MovementPage, tags=TAGS, errors={404: "No such lot in this tenant"})
def list_lot_movements(principal: ApiPrincipal, *, lot_id: int, query: PageQuery) -> dict[str, Any]:
    """Receipt, consumptions into batches and adjustments, oldest first, each with the balance after it."""
    return page_of(principal, queries.lot_movements_query(lot_id), query, LotMovement.id, MovementOut,
                   parent=(Lot, lot_id, "lot"))


@operation("GET", "/lots/<int:lot_id>/status-changes", summary="A lot's QA dispositions",
           permission="materials.read", query=PageQuery, response=LotStatusPage, tags=TAGS,
           errors={404: "No such lot in this tenant"})
def list_lot_status_changes(principal: ApiPrincipal, *, lot_id: int, query: PageQuery) -> dict[str, Any]:
    """Every status change of the lot (release, rejection, back to quarantine), oldest first, with the reason,
    who signed and the signature id."""
    return page_of(principal, queries.lot_status_history_query(lot_id), query, LotStatusChange.id, LotStatusOut,
                   parent=(Lot, lot_id, "lot"))


@operation("GET", "/lots/<int:lot_id>/usable", summary="Whether a quantity of a lot may be used now",
           permission="materials.read", query=UsableQuery, response=UsabilityOut, tags=TAGS,
           errors={404: "No such lot or material in this tenant"})
def lot_usability(principal: ApiPrincipal, *, lot_id: int, query: UsableQuery) -> UsabilityOut:
    """The lot gate the batch engine applies: released, not expired, the right material, enough balance; each
    reason against use has a stable `code` and a `message`."""
    if query.quantity <= 0:
        raise ValidationError(f"quantity must be greater than zero (got {query.quantity})")
    with tenant_transaction(principal.tenant) as session:
        lot = _lot(session, lot_id)
        material: Any = lot.material_id
        if query.material_id is not None:
            material = session.get(Material, query.material_id)
            if material is None:
                raise NotFound(f"no material {query.material_id} in this tenant")
        now = db_now(session)
        verdict = lot_usable(lot, material, query.quantity, now)
        return UsabilityOut(usable=verdict.usable, at=now,
                            reasons=[{"code": r.code, "message": r.message} for r in verdict.reasons])
