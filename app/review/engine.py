"""The RBE engine: every completeness and consistency check over one batch, and the exceptions they find.

`run_rbe(session, batch_id=..., trigger=...)` loads the batch once, runs each check of `CHECKS` in order, raises
the exceptions the checks found (the batch area's `BatchException`, one per finding, never twice: each finding
has a dedupe key) and stores an `RbeRun`: the checks that ran with their outcome, the rule-set version, every
exception of the batch and a completeness statement — so that "no exceptions" is itself evidence. A run over a
completed batch is *final*: it moves the batch to `in_review`, and its fingerprint of the record is what release
compares with the record as it stands.

While a batch still runs, findings that only mean "not finished yet" (a mandatory step not done, materials not
reconciled yet) are reported by their check but not raised: an exception is a fact, never a guess.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import orjson
from sqlalchemy import Text, cast, exists, select, text
from sqlalchemy.orm import Session

from app import esign
from app.audit.models import GENESIS_HASH
from app.audit.services import current_actor, plain_json_text, record_many
from app.batches import execution
from app.batches.models import (
    Batch,
    BatchEquipment,
    BatchException,
    BatchOverride,
    ControlRecipe,
    StepEntry,
    StepExecution,
)
from app.batches.services import (
    BATCH_RECORD,
    OVERRIDE_RECORD,
    STEP_RECORD,
    add_event,
    control_document,
    lock_batch,
    release_content,
)
from app.core.errors import Conflict
from app.materials.models import Lot, LotMovement
from app.recipes.document import (
    IncompatibleUnitsError,
    MaterialScanCapture,
    Phase,
    RecipeDocument,
    UnknownUnitError,
    convert,
)
from app.review import rules as rules_mod
from app.review.models import RbeRun
from app.review.rules import RuleSet

#: How the RBE is named on what it raises and records.
RBE_LABEL = "system: review by exception"


@dataclass
class Finding:
    """An exception a check wants raised (once per batch: `dedupe_key`)."""

    type: str
    message: str
    dedupe_key: str
    evidence: dict[str, Any] = field(default_factory=dict)
    step_id: int | None = None
    entry_id: int | None = None
    capture_key: str | None = None
    #: Raise it only once the record is final (it may still be put right while the batch runs).
    final_only: bool = False
    #: The parameter criticality it concerns (severity by criticality).
    criticality: str | None = None


@dataclass
class CheckOutcome:
    """The result of one check."""

    code: str
    label: str
    passed: bool
    detail: str
    findings: list[Finding] = field(default_factory=list)
    counts: dict[str, Any] = field(default_factory=dict)
    exception_ids: list[int] = field(default_factory=list)
    #: Findings not raised because the batch still runs (they may yet be put right).
    pending: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        """JSON form stored on the run."""
        return {"code": self.code, "label": self.label, "passed": self.passed, "detail": self.detail,
                "findings": [{"type": f.type, "message": f.message, "dedupe_key": f.dedupe_key}
                             for f in self.findings][:200],
                "exception_ids": self.exception_ids, "counts": self.counts, "pending": self.pending[:50]}


@dataclass
class Context:
    """Everything the checks read, loaded once."""

    session: Session
    batch: Batch
    rules: RuleSet
    now: datetime
    final: bool
    control: ControlRecipe | None
    doc: RecipeDocument | None
    steps: list[StepExecution]
    entries: list[StepEntry]
    current: list[StepEntry]
    #: The batch's exceptions before this run, in id order (the columns the run reads, not ORM objects).
    exceptions: list[ExceptionRow]
    #: The batch's sensor episodes, once the episode check has loaded them (the fingerprint reuses them).
    episodes: list[Any] | None = None
    #: The exceptions this run raised, in id order.
    raised: list[Any] = field(default_factory=list)
    #: The lot movements of `movements()`, once read.
    _movements: list[Any] | None = None

    @property
    def phases(self) -> dict[str, Phase]:
        """The control recipe's phases by key."""
        return self.doc.phase_map() if self.doc else {}

    def step_by_id(self) -> dict[int, StepExecution]:
        """Steps by id."""
        return {s.id: s for s in self.steps}

    def movement_ids(self) -> set[int]:
        """The lot movements the batch's entries name."""
        return {m for e in self.entries for m in (e.movement_ids or [])}

    def movements(self) -> list[Any]:
        """The lot movements the entries name and those booked to the batch (with their lot), read once for the
        material and genealogy checks."""
        if self._movements is None:
            self._movements = list(self.session.execute(
                select(LotMovement.id, LotMovement.lot_id, LotMovement.kind, LotMovement.quantity,
                       LotMovement.batch_number, Lot.lot_number, Lot.status)
                .join(Lot, Lot.id == LotMovement.lot_id)
                .where(LotMovement.id.in_(self.movement_ids() or [-1])
                       | (LotMovement.batch_number == self.batch.batch_number))))
        return self._movements


Check = Callable[[Context], CheckOutcome]
#: The checks, in the order they run: (code, label, function).
CHECKS: list[tuple[str, str, Check]] = []


def check(code: str, label: str) -> Callable[[Check], Check]:
    """Register a check of the RBE (every run runs every registered check)."""

    def register(fn: Check) -> Check:
        CHECKS.append((code, label, fn))
        return fn

    return register


@dataclass(frozen=True)
class ExceptionRow:
    """What a run reads of an exception of the batch (to dedupe, collect and count it): a thousand of them cost
    a fraction of loading ORM objects with their evidence, and the run raises them without loading them back."""

    id: int
    type: str
    severity: str
    entry_id: int | None
    dedupe_key: str | None
    raised_by_label: str
    #: The evidence's `criticality` (all `criticality_of` reads of the evidence).
    criticality: Any

    @property
    def evidence(self) -> dict[str, Any]:
        """What `criticality_of` reads of the evidence."""
        return {"criticality": self.criticality}


EXCEPTION_ROWS = select(BatchException.id, BatchException.type, BatchException.severity, BatchException.entry_id,
                        BatchException.dedupe_key, BatchException.raised_by_label,
                        BatchException.evidence["criticality"]).order_by(BatchException.id)


def _load(session: Session, batch: Batch, rules: RuleSet, now: datetime) -> Context:
    control = session.scalar(select(ControlRecipe).where(ControlRecipe.batch_id == batch.id))
    doc = control_document(control) if control is not None else None
    steps = list(session.scalars(select(StepExecution).where(StepExecution.batch_id == batch.id)
                                 .order_by(StepExecution.seq)))
    entries = list(session.scalars(select(StepEntry).where(StepEntry.batch_id == batch.id).order_by(StepEntry.id)))
    superseded = {e.supersedes_id for e in entries if e.supersedes_id is not None}
    exceptions = [ExceptionRow(*row) for row in session.execute(
        EXCEPTION_ROWS.where(BatchException.batch_id == batch.id))]
    return Context(session=session, batch=batch, rules=rules, now=now,
                   final=batch.status in ("completed", "in_review", "released", "rejected"), control=control,
                   doc=doc, steps=steps, entries=entries, current=[e for e in entries if e.id not in superseded],
                   exceptions=exceptions)


# ---------------------------------------------------------------------------------------------------------------
# Checks


