"""Verification scenarios: every template's scenarios give their expected outcome, and each rule holds."""

from __future__ import annotations

import pytest

from app.recipes.document import RecipeDocumentError, parse_document
from app.recipes.scenarios import (
    Expectation,
    Scenario,
    ScenarioError,
    check_pack,
    evaluate,
    parse_validation_pack,
)
from app.recipes.templates import load_library

LIBRARY = load_library()
ALL_SCENARIOS = [(t, s) for t in LIBRARY for s in t.pack.scenarios]


@pytest.mark.parametrize(("template", "scenario"), ALL_SCENARIOS, ids=[s.id for _, s in ALL_SCENARIOS])
def test_template_scenario_gives_its_expected_outcome(template, scenario):
    outcome = evaluate(template.document, scenario)
    assert outcome.mismatches(scenario.expect) == []


@pytest.mark.parametrize("template", LIBRARY, ids=lambda t: t.id)
def test_validation_pack_checks_clean(template):
    assert check_pack(template.document, template.pack) == []


# -- the rules, one by one, on the small test document -------------------------------------------------------

A, B, QA = "op.a", "op.b", "qa.c"
SIGNED = [{"meaning": "performed", "by": A}, {"meaning": "verified", "by": B}]


def rec(step, entries=None, **kw):
    """Return a step record; times default to none (no hold or duration checks)."""
    out = {"step": step, **kw}
    if entries:
        out["entries"] = entries
    return out


def nominal(until=None):
    records = [
        rec(
            "install",
            {
                "bag": {"material": "BAG-1", "lot": "B1", "quantity": 1, "unit": "count"},
                "sub": {"equipment_id": "SUB-01", "equipment_class": "SUB-50L"},
            },
            signatures=SIGNED,
        ),
        rec("fill", {"medium": {"material": "MED-1", "lot": "M1", "quantity": 40.0, "unit": "L"}}),
        rec("control", {"temp": {"value": 37.0, "unit": "degC"}, "ph": {"value": 7.0, "unit": "pH"}}),
        rec(
            "feed",
            {
                "feed": {"material": "FEED-1", "lot": "F1", "quantity": 2.5, "unit": "L"},
                "appearance": "Clear",
            },
        ),
        {"step": "glucose", "action": "skip", "reason": "Glucose above 3 g/L"},
        rec("harvest", {"label": "H-0001", "done": True}, signatures=SIGNED),
    ]
    if until is None:
        return records
    return records[: [r["step"] for r in records].index(until) + 1]


def run(doc, records, expect=None, **kw):
    scenario = Scenario.model_validate(
        {
            "id": "TS-SC-001",
            "title": "Test",
            "verifies": ["TS-REQ-001"],
            "records": records,
            "expect": expect or {},
            **kw,
        }
    )
    return evaluate(doc, scenario)


def keys(findings):
    return sorted(f.key() for f in findings)


def test_nominal_run_is_clean(make_document):
    outcome = run(make_document(), nominal())
    assert (outcome.exceptions, outcome.refusals) == ([], [])


def test_out_of_limit_severity_follows_criticality_and_alarm_is_minor(make_document):
    records = [
        *nominal("fill"),
        rec(
            "control",
            {
                "temp": {"value": 38.2, "unit": "degC"},
                "ph": {"value": 7.0, "unit": "pH"},
                "osmo": {"value": 500, "unit": "mOsm/kg"},
            },
        ),
    ]
    outcome = run(make_document(), records, complete_batch=False)
    assert keys(outcome.exceptions) == [
        ("out_of_limit", "control", "osmo", "major"),
        ("out_of_limit", "control", "temp", "critical"),
    ]
    records[-1]["entries"]["temp"] = {"value": 99.5, "unit": "degF"}  # 37.5 °C: at the alarm limit, green
    records[-1]["entries"]["osmo"] = {"value": 300, "unit": "mOsm/kg"}
    assert run(make_document(), records, complete_batch=False).exceptions == []
    records[-1]["entries"]["temp"] = {"value": 37.6, "unit": "degC"}
    assert keys(run(make_document(), records, complete_batch=False).exceptions) == [
        ("alarm_limit", "control", "temp", "minor")
    ]


