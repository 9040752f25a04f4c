"""The recipe version document (schema ``batchline.recipe/1``) in ISA-88 / BatchML words.

A master recipe version is stored and exchanged as one JSON document: a header, a formula (process inputs,
process parameters and process outputs with their limits), a bill of materials, and a procedure of unit
procedures, operations and phases. Phases are the steps an operator executes. The document is validated
strictly (unknown fields are refused, units must be known to the unit registry below) and hashed over its
canonical JSON, so a signature or a frozen control recipe can be bound to exactly one content.

Cross-references (a capture naming an unknown parameter, a dependency cycle, limits out of order) are not
refused here: a draft may be incomplete, and `app.recipes.validation` reports them to the editor.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from decimal import Decimal
from functools import lru_cache
from typing import Annotated, Any, Literal, get_args

import pint
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    StringConstraints,
    ValidationError,
    model_validator,
)

SCHEMA_ID = "batchline.recipe/1"

# ----------------------------------------------------------------------------------------------------------
# Units
# ----------------------------------------------------------------------------------------------------------

#: Units pint does not know that a biotech plant writes every day. Counted things (cells, colonies, particles,
#: endotoxin and enzyme units, column and diafiltration volumes) and pH are dimensionless *base* units: they
#: stay dimensionless, as physics says, but `units_compatible` refuses to mix two of them (a pH can never be
#: converted from percent, nor cells/mL from CFU/mL).
_BIOTECH_DEFINITIONS = (
    "pH = []",
    "cell = [] = cells",
    "colony_forming_unit = [] = CFU",
    "particle = [] = particles",
    "endotoxin_unit = [] = EU",
    "enzyme_unit = [] = U",
    "column_volume = [] = CV",
    "diavolume = [] = DV",
    "vial = [] = vials",
    "absorbance_unit = [] = AU = OD",
    # Gas flow per liquid volume per minute: physically 1/min, named so recipes read as engineers write them.
    "vvm = 1 / minute",
    # Permeate flux in tangential-flow filtration.
    "LMH = liter / meter ** 2 / hour",
    # Relative centrifugal force, written "x g" on every centrifuge.
    "xg = 9.80665 * meter / second ** 2",
    "osmole = mole = Osm",
)

#: Symbols pint reads differently from what a plant means: "C" is coulomb, "F" farad.
_AMBIGUOUS_UNITS = {"C": "degC", "F": "degF", "c": "degC"}

#: Suggestions offered for an unknown unit.
# fmt: off
COMMON_UNITS = (
    "L", "mL", "µL", "m^3", "g", "kg", "mg", "µg", "ng", "g/L", "mg/mL", "mg/L", "µg/mL", "ng/µL", "mM", "M",
    "mmol/L", "mOsm/kg", "degC", "K", "bar", "mbar", "psi", "kPa", "rpm", "vvm", "L/min", "mL/min", "percent",
    "pH", "mS/cm", "µS/cm", "cells/mL", "Mcells/mL", "cells", "CFU", "CFU/m^3", "particles/m^3", "EU/mL",
    "U/mL", "CV", "DV", "cm/h", "LMH", "kDa", "h", "min", "s", "day", "xg", "AU", "count", "vials", "1",
)
# fmt: on

_POWER_SUFFIX = re.compile(r"(?<=[A-Za-zµ])([23])(?![\d.])")


def _power_suffix(text: str) -> str:
    """Read "m3" and "cm2" as powers, as they are written on plant documents."""
    return _POWER_SUFFIX.sub(r"**\1", text)


def _build_registry() -> pint.UnitRegistry:
    """Build the unit registry once: pint's defaults plus the biotech units above."""
    registry = pint.UnitRegistry(autoconvert_offset_to_baseunit=False, preprocessors=[_power_suffix])
    for definition in _BIOTECH_DEFINITIONS:
        registry.define(definition)
    return registry


ureg = _build_registry()


class UnknownUnitError(ValueError):
    """A unit string the registry cannot read."""


class IncompatibleUnitsError(ValueError):
    """Two units that cannot be converted into each other."""