@check("steps_complete", "All mandatory steps done")
def _steps_complete(ctx: Context) -> CheckOutcome:
    findings = []
    for step in ctx.steps:
        if step.mandatory and step.status != "completed":
            findings.append(Finding("missing_mandatory_step",
                                    f"mandatory step {step.phase_name} is {step.status.replace('_', ' ')}",
                                    f"rbe:mandatory:{step.id}", {"step": step.phase_key, "status": step.status},
                                    step_id=step.id, final_only=True))
    done = sum(1 for s in ctx.steps if s.mandatory and s.status == "completed")
    total = sum(1 for s in ctx.steps if s.mandatory)
    if not ctx.steps:
        return CheckOutcome("steps_complete", "", False, "the batch was never released to the floor", [
            Finding("missing_mandatory_step", "the batch has no steps: it was never released to the floor",
                    "rbe:mandatory:none", final_only=True)])
    return CheckOutcome("steps_complete", "", not findings, f"{done} of {total} mandatory steps completed",
                        findings, {"mandatory": total, "completed": done})


@check("optional_steps", "Optional steps executed or skipped with a reason")
def _optional_steps(ctx: Context) -> CheckOutcome:
    findings = []
    for step in ctx.steps:
        if step.status == "skipped":
            findings.append(Finding("skipped_step", f"optional step {step.phase_name} was skipped: {step.skip_reason}",
                                    f"rbe:skipped:{step.id}",
                                    {"step": step.phase_key, "reason": step.skip_reason,
                                     "skipped_by": step.ended_by_label, "skipped_at": step.ended_at},
                                    step_id=step.id))
    optional = [s for s in ctx.steps if not s.mandatory]
    return CheckOutcome("optional_steps", "", not findings,
                        f"{len(optional)} optional steps, {len(findings)} skipped", findings,
                        {"optional": len(optional), "skipped": len(findings)})


def _assignments_at(session: Session, batch_id: int, moment: datetime) -> dict[str, BatchEquipment]:
    """The equipment assignments in force at a moment (what a release-to-floor signature attested)."""
    rows = list(session.scalars(select(BatchEquipment).where(BatchEquipment.batch_id == batch_id,
                                                             BatchEquipment.assigned_at <= moment)
                                .order_by(BatchEquipment.id)))
    replaced = {r.supersedes_id for r in rows if r.supersedes_id is not None}
    return {r.requirement: r for r in rows if r.id not in replaced}


@check("signatures_valid", "All signatures present and valid (content hashes still match)")
def _signatures_valid(ctx: Context) -> CheckOutcome:
    session, batch = ctx.session, ctx.batch
    findings: list[Finding] = []
    checked = invalid = 0
    phases = ctx.phases
    current_by_step: dict[int, list[StepEntry]] = defaultdict(list)
    for entry in ctx.current:
        current_by_step[entry.step_execution_id].append(entry)
    executed = [step for step in ctx.steps if step.status in ("completed", "in_progress")]
    signatures = execution.steps_signatures(session, batch, executed, ctx.current)
    for step in executed:
        phase = phases.get(step.phase_key)
        checks = signatures[step.id]
        checked += len(checks)
        valid = {c.signature.meaning for c in checks if c.valid}
        broken = [c.signature for c in checks if not c.valid and c.signature.meaning not in valid]
        invalid += len([c for c in checks if not c.valid])
        for sig in broken:
            findings.append(Finding(
                "signature_invalid",
                f"step {step.phase_name}: the {sig.meaning} signature of {sig.printed_name} "
                f"({sig.signed_at:%Y-%m-%d %H:%M} UTC) no longer matches the record: it changed after signing",
                f"rbe:signature:{sig.id}",
                {"signature_id": sig.id, "meaning": sig.meaning, "signer": sig.printed_name,
                 "signed_at": sig.signed_at, "signed_hash": sig.content_hash, "record_type": STEP_RECORD,
                 "record_id": step.id}, step_id=step.id))
        if phase is None or step.status != "completed":
            continue
        signed_meanings = {c.signature.meaning for c in checks}
        for requirement in phase.signatures:
            if requirement.meaning not in signed_meanings:
                findings.append(Finding(
                    "missing_signature", f"step {step.phase_name} has no {requirement.meaning} signature"
                    + (" (second-person verification)" if requirement.independent else ""),
                    f"rbe:unsigned:{step.id}:{requirement.meaning}",
                    {"meaning": requirement.meaning, "independent": requirement.independent,
                     "step": step.phase_key}, step_id=step.id))
        # 21 CFR 211.101(c)-(d): charged components and critical values are verified by a second person, even
        # where the recipe forgot to ask for it.
        mine = current_by_step.get(step.id, [])
        critical = [e for e in mine if e.capture_kind == "material_scan"
                    or (e.check_details or {}).get("criticality") == "critical"]
        if critical and not any(r.meaning == "verified" for r in phase.signatures):
            authors = {e.member_id for e in mine}
            if not any(c.valid and c.signature.meaning == "verified" and c.signature.signer_member_id not in authors
                       for c in checks):
                findings.append(Finding(
                    "missing_signature",
                    f"step {step.phase_name}: " + ", ".join(sorted({e.capture_key for e in critical}))
                    + " (material charge or critical value) not verified by a second person",
                    f"rbe:verify:{step.id}", {"captures": sorted({e.capture_key for e in critical}),
                                              "rule": "21 CFR 211.101(d) second-person verification"},
                    step_id=step.id))
    # Signatures on the batch itself (release to the floor) and on supervisor overrides never change content.
    control = ctx.control
    for sig in esign.signatures_of(session, record_type=BATCH_RECORD, record_id=batch.id):
        checked += 1
        content = release_content(batch, control.content_hash, _assignments_at(session, batch.id, sig.signed_at)) \
            if control is not None else None
        if content is None or not esign.verify_signature(session, sig, content):
            invalid += 1
            findings.append(Finding("signature_invalid",
                                    f"the {sig.meaning} signature releasing the batch to the floor no longer "
                                    "matches the batch record", f"rbe:signature:{sig.id}",
                                    {"signature_id": sig.id, "meaning": sig.meaning, "signer": sig.printed_name,
                                     "signed_at": sig.signed_at, "record_type": BATCH_RECORD,
                                     "record_id": batch.id}))
    overrides = list(session.scalars(select(BatchOverride).where(BatchOverride.batch_id == batch.id)))
    for override in overrides:
        for sig in esign.signatures_of(session, record_type=OVERRIDE_RECORD, record_id=override.id):
            checked += 1
            if not esign.verify_signature(session, sig, execution.override_content(override, batch.batch_number)):
                invalid += 1
                findings.append(Finding("signature_invalid",
                                        f"the signature of supervisor override #{override.id} no longer matches it",
                                        f"rbe:signature:{sig.id}",
                                        {"signature_id": sig.id, "override_id": override.id,
                                         "signer": sig.printed_name, "record_type": OVERRIDE_RECORD,
                                         "record_id": override.id}, step_id=override.step_execution_id))
    return CheckOutcome("signatures_valid", "", not findings,
                        f"{checked} signatures verified against the record, {invalid} no longer match; "
                        f"{sum(1 for f in findings if f.type == 'missing_signature')} required signatures missing",
                        findings, {"verified": checked, "invalid": invalid})


def _to_unit(value: Decimal, unit: str, target: str) -> Decimal | None:
    if unit == target:
        return value
    try:
        return Decimal(repr(convert(float(value), unit, target)))
    except (IncompatibleUnitsError, UnknownUnitError):
        return None


