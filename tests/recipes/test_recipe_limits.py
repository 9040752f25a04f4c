"""Live checks: a value against its limits and a quantity against its tolerance, across units."""

from __future__ import annotations

import pytest

from app.recipes.limits import (
    Amount,
    IncompatibleUnitsError,
    LimitSpec,
    check_quantity,
    check_value,
    limits_for_capture,
)

TEMP = LimitSpec(unit="degC", target=37.0, low=36.0, high=38.0, alarm_low=36.5, alarm_high=37.5, name="Temp")
VOLUME = LimitSpec(unit="L", target=2.5, low=2.4, high=2.6)


@pytest.mark.parametrize(
    ("value", "state", "limit"),
    [
        (37.0, "green", None),
        (37.5, "green", None),
        (36.5, "green", None),
        (37.6, "amber", "alarm_high"),
        (36.4, "amber", "alarm_low"),
        (38.0, "amber", "alarm_high"),
        (38.01, "red", "high"),
        (35.9, "red", "low"),
    ],
)
def test_states_and_inclusive_limits(value, state, limit):
    check = check_value(value, "degC", TEMP)
    assert (check.state, check.limit) == (state, limit)
    assert check.ok is (state != "red")


def test_value_in_millilitres_against_a_limit_in_litres():
    check = check_value(2650, "mL", VOLUME)
    assert check.state == "red"
    assert check.value == 2.65
    assert check.unit == "L"
    assert check.message == "2.65 L (entered 2650 mL) is above the high limit 2.6 L"
    assert check_value(2600, "mL", VOLUME).state == "green"


def test_fahrenheit_against_celsius_without_float_noise():
    check = check_value(98.6, "degF", TEMP)
    assert (check.state, check.value) == ("green", 37.0)


@pytest.mark.parametrize(("unit", "limit_unit"), [("kg", "L"), ("percent", "pH"), ("Hz", "rpm")])
def test_incompatible_units_are_refused(unit, limit_unit):
    with pytest.raises(IncompatibleUnitsError, match="cannot convert"):
        check_value(1.0, unit, LimitSpec(unit=limit_unit, low=0.0))


def test_one_sided_and_absent_limits():
    assert check_value(0.5, "bar", LimitSpec(unit="bar", high=2.0)).state == "green"
    assert check_value(2.5, "bar", LimitSpec(unit="bar", high=2.0)).state == "red"
    assert check_value(1e9, "bar", LimitSpec(unit="bar")).state == "green"
    assert check_value(1.0, "CFU", LimitSpec(unit="CFU", high=0.0)).state == "red"


def test_quantity_within_and_outside_tolerance():
    required = Amount(1.2, "L")
    assert check_quantity(1.25, "L", required, 5.0).state == "green"
    outside = check_quantity(1.27, "L", required, 5.0)
    assert (outside.state, outside.limit) == ("red", "tolerance")
    assert outside.message == "1.27 L is +5.83% from required 1.2 L ± 5%"
    assert check_quantity(1.26, "L", required, 5.0).state == "green"  # exactly at the edge


def test_quantity_converted_between_units():
    check = check_quantity(876.0, "g", Amount(0.8766, "kg"), 1.0)
    assert check.state == "green"
    assert check.value == 0.876
    assert "entered 876 g" in check.message
    with pytest.raises(IncompatibleUnitsError):
        check_quantity(1.0, "L", Amount(1.0, "kg"), 1.0)


def test_zero_required_quantity_and_negative_tolerance():
    assert check_quantity(0, "g", Amount(0, "g"), 0).state == "green"
    assert check_quantity(0.1, "g", Amount(0, "g"), 10).state == "red"
    with pytest.raises(ValueError, match="negative"):
        check_quantity(1, "g", Amount(1, "g"), -1)


def test_formula_parameters_are_limit_sources(make_document):
    doc = make_document()
    control = doc.phase_map()["control"]
    temp_capture, _, osmo_capture = control.captures
    param = limits_for_capture(doc, temp_capture)
    assert param is doc.parameter_map()["temp"]
    assert check_value(38.5, "degC", param).state == "red"
    inline = limits_for_capture(doc, osmo_capture)
    assert isinstance(inline, LimitSpec)
    assert (inline.unit, inline.low, inline.high, inline.criticality) == ("mOsm/kg", 260, 480, "key")
    assert check_value(500, "mOsm/kg", inline).state == "red"