@lru_cache(maxsize=1024)
def parse_unit(text: str) -> pint.Unit:
    """Read a unit string, refusing unknown, ambiguous or scaled units with a message a person can act on."""
    if not isinstance(text, str) or not text.strip():
        raise UnknownUnitError("a unit is required; write 1 for a plain number")
    if text != text.strip():
        raise UnknownUnitError(f"unit {text!r} has leading or trailing spaces")
    if text in _AMBIGUOUS_UNITS:
        raise UnknownUnitError(f"unit {text!r} is ambiguous in SI; write {_AMBIGUOUS_UNITS[text]!r}")
    try:
        unit = ureg.parse_units(text)
    except pint.errors.UndefinedUnitError as exc:
        raise UnknownUnitError(_unknown_unit_message(text)) from exc
    except Exception as exc:  # pint's tokenizer raises assorted errors on garbage such as "("
        if "scaling factor" in str(exc):  # "1e6 cells/mL": a unit carries no number
            raise UnknownUnitError(f"unit {text!r} contains a number; use a prefix (Mcells/mL)") from exc
        raise UnknownUnitError(_unknown_unit_message(text)) from exc
    return unit


def _unknown_unit_message(text: str) -> str:
    """Say which unit is unknown and offer the closest common ones."""
    close = difflib.get_close_matches(text, COMMON_UNITS, n=3, cutoff=0.5)
    hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
    return f"unknown unit {text!r}{hint}"


def _dimensionless_bases(unit: pint.Unit) -> tuple[tuple[str, float], ...]:
    """Return the dimensionless base units (radian, pH, cell, ...) a unit is built from, with exponents."""
    _, base = ureg.get_base_units(unit)
    return tuple(
        sorted((name, exp) for name, exp in base._units.items() if ureg.get_dimensionality(name) == {})
    )


@lru_cache(maxsize=4096)
def units_compatible(a: str, b: str) -> bool:
    """Tell whether a value in unit `a` can be converted to unit `b` without changing what it measures."""
    ua, ub = parse_unit(a), parse_unit(b)
    if ureg.get_dimensionality(ua) != ureg.get_dimensionality(ub):
        return False
    # pint treats radian as dimensionless, so 60 rpm would silently become 6.28 1/s; the same rule keeps pH,
    # cells and CFU apart although each is dimensionless.
    return _dimensionless_bases(ua) == _dimensionless_bases(ub)


def dimension_name(unit: str) -> str:
    """Name what a unit measures, in words an operator knows."""
    dims = str(ureg.get_dimensionality(parse_unit(unit)))
    return _DIMENSION_NAMES.get(dims, dims)


_DIMENSION_NAMES = {
    "[length] ** 3": "volume",
    "[mass]": "mass",
    "[temperature]": "temperature",
    "[time]": "time",
    "[length]": "length",
    "[substance]": "amount of substance",
    "dimensionless": "a plain number",
    "[mass] / [length] ** 3": "mass concentration",
    "[substance] / [length] ** 3": "molar concentration",
    "[mass] / [length] / [time] ** 2": "pressure",
    "1 / [time]": "rate",
    "[length] ** 3 / [time]": "volumetric flow",
    "1 / [length] ** 3": "count per volume",
}


def round_sig(value: float, digits: int = 12) -> float:
    """Round to significant digits so unit conversion noise (37.00000000000006) never decides a limit."""
    if value == 0:
        return 0.0
    return float(f"{value:.{digits}g}")


def convert(value: float, from_unit: str, to_unit: str) -> float:
    """Convert a value between compatible units, refusing incompatible ones with a clear message."""
    if from_unit == to_unit:
        return float(value)
    if not units_compatible(from_unit, to_unit):
        raise IncompatibleUnitsError(
            f"cannot convert {from_unit} ({dimension_name(from_unit)}) "
            f"to {to_unit} ({dimension_name(to_unit)})"
        )
    quantity = ureg.Quantity(float(value), parse_unit(from_unit))
    return round_sig(float(quantity.to(parse_unit(to_unit)).magnitude))


def is_offset_unit(unit: str) -> bool:
    """Tell whether a unit has an offset zero (degC, degF), which cannot be scaled by multiplication."""
    return not ureg.Quantity(1, parse_unit(unit))._is_multiplicative


def format_number(value: float) -> str:
    """Write a float in positional notation that reads back to exactly the same float (xsd:decimal safe)."""
    return format(Decimal(repr(float(value))), "f")