@check("materials_reconciled", "All materials reconciled (charged vs required, lot ledger vs record)")
def _materials_reconciled(ctx: Context) -> CheckOutcome:
    doc = ctx.doc
    findings: list[Finding] = []
    if doc is None:
        return CheckOutcome("materials_reconciled", "", True, "no control recipe: nothing was charged")
    by_step: dict[int, list[StepEntry]] = defaultdict(list)
    for entry in ctx.current:
        if entry.capture_kind == "material_scan":
            by_step[entry.step_execution_id].append(entry)
    materials = doc.material_map()
    requirements = 0
    for step in ctx.steps:
        if step.status != "completed":
            continue
        phase = ctx.phases.get(step.phase_key)
        if phase is None:
            continue
        for req in phase.materials:
            if req.quantity is None:
                continue
            requirements += 1
            unit = req.unit or (materials[req.material].unit if req.material in materials else "")
            caps = {c.key for c in phase.captures if isinstance(c, MaterialScanCapture) and c.material == req.material}
            charged = Decimal(0)
            unconvertible = []
            for entry in by_step.get(step.id, []):
                if entry.capture_key in caps:
                    value = _to_unit(Decimal(str(entry.value["quantity"])), entry.value["unit"], unit)
                    if value is None:
                        unconvertible.append(entry.display)
                    else:
                        charged += value
            tolerance = req.tolerance_pct if req.tolerance_pct is not None else (
                materials[req.material].tolerance_pct if req.material in materials else 0.0)
            needed = Decimal(repr(req.quantity))
            slack = needed * Decimal(repr(tolerance)) / 100
            if unconvertible or abs(charged - needed) > slack:
                findings.append(Finding(
                    "material_reconciliation",
                    f"step {step.phase_name}: {req.material} charged {charged.normalize():f} {unit}, "
                    f"required {needed.normalize():f} {unit} ± {tolerance}%",
                    f"rbe:reconcile:{step.id}:{req.material}",
                    {"material": req.material, "charged": charged, "required": needed, "unit": unit,
                     "tolerance_pct": tolerance, "unconvertible": unconvertible}, step_id=step.id, final_only=True))
    # The lot ledger must say what the record says: net consumption per lot equals the scans in force.
    movement_ids = ctx.movement_ids()
    ledger: dict[str, Decimal] = defaultdict(Decimal)
    for movement in ctx.movements():
        if movement.id in movement_ids:
            ledger[movement.lot_number] -= movement.quantity
    recorded: dict[str, Decimal] = defaultdict(Decimal)
    for entry in ctx.current:
        if entry.capture_kind == "material_scan" and entry.value.get("quantity_in_lot_unit") is not None:
            recorded[entry.value["lot_number"]] += Decimal(str(entry.value["quantity_in_lot_unit"]))
    for lot_number in sorted(set(ledger) | set(recorded)):
        if ledger[lot_number] != recorded[lot_number]:
            findings.append(Finding(
                "material_reconciliation",
                f"lot {lot_number}: the ledger shows {ledger[lot_number].normalize():f} consumed by the batch, "
                f"the record {recorded[lot_number].normalize():f}", f"rbe:ledger:{lot_number}",
                {"lot": lot_number, "ledger": ledger[lot_number], "record": recorded[lot_number]}, final_only=True))
    return CheckOutcome("materials_reconciled", "", not findings,
                        f"{requirements} material requirements of completed steps and {len(recorded)} lots checked",
                        findings, {"requirements": requirements, "lots": len(recorded)})


@check("genealogy_complete", "Genealogy complete (every input traced to a lot, outputs recorded)")
def _genealogy_complete(ctx: Context) -> CheckOutcome:
    batch = ctx.batch
    findings: list[Finding] = []
    movement_ids = ctx.movement_ids()
    rows = [m for m in ctx.movements() if m.batch_number == batch.batch_number]
    consumed = [r for r in rows if r.kind == "consume"]
    produced = [r for r in rows if r.kind == "produce"]
    for row in consumed:
        if row.id not in movement_ids:
            findings.append(Finding("genealogy_incomplete",
                                    f"lot {row.lot_number} was consumed into the batch outside its record "
                                    f"(movement #{row.id}, no entry names it)", f"rbe:orphan:{row.id}",
                                    {"movement_id": row.id, "lot": row.lot_number, "quantity": row.quantity},
                                    final_only=True))
    if not produced:
        findings.append(Finding("genealogy_incomplete", "the batch recorded no output lot: nothing links it to "
                                "what it made", "rbe:no_output", {}, final_only=True))
    return CheckOutcome("genealogy_complete", "", not findings,
                        f"{len({r.lot_number for r in consumed})} input lots, {len(produced)} output lots",
                        findings, {"inputs": len({r.lot_number for r in consumed}), "outputs": len(produced)})


def _critical_windows(ctx: Context) -> list[dict[str, Any]]:
    """Windows (step, equipment, quantity kind) of executed critical phases whose parameters a sensor measures."""
    from app.batches.queries import step_limits

    out = []
    if ctx.doc is None:
        return out
    params = ctx.doc.parameter_map()
    for step in ctx.steps:
        phase = ctx.phases.get(step.phase_key)
        if phase is None or step.started_at is None or step.equipment_id is None:
            continue
        kinds = step_limits(ctx.doc, phase)
        keys = list(phase.parameters) + [c.parameter for c in phase.captures if getattr(c, "parameter", None)]
        if not any(params[k].criticality in ("critical", "key") for k in keys if k in params):
            continue
        end = step.ended_at or ctx.now
        for kind in kinds:
            out.append({"step": step, "equipment_id": step.equipment_id, "kind": kind, "start": step.started_at,
                        "end": end})
    return out


#: Sparse sensors (a few readings per gap threshold): one pass over their readings, per sensor and bucket (bucket
#: width <= every gap threshold), the first and last good reading, whether any reading came from a person rather
#: than a gateway. Gaps longer than a sensor's threshold always fall between buckets (wherever the buckets start),
#: so comparing each bucket's first good reading with the previous bucket's last one finds every such gap exactly,
#: without sorting the rows. `date_bin` is integer arithmetic on the timestamp; the aggregate is hashed over parallel
#: workers: one pass, measured at about three times a bare count(*) of the rows.
SENSOR_SQL = """
WITH buckets AS (
  SELECT sensor_id, date_bin(make_interval(secs => :width), ts, :lo) AS bucket,
         min(ts) FILTER (WHERE quality < 2 AND value IS NOT NULL) AS first_good,
         max(ts) FILTER (WHERE quality < 2 AND value IS NOT NULL) AS last_good,
         count(*) AS n,
         count(*) FILTER (WHERE quality >= 2 OR value IS NULL) AS bad,
         {manual} AS manual
  FROM sensor_readings
  WHERE sensor_id = ANY(CAST(:sensors AS bigint[])) AND ts >= :lo AND ts <= :hi
    AND (batch_id = CAST(:batch AS bigint) OR batch_id IS NULL)
  GROUP BY 1, 2
), good AS (
  SELECT sensor_id, first_good, last_good,
         lag(last_good) OVER (PARTITION BY sensor_id ORDER BY bucket) AS prev_last
  FROM buckets WHERE first_good IS NOT NULL
)
SELECT 'gap' AS kind, sensor_id, prev_last AS t1, first_good AS t2, 0 AS n, 0 AS bad, false AS manual
FROM good WHERE prev_last IS NOT NULL AND first_good - prev_last > make_interval(secs => :min_gap)
UNION ALL
SELECT 'summary', sensor_id, min(first_good), max(last_good), sum(n), sum(bad), bool_or(manual)
FROM buckets GROUP BY sensor_id
"""

