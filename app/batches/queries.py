"""Read side of the batch area: lists, the floor queue per line, the tablet's step view, yields, and the
sensor path's question "which batch and step were in force on this equipment at that moment" (no writes)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import Select, func, select
from sqlalchemy.orm import Session

from app.batches.models import (
    BATCH_STATUSES,
    FLOOR_STATUSES,
    Batch,
    BatchException,
    ControlRecipe,
    EquipmentUse,
    StepEntry,
    StepExecution,
)
from app.materials.models import Lot, LotMovement
from app.plant.models import Line
from app.recipes.document import (
    IncompatibleUnitsError,
    MaterialScanCapture,
    Phase,
    RecipeDocument,
    UnknownUnitError,
    convert,
    effective_dependencies,
)

# ---------------------------------------------------------------------------------------------------------------
# The sensor path (issue 8)


def running_step_at(session: Session, equipment_id: int, ts: datetime) -> tuple[int, int] | None:
    """Return (batch_id, step_execution_id) of the step in force on an equipment item at `ts`, or None.

    "In force" is what a sensor reading at `ts` belongs to: while a batch occupies the item (from the start of
    its first step on it until the batch lets it go), the step on that item that started last at or before `ts`
    — running, or completed with its conditions still holding until the next step on the item starts (e.g. the
    culture between two feeds). None when no batch occupied the item at `ts`. Two indexed lookups
    (`equipment_uses (equipment_id, started_at)`, `step_executions (equipment_id, started_at)`).
    """
    use = session.execute(
        select(EquipmentUse.batch_id, EquipmentUse.started_at, EquipmentUse.ended_at)
        .where(EquipmentUse.equipment_id == equipment_id, EquipmentUse.started_at <= ts)
        .order_by(EquipmentUse.started_at.desc()).limit(1)
    ).first()
    if use is None or (use.ended_at is not None and use.ended_at <= ts):
        return None
    step_id = session.scalar(
        select(StepExecution.id)
        .where(StepExecution.equipment_id == equipment_id, StepExecution.batch_id == use.batch_id,
               StepExecution.started_at.is_not(None), StepExecution.started_at <= ts)
        .order_by(StepExecution.started_at.desc(), StepExecution.id.desc()).limit(1)
    )
    return (use.batch_id, step_id) if step_id is not None else None


@dataclass(frozen=True)
class StepInForce:
    """A step of a batch on an equipment item and the time its conditions held there."""

    batch_id: int
    step_id: int
    phase_key: str
    started_at: datetime
    completed_at: datetime | None
    #: When the next step on the item started or the batch let the item go (None: still in force).
    in_force_until: datetime | None
    #: Limits of the step's critical and key parameters by sensor quantity kind (temperature, pH, ...).
    limits: dict[str, dict[str, float | None]] = field(default_factory=dict)


#: Sensor quantity kinds (plant sensors) by the unit of a recipe parameter.
_KIND_BY_UNIT = {"degC": "temperature", "degF": "temperature", "K": "temperature", "pH": "pH", "rpm": "agitation",
                 "bar": "pressure", "mbar": "pressure", "kPa": "pressure", "psi": "pressure",
                 "mS/cm": "conductivity", "µS/cm": "conductivity", "L/min": "flow", "mL/min": "flow"}


def _quantity_kind(parameter: Any) -> str | None:
    kind = _KIND_BY_UNIT.get(parameter.unit)
    if kind is None and parameter.unit == "percent" and ("oxygen" in parameter.name.lower()
                                                         or parameter.key in ("do", "dissolved_oxygen")):
        kind = "dissolved oxygen"
    return kind


def step_limits(doc: RecipeDocument, phase: Phase) -> dict[str, dict[str, float | None]]:
    """Limits of a phase's critical and key parameters by sensor quantity kind."""
    params = doc.parameter_map()
    keys = list(phase.parameters) + [c.parameter for c in phase.captures if getattr(c, "parameter", None)]
    out: dict[str, dict[str, float | None]] = {}
    for key in keys:
        param = params.get(key)
        if param is None or param.criticality == "non_key":
            continue
        kind = _quantity_kind(param)
        if kind and kind not in out:
            out[kind] = {"low": param.low, "high": param.high, "alarm_low": param.alarm_low,
                         "alarm_high": param.alarm_high, "target": param.target, "unit": param.unit}  # type: ignore
    return out