def test_out_of_order_is_refused_unless_overridden(make_document):
    doc = make_document()
    early = rec("control", {"temp": {"value": 37.0, "unit": "degC"}, "ph": {"value": 7.0, "unit": "pH"}})
    outcome = run(doc, [*nominal("install"), early], complete_batch=False)
    assert keys(outcome.refusals) == [("out_of_order", "control", None, None)]
    assert outcome.exceptions == []
    outcome = run(
        doc,
        [*nominal("install"), {**early, "override": "Supervisor: fill recorded on paper"}],
        complete_batch=False,
    )
    assert keys(outcome.exceptions) == [("out_of_order", "control", None, "major")]
    assert outcome.refusals == []


def test_explicit_dependencies_allow_parallel_paths(make_document):
    # glucose depends on control only, so it may run before feed; harvest depends on feed only.
    records = [*nominal("control"), rec("glucose"), *nominal()[3:4], *nominal()[5:]]
    outcome = run(make_document(), records)
    assert (outcome.exceptions, outcome.refusals) == ([], [])


def test_skips(make_document):
    records = [*nominal("fill"), {"step": "control", "action": "skip", "reason": "x"}]
    assert keys(run(make_document(), records, complete_batch=False).refusals) == [
        ("skip_not_allowed", "control", None, None)
    ]
    records = [*nominal(), {"step": "glucose", "action": "skip"}, rec("fill")]
    assert keys(run(make_document(), records).refusals) == [
        ("already_completed", "fill", None, None),
        ("already_completed", "glucose", None, None),
    ]


def test_missing_mandatory_steps_at_batch_end(make_document):
    outcome = run(make_document(), nominal("control"))
    assert keys(outcome.exceptions) == [
        ("missing_mandatory_step", "feed", None, "critical"),
        ("missing_mandatory_step", "harvest", None, "critical"),
    ]


def test_hold_time_and_duration(make_document):
    records = [
        *nominal("install"),
        rec("fill", nominal()[1]["entries"], started_at="PT1H", completed_at="PT2H"),
        rec("control", nominal()[2]["entries"], started_at="P1DT3H", completed_at="P1DT3H30M"),
    ]
    outcome = run(make_document(), records, complete_batch=False)
    assert keys(outcome.exceptions) == [
        ("duration_out_of_range", "control", None, "major"),
        ("hold_time_exceeded", "fill", None, "major"),
    ]


def test_quantity_tolerance_with_scaling_and_units(make_document):
    feed_1_2 = {
        "feed": {"material": "FEED-1", "lot": "F1", "quantity": 1.2, "unit": "L"},
        "appearance": "Clear",
    }
    records = [r for r in nominal("control")] + [rec("feed", feed_1_2)]
    # At 25 L the feed is 1.25 L: 1.2 L is -4 %, within ±5 %; at 50 L it is far off.
    medium = {"medium": {"material": "MED-1", "lot": "M1", "quantity": 20000, "unit": "mL"}}
    records[1] = rec("fill", medium)
    assert (
        run(make_document(), records, complete_batch=False, batch_size={"value": 25, "unit": "L"}).exceptions
        == []
    )
    records[1] = rec("fill", {"medium": {"material": "MED-1", "lot": "M1", "quantity": 40.0, "unit": "L"}})
    outcome = run(make_document(), records, complete_batch=False)
    assert keys(outcome.exceptions) == [("quantity_out_of_tolerance", "feed", "feed", "major")]


def test_wrong_material_equipment_units_and_entries_are_refused(make_document):
    records = [
        rec(
            "install",
            {
                "bag": {"material": "BAG-2", "lot": "B9", "quantity": 1, "unit": "count"},
                "sub": {"equipment_id": "SUB-02", "equipment_class": "SUB-200L"},
            },
            complete=False,
        ),
        *nominal()[:1],
        rec(
            "fill",
            {"medium": {"material": "MED-1", "lot": "M1", "quantity": 40.0, "unit": "kg"}},
            complete=False,
        ),
        rec("fill", {"medium": {"material": "MED-1", "lot": "M1"}}, complete=False),
    ]
    outcome = run(make_document(), records, complete_batch=False)
    assert keys(outcome.refusals) == [
        ("incompatible_unit", "fill", "medium", None),
        ("invalid_entry", "fill", "medium", None),
        ("wrong_equipment", "install", "sub", None),
        ("wrong_material", "install", "bag", None),
    ]


