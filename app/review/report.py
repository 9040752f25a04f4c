"""The RBE report of a batch: one document, shown as the review page's body, exported as JSON and as PDF.

It holds the checks that ran (with the rule-set version and the completeness statement), the exceptions grouped
by class and severity with their evidence (the entry, a trend snippet of the sensor, who acknowledged it on the
floor, the link to its audit history), the signed dispositions, the deviations, the audit-trail review section
of the batch (EU Annex 11 §9: what changed, who signed, whether the chain verifies) and the release signature.
Its SHA-256 covers everything but the generation time; the PDF prints it in every footer.
"""

from __future__ import annotations

import hashlib
import json
from collections import defaultdict
from datetime import timedelta
from typing import Any

from flask import render_template
from sqlalchemy import func, select, text
from sqlalchemy.orm import Session

from app import esign
from app.audit.models import AuditAnchor, AuditEvent
from app.audit.services import plain_json
from app.batches.models import (
    Batch,
    BatchAttachment,
    BatchEquipment,
    BatchOverride,
    ControlRecipe,
    EquipmentUse,
    StepEntry,
    StepExecution,
)
from app.core.errors import NotFound
from app.review.models import CapaAction, Deviation, ExceptionDisposition, RbeRun
from app.review.queries import dispositions_of, release_of, release_readiness, runs_of
from app.review.rules import SEVERITIES
from app.review.services import (
    DEVIATION_RECORD,
    DISPOSITION_RECORD,
    RELEASE_RECORD,
    deviation_closure_content,
    stored_disposition_content,
    stored_release_content,
)

SCHEMA = "batchline.rbe-report/1"
#: Audit actions the trail review lists one by one (creations are counted; these are what a reviewer reads).
REVIEWED_ACTIONS = ("correct", "update", "status_change", "sign", "delete_attempt", "void", "supersede")
MAX_LISTED_EVENTS = 500
TREND_POINTS = 60


def _sig(check: esign.SignatureCheck) -> dict[str, Any]:
    s = check.signature
    return {"id": s.id, "meaning": s.meaning, "meaning_label": s.meaning_label, "printed_name": s.printed_name,
            "roles": list(s.signer_roles or []), "signed_at": s.signed_at, "reason": s.reason, "valid": check.valid,
            "manifestation": esign.manifestation_text(s, valid=check.valid)}


def trend_snippet(session: Session, evidence: dict[str, Any]) -> dict[str, Any] | None:
    """A downsampled trend of a sensor around an exception (min/avg/max per bucket), for a small chart."""
    sensor_id = evidence.get("sensor_id")
    start, end = evidence.get("start_ts") or evidence.get("from"), evidence.get("end_ts") or evidence.get("to")
    if not sensor_id or not start or not end:
        return None
    from datetime import datetime

    t0, t1 = datetime.fromisoformat(str(start)), datetime.fromisoformat(str(end))
    pad = max((t1 - t0) / 2, timedelta(minutes=2))
    lo, hi = t0 - pad, t1 + pad
    width = max((hi - lo).total_seconds() / TREND_POINTS, 1.0)
    rows = session.execute(text("""
        SELECT floor(extract(epoch FROM ts) / :w) AS b, min(value) AS lo, avg(value) AS mean, max(value) AS hi
        FROM sensor_readings WHERE sensor_id = :s AND ts >= :a AND ts <= :z AND value IS NOT NULL
        GROUP BY 1 ORDER BY 1"""), {"w": width, "s": int(sensor_id), "a": lo, "z": hi}).all()
    if not rows:
        return {"points": [], "from": lo, "to": hi, "mark": [t0, t1]}
    return {"from": lo, "to": hi, "mark": [t0, t1], "bucket_s": width,
            "points": [{"t": float(r.b) * width, "min": r.lo, "mean": float(r.mean), "max": r.hi} for r in rows]}