# ----------------------------------------------------------------------------------------------------------
# Field types
# ----------------------------------------------------------------------------------------------------------

_DURATION = re.compile(
    r"^P(?:(?P<weeks>\d+(?:\.\d+)?)W)?(?:(?P<days>\d+(?:\.\d+)?)D)?"
    r"(?:T(?:(?P<hours>\d+(?:\.\d+)?)H)?(?:(?P<minutes>\d+(?:\.\d+)?)M)?(?:(?P<seconds>\d+(?:\.\d+)?)S)?)?$"
)


def parse_duration(text: Any) -> timedelta:
    """Read an ISO 8601 duration without years or months (their length varies): P14D, PT30M, PT1H30M."""
    if isinstance(text, timedelta):
        return text
    if not isinstance(text, str):
        raise ValueError("a duration is an ISO 8601 string such as 'PT30M' or 'P14D'")
    match = _DURATION.match(text)
    if not match or text in ("P", "PT") or text.endswith("T"):
        raise ValueError(f"{text!r} is not an ISO 8601 duration such as 'PT30M', 'PT1H30M' or 'P14D'")
    parts = {name: float(val) for name, val in match.groupdict().items() if val is not None}
    return timedelta(**parts)


def format_duration(value: timedelta) -> str:
    """Write a duration in its shortest ISO 8601 form (PT1H30M), the canonical form the hash is taken over."""
    total_us = round(value.total_seconds() * 1_000_000)
    if total_us < 0:
        raise ValueError("durations cannot be negative")
    days, rem_us = divmod(total_us, 86_400_000_000)
    hours, rem_us = divmod(rem_us, 3_600_000_000)
    minutes, rem_us = divmod(rem_us, 60_000_000)
    seconds = Decimal(rem_us) / Decimal(1_000_000)
    out = "P" + (f"{days}D" if days else "")
    time_part = (f"{hours}H" if hours else "") + (f"{minutes}M" if minutes else "")
    if seconds:
        time_part += f"{format(seconds.normalize(), 'f')}S"
    if time_part:
        out += "T" + time_part
    return out if out != "P" else "PT0S"


def _non_negative_duration(value: timedelta) -> timedelta:
    """Refuse negative durations."""
    if value < timedelta(0):
        raise ValueError("durations cannot be negative")
    return value


Duration = Annotated[
    timedelta,
    BeforeValidator(parse_duration),
    AfterValidator(_non_negative_duration),
    PlainSerializer(format_duration, return_type=str),
]


def _check_unit(text: str) -> str:
    """Accept a unit string only if the registry can read it; keep it as written."""
    parse_unit(text)
    return text


def _normalise_newlines(text: Any) -> Any:
    """Store line ends as LF so a document hashes the same whatever editor or XML parser touched it."""
    if isinstance(text, str):
        return text.replace("\r\n", "\n").replace("\r", "\n")
    return text


def _no_control_characters(text: str) -> str:
    """Refuse control characters: they cannot be written to XML and hide in printed records."""
    if any(ord(ch) < 32 and ch not in "\n\t" for ch in text):
        raise ValueError("text contains control characters")
    return text


def _check_pattern(text: str | None) -> str | None:
    """Refuse a pattern that is not a valid regular expression."""
    if text is not None:
        try:
            re.compile(text)
        except re.error as exc:
            raise ValueError(f"not a valid regular expression: {exc}") from exc
    return text


Unit = Annotated[str, AfterValidator(_check_unit)]
Key = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_]{0,63}$")]
Code = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")]
Text = Annotated[
    str, StringConstraints(min_length=1, max_length=200, pattern=r"^[^\x00-\x1f]*\S[^\x00-\x1f]*$")
]
LongText = Annotated[
    str,
    BeforeValidator(_normalise_newlines),
    AfterValidator(_no_control_characters),
    StringConstraints(max_length=100_000),
]
AttachmentName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")]
Pattern = Annotated[str | None, AfterValidator(_check_pattern)]
Number = Annotated[float, Field(allow_inf_nan=False)]
PositiveNumber = Annotated[float, Field(gt=0, allow_inf_nan=False)]
NonNegativeNumber = Annotated[float, Field(ge=0, allow_inf_nan=False)]
Percent = Annotated[float, Field(ge=0, le=100, allow_inf_nan=False)]

