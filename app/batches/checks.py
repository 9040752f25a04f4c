"""The live check of one value against the control recipe, the lot gate and the equipment gate.

`evaluate(...)` is what the tablet calls while the operator types (nothing is written) and what recording an
entry runs again (the server is the authority). It parses the raw input strictly — a value that does not fit its
capture is refused with a `ValidationError` (422) naming what to fix, and nothing is recorded — and returns a
`Verdict`: the state (green / amber / red / blocked / none), a sentence for the operator, the typed value to
store, the exceptions recording it would raise, and whether it needs an acknowledgement or a supervisor override.

The gates are the plant and materials areas' own (`lot_usable`, `equipment_ready`); this module only decides
which of their reasons an override may lift and which exception each raises.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.batches import catalog
from app.batches.errors import IncompatibleUnit
from app.core.errors import Conflict, ValidationError
from app.materials.models import Lot, Material
from app.materials.usability import lot_usable
from app.plant.models import EQUIPMENT_CLASSES, Equipment
from app.plant.readiness import equipment_ready
from app.plant.scan import resolve_scan
from app.recipes.document import (
    AttachmentCapture,
    CheckboxCapture,
    ChoiceCapture,
    EquipmentScanCapture,
    FormulaParameter,
    IncompatibleUnitsError,
    MaterialScanCapture,
    NumberCapture,
    Phase,
    RecipeDocument,
    SampleIdCapture,
    TextCapture,
    TimestampCapture,
    UnknownUnitError,
    convert,
    dimension_name,
    parse_unit,
    units_compatible,
)
from app.recipes.limits import Amount, LimitSpec, check_quantity, check_value, limits_for_capture

#: Lot reasons an override can lift (the lot is physically there but must not be used without a decision).
HARD_LOT_REASONS = frozenset({"wrong_material", "quarantined", "rejected", "expired"})
#: Lot reasons that only need the operator's acknowledgement.
SOFT_LOT_REASONS = frozenset({"retest_overdue"})
#: Words for counted things that pint does not read the same way.
_COUNT_UNITS = frozenset({"ea", "each", "pc", "pcs", "piece", "pieces", "count", "unit", "units", "1"})
MAX_ABS = Decimal(10) ** 12


@dataclass(frozen=True)
class Finding:
    """An exception recording the entry would raise."""

    type: str
    severity: str
    message: str
    evidence: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Block:
    """A reason the value may not be recorded as it stands."""

    code: str
    message: str
    #: The exception type it raises once it is acknowledged or overridden.
    exception: str


@dataclass
class Consumption:
    """Material a scan consumes: the lot, the expected material and the quantity in the lot's unit."""

    lot_id: int
    lot_number: str
    material_id: int
    quantity: Decimal
    unit: str


@dataclass
class Verdict:
    """The result of checking one value (see the module docstring)."""

    capture_key: str
    kind: str
    state: str
    message: str
    value: dict[str, Any]
    display: str
    numeric: Decimal | None = None
    details: dict[str, Any] = field(default_factory=dict)
    findings: list[Finding] = field(default_factory=list)
    #: Reasons that need only the operator's comment.
    soft_blocks: list[Block] = field(default_factory=list)
    #: Reasons that need a signed supervisor override.
    hard_blocks: list[Block] = field(default_factory=list)
    consumption: Consumption | None = None

    @property
    def needs_ack(self) -> bool:
        """True when recording needs a comment (red, unacceptable choice, soft block, or a hard block)."""
        return self.state == "red" or bool(self.soft_blocks) or bool(self.hard_blocks)

    def as_dict(self) -> dict[str, Any]:
        """JSON for the tablet's live feedback."""
        return {"capture": self.capture_key, "kind": self.kind, "state": self.state, "message": self.message,
                "display": self.display, "needs_acknowledgement": self.needs_ack,
                "needs_override": bool(self.hard_blocks),
                "blocks": [{"code": b.code, "message": b.message, "override": b in self.hard_blocks}
                           for b in self.hard_blocks + self.soft_blocks],
                "exceptions": [{"type": f.type, "severity": f.severity, "message": f.message}
                               for f in self.findings]}


