"""Batch endpoints of the public API (`/api/v1/batches`; bearer tokens): list, read, plan.

Planning goes through the batch area's `plan_batch`, so a batch can only come from the master recipe's
approved, effective version, gets its number from the tenant's pattern, has its equipment checked and is
recorded in the audit trail. Dispatching to the floor and executing steps stay on the screens and the tablet
(they are e-signed by people at the line).
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any, Literal

from pydantic import Field
from sqlalchemy import select

from app.api.registry import api_actor, operation, page_of
from app.api.schemas import Moment, Page, PageQuery
from app.api.services import ApiPrincipal
from app.batches import queries, services
from app.batches.models import BATCH_STATUSES, Batch, StepExecution
from app.batches.schemas import BatchOut, PlanIn, StepOut
from app.core.tenancy import tenant_transaction

TAGS = ["batches"]

BatchStatus = Literal[tuple(BATCH_STATUSES)]  # type: ignore[valid-type]


class BatchQuery(PageQuery):
    """Filters of the batch list (all optional, combined with AND)."""

    status: BatchStatus | None = Field(default=None, description="Only batches in this status")
    line_id: int | None = Field(default=None, ge=1, le=2**62, description="Only batches on this line")
    master_recipe_id: int | None = Field(default=None, ge=1, le=2**62,
                                         description="Only batches of this master recipe")
    planned_from: Moment | None = Field(default=None, description="Planned start at or after (with zone)")
    planned_until: Moment | None = Field(default=None, description="Planned start before (with zone)")


class BatchPage(Page[BatchOut]):
    """A page of batches."""


class BatchDetail(BatchOut):
    """A batch with its steps in order, the step an operator would take next and its open exceptions."""

    identity: dict[str, Any] = Field(description="The batch's own identity fields (e.g. cell bank vial, campaign)")
    recipe_content_hash: str = Field(description="Hash of the recipe version's document the batch was planned from")
    steps: list[StepOut]
    current_step_id: int | None = Field(description="In progress, else the first one ready to start (null: none)")
    open_exceptions: int = Field(description="Exceptions still open (list them at /batches/{batch_id}/exceptions)")


class PlanBatchIn(PlanIn):
    """Plan a batch: the master recipe (its effective version is used; give `recipe_version_id` to insist on the
    version you expect), the size and unit, the line, the planned start (with its zone), and optionally the
    equipment per equipment class of the recipe (`{"bioreactor": 12}`) and identity fields."""

    batch_size: Decimal = Field(description="Batch size in `unit` (a number, or a decimal string for exactness)")
    unit: str | None = Field(default=None, max_length=40,
                             description="Unit of the size (default: the recipe's batch size unit)")


@operation("GET", "/batches", summary="List batches", permission="batches.read", query=BatchQuery,
           response=BatchPage, tags=TAGS)
def list_batches(principal: ApiPrincipal, *, query: BatchQuery) -> dict[str, Any]:
    """Batches by id, filterable by status, line, master recipe and planned start."""
    stmt = queries.batches_query(status=query.status, line_id=query.line_id)
    if query.master_recipe_id is not None:
        stmt = stmt.where(Batch.master_recipe_id == query.master_recipe_id)
    if query.planned_from is not None:
        stmt = stmt.where(Batch.planned_start >= query.planned_from)
    if query.planned_until is not None:
        stmt = stmt.where(Batch.planned_start < query.planned_until)
    return page_of(principal, stmt, query, Batch.id, BatchOut)


@operation("GET", "/batches/<int:batch_id>", summary="One batch with its steps and status",
           permission="batches.read", response=BatchDetail, tags=TAGS, errors={404: "No such batch in this tenant"})
def get_batch(principal: ApiPrincipal, *, batch_id: int) -> BatchDetail:
    """A batch with its status, its steps (status, who started and ended each, on which equipment), the step
    to take next and how many exceptions are open. The full record: the batch record export on the screens."""
    with tenant_transaction(principal.tenant) as session:
        batch = services.get_batch(session, batch_id)
        steps = session.scalars(select(StepExecution).where(StepExecution.batch_id == batch.id)
                                .order_by(StepExecution.seq)).all()
        current = queries.current_step(session, batch)
        return BatchDetail(**BatchOut.model_validate(batch).model_dump(), identity=batch.identity,
                           recipe_content_hash=batch.recipe_content_hash,
                           steps=[StepOut.model_validate(s) for s in steps],
                           current_step_id=current.id if current else None,
                           open_exceptions=queries.open_exception_counts(session, [batch.id]).get(batch.id, 0))


@operation("POST", "/batches", summary="Plan a batch from the effective recipe version", permission="batches.plan",
           body=PlanBatchIn, response=BatchOut, status=201, tags=TAGS,
           errors={404: "No such master recipe, or none of its versions is effective now",
                   409: "The recipe version given is not the effective one, or the effective version has "
                        "validation errors"})
def plan_batch(principal: ApiPrincipal, *, body: PlanBatchIn) -> BatchOut:
    """Plan a batch (status `planned`) from the master recipe's approved, effective version, scaled to the
    size; the batch number comes from the tenant's pattern. Equipment is checked against the recipe's classes,
    the line and the capacity. Recorded in the audit trail and the batch's log. A supervisor releases it to the
    floor on the screens (an e-signature)."""
    with tenant_transaction(principal.tenant, actor=api_actor(principal)) as session:
        return BatchOut.model_validate(services.plan_batch(session, **body.model_dump()))