ParameterType = Literal["process_input", "process_parameter", "process_output"]
Criticality = Literal["critical", "key", "non_key"]
ScalingRule = Literal["fixed", "linear"]
SignatureMeaning = Literal["performed", "verified", "witnessed", "reviewed", "approved"]

#: The choices of each vocabulary, for editors and APIs (one source: the Literal types above).
PARAMETER_TYPES: tuple[str, ...] = get_args(ParameterType)
CRITICALITIES: tuple[str, ...] = get_args(Criticality)
SIGNATURE_MEANINGS: tuple[str, ...] = get_args(SignatureMeaning)
LIMIT_FIELDS: tuple[str, ...] = ("low", "alarm_low", "target", "alarm_high", "high")


class StrictModel(BaseModel):
    """Base of every recipe-area model: immutable, unknown fields refused."""

    model_config = ConfigDict(extra="forbid", frozen=True)


# ----------------------------------------------------------------------------------------------------------
# Header, formula, materials
# ----------------------------------------------------------------------------------------------------------


class BatchSize(StrictModel):
    """The reference batch size quantities are written for, with the range the recipe may be scaled to."""

    value: PositiveNumber
    unit: Unit
    min: PositiveNumber | None = None
    max: PositiveNumber | None = None


class Header(StrictModel):
    """What the recipe makes and at which size (BatchML Header)."""

    recipe_code: Code
    product_code: Code
    product_name: Text
    batch_size: BatchSize
    effective_date: date | None = None
    expiry_date: date | None = None
    description: LongText = ""


class Scaling(StrictModel):
    """How a quantity follows the batch size: `fixed` stays, `linear` follows the reference size."""

    rule: ScalingRule = "fixed"
    reference_batch_size: PositiveNumber | None = None
    reference_unit: Unit | None = None

    @model_validator(mode="after")
    def _reference_matches_rule(self) -> Scaling:
        """Require a reference size for linear scaling and refuse one for fixed quantities."""
        has_reference = self.reference_batch_size is not None or self.reference_unit is not None
        if self.rule == "linear" and (self.reference_batch_size is None or self.reference_unit is None):
            raise ValueError("linear scaling needs reference_batch_size and reference_unit")
        if self.rule == "fixed" and has_reference:
            raise ValueError("fixed scaling takes no reference_batch_size or reference_unit")
        return self


class _Limits(StrictModel):
    """Target and limits: low <= alarm_low <= target <= alarm_high <= high (checked by validation)."""

    target: Number | None = None
    low: Number | None = None
    high: Number | None = None
    alarm_low: Number | None = None
    alarm_high: Number | None = None

    def has_limits(self) -> bool:
        """Tell whether any acceptance limit (low or high) is set."""
        return self.low is not None or self.high is not None


class FormulaParameter(_Limits):
    """A formula parameter (BatchML Formula/Parameter): process input, process parameter or process output."""

    key: Key
    name: Text
    type: ParameterType
    unit: Unit
    criticality: Criticality = "non_key"
    scaling: Scaling = Scaling()
    description: LongText = ""


class Formula(StrictModel):
    """The formula of the recipe."""

    parameters: list[FormulaParameter] = []


class Material(StrictModel):
    """A bill-of-materials line: the quantity used per reference batch size."""

    code: Code
    name: Text
    unit: Unit
    quantity: NonNegativeNumber
    tolerance_pct: Percent = 0.0
    scaling: Scaling = Scaling()


# ----------------------------------------------------------------------------------------------------------
# Procedure
# ----------------------------------------------------------------------------------------------------------


class MaterialRequirement(StrictModel):
    """Material a phase consumes, at reference batch size; it scales like its bill-of-materials line."""

    material: Code
    quantity: NonNegativeNumber | None = None
    unit: Unit | None = None
    tolerance_pct: Percent | None = None


class InlineLimits(_Limits):
    """Limits written on a capture for a measurement that is not a formula parameter (never scaled)."""

    criticality: Criticality = "non_key"


class _Capture(StrictModel):
    """What every capture has: a key unique in its phase, a label, and whether it is required."""

    key: Key
    label: Text
    required: bool = True


