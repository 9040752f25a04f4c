"""Verification scenarios of a template's validation pack, and the pure evaluator that runs them.

A scenario is what a batch would record, as data: step records in the order they happen (captured values,
scans, signatures, times as offsets from the batch start) and the outcome the batch engine must produce. The
evaluator here runs the rules a scenario can check without a database (limits, order and dependencies, hold
times, durations, mandatory steps, quantity tolerance, chain of identity, signatures); the batch engine later
runs the same scenarios against the real system and must produce the same outcome.

How a record is evaluated: a pending step starts when every predecessor (explicit ``depends_on``, else the
previous step) is completed or skipped; then its entries are checked one by one (a refused entry is not
recorded); then, if the record signs or completes the step, every required capture must be recorded (a
signature attests complete data); then its signatures are applied; then, if ``complete`` is true, every
required signature must be present. ``complete: false`` leaves the step open for a later record of the same
step, which is how corrections after a refusal are written. Times are ISO 8601 offsets from the batch start;
hold times and durations are checked only when the records carry them, and a record that starts before its
predecessor completed is a malformed scenario (``ScenarioError``), not a batch event. Chain-of-identity
values come from the scenario's ``identity`` (the order) or, failing that, from the first entry of each
identity.

Outcome vocabulary (keep it small: both implementations and every validation pack speak it):

Exceptions (the record is kept, review by exception must see it), with their severity:

| type | raised when | severity |
|---|---|---|
| ``out_of_limit`` | a number is outside low/high | critical/major/minor for critical/key/non-key parameters |
| ``alarm_limit`` | a number is outside alarm_low/alarm_high but within low/high | minor |
| ``out_of_order`` | a step is started before its predecessors with an override reason | major |
| ``hold_time_exceeded`` | a step starts after its predecessor's max hold time (reported on it) | major |
| ``duration_out_of_range`` | a step took less than its min or more than its max duration | major |
| ``quantity_out_of_tolerance`` | a scanned quantity is outside the required amount ± tolerance | major |
| ``unacceptable_choice`` | a choice outside the capture's acceptable options | major |
| ``identity_mismatch`` | a chain-of-identity entry differs from the batch's identity | critical |
| ``missing_mandatory_step`` | the batch ends with a mandatory step not completed | critical |

Refusals (the action is not recorded; the operator must correct it):

| type | refused when |
|---|---|
| ``out_of_order`` | a step is started before its predecessors completed (or were skipped), without override |
| ``skip_not_allowed`` | a mandatory step is skipped |
| ``already_completed`` | a completed or skipped step is recorded again |
| ``incompatible_unit`` | a value's unit cannot be converted to the limit's or requirement's unit |
| ``invalid_entry`` | a value does not fit its capture (pattern, option, missing scanned quantity) |
| ``wrong_material`` | a scanned lot is of another material than the capture requires |
| ``wrong_equipment`` | scanned equipment is of another class than the capture requires |
| ``missing_required_capture`` | a step is signed or completed without a required capture (or unticked box) |
| ``missing_signature`` | a step is completed without every signature it requires |
| ``second_person_required`` | an independent signature is given by someone who already signed the step |
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Literal

from pydantic import Field, ValidationError

from app.recipes.document import (
    CheckboxCapture,
    ChoiceCapture,
    Code,
    Duration,
    EquipmentScanCapture,
    FormulaParameter,
    IncompatibleUnitsError,
    Key,
    LongText,
    MaterialScanCapture,
    Number,
    NumberCapture,
    Phase,
    PositiveNumber,
    Problem,
    RecipeDocument,
    RecipeDocumentError,
    SampleIdCapture,
    SignatureMeaning,
    StrictModel,
    Text,
    TextCapture,
    Unit,
    effective_dependencies,
    load_json,
    problems_from_validation_error,
)
from app.recipes.limits import Amount, LimitSpec, check_quantity, check_value, limits_for_capture
from app.recipes.scaling import scale
from app.recipes.validation import validate

ExceptionType = Literal[
    "out_of_limit",
    "alarm_limit",
    "out_of_order",
    "hold_time_exceeded",
    "duration_out_of_range",
    "quantity_out_of_tolerance",
    "unacceptable_choice",
    "identity_mismatch",
    "missing_mandatory_step",
]
RefusalType = Literal[
    "out_of_order",
    "skip_not_allowed",
    "already_completed",
    "incompatible_unit",
    "invalid_entry",
    "wrong_material",
    "wrong_equipment",
    "missing_required_capture",
    "missing_signature",
    "second_person_required",
]
Severity = Literal["critical", "major", "minor"]

#: Severity of each exception type that does not depend on the parameter's criticality.
SEVERITY: dict[str, Severity] = {
    "alarm_limit": "minor",
    "out_of_order": "major",
    "hold_time_exceeded": "major",
    "duration_out_of_range": "major",
    "quantity_out_of_tolerance": "major",
    "unacceptable_choice": "major",
    "identity_mismatch": "critical",
    "missing_mandatory_step": "critical",
}
#: Severity of an out-of-limit value by the criticality of its parameter.
OUT_OF_LIMIT_SEVERITY: dict[str, Severity] = {"critical": "critical", "key": "major", "non_key": "minor"}

_REQ_ID = r"^[A-Z]{2,6}-REQ-\d{3}$"
_SCENARIO_ID = r"^[A-Z]{2,6}-SC-\d{3}$"
_RISK_ID = r"^[A-Z]{2,6}-RISK-\d{3}$"


class ScenarioError(ValueError):
    """A scenario that does not fit its recipe (unknown step or capture, entry of the wrong kind)."""


# ----------------------------------------------------------------------------------------------------------
# Scenario data
# ----------------------------------------------------------------------------------------------------------


class NumberEntry(StrictModel):
    """A number entered with its unit."""

    value: Number
    unit: Unit


class MaterialScanEntry(StrictModel):
    """A scanned material lot, with the quantity dispensed or charged."""

    material: Code
    lot: Text
    quantity: Number | None = None
    unit: Unit | None = None


class EquipmentScanEntry(StrictModel):
    """A scanned piece of equipment and the class the plant register gives it."""

    equipment_id: Text
    equipment_class: Code


#: Text, choice, sample id, attachment name and timestamp (ISO offset) entries are strings; checkboxes bools.
Entry = NumberEntry | MaterialScanEntry | EquipmentScanEntry | bool | str


class SignatureEntry(StrictModel):
    """A signature given on a step: its meaning and who signed (a user id)."""

    meaning: SignatureMeaning
    by: Text


class StepRecord(StrictModel):
    """What a batch records for one step, in execution order; times are offsets from the batch start."""

    step: Key
    action: Literal["execute", "skip"] = "execute"
    started_at: Duration | None = None
    completed_at: Duration | None = None
    #: False leaves the step started; a later record of the same step continues it.
    complete: bool = True
    entries: dict[str, Entry] = {}
    signatures: list[SignatureEntry] = []
    #: A reason to start the step before its predecessors: raises out_of_order instead of refusing.
    override: Text | None = None
    reason: Text | None = None


class ScenarioAmount(StrictModel):
    """A batch size for the scenario's control recipe."""

    value: PositiveNumber
    unit: Unit


