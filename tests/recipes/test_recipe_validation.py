"""Editor validation: each problem a process engineer can make is reported at its path, at the right level."""

from __future__ import annotations

import pytest

from app.recipes.document import parse_document
from app.recipes.validation import has_errors, validate

STEP = "procedure.unit_procedures[0].operations[{op}].phases[{ph}]"
CONTROL = STEP.format(op=1, ph=0)
FEED = STEP.format(op=1, ph=1)
HARVEST = STEP.format(op=1, ph=3)


def _messages(data):
    return validate(parse_document(data))


def _find(messages, path, level="error"):
    found = [m for m in messages if m.path == path and m.level == level]
    assert found, f"no {level} at {path}; got {[m.as_dict() for m in messages]}"
    return found[0].message


def test_the_base_document_is_clean(make_document):
    messages = validate(make_document())
    assert messages == []
    assert not has_errors(messages)


def test_critical_parameter_without_limits(make_data):
    data = make_data()
    for field in ("low", "high", "alarm_low", "alarm_high"):
        del data["formula"]["parameters"][0][field]
    message = _find(_messages(data), "formula.parameters[0]")
    assert "critical parameter 'temp' has no limits" in message


def test_key_parameter_without_limits_is_a_warning(make_data):
    data = make_data()
    del data["formula"]["parameters"][1]["low"]
    del data["formula"]["parameters"][1]["high"]
    assert "key parameter" in _find(_messages(data), "formula.parameters[1]", "warning")


@pytest.mark.parametrize(
    ("changes", "path", "text"),
    [
        ({"low": 37.2}, "formula.parameters[0].alarm_low", "low (37.2) is above alarm_low (36.5)"),
        ({"alarm_high": 36.9}, "formula.parameters[0].alarm_high", "target (37) is above alarm_high (36.9)"),
        ({"high": 37.4}, "formula.parameters[0].high", "alarm_high (37.5) is above high (37.4)"),
    ],
)
def test_limits_out_of_order(make_data, changes, path, text):
    data = make_data()
    data["formula"]["parameters"][0].update(changes)
    message = _find(_messages(data), path)
    assert text in message
    assert "low <= alarm_low <= target <= alarm_high <= high" in message


def test_inline_limits_out_of_order(make_data, phase_of):
    data = make_data()
    phase_of(data, "control")["captures"][2]["limits"] = {"low": 500, "high": 480}
    assert "out of order" in _find(_messages(data), f"{CONTROL}.captures[2].limits.high")


def test_capture_referencing_an_unknown_parameter(make_data, phase_of):
    data = make_data()
    phase_of(data, "control")["captures"][0]["parameter"] = "temperature"
    message = _find(_messages(data), f"{CONTROL}.captures[0].parameter")
    assert "unknown parameter 'temperature'" in message


def test_step_applying_an_unknown_parameter(make_data):
    data = make_data(control={"parameters": ["temp", "ph", "do"]})
    assert "unknown parameter 'do'" in _find(_messages(data), f"{CONTROL}.parameters[2]")


def test_capture_unit_incompatible_with_its_parameter(make_data, phase_of):
    data = make_data()
    phase_of(data, "control")["captures"][0]["unit"] = "bar"
    assert "cannot be compared" in _find(_messages(data), f"{CONTROL}.captures[0].unit")


def test_material_requirement_without_quantity(make_data):
    data = make_data(feed={"materials": [{"material": "FEED-1"}]})
    message = _find(_messages(data), f"{FEED}.materials[0].quantity")
    assert "requires 'FEED-1' but gives no quantity" in message


def test_material_requirement_of_an_unknown_material(make_data):
    data = make_data(feed={"materials": [{"material": "FEED-9", "quantity": 1}]})
    assert "not in the bill of materials" in _find(_messages(data), f"{FEED}.materials[0].material")


def test_material_scan_quantity_reference_checks(make_data, phase_of):
    data = make_data()
    phase_of(data, "feed")["captures"][0]["quantity_ref"] = "temp"
    assert "is not a quantity of L" in _find(_messages(data), f"{FEED}.captures[0].quantity_ref")
    phase_of(data, "feed")["captures"][0]["quantity_ref"] = "nothing"
    assert "is not a parameter" in _find(_messages(data), f"{FEED}.captures[0].quantity_ref")


def test_duplicate_keys(make_data, phase_of):
    data = make_data(glucose={"key": "feed", "depends_on": ["control"]})
    data["formula"]["parameters"][2]["key"] = "temp"
    data["materials"][2]["code"] = "MED-1"
    phase_of(data, "control")["captures"][1]["key"] = "temp"
    messages = _messages(data)
    assert "duplicate step key 'feed'" in _find(messages, f"{STEP.format(op=1, ph=2)}.key")
    assert "duplicate parameter key 'temp'" in _find(messages, "formula.parameters[2].key")
    assert "listed twice" in _find(messages, "materials[2].code")
    assert "used twice" in _find(messages, f"{CONTROL}.captures[1].key")