class NumberCapture(_Capture):
    """A measured number, checked against a formula parameter or inline limits."""

    kind: Literal["number"]
    parameter: Key | None = None
    unit: Unit | None = None
    limits: InlineLimits | None = None

    @model_validator(mode="after")
    def _one_source_of_limits(self) -> NumberCapture:
        """Take limits from one place only, and require a unit when no parameter gives one."""
        if self.parameter is not None and self.limits is not None:
            raise ValueError("use either a formula parameter or inline limits, not both")
        if self.parameter is None and self.unit is None:
            raise ValueError("a number capture without a formula parameter needs a unit")
        return self


class TextCapture(_Capture):
    """Free text or a scanned code; `identity` makes it a chain-of-identity check against the batch."""

    kind: Literal["text"]
    pattern: Pattern = None
    identity: Key | None = None
    scan: bool = False


class ChoiceCapture(_Capture):
    """One of a fixed list of options; picking one outside `acceptable` raises an exception."""

    kind: Literal["choice"]
    options: list[Text] = Field(min_length=2)
    acceptable: list[Text] = []

    @model_validator(mode="after")
    def _acceptable_are_options(self) -> ChoiceCapture:
        """Refuse duplicate options and acceptable values that are not options."""
        if len(set(self.options)) != len(self.options):
            raise ValueError("options must be unique")
        unknown = [a for a in self.acceptable if a not in self.options]
        if unknown:
            raise ValueError(f"acceptable values {unknown} are not among the options")
        return self


class CheckboxCapture(_Capture):
    """A confirmation; when required it must be ticked."""

    kind: Literal["checkbox"]


class TimestampCapture(_Capture):
    """A moment recorded by the operator (e.g. the end of a hold)."""

    kind: Literal["timestamp"]


class MaterialScanCapture(_Capture):
    """A scanned material lot, checked for identity and, with a quantity, against the required amount."""

    kind: Literal["material_scan"]
    material: Code
    quantity_ref: Key | None = None
    tolerance_pct: Percent | None = None


class EquipmentScanCapture(_Capture):
    """A scanned piece of equipment that must belong to an equipment class."""

    kind: Literal["equipment_scan"]
    equipment_class: Code


class SampleIdCapture(_Capture):
    """The identifier of a sample drawn (a label scanned or written)."""

    kind: Literal["sample_id"]
    sample_type: str = ""
    pattern: Pattern = None


class AttachmentCapture(_Capture):
    """A file attached to the record (printout, chromatogram, photo)."""

    kind: Literal["attachment"]
    accept: list[str] = []


Capture = Annotated[
    NumberCapture
    | TextCapture
    | ChoiceCapture
    | CheckboxCapture
    | TimestampCapture
    | MaterialScanCapture
    | EquipmentScanCapture
    | SampleIdCapture
    | AttachmentCapture,
    Field(discriminator="kind"),
]
CAPTURE_KINDS: tuple[str, ...] = tuple(
    get_args(m.model_fields["kind"].annotation)[0] for m in get_args(get_args(Capture)[0])
)


class Timing(StrictModel):
    """How long a phase should take and how long its result may wait for the next phase."""

    expected_duration: Duration | None = None
    min_duration: Duration | None = None
    max_duration: Duration | None = None
    max_hold_time: Duration | None = None


class SignatureRequirement(StrictModel):
    """A signature the phase needs; `independent` demands a second person (no one verifies their own work)."""

    meaning: SignatureMeaning
    role: Code | None = None
    independent: bool = False


class Phase(StrictModel):
    """A phase: the step an operator executes (instructions, captures, materials, timing, signatures)."""

    key: Key
    name: Text
    instructions: LongText = ""
    attachments: list[AttachmentName] = []
    parameters: list[Key] = []
    captures: list[Capture] = []
    equipment_class: Code | None = None
    materials: list[MaterialRequirement] = []
    timing: Timing = Timing()
    mandatory: bool = True
    signatures: list[SignatureRequirement] = []
    #: Explicit predecessors; None means "the previous phase in document order".
    depends_on: list[Key] | None = None


class Operation(StrictModel):
    """An operation: an ordered set of phases."""

    key: Key
    name: Text
    phases: list[Phase] = Field(min_length=1)


class UnitProcedure(StrictModel):
    """A unit procedure: operations carried out in one unit (bioreactor, column, isolator)."""

    key: Key
    name: Text
    equipment_class: Code | None = None
    operations: list[Operation] = Field(min_length=1)