def running_steps(session: Session, *, equipment_id: int, start: datetime, end: datetime) -> list[StepInForce]:
    """Every step in force on an equipment item at some moment of [start, end], ordered by start."""
    from app.batches.services import control_document

    uses = session.execute(
        select(EquipmentUse.batch_id, EquipmentUse.ended_at)
        .where(EquipmentUse.equipment_id == equipment_id, EquipmentUse.started_at <= end,
               (EquipmentUse.ended_at.is_(None)) | (EquipmentUse.ended_at > start))
    ).all()
    out: list[StepInForce] = []
    for use in uses:
        steps = session.execute(
            select(StepExecution.id, StepExecution.phase_key, StepExecution.started_at, StepExecution.ended_at,
                   StepExecution.status, StepExecution.control_recipe_id)
            .where(StepExecution.batch_id == use.batch_id, StepExecution.equipment_id == equipment_id,
                   StepExecution.started_at.is_not(None))
            .order_by(StepExecution.started_at, StepExecution.id)
        ).all()
        if not steps:
            continue
        control = session.get(ControlRecipe, steps[0].control_recipe_id)
        doc = control_document(control) if control is not None else None
        for i, step in enumerate(steps):
            until = steps[i + 1].started_at if i + 1 < len(steps) else use.ended_at
            if step.started_at > end or (until is not None and until <= start):
                continue
            phase = doc.phase_map().get(step.phase_key) if doc else None
            out.append(StepInForce(batch_id=use.batch_id, step_id=step.id, phase_key=step.phase_key,
                                   started_at=step.started_at,
                                   completed_at=step.ended_at if step.status == "completed" else None,
                                   in_force_until=until,
                                   limits=step_limits(doc, phase) if doc and phase else {}))
    return sorted(out, key=lambda s: (s.started_at, s.step_id))


# ---------------------------------------------------------------------------------------------------------------
# Lists


def batches_query(*, status: str | None = None, line_id: int | None = None) -> Select[tuple[Batch]]:
    """Batches, newest first, optionally by status and line."""
    query = select(Batch).order_by(Batch.id.desc())
    if status:
        query = query.where(Batch.status == status)
    if line_id:
        query = query.where(Batch.line_id == line_id)
    return query


def exceptions_query(*, batch_id: int | None = None, status: str | None = None, severity: str | None = None,
                     exception_type: str | None = None, raised_from: datetime | None = None,
                     raised_until: datetime | None = None) -> Select[tuple[BatchException, str]]:
    """Exceptions with their batch number, oldest first, narrowed by any of the filters."""
    query = (select(BatchException, Batch.batch_number).join(Batch, Batch.id == BatchException.batch_id)
             .order_by(BatchException.id))
    for column, value in ((BatchException.batch_id, batch_id), (BatchException.status, status),
                          (BatchException.severity, severity), (BatchException.type, exception_type)):
        if value is not None:
            query = query.where(column == value)
    if raised_from is not None:
        query = query.where(BatchException.raised_at >= raised_from)
    if raised_until is not None:
        query = query.where(BatchException.raised_at < raised_until)
    return query


def open_exception_counts(session: Session, batch_ids: list[int]) -> dict[int, int]:
    """Open exceptions per batch."""
    if not batch_ids:
        return {}
    rows = session.execute(select(BatchException.batch_id, func.count()).where(
        BatchException.batch_id.in_(batch_ids), BatchException.status == "open").group_by(BatchException.batch_id))
    return {row[0]: row[1] for row in rows}


# ---------------------------------------------------------------------------------------------------------------
# Floor queue and step view


def _human(delta: timedelta) -> str:
    seconds = max(0, int(delta.total_seconds()))
    hours, rest = divmod(seconds, 3600)
    return f"{hours} h {rest // 60:02d} min" if hours else f"{rest // 60} min"