@dataclass
class Context:
    """What a check needs to know about the batch beyond the value itself."""

    session: Session
    batch_id: int
    batch_number: str
    doc: RecipeDocument
    phase: Phase
    at: datetime
    #: Equipment assigned per recipe equipment class: {class: equipment id}.
    assignments: dict[str, int] = field(default_factory=dict)
    #: Equipment this batch already occupies (its own "in use" status is no reason against it).
    occupied: set[int] = field(default_factory=set)
    #: Chain-of-identity values known for the batch: {identity key: value}.
    identities: dict[str, str] = field(default_factory=dict)
    #: The entry a correction or re-weigh supersedes (its lot consumption is netted).
    previous_value: dict[str, Any] | None = None


# ---------------------------------------------------------------------------------------------------------------
# Parsing


def _fmt(value: Decimal | float) -> str:
    number = Decimal(str(value)) if not isinstance(value, Decimal) else value
    text = f"{number.normalize():f}"
    return "0" if text in ("-0", "") else text


def parse_decimal(raw: Any, field_name: str) -> Decimal:
    """Read a number typed on a tablet (a JSON number or text; comma or point), refusing anything else."""
    if isinstance(raw, bool) or raw is None or isinstance(raw, list | dict):
        shown = "nothing" if raw is None else type(raw).__name__.replace("dict", "an object").replace("list", "a list")
        raise ValidationError(f"{field_name} must be a number, got {shown}")
    text = str(raw).strip().replace(",", ".")
    if not text:
        raise ValidationError(f"{field_name} is required")
    if not re.fullmatch(r"[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?", text):
        raise ValidationError(f"{field_name} {raw!r} is not a number (use digits and a decimal point, e.g. 7.02)")
    try:
        number = Decimal(text)
    except InvalidOperation as exc:  # pragma: no cover - the pattern above admits only valid decimals
        raise ValidationError(f"{field_name} {raw!r} is not a number") from exc
    if not number.is_finite() or abs(number) >= MAX_ABS:
        raise ValidationError(f"{field_name} {raw!r} is out of range (at most 12 digits before the point)")
    return number


def _is_count(unit: str) -> bool:
    return unit.strip().lower() in _COUNT_UNITS


def parse_unit_text(raw: Any, default: str | None, field_name: str = "unit") -> str:
    """Read a unit (the capture's own when none is given), refusing unknown units with a hint."""
    if raw is None or (isinstance(raw, str) and not raw.strip()):
        if default is None:
            raise ValidationError(f"{field_name} is required")
        return default
    if not isinstance(raw, str):
        raise ValidationError(f"{field_name} must be text such as 'L' or 'degC'")
    unit = raw.strip()
    if _is_count(unit):
        return unit
    try:
        parse_unit(unit)
    except UnknownUnitError as exc:
        raise ValidationError(f"{field_name}: {exc}") from exc
    return unit


def convert_quantity(value: Decimal, from_unit: str, to_unit: str) -> Decimal:
    """Convert an exact quantity between units (counted things only to counted things), to 6 decimals."""
    if from_unit == to_unit or (_is_count(from_unit) and _is_count(to_unit)):
        return value
    if _is_count(from_unit) != _is_count(to_unit):
        raise IncompatibleUnit(f"{from_unit} cannot be converted to {to_unit}: give the quantity in {to_unit}")
    try:
        converted = convert(float(value), from_unit, to_unit)
    except IncompatibleUnitsError as exc:
        raise IncompatibleUnit(f"unit {from_unit!r} does not match: {exc}; give the quantity in {to_unit}") from exc
    except UnknownUnitError as exc:
        raise ValidationError(f"unit: {exc}") from exc
    return Decimal(repr(converted)).quantize(Decimal("0.000001"))