class Procedure(StrictModel):
    """The procedure: unit procedures in order."""

    unit_procedures: list[UnitProcedure] = Field(min_length=1)


class RecipeDocument(StrictModel):
    """A recipe version document, schema ``batchline.recipe/1``."""

    model_config = ConfigDict(
        extra="forbid", frozen=True, validate_by_alias=True, validate_by_name=False, serialize_by_alias=True
    )

    schema_id: Literal["batchline.recipe/1"] = Field(alias="schema")
    header: Header
    formula: Formula = Formula()
    materials: list[Material] = []
    procedure: Procedure

    def phases(self) -> list[Phase]:
        """Return every phase in document (execution) order."""
        return [ph for up in self.procedure.unit_procedures for op in up.operations for ph in op.phases]

    def phase_map(self) -> dict[str, Phase]:
        """Return phases by key (the first one wins if keys repeat; validation reports duplicates)."""
        out: dict[str, Phase] = {}
        for ph in self.phases():
            out.setdefault(ph.key, ph)
        return out

    def parameter_map(self) -> dict[str, FormulaParameter]:
        """Return formula parameters by key."""
        out: dict[str, FormulaParameter] = {}
        for p in self.formula.parameters:
            out.setdefault(p.key, p)
        return out

    def material_map(self) -> dict[str, Material]:
        """Return bill-of-materials lines by material code."""
        out: dict[str, Material] = {}
        for m in self.materials:
            out.setdefault(m.code, m)
        return out

    def iter_phase_paths(self) -> Iterator[tuple[str, Phase]]:
        """Yield each phase with its JSON path, for messages that point at it."""
        for u, up in enumerate(self.procedure.unit_procedures):
            for o, op in enumerate(up.operations):
                for p, ph in enumerate(op.phases):
                    yield f"procedure.unit_procedures[{u}].operations[{o}].phases[{p}]", ph

    def equipment_class_of(self, phase_key: str) -> str | None:
        """Return the equipment class a phase needs: its own, else its unit procedure's."""
        for up in self.procedure.unit_procedures:
            for op in up.operations:
                for ph in op.phases:
                    if ph.key == phase_key:
                        return ph.equipment_class or up.equipment_class
        return None


def effective_dependencies(doc: RecipeDocument) -> dict[str, list[str]]:
    """Return each phase's predecessors: its explicit `depends_on`, else the previous phase in order."""
    deps: dict[str, list[str]] = {}
    previous: str | None = None
    for ph in doc.phases():
        if ph.depends_on is not None:
            deps.setdefault(ph.key, list(ph.depends_on))
        else:
            deps.setdefault(ph.key, [previous] if previous is not None else [])
        previous = ph.key
    return deps


# ----------------------------------------------------------------------------------------------------------
# Parsing, canonical JSON, hash
# ----------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Problem:
    """Something wrong in an input, with the path of the offending part."""

    path: str
    message: str

    def as_dict(self) -> dict[str, str]:
        """Return the problem as a JSON-ready dict."""
        return {"path": self.path, "message": self.message}


class RecipeDocumentError(ValueError):
    """A recipe document that is malformed or does not fit the schema; `problems` says where and why."""

    def __init__(self, problems: Sequence[Problem]) -> None:
        self.problems = list(problems)
        super().__init__("; ".join(f"{p.path}: {p.message}" for p in self.problems) or "invalid document")


class _DuplicateKeyError(ValueError):
    """A JSON object with the same key twice (json.loads would keep the last one silently)."""


def _refuse_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """Build a JSON object, refusing repeated keys."""
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise _DuplicateKeyError(f"key {key!r} appears twice in one object")
        out[key] = value
    return out


def _refuse_constant(name: str) -> Any:
    """Refuse NaN and Infinity, which are not JSON."""
    raise ValueError(f"{name} is not a valid JSON number")


def load_json(text: str | bytes) -> Any:
    """Parse JSON strictly (no duplicate keys, no NaN), raising RecipeDocumentError with line and column."""
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise RecipeDocumentError([Problem(f"byte {exc.start}", "the document is not UTF-8")]) from exc
    try:
        return json.loads(text, object_pairs_hook=_refuse_duplicate_keys, parse_constant=_refuse_constant)
    except json.JSONDecodeError as exc:
        raise RecipeDocumentError([Problem(f"line {exc.lineno} column {exc.colno}", exc.msg)]) from exc
    except ValueError as exc:
        raise RecipeDocumentError([Problem("$", str(exc))]) from exc