#: Dense sensors (hundreds of readings or more per gap threshold): the pass only counts readings per sensor (a
#: hashed count over parallel workers, measured at 1.5-2 bare counts, half the bucketed pass), and the gaps are
#: walked on the (sensor_id, ts) primary key: from a good reading, the last good reading at most `min_gap` later
#: (one backward index probe); if there is none, the next good reading is the end of a gap. Each probe moves past
#: the previous one's window, so a sensor costs about two probes per threshold of its span (plus two per gap),
#: whatever its sampling rate. The result is the same as the bucketed pass: every pair of consecutive good readings
#: further apart than `min_gap`, and the first and last good reading.
DENSE_SENSOR_SQL = """
WITH RECURSIVE counted AS (
  SELECT sensor_id, count(*) AS n, count(*) FILTER (WHERE quality >= 2 OR value IS NULL) AS bad,
         {manual} AS manual
  FROM sensor_readings
  WHERE sensor_id = ANY(CAST(:sensors AS bigint[])) AND ts >= :lo AND ts <= :hi
    AND (batch_id = CAST(:batch AS bigint) OR batch_id IS NULL)
  GROUP BY sensor_id
), good AS NOT MATERIALIZED (  -- good readings in scope, read by index probes (inlined in each)
  SELECT sensor_id, ts FROM sensor_readings
  WHERE ts >= :lo AND ts <= :hi AND (batch_id = CAST(:batch AS bigint) OR batch_id IS NULL)
    AND quality < 2 AND value IS NOT NULL
), ends AS MATERIALIZED (
  SELECT c.sensor_id, c.n, c.bad, c.manual, f.ts AS first_good, l.ts AS last_good
  FROM counted c
  LEFT JOIN LATERAL (SELECT ts FROM good WHERE sensor_id = c.sensor_id ORDER BY ts LIMIT 1) f ON true
  LEFT JOIN LATERAL (SELECT ts FROM good WHERE sensor_id = c.sensor_id ORDER BY ts DESC LIMIT 1) l ON true
), walk(sensor_id, t, gap_from) AS (
  SELECT sensor_id, first_good, NULL::timestamptz FROM ends WHERE first_good IS NOT NULL
  UNION ALL
  SELECT w.sensor_id, coalesce(near.ts, far.ts), CASE WHEN near.ts IS NULL THEN w.t END
  FROM walk w
  LEFT JOIN LATERAL (SELECT ts FROM good
                     WHERE sensor_id = w.sensor_id AND ts > w.t AND ts <= w.t + make_interval(secs => :min_gap)
                     ORDER BY ts DESC LIMIT 1) near ON true
  LEFT JOIN LATERAL (SELECT ts FROM good
                     WHERE near.ts IS NULL AND sensor_id = w.sensor_id AND ts > w.t + make_interval(secs => :min_gap)
                     ORDER BY ts LIMIT 1) far ON true
  WHERE coalesce(near.ts, far.ts) IS NOT NULL
)
SELECT 'gap' AS kind, sensor_id, gap_from AS t1, t AS t2, 0 AS n, 0 AS bad, false AS manual
FROM walk WHERE gap_from IS NOT NULL
UNION ALL
SELECT 'summary', sensor_id, first_good, last_good, n, bad, manual FROM ends
"""
#: Both passes cast the ids to bigint, the columns' type: psycopg sends a small Python int as a smallint, and a
#: cross-type comparison on every reading costs about a tenth of the pass.
#: A sensor is walked on its index when it samples at least this many readings per gap threshold.
DENSE_READINGS_PER_GAP = 100
MANUAL_SQL = "bool_or(ingest_id = ANY(:manual))"
#: Without payloads posted by people (the usual case) the per-reading test is left out of the pass.
SENSOR_SCANS = {(dense, bool(manual)): text((DENSE_SENSOR_SQL if dense else SENSOR_SQL).format(
    manual=MANUAL_SQL if manual else "false")) for dense in (False, True) for manual in (False, True)}
#: Settings of the scan, for its statement only. JIT compilation costs ~100 ms, more than it saves on a query of
#: a few hundred milliseconds; the buckets are few (the planner, knowing nothing of `date_bin`, guesses a tenth of
#: the rows), so a hash table fits in a few MB and spares sorting every reading (and spilling it to disk).
SCAN_SETTINGS = {"jit": "off", "work_mem": "32MB"}


def _with_settings(session: Session, settings: dict[str, str], statement: Any, params: dict[str, Any]) -> list[Any]:
    """Run one statement under transaction-local settings, then put the previous values back."""
    names = list(settings)
    before = session.execute(text("SELECT " + ", ".join(f"current_setting(:n{i})" for i in range(len(names)))),
                             {f"n{i}": name for i, name in enumerate(names)}).one()
    change = text("SELECT " + ", ".join(f"set_config(:n{i}, :v{i}, true)" for i in range(len(names))))
    session.execute(change, {**{f"n{i}": n for i, n in enumerate(names)},
                             **{f"v{i}": settings[n] for i, n in enumerate(names)}})
    rows = list(session.execute(statement, params))
    # Not in a `finally`: after an error the transaction (or savepoint) is rolled back, and the settings with it.
    session.execute(change, {**{f"n{i}": n for i, n in enumerate(names)},
                             **{f"v{i}": before[i] for i in range(len(names))}})
    return rows


def scan_readings(session: Session, *, sensor_ids: list[int], batch_id: int, lo: datetime, hi: datetime,
                  min_gap: float, manual: list[int], walk: bool) -> list[Any]:
    """Rows of one sensor scan: a `summary` per sensor with readings in scope (first and last good reading,
    count, bad count, manual) and a `gap` per pair of consecutive good readings more than `min_gap` seconds apart;
    `walk`: gaps found on the index (dense sensors) rather than by the bucketed pass (same rows either way)."""
    return _with_settings(session, SCAN_SETTINGS, SENSOR_SCANS[walk, bool(manual)], {
        "width": min_gap, "min_gap": min_gap, "manual": manual, "sensors": sensor_ids, "lo": lo, "hi": hi,
        "batch": batch_id})


#: The coverage buckets (added by the loader as it stores readings) of the sensors, for the batch's readings and those
#: of no batch, that overlap the scanned range.
BUCKETS_SQL = text("""
SELECT sensor_id, bucket_start, bucket_start + make_interval(secs => bucket_s) AS bucket_end, bucket_s, n, bad,
       manual, first_ts, last_ts, first_good, last_good, slots
FROM sensor_reading_buckets
WHERE sensor_id = ANY(CAST(:sensors AS bigint[])) AND batch_key IN (0, CAST(:batch AS bigint))
  AND bucket_start <= :hi AND bucket_start > CAST(:lo AS timestamptz) - interval '1 day'
  AND bucket_start + make_interval(secs => bucket_s) > :lo
ORDER BY sensor_id, bucket_start, bucket_s
""")
#: Timestamps are stored to the microsecond: the scanned range ends (inclusive) one microsecond before this.
MICROSECOND = timedelta(microseconds=1)


def slots_gap_bound(slots: int, bucket_s: float) -> float:
    """Seconds that no two consecutive good readings of a bucket can be further apart than, from which of its
    `BUCKET_SLOTS` slices hold one: readings in slices i and j (none between) are less than j - i + 1 slices
    apart. (A millisecond more: the slice of a reading is computed in floating point.)"""
    from app.sensors.models import BUCKET_SLOTS

    bits = [i for i in range(BUCKET_SLOTS) if slots >> i & 1]
    widest = max((b - a + 1 for a, b in itertools.pairwise(bits)), default=1)
    return widest * bucket_s / BUCKET_SLOTS + 0.001


