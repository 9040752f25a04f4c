"""Plant endpoints of the public API (`/api/v1/sites`, `/lines`, `/equipment`, `/sensors`; bearer tokens).

Reads go through the plant area's list queries and readiness gate; creates through its services, so every
record gets its audit event (attributed to the token's member or the OAuth client) and the same checks as on
the onboarding screens. Status changes that a site routes through an e-signature stay on the screens.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field

from app.api.registry import api_actor, operation, page_of, record_of
from app.api.schemas import Body, Page, PageQuery
from app.api.services import ApiPrincipal
from app.core.errors import Conflict, NotFound
from app.core.tenancy import tenant_transaction
from app.plant import queries, services
from app.plant.models import Equipment, EquipmentLogEntry, Line, Sensor, Site
from app.plant.schemas import (
    EquipmentIn,
    EquipmentOut,
    EquipmentStatus,
    LineIn,
    LineOut,
    LogEntryOut,
    ReadinessOut,
    SensorIn,
    SensorOut,
    SiteIn,
    SiteOut,
)

TAGS = ["plant"]
CREATE_ERRORS = {404: "A record the body refers to does not exist in this tenant",
                 409: "The code or tag is taken already (codes and tags are unique in a tenant)"}


class SitePage(Page[SiteOut]):
    """A page of sites."""


class LineQuery(PageQuery):
    """Filters of the line list."""

    site_id: int | None = Field(default=None, ge=1, le=2**62, description="Only lines of this site")


class LinePage(Page[LineOut]):
    """A page of lines and areas."""


class EquipmentQuery(PageQuery):
    """Filters of the equipment list."""

    line_id: int | None = Field(default=None, ge=1, le=2**62, description="Only equipment on this line")
    status: EquipmentStatus | None = Field(default=None, description="Only equipment in this status")


class EquipmentPage(Page[EquipmentOut]):
    """A page of equipment."""


class EquipmentDetail(EquipmentOut):
    """An equipment item with its readiness now (ready, or every reason it may not be used)."""

    readiness: ReadinessOut


class EquipmentStatusIn(Body):
    """Move an equipment item to a new status, with the reason (it becomes a logbook entry)."""

    status: EquipmentStatus = Field(description="The new status; the allowed moves depend on the current one")
    reason: str = Field(min_length=1, max_length=2000, description="Why, as the logbook and audit trail show it")


class LogEntryPage(Page[LogEntryOut]):
    """A page of an equipment logbook."""


class SensorQuery(PageQuery):
    """Filters of the sensor list."""

    equipment_id: int | None = Field(default=None, ge=1, le=2**62, description="Only sensors of this equipment")


class SensorPage(Page[SensorOut]):
    """A page of sensors."""


def _create(principal: ApiPrincipal, service: Any, body: Any, out: type[Any]) -> Any:
    with tenant_transaction(principal.tenant, actor=api_actor(principal)) as session:
        return out.model_validate(service(session, **body.model_dump()))


# -- sites -------------------------------------------------------------------------------------------------------


@operation("GET", "/sites", summary="List sites", permission="plant.read", query=PageQuery, response=SitePage,
           tags=TAGS)
def list_sites(principal: ApiPrincipal, *, query: PageQuery) -> dict[str, Any]:
    """Sites of the tenant with their timezone, regulatory profile and the actions they route through an
    e-signature, by id."""
    return page_of(principal, queries.sites_query(), query, Site.id, SiteOut)


@operation("GET", "/sites/<int:site_id>", summary="One site", permission="plant.read", response=SiteOut, tags=TAGS,
           errors={404: "No such site in this tenant"})
def get_site(principal: ApiPrincipal, *, site_id: int) -> SiteOut:
    """A site by id: code, name, timezone, regulatory profile and e-signature routes."""
    return record_of(principal, Site, site_id, "site", SiteOut)


@operation("POST", "/sites", summary="Create a site", permission="plant.manage", body=SiteIn, response=SiteOut,
           status=201, tags=TAGS, errors=CREATE_ERRORS)
def create_site(principal: ApiPrincipal, *, body: SiteIn) -> SiteOut:
    """Create a site (code, name, IANA timezone; optionally the actions its SOPs route through an e-signature).
    Recorded in the audit trail."""
    return _create(principal, services.create_site, body, SiteOut)


# -- lines -------------------------------------------------------------------------------------------------------


@operation("GET", "/lines", summary="List lines and areas", permission="plant.read", query=LineQuery,
           response=LinePage, tags=TAGS)
def list_lines(principal: ApiPrincipal, *, query: LineQuery) -> dict[str, Any]:
    """Lines and areas, by id, optionally of one site."""
    return page_of(principal, queries.lines_query(site_id=query.site_id), query, Line.id, LineOut)


@operation("GET", "/lines/<int:line_id>", summary="One line", permission="plant.read", response=LineOut, tags=TAGS,
           errors={404: "No such line in this tenant"})
def get_line(principal: ApiPrincipal, *, line_id: int) -> LineOut:
    """A line or area by id, with the site it belongs to."""
    return record_of(principal, Line, line_id, "line", LineOut)


@operation("POST", "/lines", summary="Create a line or area", permission="plant.manage", body=LineIn,
           response=LineOut, status=201, tags=TAGS, errors=CREATE_ERRORS)
def create_line(principal: ApiPrincipal, *, body: LineIn) -> LineOut:
    """Create a line (or an area) in a site. Recorded in the audit trail."""
    return _create(principal, services.create_line, body, LineOut)


# -- equipment ---------------------------------------------------------------------------------------------------


@operation("GET", "/equipment", summary="List equipment", permission="plant.read", query=EquipmentQuery,
           response=EquipmentPage, tags=TAGS)
def list_equipment(principal: ApiPrincipal, *, query: EquipmentQuery) -> dict[str, Any]:
    """Equipment by id with its status, cleaning, calibration and qualification, filterable by line and status."""
    stmt = queries.equipment_query(line_id=query.line_id, status=query.status)
    return page_of(principal, stmt, query, Equipment.id, EquipmentOut)


@operation("GET", "/equipment/<int:equipment_id>", summary="One equipment item with its readiness",
           permission="plant.read", response=EquipmentDetail, tags=TAGS,
           errors={404: "No such equipment in this tenant"})
def get_equipment(principal: ApiPrincipal, *, equipment_id: int) -> EquipmentDetail:
    """An equipment item with its status and its readiness now: ready, or every reason (dirty, clean-hold
    expired, calibration overdue, not qualified...) a batch step may not use it."""
    equipment, readiness = _equipment(principal, equipment_id)
    return EquipmentDetail(**EquipmentOut.model_validate(equipment).model_dump(), readiness=readiness)


def _equipment(principal: ApiPrincipal, equipment_id: int) -> tuple[Equipment, ReadinessOut]:
    with tenant_transaction(principal.tenant) as session:
        found = queries.readiness_now(session, equipment_id)
        if found is None:
            raise NotFound(f"no equipment {equipment_id} in this tenant")
        equipment, verdict, now = found
        return equipment, ReadinessOut(ready=verdict.ready, reasons=list(verdict.reasons), at=now)


@operation("GET", "/equipment/<int:equipment_id>/readiness", summary="Whether an equipment item may be used now",
           permission="plant.read", response=ReadinessOut, tags=TAGS,
           errors={404: "No such equipment in this tenant"})
def equipment_readiness(principal: ApiPrincipal, *, equipment_id: int) -> ReadinessOut:
    """The equipment gate the batch engine applies, judged now in the site's timezone: `ready`, or every reason
    against use with a stable `code` for programs and a `message` for people."""
    return _equipment(principal, equipment_id)[1]


@operation("GET", "/equipment/<int:equipment_id>/logbook", summary="An equipment item's logbook",
           permission="plant.read", query=PageQuery, response=LogEntryPage, tags=TAGS,
           errors={404: "No such equipment in this tenant"})
def equipment_logbook(principal: ApiPrincipal, *, equipment_id: int, query: PageQuery) -> dict[str, Any]:
    """Status changes, calibrations, qualifications and notes of an item, oldest first, with who and why."""
    return page_of(principal, queries.logbook_query(equipment_id), query, EquipmentLogEntry.id, LogEntryOut,
                   parent=(Equipment, equipment_id, "equipment"))


@operation("POST", "/equipment/<int:equipment_id>/status", summary="Change an equipment item's status",
           permission="plant.manage", body=EquipmentStatusIn, response=LogEntryOut, status=201, tags=TAGS,
           errors={404: "No such equipment in this tenant",
                   409: "The move is not allowed from the current status, or the item's site requires an "
                        "e-signature for status changes (make those on the equipment page)"})
def change_equipment_status(principal: ApiPrincipal, *, equipment_id: int, body: EquipmentStatusIn) -> LogEntryOut:
    """Move an item to a new status (e.g. into maintenance from a maintenance system, or clean after a CIP run)
    with the reason: a logbook entry and an audit event, attributed to the token. Sites whose SOPs route status
    changes through an e-signature refuse this over the API: a person signs those on the equipment page."""
    with tenant_transaction(principal.tenant, actor=api_actor(principal)) as session:
        equipment = session.get(Equipment, equipment_id)
        if equipment is None:
            raise NotFound(f"no equipment {equipment_id} in this tenant")
        if services.signature_required(session, equipment, "equipment.status_change"):
            raise Conflict(f"the site of {equipment.tag} requires an e-signature for status changes: a person "
                           "signs them on the equipment page, not over the API")
        entry = services.change_equipment_status(session, equipment_id=equipment_id, to_status=body.status,
                                                 reason=body.reason)
        return LogEntryOut.model_validate(entry)


@operation("POST", "/equipment", summary="Register an equipment item", permission="plant.manage", body=EquipmentIn,
           response=EquipmentOut, status=201, tags=TAGS, errors=CREATE_ERRORS)
def create_equipment(principal: ApiPrincipal, *, body: EquipmentIn) -> EquipmentOut:
    """Register an equipment item on a line, in its initial status (its first logbook entry). Recorded in the
    audit trail."""
    return _create(principal, services.create_equipment, body, EquipmentOut)


# -- sensors -----------------------------------------------------------------------------------------------------


@operation("GET", "/sensors", summary="List sensors", permission="plant.read", query=SensorQuery,
           response=SensorPage, tags=TAGS)
def list_sensors(principal: ApiPrincipal, *, query: SensorQuery) -> dict[str, Any]:
    """Sensors by id with their tag (what gateways send), unit, valid range and sampling period."""
    return page_of(principal, queries.sensors_query(equipment_id=query.equipment_id), query, Sensor.id, SensorOut)


@operation("GET", "/sensors/<int:sensor_id>", summary="One sensor", permission="plant.read", response=SensorOut,
           tags=TAGS, errors={404: "No such sensor in this tenant"})
def get_sensor(principal: ApiPrincipal, *, sensor_id: int) -> SensorOut:
    """A sensor by id (its readings: `GET /sensors/{sensor_id}/trend`)."""
    return record_of(principal, Sensor, sensor_id, "sensor", SensorOut)


@operation("POST", "/sensors", summary="Register a sensor", permission="plant.manage", body=SensorIn,
           response=SensorOut, status=201, tags=TAGS, errors=CREATE_ERRORS)
def create_sensor(principal: ApiPrincipal, *, body: SensorIn) -> SensorOut:
    """Register a sensor on an equipment item with its unit, valid range and sampling period. Recorded in the
    audit trail."""
    return _create(principal, services.create_sensor, body, SensorOut)