def _compatible(a: str, b: str) -> bool:
    if _is_count(a) or _is_count(b):
        return _is_count(a) and _is_count(b)
    try:
        return units_compatible(a, b)
    except UnknownUnitError:
        return False


def _text(raw: Any, field_name: str, *, max_len: int = 500) -> str:
    if raw is None or isinstance(raw, bool) or not isinstance(raw, str | int | float):
        raise ValidationError(f"{field_name} must be text")
    value = str(raw).strip()
    if not value:
        raise ValidationError(f"{field_name} is required")
    if len(value) > max_len:
        raise ValidationError(f"{field_name} is too long (at most {max_len} characters)")
    if any(ord(ch) < 32 for ch in value):
        raise ValidationError(f"{field_name} contains control characters")
    return value


def parse_bool(raw: Any, field_name: str) -> bool:
    """A checkbox: true/false (JSON) or the form words on/off, yes/no, 1/0."""
    if isinstance(raw, bool):
        return raw
    word = "" if raw is None else str(raw).strip().lower()
    if word in ("1", "true", "on", "yes"):
        return True
    if word in ("", "0", "false", "off", "no"):
        return False
    raise ValidationError(f"{field_name} must be ticked or not (true/false), got {raw!r}")


def parse_moment(raw: Any, field_name: str, *, now: datetime) -> datetime:
    """An ISO 8601 time with its zone, or `now` (the database clock)."""
    if isinstance(raw, str) and raw.strip().lower() == "now":
        return now
    if not isinstance(raw, str) or not raw.strip():
        raise ValidationError(f"{field_name} must be an ISO 8601 time such as 2026-11-27T10:15:00Z, or 'now'")
    try:
        moment = datetime.fromisoformat(raw.strip().replace("Z", "+00:00"))
    except ValueError as exc:
        raise ValidationError(f"{field_name} {raw!r} is not an ISO 8601 time (e.g. 2026-11-27T10:15:00Z)") from exc
    if moment.tzinfo is None:
        raise ValidationError(f"{field_name} {raw!r} has no time zone; add Z or an offset such as +01:00")
    return moment.astimezone(UTC)


# ---------------------------------------------------------------------------------------------------------------
# Evaluation


def capture_of(phase: Phase, capture_key: str) -> Any:
    """The capture of a phase by key, or a 422 naming the captures there are."""
    for capture in phase.captures:
        if capture.key == capture_key:
            return capture
    known = ", ".join(c.key for c in phase.captures) or "none"
    raise ValidationError(f"step {phase.key!r} has no capture {capture_key!r} (its captures: {known})")


def evaluate(ctx: Context, capture: Any, raw: dict[str, Any], *, attachment: dict[str, Any] | None = None) -> Verdict:
    """Parse and check one raw value of `capture`; raise ValidationError when it does not fit at all."""
    if not isinstance(raw, dict):
        raise ValidationError("the entry must be an object such as {\"value\": ..., \"unit\": ...}")
    if isinstance(capture, NumberCapture):
        return _number(ctx, capture, raw)
    if isinstance(capture, MaterialScanCapture):
        return _material_scan(ctx, capture, raw)
    if isinstance(capture, EquipmentScanCapture):
        return _equipment_scan(ctx, capture, raw)
    if isinstance(capture, ChoiceCapture):
        return _choice(capture, raw)
    if isinstance(capture, CheckboxCapture):
        checked = parse_bool(raw.get("value"), capture.label)
        return Verdict(capture.key, "checkbox", "none", "ticked" if checked else "not ticked", {"checked": checked},
                       "Yes" if checked else "No")
    if isinstance(capture, TimestampCapture):
        moment = parse_moment(raw.get("value"), capture.label, now=ctx.at)
        return Verdict(capture.key, "timestamp", "none", "recorded", {"timestamp": moment.isoformat()},
                       f"{moment:%Y-%m-%d %H:%M:%S} UTC")
    if isinstance(capture, TextCapture | SampleIdCapture):
        return _text_capture(ctx, capture, raw)
    if isinstance(capture, AttachmentCapture):
        if attachment is None:
            raise ValidationError(f"{capture.label}: attach a file"
                                  + (f" ({', '.join(capture.accept)})" if capture.accept else ""))
        return Verdict(capture.key, "attachment", "none", "file attached", dict(attachment),
                       f"{attachment['filename']} ({attachment['size']} bytes, SHA-256 {attachment['sha256'][:12]}…)")
    raise ValidationError(f"capture {capture.key!r} of kind {capture.kind!r} cannot be recorded here")