class ExpectedException(StrictModel):
    """An exception the batch engine must raise."""

    type: ExceptionType
    step: Key
    capture: Key | None = None
    severity: Severity


class ExpectedRefusal(StrictModel):
    """An action the batch engine must refuse."""

    type: RefusalType
    step: Key
    capture: Key | None = None


class Expectation(StrictModel):
    """The complete outcome: exactly these exceptions and refusals, no more, no fewer."""

    exceptions: list[ExpectedException] = []
    refusals: list[ExpectedRefusal] = []


class Scenario(StrictModel):
    """A verification scenario: step records and the outcome they must produce."""

    id: str = Field(pattern=_SCENARIO_ID)
    title: Text
    description: LongText = ""
    verifies: list[str] = Field(min_length=1)
    batch_size: ScenarioAmount | None = None
    #: Chain-of-identity values known before the first step (e.g. from the order); otherwise the first entry
    #: of an identity sets it.
    identity: dict[str, Text] = {}
    #: Whether the scenario ends the batch, so that mandatory steps never completed are reported.
    complete_batch: bool = True
    records: list[StepRecord] = Field(min_length=1)
    expect: Expectation


class Requirement(StrictModel):
    """A user requirement the template meets, verified by at least one scenario."""

    id: str = Field(pattern=_REQ_ID)
    text: LongText
    gmp_impact: Literal["high", "medium", "low"]


