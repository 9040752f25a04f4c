"""BatchML (B2MML-V0600) export and import: structure, lossless round trip, pointed errors, safe parsing."""

from __future__ import annotations

import pytest
from defusedxml import ElementTree as SafeET

from app.recipes.batchml import B2MML_NS, EXTENSION_NS, BatchMLError, from_batchml, to_batchml
from app.recipes.document import content_hash, parse_document
from app.recipes.templates import load_library

B = f"{{{B2MML_NS}}}"
X = f"{{{EXTENSION_NS}}}"


@pytest.fixture
def full_data(make_data, phase_of):
    """Return document data that uses every field BatchML has to carry."""
    data = make_data()
    data["header"].update(
        {
            "effective_date": "2025-01-01",
            "expiry_date": "2027-12-31",
            "description": 'Two lines\n<and> & "marks"',
        }
    )
    data["formula"]["parameters"].append(
        {
            "key": "titer",
            "name": "Titer",
            "type": "process_output",
            "unit": "g/L",
            "low": 1e-05,
            "description": "Reported\nonly",
        }
    )
    data["materials"][1]["scaling"] = {
        "rule": "linear",
        "reference_batch_size": 0.05,
        "reference_unit": "m^3",
    }
    phase_of(data, "fill").update(
        {
            "instructions": "Fill **40 L**.\n\n![bag](attachment:bag.png)\n\n- one\n- two\n",
            "attachments": ["bag.png"],
            "equipment_class": "PUMP-1",
            "captures": [
                {
                    "kind": "material_scan",
                    "key": "medium",
                    "label": "Medium",
                    "material": "MED-1",
                    "tolerance_pct": 1.5,
                },
                {"kind": "equipment_scan", "key": "pump", "label": "Pump", "equipment_class": "PUMP-1"},
                {"kind": "timestamp", "key": "end", "label": "End", "required": False},
                {
                    "kind": "sample_id",
                    "key": "smp",
                    "label": "Sample",
                    "sample_type": "bioburden",
                    "pattern": "^S\\d+$",
                },
                {
                    "kind": "attachment",
                    "key": "trend",
                    "label": "Trend",
                    "accept": ["application/pdf", "image/png"],
                },
                {"kind": "attachment", "key": "photo", "label": "Photo"},
                {"kind": "text", "key": "note", "label": "Note", "scan": True, "identity": "bag_id"},
                {
                    "kind": "choice",
                    "key": "look",
                    "label": "Look",
                    "options": ["A", "B", "C"],
                    "acceptable": ["C", "A"],
                },
            ],
            "materials": [{"material": "MED-1", "quantity": 40.0, "unit": "L", "tolerance_pct": 2.5}],
            "timing": {
                "expected_duration": "PT1H30M",
                "min_duration": "PT45M",
                "max_duration": "P1DT0.5S",
                "max_hold_time": "P14D",
            },
            "mandatory": False,
            "signatures": [
                {"meaning": "performed", "role": "operator"},
                {"meaning": "witnessed", "independent": True},
            ],
            "depends_on": [],
        }
    )
    return data


def test_export_uses_the_b2mml_v0600_batchml_structure(make_document):
    xml = to_batchml(make_document(), version="7")
    root = SafeET.fromstring(xml)
    assert root.tag == f"{B}MasterRecipe"
    assert root.findtext(f"{B}ID") == "TEST-FB"
    assert root.findtext(f"{B}Version") == "7"
    header = root.find(f"{B}Header")
    assert header.findtext(f"{B}ProductID") == "P-001"
    assert header.findtext(f"{B}BatchSize/{B}Nominal") == "50.0"
    assert header.findtext(f"{B}BatchSize/{B}UnitOfMeasure") == "L"
    params = root.findall(f"{B}Formula/{B}Parameter")
    assert [p.findtext(f"{B}ID") for p in params] == ["temp", "feed_volume", "ph", "MED-1", "FEED-1", "BAG-1"]
    temp = params[0]
    assert temp.findtext(f"{B}ParameterType") == "ProcessParameter"
    assert temp.findtext(f"{B}ParameterSubType") == "critical"
    assert temp.findtext(f"{B}Value/{B}ValueString") == "37.0"
    assert temp.findtext(f"{B}Value/{B}UnitOfMeasure") == "degC"
    assert temp.find(f"{X}Parameter").get("alarm_high") == "37.5"
    assert params[3].findtext(f"{B}ParameterSubType") == "Material"
    unit_procedure = root.find(f"{B}RecipeElement")
    assert unit_procedure.findtext(f"{B}RecipeElementType") == "UnitProcedure"
    operation = unit_procedure.find(f"{B}RecipeElement")
    assert operation.findtext(f"{B}RecipeElementType") == "Operation"
    phase = operation.find(f"{B}RecipeElement")
    assert phase.findtext(f"{B}RecipeElementType") == "Phase"
    assert phase.findtext(f"{B}OtherInformation/{B}Value/{B}ValueString") == "Install the bag."
    logic = unit_procedure.find(f"{B}ProcedureLogic")
    assert [s.findtext(f"{B}RecipeElementID") for s in logic.findall(f"{B}Step")] == ["setup", "run"]
    assert logic.find(f"{B}Transition/{B}Condition").text == "setup.State = Complete"
    refs = operation.findall(f"{B}RecipeElement")[0].findall(f"{B}Parameter")
    assert refs == []  # install applies no parameter
    control = unit_procedure.findall(f"{B}RecipeElement")[1].find(f"{B}RecipeElement")
    ref = control.find(f"{B}Parameter")
    assert ref.findtext(f"{B}Value/{B}DataInterpretation") == "Reference"