def svg_path(trend: dict[str, Any] | None, *, width: int = 320, height: int = 64) -> dict[str, Any] | None:
    """Polyline coordinates of a trend snippet, and the marked episode band, in an SVG box."""
    if not trend or not trend.get("points"):
        return None
    from datetime import datetime

    lo = datetime.fromisoformat(str(trend["from"])).timestamp()
    hi = datetime.fromisoformat(str(trend["to"])).timestamp()
    values = [p["mean"] for p in trend["points"]]
    vmin, vmax = min(p["min"] for p in trend["points"]), max(p["max"] for p in trend["points"])
    span = (vmax - vmin) or 1.0

    def x(t: float) -> float:
        return round((t - lo) / ((hi - lo) or 1.0) * width, 1)

    def y(v: float) -> float:
        return round(height - 4 - (v - vmin) / span * (height - 8), 1)

    mark = [datetime.fromisoformat(str(m)).timestamp() for m in trend["mark"]]
    return {"width": width, "height": height,
            "points": " ".join(f"{x(p['t'])},{y(v)}" for p, v in zip(trend["points"], values, strict=True)),
            "band": [x(mark[0]), max(x(mark[1]) - x(mark[0]), 1.5)], "min": vmin, "max": vmax}


def _batch_record_ids(session: Session, batch: Batch) -> dict[str, set[str]]:
    """Record ids per audit record type that belong to the batch (its review records included)."""
    def ids(query: Any) -> set[str]:
        return {str(i) for i in session.scalars(query)}

    b = batch.id
    out = {
        "batch": {str(b)},
        "control_recipe": ids(select(ControlRecipe.id).where(ControlRecipe.batch_id == b)),
        "batch_equipment": ids(select(BatchEquipment.id).where(BatchEquipment.batch_id == b)),
        "step_execution": ids(select(StepExecution.id).where(StepExecution.batch_id == b)),
        "step_entry": ids(select(StepEntry.id).where(StepEntry.batch_id == b)),
        "batch_attachment": ids(select(BatchAttachment.id).where(BatchAttachment.batch_id == b)),
        "batch_override": ids(select(BatchOverride.id).where(BatchOverride.batch_id == b)),
        "equipment_use": ids(select(EquipmentUse.id).where(EquipmentUse.batch_id == b)),
        "batch_exception": ids(text("SELECT id FROM batch_exceptions WHERE batch_id = :b").bindparams(b=b)),
        "rbe_run": ids(select(RbeRun.id).where(RbeRun.batch_id == b)),
        DISPOSITION_RECORD: ids(select(ExceptionDisposition.id).where(ExceptionDisposition.batch_id == b)),
        DEVIATION_RECORD: ids(select(Deviation.id).where(Deviation.batch_id == b)),
        RELEASE_RECORD: ids(text("SELECT id FROM batch_releases WHERE batch_id = :b").bindparams(b=b)),
    }
    out["capa_action"] = ids(select(CapaAction.id).where(CapaAction.deviation_id.in_(
        [int(i) for i in out[DEVIATION_RECORD]] or [-1])))
    return out


def audit_review(session: Session, batch: Batch, run: RbeRun | None) -> dict[str, Any]:
    """The audit-trail review section: every event on the batch's records, counted; changes and signatures listed."""
    records = _batch_record_ids(session, batch)
    first = session.execute(text("SELECT min(seq) FROM audit_events WHERE record_type = 'batch' AND record_id = :b"),
                            {"b": str(batch.id)}).scalar()
    events = []
    if first is not None:
        events = [e for e in session.scalars(select(AuditEvent).where(
            AuditEvent.seq >= first, AuditEvent.record_type.in_(list(records))).order_by(AuditEvent.seq))
            if e.record_id in records[e.record_type]]
    by_action: dict[str, int] = defaultdict(int)
    by_type: dict[str, int] = defaultdict(int)
    for event in events:
        by_action[event.action] += 1
        by_type[event.record_type] += 1
    listed = [e for e in events if e.action in REVIEWED_ACTIONS]
    chain = next((c for c in (run.checks if run else []) if c["code"] == "audit_chain"), None)
    return {"events": len(events), "by_action": dict(sorted(by_action.items())),
            "by_record_type": dict(sorted(by_type.items())),
            "first_seq": events[0].seq if events else None, "last_seq": events[-1].seq if events else None,
            "chain": {"verified": chain["passed"], "detail": chain["detail"]} if chain else None,
            "listed_truncated": len(listed) > MAX_LISTED_EVENTS,
            "listed": [{"seq": e.seq, "at": e.occurred_at, "actor": e.actor_label, "action": e.action,
                        "record_type": e.record_type, "record_id": e.record_id, "old": e.old_values,
                        "new": e.new_values, "reason": e.reason} for e in listed[:MAX_LISTED_EVENTS]]}