def step_waits(doc: RecipeDocument, steps: dict[str, StepExecution], step: StepExecution, now: datetime,
               session: Session | None = None, batch: Batch | None = None) -> dict[str, Any]:
    """What one step is waiting for, in words, with the deadline a hold time sets."""
    from app.batches.execution import missing_captures, required_signature_gaps

    phases = doc.phase_map()
    deps = effective_dependencies(doc).get(step.phase_key, [])
    waiting = [steps[d] for d in deps if d in steps and steps[d].status not in ("completed", "skipped")]
    info: dict[str, Any] = {"ready": False, "waiting_for": [], "deadline": None}
    if step.status == "pending":
        if waiting:
            info["waiting_for"] = [f"{w.phase_name} ({w.status.replace('_', ' ')})" for w in waiting]
        else:
            info["ready"] = True
            for dep in deps:
                pred = steps.get(dep)
                hold = phases[dep].timing.max_hold_time if pred else None
                if pred is not None and hold is not None and pred.ended_at is not None:
                    deadline = pred.ended_at + hold
                    if info["deadline"] is None or deadline < info["deadline"]:
                        info["deadline"] = deadline
    elif step.status == "in_progress" and session is not None and batch is not None:
        phase = phases[step.phase_key]
        missing = missing_captures(session, step, phase)
        unsigned = required_signature_gaps(session, batch, step, phase)
        info["waiting_for"] = [f"data: {', '.join(missing)}"] if missing else []
        for meaning in unsigned:
            independent = any(r.meaning == meaning and r.independent for r in phase.signatures)
            info["waiting_for"].append(f"{meaning} signature" + (" (second person)" if independent else ""))
        if not info["waiting_for"]:
            info["waiting_for"] = ["completion"]
    return info


def floor_queue(session: Session, line_id: int) -> dict[str, Any]:
    """The floor queue of a line: its batches on the floor and, for each, the next steps and what they wait for."""
    from app.batches.services import control_document

    line = session.get(Line, line_id)
    now = session.execute(select(func.now())).scalar_one()
    batches = session.scalars(select(Batch).where(Batch.line_id == line_id, Batch.status.in_(FLOOR_STATUSES))
                              .order_by(Batch.planned_start, Batch.id)).all()
    items = []
    for batch in batches:
        control = session.scalar(select(ControlRecipe).where(ControlRecipe.batch_id == batch.id))
        if control is None:
            continue
        doc = control_document(control)
        steps = {s.phase_key: s for s in session.scalars(select(StepExecution).where(
            StepExecution.batch_id == batch.id).order_by(StepExecution.seq))}
        nexts = []
        for step in steps.values():
            if step.status in ("completed", "skipped"):
                continue
            waits = step_waits(doc, steps, step, now, session, batch)
            if step.status == "in_progress" or waits["ready"]:
                nexts.append({"step": step, "waits": waits})
        done = sum(1 for s in steps.values() if s.status in ("completed", "skipped"))
        blocked = None
        if batch.status in ("paused", "on_hold"):
            blocked = f"{BATCH_STATUSES[batch.status]}: {batch.status_reason or ''}".rstrip(": ")
        items.append({"batch": batch, "next": nexts, "done": done, "total": len(steps), "blocked": blocked})
    return {"line": line, "now": now, "items": items}


@dataclass
class CaptureView:
    """One capture on the tablet: its definition, the value in force and every earlier one."""

    capture: Any
    current: StepEntry | None
    history: list[StepEntry]
    limits: dict[str, Any] | None = None
    required_amount: dict[str, Any] | None = None