def _exact_spans(buckets: list[Any], lo: datetime, end: datetime, min_gap: float) -> tuple[list, list]:
    """Split one sensor's buckets into those read as they are and time spans whose readings must be scanned: a
    bucket holding readings out of the range, one whose slices cannot rule out a gap longer than `min_gap`, and
    buckets overlapping one another (the batch's and no batch's readings in the same minute)."""
    groups: list[list[Any]] = []
    for row in buckets:
        if groups and row.bucket_start < max(b.bucket_end for b in groups[-1]):
            groups[-1].append(row)
        else:
            groups.append([row])
    whole, spans = [], []
    for group in groups:
        start, stop = group[0].bucket_start, max(b.bucket_end for b in group)
        row = group[0]
        if len(group) == 1 and row.first_ts >= lo and row.last_ts < end \
                and slots_gap_bound(row.slots, row.bucket_s) <= min_gap:
            whole.append(row)
        elif spans and spans[-1][1] >= max(start, lo):
            spans[-1][1] = min(stop, end)
        else:
            spans.append([max(start, lo), min(stop, end)])
    return whole, spans


def coverage_rows(session: Session, *, sensor_ids: list[int], dense_ids: list[int], batch_id: int, lo: datetime,
                  hi: datetime, min_gap: float, manual: list[int]) -> list[tuple]:
    """The rows `scan_readings` gives over the sensors (a `summary` per sensor with readings in scope, a `gap` per
    pair of consecutive good readings more than `min_gap` seconds apart), from the coverage buckets: readings are
    scanned only where a bucket cannot answer alone (see `_exact_spans`); `dense_ids` are walked on the index."""
    end = hi + MICROSECOND
    buckets = session.execute(BUCKETS_SQL, {"sensors": sensor_ids, "batch": batch_id, "lo": lo, "hi": hi}).all()
    by_sensor: dict[int, list[Any]] = defaultdict(list)
    for row in buckets:
        by_sensor[row.sensor_id].append(row)
    # Per sensor, pieces in time order: (start, first good, last good, gaps, n, bad, manual).
    pieces: dict[int, list[tuple]] = defaultdict(list)
    to_scan: dict[tuple[datetime, datetime], list[int]] = defaultdict(list)
    for sensor_id, rows in by_sensor.items():
        whole, spans = _exact_spans(rows, lo, end, min_gap)
        pieces[sensor_id] += [(r.bucket_start, r.first_good, r.last_good, [], r.n, r.bad, r.manual) for r in whole]
        for start, stop in spans:
            to_scan[start, stop].append(sensor_id)
    for (start, stop), ids in to_scan.items():
        scanned: dict[int, list[Any]] = defaultdict(list)
        dense = [i for i in ids if i in dense_ids]
        for group, walk in ((dense, True), ([i for i in ids if i not in dense], False)):
            if group:
                for row in scan_readings(session, sensor_ids=group, batch_id=batch_id, lo=start,
                                         hi=stop - MICROSECOND, min_gap=min_gap, manual=manual, walk=walk):
                    scanned[row.sensor_id].append(row)
        for sensor_id, rows in scanned.items():
            summary = next(r for r in rows if r.kind == "summary")
            gaps = [(r.t1, r.t2) for r in rows if r.kind == "gap"]
            pieces[sensor_id].append((start, summary.t1, summary.t2, gaps, summary.n, summary.bad, summary.manual))
    out = []
    for sensor_id, parts in pieces.items():
        parts.sort(key=lambda part: part[0])
        first = last = None
        n = bad = 0
        is_manual = False
        for _, part_first, part_last, gaps, part_n, part_bad, part_manual in parts:
            n, bad, is_manual = n + part_n, bad + part_bad, is_manual or part_manual
            if part_first is None:
                continue
            if last is not None and (part_first - last).total_seconds() > min_gap:
                out.append(("gap", sensor_id, last, part_first, 0, 0, False))
            out += [("gap", sensor_id, t1, t2, 0, 0, False) for t1, t2 in gaps]
            first, last = first or part_first, part_last
        if n:
            out.append(("summary", sensor_id, first, last, n, bad, is_manual))
    return out


def sensor_scan(ctx: Context, windows: list[dict[str, Any]], sensors: list[Any]) -> dict[int, dict[str, Any]]:
    """Per sensor: its gaps (pairs of consecutive good readings further apart than the smallest threshold),
    first and last good reading, reading count, bad-quality count and whether people posted some of them."""
    from app.sensors.models import SensorIngest

    if not windows or not sensors:
        return {}
    thresholds = [ctx.rules.gap_threshold_s(float(s.sampling_period_s)) for s in sensors]
    lo = min(w["start"] for w in windows) - timedelta(seconds=max(thresholds))
    hi = max(w["end"] for w in windows) + timedelta(seconds=max(thresholds))
    # Payloads posted with a person's own token rather than by a gateway: manual data where automation belongs.
    manual = list(ctx.session.scalars(select(SensorIngest.id).where(
        SensorIngest.source.like("member:%"), SensorIngest.received_at >= lo)))
    min_gap = min(thresholds)
    dense = [s.id for s in sensors if min_gap >= DENSE_READINGS_PER_GAP * float(s.sampling_period_s)]
    rows = coverage_rows(ctx.session, sensor_ids=[s.id for s in sensors], dense_ids=dense, batch_id=ctx.batch.id,
                         lo=lo, hi=hi, min_gap=min_gap, manual=manual)
    out: dict[int, dict[str, Any]] = {s.id: {"gaps": [], "first": None, "last": None, "n": 0, "bad": 0,
                                             "manual": False} for s in sensors}
    for kind, sensor_id, t1, t2, n, bad, is_manual in rows:
        item = out[sensor_id]
        if kind == "gap":
            item["gaps"].append((t1, t2))
        else:
            item.update(first=t1, last=t2, n=int(n), bad=int(bad), manual=bool(is_manual))
    for item in out.values():
        item["gaps"].sort()
    return out


