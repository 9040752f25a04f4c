"""The recipe document: strict parsing with pointed errors, units, canonical JSON and the content hash."""

from __future__ import annotations

import json
import random
from datetime import timedelta

import pytest

from app.recipes.document import (
    CAPTURE_KINDS,
    CRITICALITIES,
    PARAMETER_TYPES,
    SCHEMA_ID,
    SIGNATURE_MEANINGS,
    IncompatibleUnitsError,
    RecipeDocumentError,
    UnknownUnitError,
    canonical_json,
    content_hash,
    convert,
    effective_dependencies,
    format_duration,
    format_number,
    parse_document,
    parse_duration,
    parse_unit,
    to_data,
    units_compatible,
)


def _problems(source):
    with pytest.raises(RecipeDocumentError) as info:
        parse_document(source)
    return {p.path: p.message for p in info.value.problems}


def test_valid_document_parses(make_document):
    doc = make_document()
    assert doc.schema_id == SCHEMA_ID
    assert [ph.key for ph in doc.phases()] == ["install", "fill", "control", "feed", "glucose", "harvest"]
    assert to_data(doc)["schema"] == SCHEMA_ID


def test_unknown_field_is_refused_with_its_path_and_a_suggestion(make_data):
    data = make_data(feed={"tolerence_pct": 5})
    problems = _problems(data)
    path = "procedure.unit_procedures[0].operations[1].phases[1].tolerence_pct"
    assert path in problems
    assert "unknown field 'tolerence_pct'" in problems[path]
    assert "step 'feed'" in problems[path]


def test_unknown_unit_is_refused_at_the_capture(make_data, phase_of):
    data = make_data()
    phase_of(data, "control")["captures"][2]["unit"] = "mOsmm/kg"
    problems = _problems(data)
    path = "procedure.unit_procedures[0].operations[1].phases[0].captures[2].unit"
    assert "unknown unit 'mOsmm/kg'" in problems[path]
    assert "(step 'control')" in problems[path]


def test_wrong_types_are_refused_without_coercion(make_data):
    data = make_data()
    data["formula"]["parameters"][0]["target"] = "37"
    data["procedure"]["unit_procedures"][0]["operations"][0]["phases"][0]["mandatory"] = "yes"
    problems = _problems(data)
    assert "formula.parameters[0].target" in problems
    assert "procedure.unit_procedures[0].operations[0].phases[0].mandatory" in problems


def test_schema_id_and_required_fields(make_data):
    data = make_data()
    data["schema"] = "batchline.recipe/2"
    del data["header"]["product_code"]
    problems = _problems(data)
    assert "schema" in problems
    assert problems["header.product_code"] == "required field is missing"


@pytest.mark.parametrize(
    ("capture", "message"),
    [
        ({"kind": "number", "key": "x", "label": "X"}, "needs a unit"),
        ({"kind": "number", "key": "x", "label": "X", "parameter": "temp", "limits": {"low": 1}}, "not both"),
        (
            {"kind": "choice", "key": "x", "label": "X", "options": ["A", "B"], "acceptable": ["C"]},
            "not among",
        ),
        ({"kind": "choice", "key": "x", "label": "X", "options": ["A", "A"]}, "unique"),
        ({"kind": "text", "key": "x", "label": "X", "pattern": "(["}, "regular expression"),
        ({"kind": "scribble", "key": "x", "label": "X"}, "kind"),
        ({"kind": "number", "key": "X-1", "label": "X", "unit": "L"}, "pattern"),
    ],
)
def test_capture_shapes_are_checked(make_data, capture, message):
    data = make_data(glucose={"captures": [capture]})
    problems = _problems(data)
    assert any(message in text for text in problems.values()), problems