def step_view(session: Session, batch: Batch, step: StepExecution) -> dict[str, Any]:
    """Everything the tablet shows for one step."""
    from app.batches.checks import required_amount
    from app.batches.execution import missing_captures, required_signature_gaps, step_signatures
    from app.batches.services import control_document
    from app.recipes.limits import limits_for_capture

    control = session.get(ControlRecipe, step.control_recipe_id)
    assert control is not None  # noqa: S101
    doc = control_document(control)
    phase = doc.phase_map()[step.phase_key]
    now = session.execute(select(func.now())).scalar_one()
    entries = session.scalars(select(StepEntry).where(StepEntry.step_execution_id == step.id)
                              .order_by(StepEntry.id)).all()
    superseded = {e.supersedes_id for e in entries if e.supersedes_id}
    captures = []
    for capture in phase.captures:
        mine = [e for e in entries if e.capture_key == capture.key]
        current = next((e for e in reversed(mine) if e.id not in superseded), None)
        limits = None
        if capture.kind == "number":
            spec = limits_for_capture(doc, capture)
            if spec is not None:
                limits = {k: getattr(spec, k) for k in ("low", "alarm_low", "target", "alarm_high", "high")}
                limits["unit"] = spec.unit
        amount = None
        if isinstance(capture, MaterialScanCapture):
            needed = required_amount(doc, phase, capture)
            if needed is not None:
                amount = {"value": needed[0].value, "unit": needed[0].unit, "tolerance_pct": needed[1]}
        captures.append(CaptureView(capture=capture, current=current, history=[e for e in mine if e is not current],
                                    limits=limits, required_amount=amount))
    steps = {s.phase_key: s for s in session.scalars(select(StepExecution).where(
        StepExecution.batch_id == batch.id).order_by(StepExecution.seq))}
    ordered = list(steps.values())
    position = ordered.index(next(s for s in ordered if s.id == step.id))
    allowed = phase.timing.max_duration or phase.timing.expected_duration
    params = doc.parameter_map()
    return {
        "batch": batch, "step": step, "phase": phase, "doc": doc, "control": control, "captures": captures,
        "parameters": [params[k] for k in phase.parameters if k in params],
        "signatures": step_signatures(session, batch, step) if step.status != "pending" else [],
        "unsigned": required_signature_gaps(session, batch, step, phase) if step.status != "pending" else [],
        "missing": missing_captures(session, step, phase) if step.status == "in_progress" else [],
        "waits": step_waits(doc, steps, step, now, session, batch),
        "allowed_s": allowed.total_seconds() if allowed else None,
        "min_s": phase.timing.min_duration.total_seconds() if phase.timing.min_duration else None,
        "now": now, "steps": ordered, "position": position,
        "exceptions": session.scalars(select(BatchException).where(BatchException.step_execution_id == step.id)
                                      .order_by(BatchException.id)).all(),
    }


def current_step(session: Session, batch: Batch) -> StepExecution | None:
    """The step an operator most likely wants next: one in progress, else the first ready one, else the first open."""
    from app.batches.services import control_document

    steps = session.scalars(select(StepExecution).where(StepExecution.batch_id == batch.id)
                            .order_by(StepExecution.seq)).all()
    if not steps:
        return None
    running = [s for s in steps if s.status == "in_progress"]
    if running:
        return running[0]
    control = session.get(ControlRecipe, steps[0].control_recipe_id)
    doc = control_document(control)  # type: ignore[arg-type]
    by_key = {s.phase_key: s for s in steps}
    deps = effective_dependencies(doc)
    for step in steps:
        if step.status == "pending" and all(by_key[d].status in ("completed", "skipped")
                                            for d in deps.get(step.phase_key, []) if d in by_key):
            return step
    return next((s for s in steps if s.status == "pending"), None)


# ---------------------------------------------------------------------------------------------------------------
# Yields


def _to(value: float, unit: str, target: str) -> float | None:
    try:
        return convert(value, unit, target)
    except (IncompatibleUnitsError, UnknownUnitError):
        return value if unit == target else None


def _pct(actual: float | None, theoretical: float | None) -> float | None:
    if actual is None or not theoretical:
        return None
    return round(actual / theoretical * 100, 2)