class Risk(StrictModel):
    """A risk the template controls, and the requirements that control it."""

    id: str = Field(pattern=_RISK_ID)
    hazard: LongText
    control: LongText
    requirements: list[str] = Field(min_length=1)


class ValidationPack(StrictModel):
    """A template's validation pack: intended use, requirements, risks and verification scenarios."""

    template_id: str
    template_version: str
    intended_use: LongText
    requirements: list[Requirement] = Field(min_length=1)
    risks: list[Risk] = []
    scenarios: list[Scenario] = Field(min_length=1)


def parse_validation_pack(source: str | bytes | Mapping[str, Any]) -> ValidationPack:
    """Validate a validation pack from JSON text or parsed data, strictly."""
    data = load_json(source) if isinstance(source, str | bytes) else source
    try:
        return ValidationPack.model_validate_json(json.dumps(data), strict=True)
    except ValidationError as exc:
        raise RecipeDocumentError(problems_from_validation_error(exc, data)) from exc


# ----------------------------------------------------------------------------------------------------------
# Evaluation
# ----------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Finding:
    """An exception or refusal the evaluator produced, with a sentence saying why."""

    type: str
    step: str
    capture: str | None
    severity: Severity | None
    message: str

    def key(self) -> tuple[str, str, str | None, str | None]:
        """Return what an expectation is compared on."""
        return (self.type, self.step, self.capture, self.severity)


@dataclass
class Outcome:
    """Everything a scenario produced."""

    exceptions: list[Finding] = field(default_factory=list)
    refusals: list[Finding] = field(default_factory=list)

    def mismatches(self, expect: Expectation) -> list[str]:
        """Return what differs from the expectation, as sentences; empty when the outcome is as expected."""
        out: list[str] = []
        got_exc = Counter(f.key() for f in self.exceptions)
        want_exc = Counter((e.type, e.step, e.capture, e.severity) for e in expect.exceptions)
        got_ref = Counter(f.key() for f in self.refusals)
        want_ref = Counter((r.type, r.step, r.capture, None) for r in expect.refusals)
        for label, got, want, findings in (
            ("exception", got_exc, want_exc, self.exceptions),
            ("refusal", got_ref, want_ref, self.refusals),
        ):
            for key in sorted((want - got).elements(), key=str):
                out.append(f"expected {label} {_describe(key)} was not produced")
            for key in sorted((got - want).elements(), key=str):
                why = next((f.message for f in findings if f.key() == key), "")
                out.append(f"unexpected {label} {_describe(key)}: {why}")
        return out


def _describe(key: tuple[str, str, str | None, str | None]) -> str:
    """Describe an outcome key for a person."""
    kind, step, capture, severity = key
    text = f"{kind} on step {step!r}"
    if capture:
        text += f" capture {capture!r}"
    if severity:
        text += f" ({severity})"
    return text


@dataclass
class _StepState:
    """Where one step is during evaluation."""

    status: Literal["pending", "started", "completed", "skipped"] = "pending"
    started_at: timedelta | None = None
    completed_at: timedelta | None = None
    entries: dict[str, Entry] = field(default_factory=dict)
    signers: dict[str, str] = field(default_factory=dict)