def _number(ctx: Context, capture: NumberCapture, raw: dict[str, Any]) -> Verdict:
    spec = limits_for_capture(ctx.doc, capture)
    base_unit = spec.unit if spec is not None else capture.unit
    value = parse_decimal(raw.get("value"), capture.label)
    unit = parse_unit_text(raw.get("unit"), base_unit)
    if base_unit is not None and not _compatible(unit, base_unit):
        raise IncompatibleUnit(f"unit {unit!r} measures {_dimension(unit)}; {capture.label} is "
                              f"{_dimension(base_unit)} in {base_unit}: enter it in {base_unit}")
    stored = {"value": _fmt(value), "unit": unit}
    if spec is None:
        numeric = convert_quantity(value, unit, base_unit) if base_unit else value
        return Verdict(capture.key, "number", "none", "recorded (no limits)", stored, f"{_fmt(value)} {unit}",
                       numeric=numeric, details={"unit": base_unit})
    try:
        check = check_value(float(value), unit, spec)
    except IncompatibleUnitsError as exc:  # pragma: no cover - refused above
        raise ValidationError(str(exc)) from exc
    criticality = spec.criticality if isinstance(spec, FormulaParameter | LimitSpec) else "non_key"
    limits = {k: getattr(spec, k) for k in ("low", "alarm_low", "target", "alarm_high", "high")}
    details = {"unit": spec.unit, "limits": limits, "criticality": criticality, "crossed": check.limit,
               "parameter": capture.parameter}
    verdict = Verdict(capture.key, "number", check.state, check.message, stored, f"{_fmt(value)} {unit}",
                      numeric=Decimal(repr(check.value)), details=details)
    evidence = {"value": stored, "converted": check.value, "unit": spec.unit, "limits": limits,
                "crossed": check.limit, "parameter": capture.parameter}
    if check.state == "red":
        verdict.findings.append(Finding("out_of_limit", catalog.severity_of("out_of_limit", criticality),
                                        f"{capture.label}: {check.message}", evidence))
    elif check.state == "amber":
        verdict.findings.append(Finding("alarm_limit", catalog.severity_of("alarm_limit"),
                                        f"{capture.label}: {check.message}", evidence))
    return verdict


def _dimension(unit: str) -> str:
    if _is_count(unit):
        return "a count"
    try:
        return dimension_name(unit)
    except UnknownUnitError:
        return "an unknown quantity"


def _choice(capture: ChoiceCapture, raw: dict[str, Any]) -> Verdict:
    value = _text(raw.get("value"), capture.label, max_len=200)
    if value not in capture.options:
        raise ValidationError(f"{capture.label}: {value!r} is not an option (choose {' / '.join(capture.options)})")
    verdict = Verdict(capture.key, "choice", "green", "recorded", {"choice": value}, value)
    if capture.acceptable and value not in capture.acceptable:
        message = f"{capture.label}: {value!r} is not acceptable (acceptable: {', '.join(capture.acceptable)})"
        verdict.state, verdict.message = "red", message
        verdict.findings.append(Finding("unacceptable_choice", catalog.severity_of("unacceptable_choice"), message,
                                        {"choice": value, "acceptable": capture.acceptable}))
    return verdict