@check("sensor_coverage", "Sensor coverage of every critical phase without gaps, by gateways")
def _sensor_coverage(ctx: Context) -> CheckOutcome:
    from app.plant.models import Sensor

    windows = _critical_windows(ctx)
    equipment = {w["equipment_id"] for w in windows}
    sensors = list(ctx.session.scalars(select(Sensor).where(Sensor.equipment_id.in_(equipment or [-1]))
                                       .order_by(Sensor.id))) if equipment else []
    scan = sensor_scan(ctx, windows, sensors)
    findings: list[Finding] = []
    covered = unmonitored = 0
    # Sensors by (equipment, quantity kind) and their thresholds, once: hundreds of windows look them up.
    by_kind: dict[tuple[int, str], list[Any]] = defaultdict(list)
    for sensor in sensors:
        by_kind[sensor.equipment_id, sensor.quantity_kind.strip().lower()].append(sensor)
    thresholds = {s.id: ctx.rules.gap_threshold_s(float(s.sampling_period_s)) for s in sensors}
    for window in windows:
        step = window["step"]
        matching = by_kind.get((window["equipment_id"], window["kind"].lower()))
        if not matching:
            unmonitored += 1
            continue
        for sensor in matching:
            covered += 1
            threshold = thresholds[sensor.id]
            data = scan.get(sensor.id) or {"gaps": [], "first": None, "last": None}
            start, end = window["start"], window["end"]
            holes = []
            if data["first"] is None:
                holes.append((start, end))
            else:
                holes += [(start, data["first"]), *list(data["gaps"]), (data["last"], end)]
            worst = None
            for t1, t2 in holes:
                length = (min(t2, end) - max(t1, start)).total_seconds()
                if length > threshold and (worst is None or length > worst[2]):
                    worst = (max(t1, start), min(t2, end), length)
            if worst is not None:
                findings.append(Finding(
                    "sensor_coverage_gap",
                    f"{sensor.tag} ({sensor.quantity_kind}) has no good reading for {worst[2]:.0f} s during "
                    f"critical step {step.phase_name} (threshold {threshold:.0f} s)",
                    f"rbe:gap:{step.id}:{sensor.id}",
                    {"sensor_id": sensor.id, "sensor": sensor.tag, "from": worst[0], "to": worst[1],
                     "seconds": worst[2], "threshold_s": threshold, "window": [start, end],
                     "readings": data.get("n", 0), "bad_quality": data.get("bad", 0)}, step_id=step.id,
                    final_only=step.status != "completed"))
    for sensor in sensors:
        data = scan.get(sensor.id)
        if data and data["manual"]:
            findings.append(Finding("manual_entry",
                                    f"{sensor.tag}: readings of this batch were posted by a person, not by the "
                                    "gateway that should deliver them", f"rbe:manual:{sensor.id}",
                                    {"sensor_id": sensor.id, "sensor": sensor.tag, "readings": data["n"]}))
    readings = sum(d["n"] for d in scan.values())
    detail = (f"{len(windows)} critical phase windows, {covered} sensor coverages checked over {readings} readings"
              + (f"; {unmonitored} critical parameters have no sensor on their equipment (entries only)"
                 if unmonitored else ""))
    return CheckOutcome("sensor_coverage", "", not findings, detail, findings,
                        {"windows": len(windows), "coverages": covered, "readings": readings,
                         "unmonitored": unmonitored})


#: Exception type of a sensor episode, by kind and rule.
def episode_type(kind: str, rule: str) -> str:
    """The exception type a sensor episode raises."""
    if kind == "multivariate":
        return "golden_batch_deviation"
    if kind == "health":
        return "sensor_data_gap" if "gap" in rule or "stale" in rule or "missing" in rule else "sensor_bad_quality"
    if rule.startswith("limit"):
        return "sensor_limit_breach"
    return "sensor_excursion"


def batch_episodes(session: Session, batch: Batch, *, spec_text: bool = False) -> list[Any]:
    """Sensor episodes of the batch: linked to it, or on its equipment while it occupied it (with the tag of their
    sensor: one round trip for what the review shows of them); `spec_text`: each episode's spec as its JSON text
    (for evidence that passes it on as it is, without decoding a thousand specs to encode them again)."""
    from app.batches.models import EquipmentUse
    from app.plant.models import Sensor
    from app.sensors.models import SensorEpisode

    # Episodes of no batch on the batch's equipment while it used it, in the same statement.
    in_use = exists().where(EquipmentUse.batch_id == batch.id, EquipmentUse.equipment_id == SensorEpisode.equipment_id,
                            SensorEpisode.start_ts >= EquipmentUse.started_at,
                            EquipmentUse.ended_at.is_(None) | (SensorEpisode.start_ts < EquipmentUse.ended_at))
    condition = (SensorEpisode.batch_id == batch.id) | (SensorEpisode.batch_id.is_(None) & in_use)
    # Plain rows of the columns the review reads, not ORM objects: a batch may carry a thousand episodes.
    columns = [cast(SensorEpisode.spec, Text).label("spec") if name == "spec" and spec_text
               else getattr(SensorEpisode, name) for name in EPISODE_COLUMNS]
    return list(session.execute(select(*columns, Sensor.tag.label("sensor_tag"))
                                .outerjoin(Sensor, Sensor.id == SensorEpisode.sensor_id)
                                .where(condition).order_by(SensorEpisode.id)))


#: The columns of an episode the review reads (attributes of the rows `batch_episodes` returns, then the tag of
#: its sensor as `sensor_tag`).
EPISODE_COLUMNS = ("id", "sensor_id", "equipment_id", "kind", "rule", "spec", "severity", "start_ts", "end_ts",
                   "peak_ts", "peak_value", "peak_deviation", "n_alarms", "is_open", "batch_id", "step_id")


@check("sensor_episodes", "Sensor exception episodes of the batch collected")
def _sensor_episodes(ctx: Context) -> CheckOutcome:
    episodes = ctx.episodes = batch_episodes(ctx.session, ctx.batch, spec_text=True)
    steps = ctx.step_by_id()
    # An episode raised by an earlier run is collected again (the run lists it) but not raised again, so its
    # evidence (stored when it was raised) is not built again.
    raised = {e.dedupe_key for e in ctx.exceptions}
    findings = []
    # A thousand episodes: each row unpacked once into locals (a named attribute of a row costs as much as
    # building the finding), dates written as the audit trail writes them (ISO) here rather than one callback
    # each when the rows are sent, and the spec passed on as the JSON text it was read as (`plain_json_text`
    # writes an orjson fragment as it is; the database stores the same jsonb either way).
    for (ep_id, sensor_id, equipment_id, ep_kind, rule, spec, severity, start_ts, end_ts, peak_ts, peak_value,
         peak_deviation, n_alarms, is_open, _batch_id, step_id, tag) in episodes:
        where = tag if tag is not None else f"equipment #{equipment_id}"
        step = steps.get(step_id) if step_id else None
        start = start_ts.isoformat()
        end = end_ts.isoformat()
        key = f"episode:{ep_id}"
        # "YYYY-MM-DD HH:MM:SS" and "HH:MM:SS" cut from isoformat: strftime costs twice as much, a thousand times.
        findings.append(Finding(
            episode_type(ep_kind, rule), f"{where}: {rule} episode from {start[:10]} {start[11:19]} to "
            f"{end[11:19]} UTC ({n_alarms} alarmed readings, peak "
            f"{peak_value if peak_value is not None else 'no value'})"
            + (f" during step {step.phase_name}" if step else ""),
            key, {} if key in raised else
            {"episode_id": ep_id, "sensor_id": sensor_id, "sensor": where, "equipment_id": equipment_id,
             "kind": ep_kind, "rule": rule, "episode_severity": severity, "start_ts": start, "end_ts": end,
             "peak_ts": peak_ts.isoformat(), "peak_value": peak_value, "peak_deviation": peak_deviation,
             "n_alarms": n_alarms, "open": is_open, "spec": orjson.Fragment(spec)},
            step_id=step_id if step else None))
    return CheckOutcome("sensor_episodes", "", not findings, f"{len(episodes)} sensor episodes in the batch",
                        findings, {"episodes": len(episodes)})


@check("engine_exceptions", "Exceptions raised on the floor during execution collected")
def _engine_exceptions(ctx: Context) -> CheckOutcome:
    floor = [e for e in ctx.exceptions if not e.raised_by_label.startswith(RBE_LABEL)]
    by_type: dict[str, int] = defaultdict(int)
    for exc in floor:
        by_type[exc.type] += 1
    return CheckOutcome("engine_exceptions", "", not floor,
                        f"{len(floor)} exceptions raised during execution"
                        + (": " + ", ".join(f"{n} {t}" for t, n in sorted(by_type.items())) if floor else ""),
                        counts={"exceptions": len(floor), "by_type": dict(by_type)},
                        exception_ids=[e.id for e in floor])