def test_scaling_needs_a_reference_only_when_linear(make_data):
    data = make_data()
    data["formula"]["parameters"][1]["scaling"] = {"rule": "linear"}
    data["formula"]["parameters"][0]["scaling"] = {"rule": "fixed", "reference_batch_size": 50}
    problems = _problems(data)
    assert "reference_batch_size and reference_unit" in problems["formula.parameters[1].scaling"]
    assert "takes no reference" in problems["formula.parameters[0].scaling"]


def test_malformed_json_points_at_line_and_column():
    problems = _problems('{"schema": "batchline.recipe/1",\n  "header": {,}}')
    assert list(problems) == ["line 2 column 14"]


def test_duplicate_json_keys_and_nan_are_refused(make_data):
    text = json.dumps(make_data())
    assert "appears twice" in next(iter(_problems('{"schema": 1, "schema": 2}').values()))
    assert "NaN" in next(iter(_problems(text.replace("37.0", "NaN", 1)).values()))


def test_text_is_normalised_and_control_characters_refused(make_data):
    doc = parse_document(make_data(fill={"instructions": "line one\r\nline two\rthree"}))
    assert doc.phase_map()["fill"].instructions == "line one\nline two\nthree"
    problems = _problems(make_data(fill={"instructions": "bell \x07"}))
    assert any("control characters" in m for m in problems.values())


def test_default_dependencies_are_the_previous_step(make_document):
    deps = effective_dependencies(make_document())
    assert deps == {
        "install": [],
        "fill": ["install"],
        "control": ["fill"],
        "feed": ["control"],
        "glucose": ["control"],
        "harvest": ["feed"],
    }


def test_equipment_class_falls_back_to_the_unit_procedure(make_document):
    doc = make_document(harvest={"equipment_class": "HARVEST-SKID"})
    assert doc.equipment_class_of("fill") == "SUB-50L"
    assert doc.equipment_class_of("harvest") == "HARVEST-SKID"


# -- units ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "unit",
    [
        "L",
        "mL",
        "g",
        "kg",
        "mg",
        "rpm",
        "degC",
        "°C",
        "bar",
        "mbar",
        "mS/cm",
        "µS/cm",
        "percent",
        "%",
        "pH",
        "cells/mL",
        "Mcells/mL",
        "Gcells",
        "vvm",
        "g/L",
        "mM",
        "mOsm/kg",
        "CFU/m^3",
        "CFU/m3",
        "particles/m^3",
        "EU/mL",
        "LMH",
        "kDa",
        "xg",
        "h",
        "min",
        "AU",
        "DV",
        "CV",
        "1",
        "count",
        "m³",
        "L/min/m^2",
    ],
)
def test_biotech_units_are_known(unit):
    parse_unit(unit)


@pytest.mark.parametrize(
    ("unit", "message"),
    [
        ("mLL", "did you mean 'mL'"),
        ("C", "ambiguous"),
        ("1e6 cells/mL", "contains a number"),
        ("", "required"),
        (" L", "spaces"),
        ("(", "unknown unit"),
    ],
)
def test_bad_units_are_refused_with_help(unit, message):
    with pytest.raises(UnknownUnitError, match=message):
        parse_unit(unit)


@pytest.mark.parametrize(
    ("a", "b", "compatible"),
    [
        ("mL", "L", True),
        ("m^3", "L", True),
        ("degF", "degC", True),
        ("Mcells/mL", "cells/L", True),
        ("percent", "1", True),
        ("pH", "percent", False),
        ("pH", "1", False),
        ("rpm", "Hz", False),
        ("rpm", "1/min", False),
        ("cells/mL", "CFU/mL", False),
        ("L", "kg", False),
        ("vvm", "rpm", False),
    ],
)
def test_unit_compatibility_keeps_counted_things_apart(a, b, compatible):
    assert units_compatible(a, b) is compatible


def test_convert_rounds_away_conversion_noise():
    assert convert(98.6, "degF", "degC") == 37.0
    assert convert(500, "mL", "L") == 0.5
    assert convert(2, "Mcells/mL", "cells/mL") == 2_000_000.0
    with pytest.raises(IncompatibleUnitsError, match="volume"):
        convert(1, "kg", "L")


