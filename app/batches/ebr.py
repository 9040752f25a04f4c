"""The electronic batch record (EBR): one document per batch, shown as a page, exported as JSON and as PDF.

`build_record(session, batch_id)` assembles everything the record holds — header, control recipe, every step
with every entry (superseded ones included, each marked), signatures with their manifestation and validity,
exceptions, overrides, materials and genealogy, equipment with its status at use, yields, the event log and the
sensor trends of the batch's equipment (readings while the batch used it, with the sensor episodes) — as plain
JSON, and its SHA-256 `content_hash` over the canonical JSON (everything but the generation time). The JSON
export is that document; the PDF renders the same document and prints the hash in every page footer, so a
printout can be matched to the export and to a later re-export.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from flask import render_template
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app import esign
from app.audit.services import plain_json
from app.batches import queries
from app.batches.execution import override_content, signed_content
from app.batches.models import (
    BATCH_STATUSES,
    STEP_STATUSES,
    BatchEquipment,
    BatchEvent,
    BatchException,
    BatchOverride,
    ControlRecipe,
    EquipmentUse,
    StepEntry,
    StepExecution,
)
from app.batches.services import (
    BATCH_RECORD,
    OVERRIDE_RECORD,
    STEP_RECORD,
    control_document,
    current_assignments,
    get_batch,
    release_content,
)
from app.batches.trends import batch_trends
from app.materials.models import Lot, LotMovement, Material
from app.plant.models import Equipment, Line, Sensor

SCHEMA = "batchline.ebr/1"


def _sig(check: esign.SignatureCheck) -> dict[str, Any]:
    s = check.signature
    return {"id": s.id, "meaning": s.meaning, "meaning_label": s.meaning_label, "printed_name": s.printed_name,
            "roles": list(s.signer_roles or []), "signed_at": s.signed_at, "reason": s.reason, "valid": check.valid,
            "content_hash": s.content_hash, "manifestation": esign.manifestation_text(s, valid=check.valid)}


def canonical(record: dict[str, Any]) -> bytes:
    """The canonical JSON a record's hash covers (sorted keys, no whitespace, UTF-8; no generation time)."""
    body = {k: v for k, v in record.items() if k not in ("content_hash", "generated_at")}
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def record_hash(record: dict[str, Any]) -> str:
    """SHA-256 (hex) of a record's canonical JSON."""
    return hashlib.sha256(canonical(record)).hexdigest()