#: The batch's stretch of the tenant's audit chain (from its first event to the end), verified in one statement:
#: its bounds, the chain head, the first broken link or sequence number, the first event that does not match its
#: hash. The bounds are read once and the three checks take them from `bounds` (each an index range scan on seq).
AUDIT_CHECK_SQL = text("""
WITH bounds AS MATERIALIZED (
  SELECT (SELECT min(seq) FROM audit_events WHERE record_type = 'batch' AND record_id = :batch) AS lo,
         (SELECT max(seq) FROM audit_events) AS hi
)
SELECT b.lo, b.hi, h.seq AS head_seq, h.hash AS head_hash,
  (SELECT hash FROM audit_events WHERE seq = b.hi) AS hi_hash,
  (SELECT seq FROM (
     SELECT seq, prev_hash, lag(hash) OVER w AS lag_hash, lag(seq) OVER w AS lag_seq
     FROM audit_events WHERE seq >= b.lo - 1 AND seq <= b.hi WINDOW w AS (ORDER BY seq)) chain
   WHERE seq >= b.lo AND (seq <> coalesce(lag_seq, b.lo - 1) + 1
                          OR prev_hash <> coalesce(lag_hash, CASE WHEN b.lo = 1 THEN :genesis END))
   ORDER BY seq LIMIT 1) AS broken,
  (SELECT min(seq + 0) FROM audit_events e
   WHERE seq >= b.lo AND seq <= b.hi
     AND hash <> encode(sha256(convert_to(prev_hash || audit_canonical(e), 'UTF8')), 'hex')) AS altered
FROM bounds b LEFT JOIN audit_head h ON h.id = 1
""")


@check("audit_chain", "Audit trail verified for the batch's records")
def _audit_chain(ctx: Context) -> CheckOutcome:
    session = ctx.session
    # The batch's own records are written inside this run too: flush so the range covers them.
    session.flush()
    found = session.execute(AUDIT_CHECK_SQL, {"batch": str(ctx.batch.id), "genesis": GENESIS_HASH}).one()
    if found.lo is None:
        return CheckOutcome("audit_chain", "", False, "the audit trail holds no event of this batch", [
            Finding("audit_chain_broken", "the audit trail holds no creation event of this batch", "rbe:audit:none")])
    lo, hi = int(found.lo), int(found.hi)
    problems = []
    if found.broken is not None:
        problems.append((int(found.broken), "the chain link or sequence breaks before this event"))
    if found.altered is not None:
        problems.append((int(found.altered), "an event does not match its hash (edited after it was written)"))
    if (found.head_seq, found.head_hash) != (hi, found.hi_hash):
        problems.append((hi + 1, f"the chain head says seq {found.head_seq}; the trail ends at {hi}"))
    findings = [Finding("audit_chain_broken", f"audit trail broken at seq {seq}: {why}", f"rbe:audit:{seq}",
                        {"seq": seq, "problem": why, "range": [lo, hi]}) for seq, why in sorted(problems)[:1]]
    return CheckOutcome("audit_chain", "", not findings,
                        f"{hi - lo + 1} events verified (seq {lo} to {hi}: links, sequence and hashes)"
                        if not findings else findings[0].message, findings, {"from_seq": lo, "to_seq": hi})


# ---------------------------------------------------------------------------------------------------------------
# Raising, fingerprint, run


def criticality_of(exception: BatchException, entries: dict[int, StepEntry]) -> str | None:
    """The criticality of the parameter an exception concerns (from its entry's live check), if any."""
    evidence = exception.evidence or {}
    if evidence.get("criticality"):
        return str(evidence["criticality"])
    entry = entries.get(exception.entry_id) if exception.entry_id else None
    if entry is not None and (entry.check_details or {}).get("criticality"):
        return str(entry.check_details["criticality"])
    return None


RAISE_SQL = text("""
INSERT INTO batch_exceptions (batch_id, step_execution_id, entry_id, capture_key, type, severity, message,
                              evidence, dedupe_key, raised_by_member_id, raised_by_label)
SELECT batch_id, step_execution_id, entry_id, capture_key, type, severity, message, evidence, dedupe_key,
       raised_by_member_id, raised_by_label
FROM ROWS FROM (jsonb_to_recordset(CAST(:rows AS jsonb)) AS (
  batch_id bigint, step_execution_id bigint, entry_id bigint, capture_key varchar(64), type varchar(40),
  severity varchar(10), message text, evidence jsonb, dedupe_key varchar(120), raised_by_member_id bigint,
  raised_by_label varchar(300))) WITH ORDINALITY AS r
ORDER BY r.ordinality
RETURNING id
""")


def _raise(ctx: Context, outcomes: list[CheckOutcome], *, run_id: int) -> list[dict[str, Any]]:
    """Raise every finding not raised before (in bulk: a batch may carry a thousand sensor episodes); return their
    audit entries, which the run writes with its own (one statement for all of them)."""
    session, batch = ctx.session, ctx.batch
    existing = {e.dedupe_key: e.id for e in ctx.exceptions if e.dedupe_key}
    known = set(existing)
    actor = current_actor(session)
    label = f"{RBE_LABEL} (run #{run_id})"[:300]
    severities: dict[tuple[str, str | None], str] = {}  # a few kinds of finding, many findings
    rows, owners = [], []
    for outcome in outcomes:
        listed = set(outcome.exception_ids)  # a thousand findings of one check: no scan of the list for each
        for item in outcome.findings:
            if item.dedupe_key in known:
                if item.dedupe_key in existing and existing[item.dedupe_key] not in listed:
                    listed.add(existing[item.dedupe_key])
                    outcome.exception_ids.append(existing[item.dedupe_key])
                continue
            if item.final_only and not ctx.final:
                outcome.pending.append(item.message)
                continue
            known.add(item.dedupe_key)
            kind = (item.type, item.criticality)
            if kind not in severities:
                severities[kind] = ctx.rules.classify(item.type, criticality=item.criticality)[1]
            rows.append({"batch_id": batch.id, "step_execution_id": item.step_id, "entry_id": item.entry_id,
                         "capture_key": item.capture_key, "type": item.type, "severity": severities[kind],
                         "message": item.message[:4000], "evidence": item.evidence,
                         "dedupe_key": item.dedupe_key[:120], "raised_by_member_id": actor.member_id,
                         "raised_by_label": label})
            owners.append(outcome)
    if not rows:
        return []
    # One statement, the rows as one JSON parameter (a thousand rows rendered as a VALUES list cost more on the
    # client than the insert does on the server). Ids come from the identity in insertion order (the ORDER BY),
    # so the sorted ids map back to the rows.
    ids = sorted(session.scalars(RAISE_SQL, {"rows": plain_json_text(rows)}))
    for exc_id, outcome in zip(ids, owners, strict=True):
        outcome.exception_ids.append(exc_id)
    ctx.raised = [ExceptionRow(exc_id, row["type"], row["severity"], row["entry_id"], row["dedupe_key"], label,
                               row["evidence"].get("criticality"))
                  for exc_id, row in zip(ids, rows, strict=True)]
    return [{"action": "create", "record_type": "batch_exception", "record_id": exc_id,
             "new": {"batch": batch.batch_number, "type": row["type"], "severity": row["severity"],
                     "message": row["message"], "step_execution_id": row["step_execution_id"], "rbe_run_id": run_id}}
            for exc_id, row in zip(ids, rows, strict=True)]