def test_choices_patterns_and_identity(make_document):
    records = [
        *nominal("control"),
        rec("feed", {**nominal()[3]["entries"], "appearance": "Turbid"}),
        rec("harvest", {"label": "H-12", "done": True}, signatures=SIGNED),
        rec("harvest", {"label": "H-0002"}, signatures=SIGNED),
    ]
    outcome = run(make_document(), records, complete_batch=False, identity={"harvest_bag": "H-0001"})
    assert keys(outcome.exceptions) == [
        ("identity_mismatch", "harvest", "label", "critical"),
        ("unacceptable_choice", "feed", "appearance", "major"),
    ]
    assert keys(outcome.refusals) == [
        ("invalid_entry", "harvest", "label", None),
        ("missing_required_capture", "harvest", "label", None),
    ]


def test_required_checkbox_and_signatures(make_document):
    records = [
        *nominal("feed"),
        rec("harvest", {"label": "H-0001", "done": False}, signatures=SIGNED),
        rec(
            "harvest",
            {"done": True},
            signatures=[{"meaning": "performed", "by": A}, {"meaning": "verified", "by": A}],
        ),
        rec("harvest", signatures=[{"meaning": "verified", "by": B}]),
    ]
    outcome = run(make_document(), records, complete_batch=False)
    assert keys(outcome.refusals) == [
        ("missing_required_capture", "harvest", "done", None),
        ("missing_signature", "harvest", None, None),
        ("second_person_required", "harvest", None, None),
    ]


def test_mismatches_describe_the_difference(make_document):
    outcome = run(make_document(), nominal("control"))
    expect = Expectation.model_validate(
        {
            "exceptions": [
                {"type": "missing_mandatory_step", "step": "feed", "severity": "critical"},
                {"type": "out_of_limit", "step": "control", "capture": "temp", "severity": "critical"},
            ]
        }
    )
    assert outcome.mismatches(expect) == [
        "expected exception out_of_limit on step 'control' capture 'temp' (critical) was not produced",
        "unexpected exception missing_mandatory_step on step 'harvest' (critical): "
        "mandatory step 'harvest' was not completed",
    ]


@pytest.mark.parametrize(
    ("records", "message"),
    [
        ([rec("nowhere")], "unknown step 'nowhere'"),
        ([rec("install", {"colour": "red"})], "has no capture 'colour'"),
        ([rec("install", {"bag": "B1"})], "a material scan takes"),
        ([rec("install", {"sub": True})], "an equipment scan takes"),
        (
            [
                rec(
                    "install",
                    started_at="PT2H",
                    signatures=SIGNED,
                    entries=nominal()[0]["entries"],
                    completed_at="PT1H",
                )
            ],
            "completes before it starts",
        ),
        (
            [
                rec(
                    "install",
                    started_at="PT0S",
                    completed_at="PT2H",
                    signatures=SIGNED,
                    entries=nominal()[0]["entries"],
                ),
                rec("fill", started_at="PT1H", entries=nominal()[1]["entries"]),
            ],
            "before its predecessor",
        ),
    ],
)
def test_malformed_scenarios_are_refused(make_document, records, message):
    with pytest.raises(ScenarioError, match=message):
        run(make_document(), records, complete_batch=False)


def test_scenarios_need_a_valid_recipe(make_data):
    doc = parse_document(make_data(fill={"instructions": ""}))
    with pytest.raises(ScenarioError, match="validation errors"):
        run(doc, nominal())


def test_validation_pack_is_parsed_strictly():
    with pytest.raises(RecipeDocumentError) as info:
        parse_validation_pack(
            {
                "template_id": "x",
                "template_version": "1.0.0",
                "intended_use": "x",
                "requirements": [{"id": "REQ-1", "text": "t", "gmp_impact": "high"}],
                "scenarios": [],
            }
        )
    paths = {p.path for p in info.value.problems}
    assert {"requirements[0].id", "scenarios"} <= paths