def _text_capture(ctx: Context, capture: TextCapture | SampleIdCapture, raw: dict[str, Any]) -> Verdict:
    value = _text(raw.get("value"), capture.label)
    if capture.pattern and not re.fullmatch(capture.pattern, value):
        raise ValidationError(f"{capture.label}: {value!r} does not have the expected form ({capture.pattern})")
    kind = "sample_id" if isinstance(capture, SampleIdCapture) else "text"
    verdict = Verdict(capture.key, kind, "none", "recorded", {"text": value}, value)
    identity = getattr(capture, "identity", None)
    if identity:
        known = ctx.identities.get(identity)
        verdict.details["identity"] = identity
        if known is not None and known != value:
            message = f"{capture.label}: {value!r} does not match the batch's {identity} {known!r}"
            verdict.state, verdict.message = "blocked", message
            # Recorded with the operator's comment and a critical exception for review (issue 7 names wrong
            # material, unusable lots and equipment not ready as the hard blocks; the recipe scenario vocabulary
            # keeps a mismatched identity as a critical identity_mismatch exception): the mismatch itself is
            # evidence the record must keep.
            verdict.soft_blocks.append(Block("identity_mismatch", message, "identity_mismatch"))
        elif known is not None:
            verdict.state, verdict.message = "green", f"matches the batch's {identity}"
    return verdict


def _scan(ctx: Context, raw: dict[str, Any], label: str, expected_kind: str) -> int:
    code = raw.get("code", raw.get("value"))
    if not isinstance(code, str) or not code.strip():
        raise ValidationError(f"{label}: scan the label (or type its code)")
    found = resolve_scan(ctx.session, code)
    if found is None:
        raise ValidationError(f"{label}: no {expected_kind} matches the code {code.strip()!r}; scan the "
                              f"{expected_kind}'s own label")
    kind, record_id = found
    if kind != expected_kind:
        raise ValidationError(f"{label}: {code.strip()!r} is the label of a {kind}, not of a {expected_kind}")
    return record_id


def required_amount(doc: RecipeDocument, phase: Phase, capture: MaterialScanCapture) -> tuple[Amount, float] | None:
    """The amount a material scan must match and its tolerance (% ±), or None for an identity-only scan.

    The same rule as the recipe scenario evaluator: a quantity parameter's target, else the phase's material
    requirement; the tolerance is the capture's, else the requirement's, else the bill-of-materials line's.
    """
    material = doc.material_map().get(capture.material)
    tolerance = capture.tolerance_pct
    if capture.quantity_ref is not None:
        param = doc.parameter_map().get(capture.quantity_ref)
        if param is None or param.target is None:
            return None
        default = material.tolerance_pct if material else 0.0
        return Amount(param.target, param.unit), tolerance if tolerance is not None else default
    for req in phase.materials:
        if req.material == capture.material and req.quantity is not None and material is not None:
            if tolerance is None:
                tolerance = req.tolerance_pct if req.tolerance_pct is not None else material.tolerance_pct
            return Amount(req.quantity, req.unit or material.unit), tolerance
    return None


