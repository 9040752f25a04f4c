"""Planning: numbers from the tenant's pattern, the effective version only, equipment of the right class and size,
release to the floor freezing a signed control recipe that nothing can change afterwards."""

from __future__ import annotations

import re
from datetime import UTC, datetime

import pytest
from sqlalchemy import select, text
from sqlalchemy.exc import DBAPIError

from app.batches import services
from app.batches.models import ControlRecipe, StepExecution
from app.core.errors import Conflict, NotFound, ValidationError
from app.esign import SignatureRefused
from app.esign.models import Signature
from app.recipes.document import content_hash, parse_document
from tests.batches.conftest import SHORT_RECIPE, make_recipe_version
from tests.factories import make_equipment


def test_batch_numbers_follow_the_tenant_pattern_and_are_never_reused(make_floor) -> None:
    floor = make_floor()
    first, second = floor.plan(), floor.plan()
    year = datetime.now(UTC).year
    assert floor.batch(first).batch_number == f"B-{year}-00001"
    assert floor.batch(second).batch_number == f"B-{year}-00002"
    with floor.tx(floor.supervisor) as s:
        services.update_settings(s, batch_number_pattern="{product}-{yy}{mm}-{seq:03}", reason="site convention")
    third = floor.batch(floor.plan()).batch_number
    assert re.fullmatch(rf"PROD-T-{year % 100:02d}\d\d-001", third)
    with floor.tx(floor.supervisor) as s, pytest.raises(ValidationError, match=r"exactly one \{seq\}"):
        services.update_settings(s, batch_number_pattern="{product}-{yy}", reason="oops")
    with floor.tx(floor.supervisor) as s, pytest.raises(ValidationError, match="unknown token"):
        services.update_settings(s, batch_number_pattern="{lot}-{seq:03}", reason="oops")


def test_planning_scales_the_formula_and_shows_it_before_the_batch_exists(make_floor) -> None:
    floor = make_floor()
    with floor.tx(floor.supervisor) as s:
        preview = services.preview_plan(s, master_recipe_id=floor.master_recipe_id, batch_size="15", unit="L")
    rows = {(r["item"], r["field"]): (r["before"], r["after"]) for r in preview.scaled.summary()}
    assert rows[("Medium", "quantity")] == ("8 L", "12 L")
    assert rows[("Batch size", "batch_size")] == ("10 L", "15 L")
    assert preview.requirements == ["bioreactor"]
    batch = floor.batch(floor.plan("15"))
    assert (batch.batch_size, batch.batch_unit, batch.status) == (15, "L", "planned")


def test_only_an_approved_effective_version_can_be_planned(make_floor) -> None:
    floor = make_floor()
    with floor.tx(floor.supervisor) as s:
        draft = make_recipe_version(s, SHORT_RECIPE, effective=False)
        s.execute(text("UPDATE recipe_versions SET status = 'retired' WHERE id = :v"), {"v": draft.id})
    with floor.tx(floor.supervisor) as s, pytest.raises(NotFound, match="no approved version effective"):
        services.plan_batch(s, master_recipe_id=draft.master_recipe_id, batch_size="10", line_id=floor.line_id,
                            planned_start=datetime.now(UTC))
    with floor.tx(floor.supervisor) as s, pytest.raises(Conflict, match="is not the effective version"):
        services.plan_batch(s, master_recipe_id=floor.master_recipe_id, recipe_version_id=draft.id,
                            batch_size="10", line_id=floor.line_id, planned_start=datetime.now(UTC))


@pytest.mark.parametrize(("size", "unit", "message"), [
    ("25", "L", "above the recipe's maximum"),
    ("2", "L", "below the recipe's minimum"),
    ("10", "kg", "cannot scale"),
    ("ten", "L", "not a number"),
    ("-1", "L", "greater than zero"),
])
def test_sizes_the_recipe_cannot_take_are_refused(make_floor, size, unit, message) -> None:
    floor = make_floor()
    with floor.tx(floor.supervisor) as s, pytest.raises(ValidationError, match=message):
        services.plan_batch(s, master_recipe_id=floor.master_recipe_id, batch_size=size, unit=unit,
                            line_id=floor.line_id, planned_start=datetime.now(UTC))