def test_unknown_and_self_dependencies(make_data):
    data = make_data(harvest={"depends_on": ["feed", "harvest", "cleaning"]})
    messages = _messages(data)
    assert "depends on itself" in _find(messages, f"{HARVEST}.depends_on[1]")
    assert "unknown step 'cleaning'" in _find(messages, f"{HARVEST}.depends_on[2]")


def test_dependency_cycle_and_unreachable_steps(make_data):
    # control -> feed -> harvest is the chain; making control wait for harvest closes a cycle, and the
    # optional glucose step (which waits for control) can then never start.
    data = make_data(control={"depends_on": ["fill", "harvest"]})
    messages = _messages(data)
    cycle = _find(messages, f"{CONTROL}.depends_on")
    assert cycle == "dependency cycle: control -> feed -> harvest -> control"
    unreachable = _find(messages, f"{STEP.format(op=1, ph=2)}.depends_on")
    assert "step 'glucose' is unreachable: it waits on 'control'" in unreachable


def test_step_without_instructions(make_data):
    data = make_data(fill={"instructions": "  \n "})
    assert "has no instructions" in _find(_messages(data), f"{STEP.format(op=0, ph=1)}.instructions")


def test_attachments_must_match_the_instructions(make_data):
    data = make_data(fill={"instructions": "See ![bag](attachment:bag.png).", "attachments": ["chart.pdf"]})
    messages = _messages(data)
    path = STEP.format(op=0, ph=1)
    assert "'bag.png', which the step does not list" in _find(messages, f"{path}.instructions")
    assert "not shown" in _find(messages, f"{path}.attachments[0]", "warning")


def test_signature_rules(make_data):
    data = make_data(
        fill={"signatures": [{"meaning": "verified"}, {"meaning": "performed"}, {"meaning": "performed"}]}
    )
    messages = _messages(data)
    path = STEP.format(op=0, ph=1)
    assert "required twice" in _find(messages, f"{path}.signatures[2].meaning")
    assert "second person" in _find(messages, f"{path}.signatures[0].independent", "warning")


def test_timing_rules(make_data):
    data = make_data(
        control={"timing": {"expected_duration": "PT5H", "min_duration": "PT4H", "max_duration": "PT2H"}}
    )
    messages = _messages(data)
    assert "shorter than the minimum" in _find(messages, f"{CONTROL}.timing.max_duration")
    assert "above the maximum" in _find(messages, f"{CONTROL}.timing.expected_duration", "warning")


def test_linear_scaling_of_a_temperature_and_bad_reference_unit(make_data):
    data = make_data()
    data["formula"]["parameters"][0]["scaling"] = {
        "rule": "linear",
        "reference_batch_size": 50,
        "reference_unit": "kg",
    }
    messages = _messages(data)
    assert "cannot scale linearly" in _find(messages, "formula.parameters[0].scaling.rule")
    assert "batch size unit L" in _find(messages, "formula.parameters[0].scaling.reference_unit")


def test_header_dates_and_range(make_data):
    data = make_data()
    data["header"].update({"effective_date": "2025-06-01", "expiry_date": "2025-01-01"})
    data["header"]["batch_size"].update({"min": 60, "max": 40})
    messages = _messages(data)
    assert "after the effective date" in _find(messages, "header.expiry_date")
    assert "minimum batch size is above" in _find(messages, "header.batch_size.min")
    assert "maximum batch size is below" in _find(messages, "header.batch_size.max")


def test_identity_check_cannot_be_optional(make_data, phase_of):
    data = make_data()
    phase_of(data, "harvest")["captures"][0]["required"] = False
    assert "cannot be optional" in _find(_messages(data), f"{HARVEST}.captures[0].required")


def test_unused_parameter_material_and_unscanned_equipment_are_warnings(make_data):
    data = make_data(fill={"equipment_class": "PUMP"})
    data["formula"]["parameters"].append(
        {"key": "spare", "name": "Spare", "type": "process_output", "unit": "g/L"}
    )
    data["materials"].append({"code": "SPARE-1", "name": "Spare", "unit": "kg", "quantity": 1})
    messages = _messages(data)
    assert not has_errors(messages)
    assert "not applied or captured" in _find(messages, "formula.parameters[3]", "warning")
    assert "not used by any step" in _find(messages, "materials[3]", "warning")
    assert "needs a PUMP but scans none" in _find(
        messages, f"{STEP.format(op=0, ph=1)}.equipment_class", "warning"
    )


def test_errors_come_before_warnings(make_data):
    data = make_data(fill={"instructions": ""}, install={"signatures": [{"meaning": "verified"}]})
    levels = [m.level for m in _messages(data)]
    assert levels == sorted(levels, key=lambda level: level != "error")
    assert {"error", "warning"} <= set(levels)