class _Evaluator:
    """Runs one scenario against one control recipe."""

    def __init__(self, doc: RecipeDocument, scenario: Scenario) -> None:
        self.doc = doc
        self.scenario = scenario
        self.phases = doc.phase_map()
        self.deps = effective_dependencies(doc)
        self.state = {key: _StepState() for key in self.phases}
        self.identity: dict[str, str] = dict(scenario.identity)
        self.holds_reported: set[str] = set()
        self.outcome = Outcome()

    def exception(
        self,
        type_: str,
        step: str,
        message: str,
        *,
        capture: str | None = None,
        severity: Severity | None = None,
    ) -> None:
        """Record an exception."""
        sev = severity or SEVERITY[type_]
        self.outcome.exceptions.append(Finding(type_, step, capture, sev, message))

    def refuse(self, type_: str, step: str, message: str, *, capture: str | None = None) -> None:
        """Record a refusal."""
        self.outcome.refusals.append(Finding(type_, step, capture, None, message))

    def run(self) -> Outcome:
        """Evaluate every record, then the end of the batch."""
        for number, rec in enumerate(self.scenario.records):
            phase = self.phases.get(rec.step)
            if phase is None:
                raise ScenarioError(f"{self.scenario.id} records[{number}]: unknown step {rec.step!r}")
            if rec.action == "skip":
                self.skip(phase)
            else:
                self.execute(phase, rec, number)
        if self.scenario.complete_batch:
            for key, phase in self.phases.items():
                if phase.mandatory and self.state[key].status != "completed":
                    self.exception("missing_mandatory_step", key, f"mandatory step {key!r} was not completed")
        return self.outcome

    def skip(self, phase: Phase) -> None:
        """Skip an optional step."""
        st = self.state[phase.key]
        if st.status in ("completed", "skipped"):
            self.refuse("already_completed", phase.key, f"step {phase.key!r} is already {st.status}")
        elif phase.mandatory:
            self.refuse(
                "skip_not_allowed", phase.key, f"step {phase.key!r} is mandatory and cannot be skipped"
            )
        else:
            st.status = "skipped"

    def execute(self, phase: Phase, rec: StepRecord, number: int) -> None:
        """Start (if needed), record entries and signatures, and complete a step."""
        key = phase.key
        st = self.state[key]
        if st.status in ("completed", "skipped"):
            self.refuse("already_completed", key, f"step {key!r} is already {st.status}")
            return
        if st.status == "pending" and not self.start(phase, rec):
            return
        captures = {c.key: c for c in phase.captures}
        for cap_key, entry in rec.entries.items():
            cap = captures.get(cap_key)
            if cap is None:
                raise ScenarioError(
                    f"{self.scenario.id} records[{number}]: step {key!r} has no capture {cap_key!r}"
                )
            if self.record(phase, cap, entry, number):
                st.entries[cap_key] = entry
        missing = [
            c.key
            for c in phase.captures
            if c.required and (c.key not in st.entries or st.entries[c.key] is False)
        ]
        if missing and (rec.complete or rec.signatures):
            # A signature attests complete data: neither signing nor completing an incomplete step is allowed.
            for cap_key in missing:
                self.refuse("missing_required_capture", key, f"{cap_key!r} is required", capture=cap_key)
            return
        for sig in rec.signatures:
            self.sign(phase, sig, number)
        if rec.complete:
            self.complete(phase, rec)

    def start(self, phase: Phase, rec: StepRecord) -> bool:
        """Start a step if its predecessors are done (or an override is given); check hold times."""
        key = phase.key
        waiting = [p for p in self.deps.get(key, []) if self.state[p].status not in ("completed", "skipped")]
        if waiting:
            names = ", ".join(repr(w) for w in waiting)
            if rec.override is None:
                self.refuse("out_of_order", key, f"step {key!r} cannot start before {names}")
                return False
            self.exception("out_of_order", key, f"step {key!r} started before {names}: {rec.override}")
        if rec.started_at is not None:
            for pred in self.deps.get(key, []):
                done_at = self.state[pred].completed_at
                if done_at is not None and rec.started_at < done_at:
                    raise ScenarioError(
                        f"{self.scenario.id}: step {key!r} starts at {rec.started_at}, "
                        f"before its predecessor {pred!r} completed at {done_at}"
                    )
                self.check_hold(pred, rec.started_at)
        st = self.state[key]
        st.status = "started"
        st.started_at = rec.started_at
        return True

    def check_hold(self, pred: str, started_at: timedelta) -> None:
        """Report a predecessor whose result waited longer than its max hold time."""
        pst = self.state[pred]
        hold = self.phases[pred].timing.max_hold_time
        if hold is None or pst.completed_at is None or pred in self.holds_reported:
            return
        waited = started_at - pst.completed_at
        if waited > hold:
            self.holds_reported.add(pred)
            self.exception("hold_time_exceeded", pred, f"{pred!r} was held {waited} (max {hold})")

    def record(self, phase: Phase, cap: object, entry: Entry, number: int) -> bool:
        """Check one entry against its capture; return whether it is recorded."""
        key = phase.key
        where = f"{self.scenario.id} records[{number}] {key}.{getattr(cap, 'key', '?')}"
        if isinstance(cap, NumberCapture):
            if not isinstance(entry, NumberEntry):
                raise ScenarioError(f"{where}: a number capture takes {{value, unit}}")
            return self.record_number(phase, cap, entry)
        if isinstance(cap, MaterialScanCapture):
            if not isinstance(entry, MaterialScanEntry):
                raise ScenarioError(f"{where}: a material scan takes {{material, lot, quantity, unit}}")
            return self.record_material(phase, cap, entry)
        if isinstance(cap, EquipmentScanCapture):
            if not isinstance(entry, EquipmentScanEntry):
                raise ScenarioError(f"{where}: an equipment scan takes {{equipment_id, equipment_class}}")
            if entry.equipment_class != cap.equipment_class:
                self.refuse(
                    "wrong_equipment",
                    key,
                    f"{entry.equipment_id} is a {entry.equipment_class}, not a {cap.equipment_class}",
                    capture=cap.key,
                )
                return False
            return True
        if isinstance(cap, CheckboxCapture):
            if not isinstance(entry, bool):
                raise ScenarioError(f"{where}: a checkbox takes true or false")
            return True
        if not isinstance(entry, str):
            raise ScenarioError(f"{where}: this capture takes a string")
        if (
            isinstance(cap, TextCapture | SampleIdCapture)
            and cap.pattern
            and not re.fullmatch(cap.pattern, entry)
        ):
            self.refuse("invalid_entry", key, f"{entry!r} does not match {cap.pattern}", capture=cap.key)
            return False
        if isinstance(cap, TextCapture) and cap.identity is not None:
            known = self.identity.setdefault(cap.identity, entry)
            if known != entry:
                self.exception(
                    "identity_mismatch",
                    key,
                    f"{cap.identity} {entry!r} does not match {known!r}",
                    capture=cap.key,
                )
        if isinstance(cap, ChoiceCapture):
            if entry not in cap.options:
                self.refuse("invalid_entry", key, f"{entry!r} is not an option", capture=cap.key)
                return False
            if cap.acceptable and entry not in cap.acceptable:
                self.exception("unacceptable_choice", key, f"{entry!r} is not acceptable", capture=cap.key)
        return True

    def record_number(self, phase: Phase, cap: NumberCapture, entry: NumberEntry) -> bool:
        """Check a number against its limits (converting units) and raise out_of_limit or alarm_limit."""
        spec = limits_for_capture(self.doc, cap)
        try:
            if spec is None:
                if cap.unit is not None:
                    check_value(entry.value, entry.unit, LimitSpec(unit=cap.unit))
                return True
            result = check_value(entry.value, entry.unit, spec)
        except IncompatibleUnitsError as exc:
            self.refuse("incompatible_unit", phase.key, str(exc), capture=cap.key)
            return False
        criticality = spec.criticality if isinstance(spec, FormulaParameter | LimitSpec) else "non_key"
        if result.state == "red":
            self.exception(
                "out_of_limit",
                phase.key,
                result.message,
                capture=cap.key,
                severity=OUT_OF_LIMIT_SEVERITY[criticality],
            )
        elif result.state == "amber":
            self.exception("alarm_limit", phase.key, result.message, capture=cap.key)
        return True

    def required_amount(self, phase: Phase, cap: MaterialScanCapture) -> tuple[Amount, float] | None:
        """Return the amount a scan must match and its tolerance, or None for an identity-only scan."""
        material = self.doc.material_map().get(cap.material)
        tolerance = cap.tolerance_pct
        if cap.quantity_ref is not None:
            param = self.doc.parameter_map()[cap.quantity_ref]
            if param.target is None:
                return None
            default = material.tolerance_pct if material else 0.0
            return Amount(param.target, param.unit), tolerance if tolerance is not None else default
        for req in phase.materials:
            if req.material == cap.material and req.quantity is not None and material is not None:
                if tolerance is None:
                    tolerance = req.tolerance_pct if req.tolerance_pct is not None else material.tolerance_pct
                return Amount(req.quantity, req.unit or material.unit), tolerance
        return None

    def record_material(self, phase: Phase, cap: MaterialScanCapture, entry: MaterialScanEntry) -> bool:
        """Check a scanned lot's material and quantity."""
        key = phase.key
        if entry.material != cap.material:
            self.refuse(
                "wrong_material",
                key,
                f"lot {entry.lot} is {entry.material}, not {cap.material}",
                capture=cap.key,
            )
            return False
        required = self.required_amount(phase, cap)
        if required is None:
            return True
        amount, tolerance = required
        if entry.quantity is None or entry.unit is None:
            self.refuse(
                "invalid_entry", key, "the scanned quantity and its unit are required", capture=cap.key
            )
            return False
        try:
            result = check_quantity(entry.quantity, entry.unit, amount, tolerance)
        except IncompatibleUnitsError as exc:
            self.refuse("incompatible_unit", key, str(exc), capture=cap.key)
            return False
        if result.state == "red":
            self.exception("quantity_out_of_tolerance", key, result.message, capture=cap.key)
        return True

    def sign(self, phase: Phase, sig: SignatureEntry, number: int) -> None:
        """Record a signature, refusing a second-person signature by someone who already signed."""
        st = self.state[phase.key]
        required = {r.meaning: r for r in phase.signatures}
        req = required.get(sig.meaning)
        if req is None:
            raise ScenarioError(
                f"{self.scenario.id} records[{number}]: step {phase.key!r} needs no {sig.meaning!r} signature"
            )
        independent_signers = {by for meaning, by in st.signers.items() if required[meaning].independent}
        if (req.independent and sig.by in st.signers.values()) or sig.by in independent_signers:
            self.refuse(
                "second_person_required",
                phase.key,
                f"{sig.by} already signed step {phase.key!r}; {sig.meaning!r} needs a second person",
            )
            return
        st.signers[sig.meaning] = sig.by

    def complete(self, phase: Phase, rec: StepRecord) -> None:
        """Complete a step once every signature is there (captures were checked); check its duration."""
        key = phase.key
        st = self.state[key]
        unsigned = [r.meaning for r in phase.signatures if r.meaning not in st.signers]
        if unsigned:
            self.refuse("missing_signature", key, f"step {key!r} still needs: {', '.join(unsigned)}")
            return
        timing = phase.timing
        if st.started_at is not None and rec.completed_at is not None:
            took = rec.completed_at - st.started_at
            if took < timedelta(0):
                raise ScenarioError(f"{self.scenario.id}: step {key!r} completes before it starts")
            if (timing.min_duration is not None and took < timing.min_duration) or (
                timing.max_duration is not None and took > timing.max_duration
            ):
                self.exception(
                    "duration_out_of_range",
                    key,
                    f"step {key!r} took {took} (allowed {timing.min_duration} to {timing.max_duration})",
                )
        st.status = "completed"
        st.completed_at = rec.completed_at


