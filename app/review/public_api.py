"""Exception endpoints of the public API (`/api/v1/exceptions`, `/api/v1/batches/{id}/exceptions`; read only).

Exceptions are what review by exception works through: out-of-limit values, overrides, late or skipped steps,
equipment or material gates, sensor excursions. Their disposition (and deviations) stays on the review screens,
where each decision is e-signed.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from app.api.registry import operation, paginate
from app.api.schemas import Moment, Page, PageQuery
from app.api.services import ApiPrincipal
from app.batches import catalog, queries, services
from app.batches.models import EXCEPTION_SEVERITIES, EXCEPTION_STATUSES, BatchException
from app.batches.schemas import ExceptionOut
from app.core.errors import NotFound
from app.core.tenancy import tenant_transaction

TAGS = ["exceptions"]


class BatchExceptionOut(ExceptionOut):
    """An exception raised during a batch: type, severity, the step and entry it arose on, its evidence, and
    its status in review (open, acknowledged, closed)."""

    batch_id: int
    batch_number: str
    evidence: dict[str, Any] = Field(description="Values, limits, times, gate reasons, signature ids")
    override_id: int | None
    raised_by_member_id: int | None


class BatchExceptionPage(Page[BatchExceptionOut]):
    """A page of exceptions."""


class BatchExceptionQuery(PageQuery):
    """Filters of an exception list (all optional, combined with AND)."""

    status: Literal[tuple(EXCEPTION_STATUSES)] | None = Field(  # type: ignore[valid-type]
        default=None, description="Only exceptions in this review status")
    severity: Literal[tuple(EXCEPTION_SEVERITIES)] | None = Field(  # type: ignore[valid-type]
        default=None, description="Only exceptions of this severity (as raised)")
    type: Literal[tuple(catalog.exception_types())] | None = Field(  # type: ignore[valid-type]
        default=None, description="Only exceptions of this type")
    raised_from: Moment | None = Field(default=None, description="Raised at or after (with zone)")
    raised_until: Moment | None = Field(default=None, description="Raised before (with zone)")


class TenantExceptionQuery(BatchExceptionQuery):
    """Filters of the tenant-wide exception list."""

    batch_id: int | None = Field(default=None, ge=1, le=2**62, description="Only exceptions of this batch")


def _out(row: Any) -> dict[str, Any]:
    exception, batch_number = row
    return BatchExceptionOut.model_validate(
        {**ExceptionOut.model_validate(exception).model_dump(), "batch_id": exception.batch_id,
         "batch_number": batch_number, "evidence": exception.evidence, "override_id": exception.override_id,
         "raised_by_member_id": exception.raised_by_member_id}).model_dump()


def _page(principal: ApiPrincipal, query: BatchExceptionQuery, batch_id: int | None, *,
          batch_must_exist: bool) -> dict[str, Any]:
    with tenant_transaction(principal.tenant) as session:
        if batch_must_exist and batch_id is not None:
            services.get_batch(session, batch_id)
        stmt = queries.exceptions_query(batch_id=batch_id, status=query.status, severity=query.severity,
                                        exception_type=query.type, raised_from=query.raised_from,
                                        raised_until=query.raised_until)
        return paginate(session, stmt, query, BatchException.id, _out)


@operation("GET", "/exceptions", summary="List exceptions of every batch", permission="batches.read",
           query=TenantExceptionQuery, response=BatchExceptionPage, tags=TAGS)
def list_exceptions(principal: ApiPrincipal, *, query: TenantExceptionQuery) -> dict[str, Any]:
    """Exceptions of the tenant by id (oldest first), filterable by batch, review status, severity, type and
    time raised. Poll with `after` = the last id seen to pick up new ones."""
    return _page(principal, query, query.batch_id, batch_must_exist=False)


@operation("GET", "/batches/<int:batch_id>/exceptions", summary="List a batch's exceptions",
           permission="batches.read", query=BatchExceptionQuery, response=BatchExceptionPage, tags=TAGS,
           errors={404: "No such batch in this tenant"})
def list_batch_exceptions(principal: ApiPrincipal, *, batch_id: int, query: BatchExceptionQuery) -> dict[str, Any]:
    """The exceptions of one batch by id, filterable like the tenant-wide list."""
    return _page(principal, query, batch_id, batch_must_exist=True)


@operation("GET", "/exceptions/<int:exception_id>", summary="One exception", permission="batches.read",
           response=BatchExceptionOut, tags=TAGS, errors={404: "No such exception in this tenant"})
def get_exception(principal: ApiPrincipal, *, exception_id: int) -> dict[str, Any]:
    """An exception by id with its batch, step, severity, review status and evidence."""
    with tenant_transaction(principal.tenant) as session:
        row = session.execute(queries.exceptions_query().where(BatchException.id == exception_id)).first()
        if row is None:
            raise NotFound(f"no exception {exception_id} in this tenant")
        return _out(row)