def build_record(session: Session, batch_id: int) -> dict[str, Any]:
    """The complete EBR of a batch as plain JSON with its content hash."""
    batch = get_batch(session, batch_id)
    line = session.get(Line, batch.line_id)
    control = session.scalar(select(ControlRecipe).where(ControlRecipe.batch_id == batch.id))
    doc = control_document(control) if control is not None else None
    labels = {(ph.key, c.key): c.label for ph in doc.phases() for c in ph.captures} if doc else {}
    steps = session.scalars(select(StepExecution).where(StepExecution.batch_id == batch.id)
                            .order_by(StepExecution.seq)).all()
    entries = session.scalars(select(StepEntry).where(StepEntry.batch_id == batch.id).order_by(StepEntry.id)).all()
    superseded_by = {e.supersedes_id: e.id for e in entries if e.supersedes_id}
    exceptions = session.scalars(select(BatchException).where(BatchException.batch_id == batch.id)
                                 .order_by(BatchException.id)).all()
    overrides = session.scalars(select(BatchOverride).where(BatchOverride.batch_id == batch.id)
                                .order_by(BatchOverride.id)).all()
    tags = dict(session.execute(select(Equipment.id, Equipment.tag)).all())
    step_keys = {s.id: s.phase_key for s in steps}

    step_rows = []
    for step in steps:
        mine = [e for e in entries if e.step_execution_id == step.id]
        first_of: dict[str, int] = {}
        rows = []
        for e in mine:
            first_of.setdefault(e.capture_key, e.id)
            rows.append({
                "id": e.id, "capture": e.capture_key, "label": labels.get((step.phase_key, e.capture_key),
                                                                          e.capture_key),
                "kind": e.capture_kind, "action": e.action, "attempt": e.attempt, "supersedes_id": e.supersedes_id,
                "superseded_by": superseded_by.get(e.id), "current": e.id not in superseded_by,
                "changed_since_first": e.attempt > 1, "reason": e.reason, "display": e.display, "value": e.value,
                "check_state": e.check_state, "check_message": e.check_message, "acknowledgement": e.acknowledgement,
                "override_id": e.override_id, "recorded_at": e.recorded_at, "device_time": e.device_time,
                "clock_skew_ms": e.clock_skew_ms, "by": e.actor_label, "movement_ids": e.movement_ids})
        checks = esign.check_signatures(session, esign.signatures_of(session, record_type=STEP_RECORD,
                                                                     record_id=step.id),
                                        signed_content(session, batch, step))
        step_rows.append({
            "id": step.id, "seq": step.seq, "phase_key": step.phase_key, "name": step.phase_name,
            "unit_procedure": step.unit_procedure_key, "operation": step.operation_key, "mandatory": step.mandatory,
            "status": step.status, "status_label": STEP_STATUSES[step.status], "started_at": step.started_at,
            "started_by": step.started_by_label, "ended_at": step.ended_at, "ended_by": step.ended_by_label,
            "skip_reason": step.skip_reason, "equipment": tags.get(step.equipment_id) if step.equipment_id else None,
            "override_id": step.override_id, "entries": rows, "signatures": [_sig(c) for c in checks],
            "exception_ids": [x.id for x in exceptions if x.step_execution_id == step.id],
            "instructions": doc.phase_map()[step.phase_key].instructions if doc else ""})

    release = None
    if control is not None and control.signature_id is not None:
        assignments = current_assignments(session, batch.id)
        release_checks = esign.check_signatures(
            session, esign.signatures_of(session, record_type=BATCH_RECORD, record_id=batch.id),
            release_content(batch, control.content_hash, assignments))
        release = [_sig(c) for c in release_checks]

    override_rows = []
    for o in overrides:
        sig_checks = esign.check_signatures(
            session, esign.signatures_of(session, record_type=OVERRIDE_RECORD, record_id=o.id),
            override_content(o, batch.batch_number))
        override_rows.append({"id": o.id, "kind": o.kind, "step": step_keys.get(o.step_execution_id),
                              "capture": o.capture_key, "blocked_by": o.blocked_by, "reason": o.reason,
                              "supervisor": o.supervisor_label, "occurred_at": o.occurred_at,
                              "signatures": [_sig(c) for c in sig_checks]})

    movements = session.execute(
        select(LotMovement.id, Lot.lot_number, Material.code, LotMovement.kind, LotMovement.quantity, Lot.unit,
               LotMovement.occurred_at, LotMovement.reason, LotMovement.actor_label)
        .join(Lot, Lot.id == LotMovement.lot_id).join(Material, Material.id == Lot.material_id)
        .where(LotMovement.batch_number == batch.batch_number).order_by(LotMovement.id)).all()
    entry_movements = {m for e in entries for m in (e.movement_ids or [])}
    returns = session.execute(
        select(LotMovement.id, Lot.lot_number, Material.code, LotMovement.kind, LotMovement.quantity, Lot.unit,
               LotMovement.occurred_at, LotMovement.reason, LotMovement.actor_label)
        .join(Lot, Lot.id == LotMovement.lot_id).join(Material, Material.id == Lot.material_id)
        .where(LotMovement.id.in_(entry_movements), LotMovement.kind == "adjust")).all() if entry_movements else []
    moves = [{"id": m.id, "lot": m.lot_number, "material": m.code, "kind": m.kind, "quantity": m.quantity,
              "unit": m.unit, "occurred_at": m.occurred_at, "reason": m.reason, "by": m.actor_label}
             for m in sorted([*movements, *returns], key=lambda r: r.id)]
    consumed = {}
    for m in moves:
        if m["kind"] in ("consume", "adjust"):
            row = consumed.setdefault(m["lot"], {"lot": m["lot"], "material": m["material"], "unit": m["unit"],
                                                 "net_quantity": 0})
            row["net_quantity"] -= m["quantity"]
    produced = session.execute(select(Lot.lot_number, Lot.quantity, Lot.unit, Lot.status, Material.code)
                               .join(Material, Material.id == Lot.material_id)
                               .where(Lot.produced_by_batch == batch.batch_number).order_by(Lot.id)).all()

    uses = session.scalars(select(EquipmentUse).where(EquipmentUse.batch_id == batch.id)
                           .order_by(EquipmentUse.id)).all()
    assigned = session.scalars(select(BatchEquipment).where(BatchEquipment.batch_id == batch.id)
                               .order_by(BatchEquipment.id)).all()
    assigned_ids = {a.id for a in assigned}
    superseded_assignments = {a.supersedes_id for a in assigned if a.supersedes_id in assigned_ids}
    scanned = [{"step": step_keys.get(e.step_execution_id), "capture": e.capture_key, "tag": e.value.get("tag"),
                "entry_id": e.id, "current": e.id not in superseded_by,
                "status_at_use": (e.check_details or {}).get("status_at_use")}
               for e in entries if e.capture_kind == "equipment_scan"]
    equipment_ids = {u.equipment_id for u in uses} | {a.equipment_id for a in assigned}
    sensors = session.execute(select(Sensor.tag, Sensor.quantity_kind, Sensor.unit, Sensor.equipment_id)
                              .where(Sensor.equipment_id.in_(equipment_ids)).order_by(Sensor.tag)).all() \
        if equipment_ids else []

    events = session.scalars(select(BatchEvent).where(BatchEvent.batch_id == batch.id).order_by(BatchEvent.id)).all()
    record: dict[str, Any] = {
        "schema": SCHEMA,
        "batch": {"id": batch.id, "batch_number": batch.batch_number, "product_code": batch.product_code,
                  "product_name": batch.product_name, "recipe_code": batch.recipe_code,
                  "recipe_version": batch.recipe_version, "recipe_version_id": batch.recipe_version_id,
                  "recipe_content_hash": batch.recipe_content_hash, "batch_size": batch.batch_size,
                  "unit": batch.batch_unit, "line": line.code if line else None,
                  "line_name": line.name if line else None, "planned_start": batch.planned_start,
                  "status": batch.status, "status_label": BATCH_STATUSES[batch.status],
                  "status_reason": batch.status_reason, "identity": batch.identity, "planned_at": batch.created_at,
                  "dispatched_at": batch.dispatched_at, "started_at": batch.started_at, "ended_at": batch.ended_at},
        "control_recipe": None if control is None else {
            "id": control.id, "content_hash": control.content_hash, "source_content_hash": control.source_content_hash,
            "factor": control.factor, "frozen_at": control.frozen_at, "scaling_summary": control.scaling_summary,
            "release_signatures": release, "document": control.document},
        "steps": step_rows,
        "exceptions": [{"id": x.id, "type": x.type, "severity": x.severity, "step": step_keys.get(x.step_execution_id),
                        "capture": x.capture_key, "entry_id": x.entry_id, "message": x.message, "status": x.status,
                        "acknowledgement": x.acknowledgement, "override_id": x.override_id,
                        "raised_at": x.raised_at, "raised_by": x.raised_by_label, "evidence": x.evidence}
                       for x in exceptions],
        "overrides": override_rows,
        "materials": {"movements": moves, "consumed": list(consumed.values()),
                      "produced": [{"lot": p.lot_number, "material": p.code, "quantity": p.quantity, "unit": p.unit,
                                    "status": p.status} for p in produced]},
        "equipment": {
            "assigned": [{"id": a.id, "requirement": a.requirement, "tag": a.equipment_tag, "readiness": a.readiness,
                          "assigned_at": a.assigned_at, "reason": a.reason, "supersedes_id": a.supersedes_id,
                          "current": a.id not in superseded_assignments} for a in assigned],
            "used": [{"tag": u.equipment_tag, "started_at": u.started_at, "ended_at": u.ended_at,
                      "status_at_use": u.status_at_use} for u in uses],
            "scanned": scanned},
        "yields": queries.batch_yields(session, batch.id),
        "events": [{"id": ev.id, "kind": ev.kind, "step": step_keys.get(ev.step_execution_id) if ev.step_execution_id
                    else None, "from": ev.from_status, "to": ev.to_status, "reason": ev.reason,
                    "details": ev.details, "at": ev.occurred_at, "by": ev.actor_label} for ev in events],
        "sensor_trends": {"sensors": [{"tag": s.tag, "kind": s.quantity_kind, "unit": s.unit,
                                       "equipment": tags.get(s.equipment_id)} for s in sensors],
                          **batch_trends(session, batch)},
    }
    record = plain_json(record)  # type: ignore[assignment]
    record["generated_at"] = plain_json({"t": session.execute(select(func.now())).scalar_one()})["t"]  # type: ignore[index]
    record["content_hash"] = record_hash(record)
    return record


def render_pdf(record: dict[str, Any]) -> bytes:
    """The EBR as PDF (WeasyPrint): page numbers and the content hash in every footer, manifestations, and values
    changed since their first entry marked (EU Annex 11 §8.2)."""
    from weasyprint import HTML

    html = render_template("batches/pdf/record.html", r=record)
    return HTML(string=html).write_pdf()