def batch_yields(session: Session, batch_id: int) -> dict[str, Any]:
    """Material yields per phase and unit procedure (charged vs theoretical) and the overall output yield.

    Per phase: what its material scans charged (the values in force) against the control recipe's scaled
    requirement, per material and in the batch's unit where the units allow. Overall: the lots the batch produced
    against the batch size. Quantities that cannot be converted to the batch's unit are shown per material only.
    """
    from app.batches.services import control_document

    batch = session.get(Batch, batch_id)
    control = session.scalar(select(ControlRecipe).where(ControlRecipe.batch_id == batch_id))
    if batch is None or control is None:
        return {"phases": [], "unit_procedures": [], "overall": None}
    doc = control_document(control)
    unit = batch.batch_unit
    steps = {s.phase_key: s for s in session.scalars(select(StepExecution).where(StepExecution.batch_id == batch_id))}
    superseded = select(StepEntry.supersedes_id).where(StepEntry.batch_id == batch_id,
                                                       StepEntry.supersedes_id.is_not(None))
    current = session.scalars(select(StepEntry).where(StepEntry.batch_id == batch_id,
                                                      StepEntry.capture_kind == "material_scan",
                                                      StepEntry.id.not_in(superseded))).all()
    by_step: dict[int, list[StepEntry]] = {}
    for entry in current:
        by_step.setdefault(entry.step_execution_id, []).append(entry)
    phases_out, ups = [], {}
    for up in doc.procedure.unit_procedures:
        up_row = ups.setdefault(up.key, {"unit_procedure": up.key, "name": up.name, "actual": 0.0,
                                         "theoretical": 0.0, "unit": unit, "percent": None})
        for op in up.operations:
            for phase in op.phases:
                if not phase.materials:
                    continue
                step = steps.get(phase.key)
                mats, total_actual, total_theory = [], 0.0, 0.0
                for req in phase.materials:
                    if req.quantity is None:
                        continue
                    req_unit = req.unit or doc.material_map()[req.material].unit
                    caps = [c.key for c in phase.captures
                            if isinstance(c, MaterialScanCapture) and c.material == req.material]
                    actual = 0.0
                    for entry in by_step.get(step.id, []) if step else []:
                        if entry.capture_key in caps:
                            value = _to(float(entry.value["quantity"]), entry.value["unit"], req_unit)
                            actual += value if value is not None else 0.0
                    mats.append({"material": req.material, "actual": actual, "theoretical": req.quantity,
                                 "unit": req_unit, "percent": _pct(actual, req.quantity)})
                    a, t = _to(actual, req_unit, unit), _to(req.quantity, req_unit, unit)
                    if a is not None and t is not None:
                        total_actual += a
                        total_theory += t
                row = {"phase": phase.key, "name": phase.name, "unit_procedure": up.key, "materials": mats,
                       "status": step.status if step else None, "actual": total_actual,
                       "theoretical": total_theory, "unit": unit, "percent": _pct(total_actual, total_theory)}
                # An optional step not executed (skipped, or never started) owes the batch no material.
                row["counted"] = step is not None and (step.status in ("in_progress", "completed")
                                                       or (step.status == "pending" and step.mandatory))
                phases_out.append(row)
                if row["counted"]:
                    up_row["actual"] += total_actual
                    up_row["theoretical"] += total_theory
    for row in ups.values():
        row["percent"] = _pct(row["actual"], row["theoretical"])
    outputs = session.execute(select(Lot.lot_number, LotMovement.quantity, Lot.unit)
                              .join(Lot, Lot.id == LotMovement.lot_id)
                              .where(LotMovement.kind == "produce", LotMovement.batch_number == batch.batch_number)
                              .order_by(LotMovement.id)).all()
    produced = 0.0
    for out in outputs:
        value = _to(float(out.quantity), out.unit, unit)
        produced += value or 0.0
    theoretical = float(Decimal(batch.batch_size))
    overall = {"actual": produced, "theoretical": theoretical, "unit": unit,
               "percent": _pct(produced, theoretical) if outputs else None,
               "outputs": [{"lot_number": o.lot_number, "quantity": float(o.quantity), "unit": o.unit}
                           for o in outputs]}
    return {"phases": phases_out, "unit_procedures": [r for r in ups.values() if r["theoretical"]],
            "overall": overall}