def test_only_equipment_of_the_required_class_that_holds_the_batch_is_assigned(make_floor) -> None:
    floor = make_floor()
    with floor.tx(floor.supervisor) as s:
        from app.plant.models import Line

        line = s.get(Line, floor.line_id)
        centrifuge = make_equipment(s, line, equipment_class="centrifuge", capacity=None, capacity_unit="")
        small = make_equipment(s, line, equipment_class="bioreactor", capacity="5", capacity_unit="L")
    with pytest.raises(ValidationError, match="is a centrifuge; bioreactor needs bioreactor"):
        floor.plan(equipment={"bioreactor": centrifuge.id})
    with pytest.raises(ValidationError, match="holds 5 L; the batch is 10 L"):
        floor.plan(equipment={"bioreactor": small.id})
    with pytest.raises(ValidationError, match="needs no equipment of class mixer"):
        floor.plan(equipment={"mixer": floor.reactor_id})
    batch_id = floor.plan(equipment={})
    with floor.tx(floor.supervisor) as s, pytest.raises(Conflict, match="assign equipment for bioreactor"):
        services.dispatch_batch(s, batch_id=batch_id, password="correct horse battery staple 42",
                                user_id=floor.supervisor.user_id, actor=floor.supervisor.actor)
    with floor.tx(floor.supervisor) as s:
        first = services.assign_equipment(s, batch_id=batch_id, requirement="bioreactor",
                                          equipment_id=floor.reactor_id)
        assert first.readiness["ready"] is True
    with floor.tx(floor.supervisor) as s, pytest.raises(ValidationError, match="reason"):
        services.assign_equipment(s, batch_id=batch_id, requirement="bioreactor", equipment_id=floor.reactor_id)


def test_release_to_the_floor_freezes_a_signed_control_recipe_that_never_changes(make_floor) -> None:
    floor = make_floor()
    batch_id = floor.plan("12")
    with floor.tx(floor.supervisor) as s, pytest.raises(SignatureRefused):
        services.dispatch_batch(s, batch_id=batch_id, password="wrong password", user_id=floor.supervisor.user_id,
                                actor=floor.supervisor.actor)
    assert floor.batch(batch_id).status == "planned"
    floor.dispatch(batch_id)
    with floor.tx() as s:
        control = s.scalars(select(ControlRecipe).where(ControlRecipe.batch_id == batch_id)).one()
        doc = parse_document(control.document)
        assert content_hash(doc) == control.content_hash
        assert doc.material_map()["MED-T"].quantity == pytest.approx(9.6)
        steps = s.scalars(select(StepExecution).where(StepExecution.batch_id == batch_id)
                          .order_by(StepExecution.seq)).all()
        assert [st.phase_key for st in steps] == ["clearance", "charge", "bolus", "sample"]
        signature = s.get(Signature, control.signature_id)
        assert (signature.meaning, signature.record_type, signature.signer_member_id) == (
            "approved", "batch", floor.supervisor.member_id)
    assert floor.batch(batch_id).status == "dispatched"
    with floor.tx() as s, pytest.raises(DBAPIError, match=r"permission denied|never deleted or overwritten"):
        s.execute(text("UPDATE control_recipes SET content_hash = 'x' WHERE batch_id = :b"), {"b": batch_id})
    with floor.tx() as s, pytest.raises(DBAPIError, match="plan is frozen"):
        s.execute(text("UPDATE batches SET batch_size = 20 WHERE id = :b"), {"b": batch_id})
    with floor.tx() as s, pytest.raises(DBAPIError, match=r"permission denied|never deleted"):
        s.execute(text("DELETE FROM batches WHERE id = :b"), {"b": batch_id})
    with floor.tx(floor.supervisor) as s, pytest.raises(Conflict, match="only a planned batch"):
        services.dispatch_batch(s, batch_id=batch_id, password="correct horse battery staple 42",
                                user_id=floor.supervisor.user_id, actor=floor.supervisor.actor)