def _material_scan(ctx: Context, capture: MaterialScanCapture, raw: dict[str, Any]) -> Verdict:
    lot_id = _scan(ctx, raw, capture.label, "lot")
    lot = ctx.session.get(Lot, lot_id)
    assert lot is not None  # noqa: S101 (resolve_scan just found it)
    expected = ctx.session.scalar(select(Material).where(Material.code == capture.material))
    if expected is None:
        raise Conflict(f"material {capture.material} of the control recipe is not registered under Materials; "
                       "a materials manager registers it before this step can consume it")
    needed = required_amount(ctx.doc, ctx.phase, capture)
    if raw.get("quantity") in (None, "") and needed is None and not any(
            req.material == capture.material and req.quantity is not None for req in ctx.phase.materials):
        return _identity_scan(ctx, capture, lot, expected)
    default_unit = needed[0].unit if needed else lot.unit
    quantity = parse_decimal(raw.get("quantity"), f"{capture.label} quantity")
    if quantity <= 0:
        raise ValidationError(f"{capture.label} quantity must be greater than zero")
    unit = parse_unit_text(raw.get("unit"), default_unit, f"{capture.label} unit")
    in_lot_unit = convert_quantity(quantity, unit, lot.unit)
    stored = {"lot_id": lot.id, "lot_number": lot.lot_number, "material": capture.material,
              "quantity": _fmt(quantity), "unit": unit, "quantity_in_lot_unit": _fmt(in_lot_unit),
              "lot_unit": lot.unit}
    display = f"lot {lot.lot_number}: {_fmt(quantity)} {unit}"
    verdict = Verdict(capture.key, "material_scan", "green", f"lot {lot.lot_number} is usable", stored, display,
                      numeric=in_lot_unit)
    # A correction or re-weigh on the same lot only takes the difference from it.
    previous = ctx.previous_value or {}
    draw = in_lot_unit
    if previous.get("lot_id") == lot.id and previous.get("quantity_in_lot_unit") is not None:
        draw = in_lot_unit - Decimal(str(previous["quantity_in_lot_unit"]))
    usability = lot_usable(lot, expected, draw if draw > 0 else Decimal("0.000001"), ctx.at)
    reasons = [{"code": r.code, "message": r.message} for r in usability.reasons]
    verdict.details["lot_gate"] = reasons
    for reason in usability.reasons:
        if reason.code == "insufficient_quantity":
            raise Conflict(f"{reason.message}: scan another lot, or split the quantity over two lots")
    if needed is not None:
        amount, tolerance = needed
        if _is_count(unit) != _is_count(amount.unit):
            raise IncompatibleUnit(f"{capture.label}: {unit!r} does not match the required {amount.unit}; "
                                  f"give the quantity in {amount.unit}")
        try:
            check = check_quantity(float(quantity), amount.unit if _is_count(unit) else unit, amount, tolerance)
        except IncompatibleUnitsError as exc:
            raise IncompatibleUnit(f"{capture.label}: {exc}; give the quantity in {amount.unit}") from exc
        verdict.details["required"] = {"value": amount.value, "unit": amount.unit, "tolerance_pct": tolerance}
        verdict.details["quantity_check"] = {"state": check.state, "message": check.message}
        if check.state == "red":
            message = f"{capture.label}: {check.message}"
            verdict.state, verdict.message = "red", message
            verdict.findings.append(Finding("quantity_out_of_tolerance",
                                            catalog.severity_of("quantity_out_of_tolerance"), message,
                                            {"lot": lot.lot_number, "quantity": stored["quantity"], "unit": unit,
                                             "required": verdict.details["required"]}))
        else:
            verdict.message = f"lot {lot.lot_number}: {check.message}"
    _lot_blocks(verdict, usability)
    verdict.consumption = Consumption(lot_id=lot.id, lot_number=lot.lot_number, material_id=expected.id,
                                      quantity=in_lot_unit, unit=lot.unit)
    return verdict


def _lot_blocks(verdict: Verdict, usability: Any) -> None:
    """Sort the lot gate's reasons into hard blocks (override) and soft ones (comment); refuse a short lot."""
    for reason in usability.reasons:
        if reason.code == "insufficient_quantity":
            raise Conflict(f"{reason.message}: scan another lot, or split the quantity over two lots")
        exception = "identity_mismatch" if reason.code == "wrong_material" else "material_not_usable"
        block = Block(reason.code, reason.message, exception)
        (verdict.hard_blocks if reason.code in HARD_LOT_REASONS else verdict.soft_blocks).append(block)
    if verdict.hard_blocks or verdict.soft_blocks:
        verdict.state = "blocked"
        verdict.message = "; ".join(b.message for b in verdict.hard_blocks + verdict.soft_blocks)