def test_round_trip_keeps_the_content_hash(make_document, full_data):
    for doc in (make_document(), parse_document(full_data)):
        assert content_hash(from_batchml(to_batchml(doc))) == content_hash(doc)


@pytest.mark.parametrize("template", load_library(), ids=lambda t: t.id)
def test_every_template_round_trips_through_batchml(template):
    xml = to_batchml(template.document, version=template.version)
    assert content_hash(from_batchml(xml)) == content_hash(template.document)
    assert content_hash(from_batchml(xml.encode("utf-8"))) == content_hash(template.document)


def test_batch_information_wrapper_is_accepted(make_document):
    doc = make_document()
    inner = (
        to_batchml(doc)
        .split("\n", 1)[1]
        .replace(f'<MasterRecipe xmlns="{B2MML_NS}" xmlns:bl="{EXTENSION_NS}">', "<MasterRecipe>")
    )
    wrapped = f'<BatchInformation xmlns="{B2MML_NS}" xmlns:bl="{EXTENSION_NS}">{inner}</BatchInformation>'
    assert content_hash(from_batchml(wrapped)) == content_hash(doc)


def _problems(xml):
    with pytest.raises(BatchMLError) as info:
        from_batchml(xml)
    return {p.path: p.message for p in info.value.problems}


def test_unknown_unit_points_at_the_element(make_document):
    xml = to_batchml(make_document()).replace(
        "<UnitOfMeasure>pH</UnitOfMeasure>", "<UnitOfMeasure>pHH</UnitOfMeasure>"
    )
    problems = _problems(xml)
    assert "unknown unit 'pHH'" in problems["MasterRecipe/Formula/Parameter[3]/Value/UnitOfMeasure"]


def test_bad_values_point_at_elements_and_attributes(make_document):
    xml = to_batchml(make_document())
    xml = xml.replace("<ValueString>37.0</ValueString>", "<ValueString>37,0</ValueString>", 1)
    xml = xml.replace('kind="choice"', 'kind="choice" colour="red"')
    xml = xml.replace("<Scaled>Yes</Scaled>", "<Scaled>Maybe</Scaled>", 1)
    problems = _problems(xml)
    assert "Scaled is 'Maybe'" in problems["MasterRecipe/Formula/Parameter[2]/Scaled"]
    xml = xml.replace("<Scaled>Maybe</Scaled>", "<Scaled>Yes</Scaled>")
    problems = _problems(xml)
    assert "valid number" in problems["MasterRecipe/Formula/Parameter[1]/Value/ValueString"]
    capture = "MasterRecipe/RecipeElement[1]/RecipeElement[2]/RecipeElement[2]/bl:Phase/bl:Capture[2]/@colour"
    assert problems[capture] == "unknown attribute or element 'colour'"


def test_missing_elements_and_wrong_types_are_named(make_document):
    xml = to_batchml(make_document())
    xml = xml.replace("<ProductID>P-001</ProductID>", "")
    xml = xml.replace(
        "<RecipeElementType>Operation</RecipeElementType>", "<RecipeElementType>Phase</RecipeElementType>", 1
    )
    problems = _problems(xml)
    assert problems["MasterRecipe/Header/ProductID"] == "required element ProductID is missing"
    assert (
        "expected a Operation, found 'Phase'"
        in problems["MasterRecipe/RecipeElement[1]/RecipeElement[1]/RecipeElementType"]
    )


def test_malformed_xml_points_at_line_and_column(make_document):
    xml = to_batchml(make_document()).replace("</Header>", "</Headr>")
    problems = _problems(xml)
    ((path, message),) = problems.items()
    assert path.startswith("line ") and " column " in path
    assert message.startswith("malformed XML: mismatched tag")


def test_entities_and_foreign_roots_are_refused():
    bomb = (
        '<?xml version="1.0"?><!DOCTYPE r [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;">]>'
        f'<MasterRecipe xmlns="{B2MML_NS}"><ID>&b;</ID></MasterRecipe>'
    )
    assert any("DTD or entities" in m for m in _problems(bomb).values())
    assert "expected a MasterRecipe" in _problems("<Recipe/>")["Recipe"]
    wrapped = f'<BatchInformation xmlns="{B2MML_NS}"/>'
    assert "found 0" in _problems(wrapped)["BatchInformation"]


def test_foreign_batchml_without_extension_imports_with_defaults():
    xml = f"""<MasterRecipe xmlns="{B2MML_NS}">
      <ID>EXT-1</ID>
      <Header><ProductID>X</ProductID><ProductName>Imported</ProductName>
        <BatchSize><Nominal>100</Nominal><UnitOfMeasure>L</UnitOfMeasure></BatchSize></Header>
      <Formula><Parameter><ID>temp</ID><Description>Temperature</Description>
        <ParameterType>ProcessParameter</ParameterType>
        <Value><ValueString>30</ValueString><DataInterpretation>Constant</DataInterpretation>
          <DataType>decimal</DataType><UnitOfMeasure>degC</UnitOfMeasure></Value></Parameter></Formula>
      <RecipeElement><ID>up</ID><Description>UP</Description><RecipeElementType>UnitProcedure</RecipeElementType>
        <RecipeElement><ID>op</ID><Description>OP</Description><RecipeElementType>Operation</RecipeElementType>
          <RecipeElement><ID>heat</ID><Description>Heat</Description><RecipeElementType>Phase</RecipeElementType>
          </RecipeElement></RecipeElement></RecipeElement>
    </MasterRecipe>"""
    doc = from_batchml(xml)
    assert doc.parameter_map()["temp"].target == 30.0
    assert doc.parameter_map()["temp"].criticality == "non_key"
    heat = doc.phase_map()["heat"]
    assert (heat.mandatory, heat.depends_on, heat.instructions, heat.captures) == (True, None, "", [])