def parse_document(source: str | bytes | Mapping[str, Any]) -> RecipeDocument:
    """Validate a recipe document from JSON text or a parsed mapping, strictly (no type coercion)."""
    data = load_json(source) if isinstance(source, str | bytes) else source
    if not isinstance(data, Mapping):
        raise RecipeDocumentError([Problem("$", "a recipe document is a JSON object")])
    try:
        return RecipeDocument.model_validate_json(json.dumps(data), strict=True)
    except ValidationError as exc:
        raise RecipeDocumentError(problems_from_validation_error(exc, data)) from exc


def document_from_python(data: Mapping[str, Any]) -> RecipeDocument:
    """Validate a document built in code from strings (parsed XML), letting pydantic read numbers."""
    try:
        return RecipeDocument.model_validate(data, strict=False)
    except ValidationError as exc:
        raise RecipeDocumentError(problems_from_validation_error(exc, data)) from exc


def clean_loc(loc: Sequence[int | str], data: Any) -> tuple[int | str, ...]:
    """Drop the union tags pydantic puts in error locations (captures.0.number.unit -> captures.0.unit)."""
    out: list[int | str] = []
    node = data
    for part in loc:
        if (
            isinstance(node, Mapping)
            and isinstance(part, str)
            and part not in node
            and node.get("kind") == part
        ):
            continue
        out.append(part)
        if isinstance(node, Mapping) and isinstance(part, str):
            node = node.get(part)
        elif isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
            node = node[part]
        else:
            node = None
    return tuple(out)


def format_loc(loc: Sequence[int | str]) -> str:
    """Write a location as a JSON path: procedure.unit_procedures[0].operations[1].phases[2].key."""
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "$"


@lru_cache(maxsize=1)
def _all_field_names() -> list[str]:
    """Return every field name of the schema, to suggest the one an unknown field was meant to be."""
    names: set[str] = set()
    pending: list[type[BaseModel]] = [StrictModel]
    while pending:
        model = pending.pop()
        names.update(f.alias or name for name, f in model.model_fields.items())
        pending.extend(model.__subclasses__())
    return sorted(names)


def _step_context(loc: Sequence[int | str], data: Any) -> str:
    """Name the phase a location falls in, so the message says which step to fix."""
    node = data
    key = None
    for depth, part in enumerate(loc):
        if isinstance(node, Mapping) and isinstance(part, str):
            node = node.get(part)
        elif isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
            node = node[part]
            if depth >= 1 and loc[depth - 1] == "phases" and isinstance(node, Mapping):
                key = node.get("key")
        else:
            break
    return f" (step {key!r})" if isinstance(key, str) else ""


def problems_from_validation_error(exc: ValidationError, data: Any) -> list[Problem]:
    """Turn pydantic errors into problems with JSON paths and messages a recipe author can act on."""
    problems = []
    for err in exc.errors(include_url=False):
        loc = clean_loc(err["loc"], data)
        message = str(err["msg"]).removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            field = str(loc[-1]) if loc else "?"
            close = difflib.get_close_matches(field, _all_field_names(), n=1)
            message = f"unknown field {field!r}" + (f"; did you mean {close[0]!r}?" if close else "")
        elif err["type"] == "missing":
            message = "required field is missing"
        problems.append(Problem(format_loc(loc), message + _step_context(loc, data)))
    return problems


def to_data(doc: RecipeDocument) -> dict[str, Any]:
    """Return the document as JSON-ready data (every field, defaults included)."""
    return doc.model_dump(mode="json")


def canonical_json(doc: RecipeDocument | Mapping[str, Any]) -> bytes:
    """Serialise canonically: sorted keys, no whitespace, UTF-8, shortest round-trip floats."""
    data = to_data(doc) if isinstance(doc, RecipeDocument) else doc
    return json.dumps(
        data, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode()


def content_hash(doc: RecipeDocument) -> str:
    """Return the SHA-256 hex digest of the canonical JSON: what signatures and control recipes bind to."""
    return hashlib.sha256(canonical_json(doc)).hexdigest()
