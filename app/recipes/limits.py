"""The live checks the batch engine runs on every entry: a value against limits, a quantity against tolerance.

Pure functions, no database: the engine calls them while the operator types, the scenario evaluator calls
them to verify templates. A value entered in another unit than the limit's is converted first (mL against a
limit in L, degF against degC); a unit that measures something else is refused with `IncompatibleUnitsError`.

States: green (within the alarm band), amber (outside the alarm band, within the acceptance limits), red
(outside the acceptance limits). Limits are inclusive: a value equal to a limit is within it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol

from app.recipes.document import (
    Criticality,
    FormulaParameter,
    IncompatibleUnitsError,
    NumberCapture,
    RecipeDocument,
    convert,
    round_sig,
)

State = Literal["green", "amber", "red"]

__all__ = [
    "Amount",
    "Check",
    "IncompatibleUnitsError",
    "LimitSource",
    "LimitSpec",
    "check_quantity",
    "check_value",
    "limits_for_capture",
]


class LimitSource(Protocol):
    """Anything with a unit and limits: a formula parameter or a `LimitSpec`."""

    @property
    def unit(self) -> str: ...
    @property
    def target(self) -> float | None: ...
    @property
    def low(self) -> float | None: ...
    @property
    def high(self) -> float | None: ...
    @property
    def alarm_low(self) -> float | None: ...
    @property
    def alarm_high(self) -> float | None: ...


@dataclass(frozen=True)
class LimitSpec:
    """Limits for a check, e.g. taken from a capture's inline limits."""

    unit: str
    target: float | None = None
    low: float | None = None
    high: float | None = None
    alarm_low: float | None = None
    alarm_high: float | None = None
    criticality: Criticality = "non_key"
    name: str = ""


@dataclass(frozen=True)
class Amount:
    """A quantity with its unit."""

    value: float
    unit: str


@dataclass(frozen=True)
class Check:
    """The result of a check: state, a sentence for the operator, the value in the limit's unit."""

    state: State
    message: str
    value: float
    unit: str
    #: The limit that was crossed ("high", "alarm_low", "tolerance"...), None when green.
    limit: str | None = None

    @property
    def ok(self) -> bool:
        """Tell whether the value is within its acceptance limits (green or amber)."""
        return self.state != "red"


def _fmt(value: float) -> str:
    """Write a number for an operator: no float noise, no needless trailing zeros."""
    return f"{round_sig(value, 10):g}"


def check_value(value: float, unit: str, param: LimitSource) -> Check:
    """Classify a value against a parameter's limits, converting it to the parameter's unit first."""
    converted = convert(value, unit, param.unit)
    shown = f"{_fmt(converted)} {param.unit}"
    if unit != param.unit:
        shown += f" (entered {_fmt(value)} {unit})"
    for name, bound, below in (("low", param.low, True), ("high", param.high, False)):
        if bound is not None and (converted < bound if below else converted > bound):
            side = "below the low" if below else "above the high"
            return Check(
                "red", f"{shown} is {side} limit {_fmt(bound)} {param.unit}", converted, param.unit, name
            )
    for name, bound, below in (("alarm_low", param.alarm_low, True), ("alarm_high", param.alarm_high, False)):
        if bound is not None and (converted < bound if below else converted > bound):
            side = "below the alarm low" if below else "above the alarm high"
            return Check(
                "amber", f"{shown} is {side} limit {_fmt(bound)} {param.unit}", converted, param.unit, name
            )
    return Check("green", f"{shown} is within limits", converted, param.unit)


def check_quantity(actual: float, unit: str, required: Amount, tolerance_pct: float) -> Check:
    """Check a dispensed or charged quantity against the required amount within ± tolerance percent."""
    if tolerance_pct < 0:
        raise ValueError("tolerance_pct cannot be negative")
    converted = convert(actual, unit, required.unit)
    shown = f"{_fmt(converted)} {required.unit}"
    if unit != required.unit:
        shown += f" (entered {_fmt(actual)} {unit})"
    band = f"{_fmt(required.value)} {required.unit} ± {_fmt(tolerance_pct)}%"
    if required.value == 0:
        state: State = "green" if converted == 0 else "red"
        return Check(
            state,
            f"{shown} against required {band}",
            converted,
            required.unit,
            None if state == "green" else "tolerance",
        )
    deviation_pct = round_sig((converted - required.value) / required.value * 100, 9)
    if abs(deviation_pct) > tolerance_pct:
        return Check(
            "red",
            f"{shown} is {deviation_pct:+.2f}% from required {band}",
            converted,
            required.unit,
            "tolerance",
        )
    return Check("green", f"{shown} is within {band} ({deviation_pct:+.2f}%)", converted, required.unit)


def limits_for_capture(doc: RecipeDocument, capture: NumberCapture) -> LimitSource | None:
    """Return what a number capture is checked against: its parameter, its inline limits, or nothing."""
    if capture.parameter is not None:
        param: FormulaParameter | None = doc.parameter_map().get(capture.parameter)
        return param
    if capture.limits is not None and capture.unit is not None:
        lim = capture.limits
        return LimitSpec(
            unit=capture.unit,
            target=lim.target,
            low=lim.low,
            high=lim.high,
            alarm_low=lim.alarm_low,
            alarm_high=lim.alarm_high,
            criticality=lim.criticality,
            name=capture.label,
        )
    return None