FINGERPRINT_SQL = text("""
SELECT encode(sha256(convert_to(concat_ws('|',
  (SELECT concat_ws(',', b.id, b.batch_number, b.batch_size, b.batch_unit, b.line_id, b.ended_at)
     FROM batches b WHERE b.id = :batch),
  (SELECT string_agg(concat_ws(':', s.id, s.status, s.started_at, s.ended_at, s.equipment_id), ',' ORDER BY s.id)
     FROM step_executions s WHERE s.batch_id = :batch),
  (SELECT string_agg(concat_ws(':', e.id, e.supersedes_id, md5(e.value::text || e.display), e.check_state,
                               e.movement_ids::text), ',' ORDER BY e.id)
     FROM step_entries e WHERE e.batch_id = :batch),
  (SELECT string_agg(x.id::text, ',' ORDER BY x.id) FROM batch_exceptions x WHERE x.batch_id = :batch),
  (SELECT string_agg(o.id::text, ',' ORDER BY o.id) FROM batch_overrides o WHERE o.batch_id = :batch),
  (SELECT string_agg(a.id || ':' || a.sha256, ',' ORDER BY a.id) FROM batch_attachments a
     WHERE a.batch_id = :batch),
  (SELECT string_agg(concat_ws(':', g.id, g.record_type, g.record_id, g.content_hash), ',' ORDER BY g.id)
     FROM signatures g
     WHERE (g.record_type = 'batch' AND g.record_id = :batch_text)
        OR (g.record_type = 'step_execution' AND g.record_id IN
            (SELECT s.id::text FROM step_executions s WHERE s.batch_id = :batch))),
  (SELECT string_agg(concat_ws(':', m.id, m.kind, m.quantity), ',' ORDER BY m.id) FROM lot_movements m
     WHERE m.batch_number = :number)
), 'UTF8')), 'hex')
""")


def record_fingerprint(session: Session, batch: Batch, episodes: list[Any] | None = None) -> str:
    """SHA-256 over the batch record as it stands: steps, entries, exceptions, signatures, overrides, lots, and
    sensor episodes (`episodes`: the batch's, if the caller has just loaded them)."""
    base = session.execute(FINGERPRINT_SQL, {"batch": batch.id, "batch_text": str(batch.id),
                                             "number": batch.batch_number}).scalar_one()
    if episodes is None:
        episodes = batch_episodes(session, batch)
    extra = ",".join(f"{e.id}:{e.n_alarms}:{e.end_ts.isoformat()}" for e in episodes)
    return hashlib.sha256(f"{base}|{extra}".encode()).hexdigest()


def summarise(rules: RuleSet, exceptions: list[Any],
              entries: dict[int, StepEntry]) -> dict[str, Any]:
    """Counts of exceptions by severity and by class under a rule set."""
    by_severity = {s: 0 for s in rules_mod.SEVERITIES}
    by_class: dict[str, int] = defaultdict(int)
    classified: dict[tuple[str, str | None, str], tuple[str, str, bool, int]] = {}  # a few kinds, many exceptions
    for exc in exceptions:
        key = (exc.type, criticality_of(exc, entries), exc.severity)
        if key not in classified:
            classified[key] = rules.classify(key[0], criticality=key[1], raised_severity=key[2])
        code, severity, _, _ = classified[key]
        by_severity[severity] += 1
        by_class[code] += 1
    return {"total": len(exceptions), "by_severity": by_severity, "by_class": dict(sorted(by_class.items()))}


def statement_of(batch: Batch, rules: RuleSet, outcomes: list[CheckOutcome], counts: dict[str, Any],
                 final: bool) -> str:
    """The completeness statement of a run, in words."""
    passed = sum(1 for o in outcomes if o.passed)
    head = (f"Batch {batch.batch_number}: {len(outcomes)} checks ran under rule set {rules.version} "
            f"({', '.join(o.code for o in outcomes)}); {passed} passed.")
    if not final:
        head += " The batch is still running: this is not the final review."
    if counts["total"] == 0:
        return head + " No exceptions: the record is complete and consistent on every check listed."
    sev = counts["by_severity"]
    return head + (f" {counts['total']} exceptions ({sev['critical']} critical, {sev['major']} major, "
                   f"{sev['minor']} minor) in {', '.join(counts['by_class'])}.")


#: The run's clock (the transaction's time: what every check compares with) and id, in one round trip.
RUN_START_SQL = text("SELECT now(), nextval(pg_get_serial_sequence('rbe_runs', 'id'))")


def run_rbe(session: Session, *, batch_id: int, trigger: str = "on_demand",
            rule_set: RuleSet | None = None) -> RbeRun:
    """Run every check over a batch, raise what they find, and record the run (final once the batch completed)."""
    from app.review.services import current_rule_set

    clock = time.perf_counter()
    batch = lock_batch(session, batch_id)
    if batch.status in ("planned", "released", "rejected"):
        raise Conflict(f"batch {batch.batch_number} is {batch.status}: "
                       + ("release it to the floor first" if batch.status == "planned"
                          else "its review is closed; the release record stands"))
    rules = rule_set or current_rule_set(session)
    now, run_id = session.execute(RUN_START_SQL).one()
    ctx = _load(session, batch, rules, now)
    outcomes = []
    for code, label, fn in CHECKS:
        outcome = fn(ctx)
        outcome.code, outcome.label = code, label
        outcomes.append(outcome)
    events = _raise(ctx, outcomes, run_id=run_id)
    new_ids = [e.id for e in ctx.raised]
    # The batch is locked: its exceptions are those loaded and those just raised (with greater ids).
    exceptions: list[Any] = [*ctx.exceptions, *ctx.raised]
    counts = summarise(rules, exceptions, {e.id: e for e in ctx.entries})
    final = batch.status in ("completed", "in_review")
    actor = current_actor(session)
    if final and batch.status == "completed":
        old = batch.status
        batch.status, batch.status_changed_at = "in_review", ctx.now
        events.append({"action": "status_change", "record_type": "batch", "record_id": batch.id,
                       "old": {"status": old}, "new": {"status": "in_review", "rbe_run_id": run_id},
                       "reason": f"review by exception: checks ran on the completed record (RBE run #{run_id})"})
        add_event(session, batch, "in_review", from_status=old, to_status="in_review",
                  reason="review by exception started", details={"rbe_run_id": run_id})
    run = RbeRun(id=run_id, batch_id=batch.id, trigger=trigger, batch_status=batch.status, final=final,
                 rule_set_version=rules.version, rule_set=rules.as_dict(),
                 checks=[o.as_dict() for o in outcomes], exception_ids=[e.id for e in exceptions],
                 new_exception_ids=new_ids, counts=counts,
                 statement=statement_of(batch, rules, outcomes, counts, final),
                 record_fingerprint=record_fingerprint(session, batch, ctx.episodes), started_at=ctx.now,
                 duration_ms=0, member_id=actor.member_id, actor_label=actor.label[:300])
    events.append({"action": "create", "record_type": "rbe_run", "record_id": run_id,
                   "new": {"batch": batch.batch_number, "trigger": trigger, "final": final, "rule_set": rules.version,
                           "checks": {o.code: o.passed for o in outcomes}, "exceptions": counts["total"],
                           "new_exceptions": len(new_ids), "fingerprint": run.record_fingerprint}})
    # The audit events of the run, in the order they always had (the exceptions raised, the batch's move to
    # review, the run itself), in one statement; the run's duration covers them.
    record_many(session, events, actor=actor)
    run.duration_ms = int((time.perf_counter() - clock) * 1000)
    session.add(run)
    session.flush()
    return run


def run_digest(run: RbeRun) -> str:
    """A short hash of what a run found (for the report's header)."""
    body = {"checks": run.checks, "exceptions": run.exception_ids, "rules": run.rule_set_version}
    return hashlib.sha256(json.dumps(body, sort_keys=True, default=str).encode()).hexdigest()[:16]
