"""Scaling a recipe to a batch size, with unit conversion and a summary of what changed."""

from __future__ import annotations

import pytest

from app.recipes.document import content_hash, parse_document
from app.recipes.scaling import ScalingError, scale


def _param(doc, key):
    return doc.parameter_map()[key]


def test_scale_50_to_200_litres(make_document):
    doc = make_document()
    scaled = scale(doc, 200, "L")
    new = scaled.document
    assert scaled.factor == 4.0
    feed = _param(new, "feed_volume")
    assert (feed.target, feed.low, feed.high) == (10.0, 9.6, 10.4)
    assert new.material_map()["MED-1"].quantity == 160.0
    assert new.phase_map()["fill"].materials[0].quantity == 160.0
    assert new.header.batch_size.value == 200.0
    assert scaled.source_hash == content_hash(doc)


def test_fixed_parameters_and_materials_are_unchanged(make_document):
    new = scale(make_document(), 200, "L").document
    temp = _param(new, "temp")
    assert (temp.target, temp.low, temp.high, temp.alarm_low, temp.alarm_high) == (
        37.0,
        36.0,
        38.0,
        36.5,
        37.5,
    )
    assert _param(new, "ph").target == 7.0
    assert new.material_map()["BAG-1"].quantity == 1
    control = new.phase_map()["control"].captures[2]
    assert control.limits.low == 260  # inline capture limits never scale


def test_scale_to_cubic_metres_converts_the_batch_size(make_document):
    scaled = scale(make_document(), 0.2, "m^3")
    assert scaled.factor == 4.0
    assert _param(scaled.document, "feed_volume").target == 10.0
    size = scaled.document.header.batch_size
    assert (size.value, size.unit, size.min, size.max) == (0.2, "m^3", 0.01, 0.5)


def test_reference_in_another_unit_than_the_batch(make_data):
    data = make_data()
    data["materials"][1]["scaling"] = {
        "rule": "linear",
        "reference_batch_size": 0.05,
        "reference_unit": "m^3",
    }
    scaled = scale(parse_document(data), 100, "L")
    assert scaled.document.material_map()["FEED-1"].quantity == 5.0


def test_scaled_document_is_self_consistent(make_document):
    doc = make_document()
    there = scale(doc, 200, "L").document
    back = scale(there, 50, "L").document
    assert content_hash(back) == content_hash(doc)
    assert _param(there, "feed_volume").scaling.reference_batch_size == 200


def test_incompatible_unit_is_refused(make_document):
    with pytest.raises(ScalingError, match=r"sized in L \(volume\) to 50 kg \(mass\)"):
        scale(make_document(), 50, "kg")


def test_size_outside_the_recipe_range_is_refused(make_document):
    with pytest.raises(ScalingError, match="above the recipe's maximum 500 L"):
        scale(make_document(), 0.6, "m^3")
    with pytest.raises(ScalingError, match="below the recipe's minimum 10 L"):
        scale(make_document(), 5000, "mL")
    with pytest.raises(ScalingError, match="greater than zero"):
        scale(make_document(), 0, "L")


def test_offset_unit_cannot_scale_linearly(make_data):
    data = make_data()
    data["formula"]["parameters"][0]["scaling"] = {
        "rule": "linear",
        "reference_batch_size": 50,
        "reference_unit": "L",
    }
    with pytest.raises(ScalingError, match="degC cannot scale linearly"):
        scale(parse_document(data), 100, "L")


def test_summary_lists_batch_size_and_changes(make_document):
    rows = scale(make_document(), 0.2, "m^3").summary()
    assert rows[0] == {"item": "Batch size", "field": "batch_size", "before": "50 L", "after": "0.2 m^3"}
    assert {"item": "Feed volume", "field": "target", "before": "2.5 L", "after": "10 L"} in rows
    assert {"item": "Medium", "field": "quantity", "before": "40 L", "after": "160 L"} in rows
    assert {"item": "Medium (Fill medium)", "field": "quantity", "before": "40 L", "after": "160 L"} in rows
    assert not any(r["item"] == "Temperature" for r in rows)


def test_same_size_changes_nothing(make_document):
    doc = make_document()
    scaled = scale(doc, 50, "L")
    assert scaled.changes == ()
    assert content_hash(scaled.document) == content_hash(doc)


@pytest.mark.parametrize("size", [10, 12.5, 33.3, 49.99, 50.01, 77.7, 123.456, 250, 499.9, 500])
def test_linear_quantities_are_proportional(make_document, size):
    doc = make_document()
    new = scale(doc, size, "L").document
    assert new.material_map()["MED-1"].quantity == pytest.approx(40.0 * size / 50, rel=1e-11)
    assert _param(new, "feed_volume").high == pytest.approx(2.6 * size / 50, rel=1e-11)
    assert _param(new, "temp").target == 37.0