def _identity_scan(ctx: Context, capture: MaterialScanCapture, lot: Lot, expected: Material) -> Verdict:
    """A scan that checks a lot's identity only: the control recipe requires no amount and none was given.

    The recipe model allows such captures (a buffer bag connected to a device, a reagent lot confirmed); the lot
    gate runs as for any scan, and no movement is posted because there is no quantity to post.
    """
    stored = {"lot_id": lot.id, "lot_number": lot.lot_number, "material": capture.material, "quantity": None,
              "unit": None, "quantity_in_lot_unit": None, "lot_unit": lot.unit}
    verdict = Verdict(capture.key, "material_scan", "green", f"lot {lot.lot_number} is usable", stored,
                      f"lot {lot.lot_number} (identity checked)")
    usability = lot_usable(lot, expected, Decimal("0.000001"), ctx.at)
    verdict.details["lot_gate"] = [{"code": r.code, "message": r.message} for r in usability.reasons]
    _lot_blocks(verdict, usability)
    return verdict


def readiness_snapshot(equipment: Equipment, at: datetime, occupied: set[int]) -> dict[str, Any]:
    """The equipment's status at use, with the gate's reasons (its own batch's use is no reason)."""
    readiness = equipment_ready(equipment, at)
    reasons = [{"code": r.code, "message": r.message} for r in readiness.reasons
               if not (r.code == "in_use" and equipment.id in occupied)]
    return {"equipment_id": equipment.id, "tag": equipment.tag, "class": equipment.equipment_class,
            "status": equipment.status, "cleaned_at": equipment.cleaned_at.isoformat() if equipment.cleaned_at
            else None, "calibration_due": equipment.calibration_due.isoformat() if equipment.calibration_due else None,
            "qualification_status": equipment.qualification_status,
            "qualified_until": equipment.qualified_until.isoformat() if equipment.qualified_until else None,
            "ready": not reasons, "reasons": reasons, "checked_at": at.isoformat()}


def _equipment_scan(ctx: Context, capture: EquipmentScanCapture, raw: dict[str, Any]) -> Verdict:
    equipment_id = _scan(ctx, raw, capture.label, "equipment")
    equipment = ctx.session.get(Equipment, equipment_id)
    assert equipment is not None  # noqa: S101 (resolve_scan just found it)
    snapshot = readiness_snapshot(equipment, ctx.at, ctx.occupied)
    stored = {"equipment_id": equipment.id, "tag": equipment.tag, "class": equipment.equipment_class}
    verdict = Verdict(capture.key, "equipment_scan", "green", f"{equipment.tag} is ready", stored,
                      f"{equipment.tag} ({equipment.name})", details={"status_at_use": snapshot})
    if not catalog.class_matches(capture.equipment_class, equipment.equipment_class):
        wanted = catalog.plant_class_for(capture.equipment_class)
        message = (f"{equipment.tag} is a {EQUIPMENT_CLASSES.get(equipment.equipment_class, equipment.equipment_class)}"
                   f", not {capture.equipment_class}"
                   + (f" ({EQUIPMENT_CLASSES.get(wanted, wanted)})" if wanted else ""))
        verdict.hard_blocks.append(Block("wrong_equipment", message, "identity_mismatch"))
    assigned = ctx.assignments.get(capture.equipment_class)
    if assigned is not None and assigned != equipment.id:
        tag = ctx.session.scalar(select(Equipment.tag).where(Equipment.id == assigned))
        verdict.hard_blocks.append(Block("not_assigned", f"{equipment.tag} is not the {capture.equipment_class} "
                                         f"assigned to batch {ctx.batch_number} ({tag})", "identity_mismatch"))
    for reason in snapshot["reasons"]:
        verdict.hard_blocks.append(Block(reason["code"], reason["message"], "equipment_not_ready"))
    if verdict.hard_blocks:
        verdict.state = "blocked"
        verdict.message = "; ".join(b.message for b in verdict.hard_blocks)
    return verdict