def build_report(session: Session, batch_id: int) -> dict[str, Any]:
    """The RBE report of a batch as plain JSON with its content hash."""
    batch = session.get(Batch, int(batch_id))
    if batch is None:
        raise NotFound(f"no batch {batch_id} in this tenant")
    readiness = release_readiness(session, batch.id)
    runs = runs_of(session, batch.id)
    run = next((r for r in runs if r.final), runs[0] if runs else None)
    steps = {s.id: s for s in session.scalars(select(StepExecution).where(StepExecution.batch_id == batch.id))}
    entry_ids = {v.exception.entry_id for v in readiness.exceptions if v.exception.entry_id}
    entries = {e.id: e for e in session.scalars(select(StepEntry).where(StepEntry.id.in_(entry_ids or {-1})))}
    groups: dict[str, dict[str, Any]] = {}
    for view in readiness.exceptions:
        exc = view.exception
        entry = entries.get(exc.entry_id) if exc.entry_id else None
        step = steps.get(exc.step_execution_id) if exc.step_execution_id else None
        trend = trend_snippet(session, exc.evidence or {}) if (exc.evidence or {}).get("sensor_id") else None
        item = {
            "id": exc.id, "type": exc.type, "class": view.exception_class, "severity": view.severity,
            "raised_severity": exc.severity, "blocks": view.blocks, "signatures_needed": view.signatures,
            "message": exc.message, "step": step.phase_name if step else None,
            "step_key": step.phase_key if step else None, "capture": exc.capture_key, "evidence": exc.evidence,
            "raised_at": exc.raised_at, "raised_by": exc.raised_by_label, "acknowledgement": exc.acknowledgement,
            "status": exc.status, "trend": trend,
            "entry": {"id": entry.id, "display": entry.display, "check_state": entry.check_state,
                      "check_message": entry.check_message, "recorded_by": entry.actor_label,
                      "recorded_at": entry.recorded_at, "attempt": entry.attempt, "action": entry.action,
                      "reason": entry.reason} if entry else None,
            "disposition": {"id": view.disposition.id, "decision": view.disposition.decision,
                            "status": view.disposition.status,
                            "deviation": view.deviation.number if view.deviation else None}
            if view.disposition else None,
        }
        group = groups.setdefault(view.exception_class, {"class": view.exception_class, "label": view.class_label,
                                                          "by_severity": {s: [] for s in SEVERITIES}})
        group["by_severity"][view.severity].append(item)
    dispositions = []
    for disposition in dispositions_of(session, batch.id):
        checks = esign.check_signatures(session, esign.signatures_of(
            session, record_type=DISPOSITION_RECORD, record_id=disposition.id),
            stored_disposition_content(session, disposition))
        dispositions.append({"id": disposition.id, "decision": disposition.decision,
                             "justification": disposition.justification, "status": disposition.status,
                             "signatures_required": disposition.signatures_required,
                             "rule_set_version": disposition.rule_set_version, "by": disposition.actor_label,
                             "at": disposition.created_at, "declined_reason": disposition.declined_reason,
                             "deviation_id": disposition.deviation_id,
                             "exceptions": [i["id"] for i in stored_disposition_content(session, disposition)
                                            ["exceptions"]],
                             "signatures": [_sig(c) for c in checks]})
    deviations = []
    for deviation in session.scalars(select(Deviation).where(Deviation.batch_id == batch.id).order_by(Deviation.id)):
        closure = []
        if deviation.closure_summary is not None:
            closure = [_sig(c) for c in esign.check_signatures(session, esign.signatures_of(
                session, record_type=DEVIATION_RECORD, record_id=deviation.id),
                deviation_closure_content(session, deviation, deviation.closure_summary))]
        deviations.append({"id": deviation.id, "number": deviation.number, "title": deviation.title,
                           "classification": deviation.classification, "status": deviation.status,
                           "opened_at": deviation.opened_at, "closed_at": deviation.closed_at,
                           "root_cause": deviation.root_cause, "product_impact": deviation.product_impact,
                           "closure_summary": deviation.closure_summary, "closure_signatures": closure})
    release = release_of(session, batch.id)
    release_out = None
    if release is not None:
        checks = esign.check_signatures(session, esign.signatures_of(session, record_type=RELEASE_RECORD,
                                                                     record_id=release.id),
                                        stored_release_content(session, release))
        anchor = session.scalar(select(AuditAnchor).where(AuditAnchor.record_type == RELEASE_RECORD,
                                                          AuditAnchor.record_id == str(release.id))
                                .order_by(AuditAnchor.id).limit(1))
        release_out = {"id": release.id, "decision": release.decision, "reason": release.reason,
                       "decided_at": release.decided_at, "by": release.actor_label, "rbe_run_id": release.rbe_run_id,
                       "record_fingerprint": release.record_fingerprint, "audit_head_seq": release.audit_head_seq,
                       "audit_head_hash": release.audit_head_hash, "lots": release.lots,
                       "signatures": [_sig(c) for c in checks],
                       "anchor": {"seq": anchor.seq, "head_hash": anchor.head_hash, "gen_time": anchor.gen_time,
                                  "tsa_url": anchor.tsa_url, "serial": anchor.tsa_serial} if anchor else None}
    report = {
        "schema": SCHEMA,
        "batch": {"id": batch.id, "batch_number": batch.batch_number, "product_code": batch.product_code,
                  "product_name": batch.product_name, "recipe": f"{batch.recipe_code} v{batch.recipe_version}",
                  "batch_size": batch.batch_size, "unit": batch.batch_unit, "status": batch.status,
                  "started_at": batch.started_at, "ended_at": batch.ended_at},
        "readiness": readiness.as_dict(),
        "rbe": {"run_id": run.id, "trigger": run.trigger, "final": run.final, "started_at": run.started_at,
                "duration_ms": run.duration_ms, "rule_set_version": run.rule_set_version,
                "statement": run.statement, "checks": run.checks, "counts": run.counts,
                "fingerprint": run.record_fingerprint, "current": readiness.run_current, "by": run.actor_label}
        if run else None,
        "runs": [{"id": r.id, "trigger": r.trigger, "final": r.final, "at": r.started_at,
                  "exceptions": r.counts.get("total"), "new": len(r.new_exception_ids)} for r in runs],
        "exceptions": sorted(groups.values(), key=lambda g: g["label"]),
        "exception_total": len(readiness.exceptions),
        "dispositions": dispositions,
        "deviations": deviations,
        "audit_review": audit_review(session, batch, run),
        "release": release_out,
    }
    report = plain_json(report)  # type: ignore[assignment]
    report["generated_at"] = plain_json({"t": session.execute(select(func.now())).scalar_one()})["t"]  # type: ignore[index]
    report["content_hash"] = report_hash(report)
    return report


def report_hash(report: dict[str, Any]) -> str:
    """SHA-256 over the report's canonical JSON (no generation time)."""
    body = {k: v for k, v in report.items() if k not in ("content_hash", "generated_at")}
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
                          .encode()).hexdigest()


def render_pdf(report: dict[str, Any]) -> bytes:
    """The RBE report as PDF (WeasyPrint), the content hash and page numbers in every footer."""
    from weasyprint import HTML

    return HTML(string=render_template("review/pdf/report.html", r=report)).write_pdf()