def evaluate(doc: RecipeDocument, scenario: Scenario) -> Outcome:
    """Run a scenario against a recipe (scaled to the scenario's batch size) and return what it produced."""
    errors = [m for m in validate(doc) if m.level == "error"]
    if errors:
        raise ScenarioError(f"the recipe has validation errors: {errors[0].path}: {errors[0].message}")
    if scenario.batch_size is not None:
        doc = scale(doc, scenario.batch_size.value, scenario.batch_size.unit).document
    return _Evaluator(doc, scenario).run()


def check_pack(doc: RecipeDocument, pack: ValidationPack) -> list[Problem]:
    """Run every scenario of a validation pack and check its traceability; return what is wrong."""
    out: list[Problem] = []
    req_ids = [r.id for r in pack.requirements]
    for dup in sorted({r for r in req_ids if req_ids.count(r) > 1}):
        out.append(Problem("requirements", f"requirement {dup} is listed twice"))
    scenario_ids = [s.id for s in pack.scenarios]
    for dup in sorted({s for s in scenario_ids if scenario_ids.count(s) > 1}):
        out.append(Problem("scenarios", f"scenario {dup} is listed twice"))
    verified: set[str] = set()
    for i, sc in enumerate(pack.scenarios):
        for ref in sc.verifies:
            if ref not in req_ids:
                out.append(Problem(f"scenarios[{i}].verifies", f"{sc.id} verifies unknown requirement {ref}"))
        verified.update(sc.verifies)
        try:
            outcome = evaluate(doc, sc)
        except (ScenarioError, ValueError) as exc:
            out.append(Problem(f"scenarios[{i}]", f"{sc.id}: {exc}"))
            continue
        out.extend(Problem(f"scenarios[{i}].expect", f"{sc.id}: {m}") for m in outcome.mismatches(sc.expect))
    for r, req in enumerate(pack.requirements):
        if req.id not in verified:
            out.append(Problem(f"requirements[{r}]", f"{req.id} is verified by no scenario"))
    for k, risk in enumerate(pack.risks):
        for ref in risk.requirements:
            if ref not in req_ids:
                out.append(Problem(f"risks[{k}].requirements", f"{risk.id} names unknown requirement {ref}"))
    return out