# -- durations and numbers -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "canonical", "seconds"),
    [
        ("PT30M", "PT30M", 1800),
        ("PT90M", "PT1H30M", 5400),
        ("P14D", "P14D", 14 * 86400),
        ("P1DT0.5S", "P1DT0.5S", 86400.5),
        ("P2W", "P14D", 14 * 86400),
        ("PT0S", "PT0S", 0),
    ],
)
def test_durations_round_trip_to_their_shortest_form(text, canonical, seconds):
    value = parse_duration(text)
    assert value == timedelta(seconds=seconds)
    assert format_duration(value) == canonical


@pytest.mark.parametrize("text", ["30 min", "P1M", "PT", "P", "-PT5M", "P1Y"])
def test_invalid_durations_are_refused(text):
    with pytest.raises(ValueError, match="ISO 8601"):
        parse_duration(text)


def _sample_floats(n: int) -> list[float]:
    """Return awkward floats: tiny, huge, negative, long mantissas (a fixed seed keeps runs identical)."""
    rng = random.Random(20240101)  # noqa: S311 - a fixed, reproducible sample, not a secret
    edge = [0.0, -0.0, 1e-300, 5e-324, 1.7976931348623157e308, 0.1, 1 / 3, -2.5e-7, 123456789.123456789]
    return edge + [rng.uniform(-1, 1) * 10 ** rng.randint(-30, 30) for _ in range(n)]


@pytest.mark.parametrize("value", _sample_floats(200))
def test_format_number_reads_back_exactly(value):
    assert float(format_number(value)) == value
    assert "e" not in format_number(value).lower()


# -- canonical JSON and hash ---------------------------------------------------------------------------------


def _shuffled(value, rng):
    """Return the same JSON data with every object's keys in a random order."""
    if isinstance(value, dict):
        items = list(value.items())
        rng.shuffle(items)
        return {k: _shuffled(v, rng) for k, v in items}
    if isinstance(value, list):
        return [_shuffled(v, rng) for v in value]
    return value


def test_canonical_json_is_sorted_compact_utf8(make_document):
    doc = make_document(fill={"instructions": "Füllen: 40 L bei 37 °C"})
    raw = canonical_json(doc)
    assert raw.decode("utf-8") == json.dumps(
        json.loads(raw), sort_keys=True, separators=(",", ":"), ensure_ascii=False
    )
    assert "Füllen: 40 L bei 37 °C".encode() in raw
    assert b" :" not in raw and b", " not in raw


def test_content_hash_is_stable_across_round_trips_and_formatting(make_data):
    data = make_data()
    doc = parse_document(data)
    reference = content_hash(doc)
    assert len(reference) == 64
    assert content_hash(parse_document(canonical_json(doc))) == reference
    assert content_hash(parse_document(json.dumps(to_data(doc), indent=4))) == reference
    rng = random.Random(7)  # noqa: S311 - a reproducible key order, not a secret
    assert content_hash(parse_document(_shuffled(data, rng))) == reference
    # Integers and floats, default values written out or left out: the same content.
    data["formula"]["parameters"][0]["target"] = 37
    data["procedure"]["unit_procedures"][0]["operations"][0]["phases"][0]["mandatory"] = True
    assert content_hash(parse_document(data)) == reference


def test_content_hash_changes_with_content(make_document):
    assert content_hash(make_document()) != content_hash(make_document(fill={"instructions": "Fill 41 L."}))


def test_vocabularies_match_the_schema():
    assert CAPTURE_KINDS == (
        "number", "text", "choice", "checkbox", "timestamp", "material_scan", "equipment_scan", "sample_id",
        "attachment",
    )  # fmt: skip
    assert PARAMETER_TYPES == ("process_input", "process_parameter", "process_output")
    assert CRITICALITIES == ("critical", "key", "non_key")
    assert {"performed", "verified"} <= set(SIGNATURE_MEANINGS)
