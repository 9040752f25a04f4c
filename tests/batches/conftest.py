"""Batch test harness: a short recipe, an approved effective version of it, plant and lots, and people.

`make_floor()` builds a tenant with a line, a clean qualified bioreactor, materials with released lots, an
operator, a second operator and a supervisor, and an approved, effective version of `SHORT_RECIPE`. Its methods
call the real services in real tenant transactions, as the views do.
"""

from __future__ import annotations

import copy
import itertools
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select, text

from app.batches import execution, services
from app.batches.models import Batch, StepExecution
from app.core.tenancy import tenant_transaction
from app.recipes.document import content_hash, parse_document, to_data
from app.recipes.models import MasterRecipe, RecipeVersion
from app.recipes.validation import has_errors, validate
from tests.conftest import TEST_PASSWORD, Member
from tests.factories import make_equipment, make_line, make_lot, make_material

#: A short recipe that touches every rule: order, an optional branch, hold time, limits, scans, signatures.
SHORT_RECIPE: dict[str, Any] = {
    "schema": "batchline.recipe/1",
    "header": {"recipe_code": "SHORT-1", "product_code": "PROD-T", "product_name": "Test harvest",
               "batch_size": {"value": 10, "unit": "L", "min": 5, "max": 20}},
    "formula": {"parameters": [
        {"key": "temp", "name": "Temperature", "type": "process_parameter", "unit": "degC", "target": 37.0,
         "low": 36.0, "high": 38.0, "alarm_low": 36.5, "alarm_high": 37.5, "criticality": "critical"},
        {"key": "ph", "name": "pH", "type": "process_parameter", "unit": "pH", "target": 7.0, "low": 6.8,
         "high": 7.2, "criticality": "key"},
    ]},
    "materials": [
        {"code": "MED-T", "name": "Medium", "unit": "L", "quantity": 8.0, "tolerance_pct": 2.0,
         "scaling": {"rule": "linear", "reference_batch_size": 10, "reference_unit": "L"}},
        {"code": "GLC-T", "name": "Glucose", "unit": "L", "quantity": 0.5, "tolerance_pct": 10.0},
    ],
    "procedure": {"unit_procedures": [{
        "key": "culture", "name": "Culture", "equipment_class": "bioreactor",
        "operations": [{"key": "run", "name": "Run", "phases": [
            {"key": "clearance", "name": "Line clearance", "instructions": "Confirm the suite is clear.",
             "captures": [{"kind": "checkbox", "key": "room_clear", "label": "Room clear"},
                          {"kind": "equipment_scan", "key": "vessel", "label": "Bioreactor",
                           "equipment_class": "bioreactor"}],
             "timing": {"expected_duration": "PT20M"},
             "signatures": [{"meaning": "performed"}, {"meaning": "verified", "independent": True}]},
            {"key": "charge", "name": "Charge medium", "instructions": "Charge the medium.",
             "parameters": ["temp"],
             "captures": [{"kind": "material_scan", "key": "medium", "label": "Medium lot", "material": "MED-T"},
                          {"kind": "number", "key": "temp", "label": "Temperature", "parameter": "temp"}],
             "materials": [{"material": "MED-T", "quantity": 8.0, "unit": "L"}],
             "timing": {"expected_duration": "PT30M", "max_hold_time": "PT1H"},
             "signatures": [{"meaning": "performed"}]},
            {"key": "bolus", "name": "Glucose bolus", "mandatory": False, "depends_on": ["charge"],
             "instructions": "Add the glucose bolus if the glucose is low.",
             "captures": [{"kind": "material_scan", "key": "glucose", "label": "Glucose lot", "material": "GLC-T"}],
             "materials": [{"material": "GLC-T", "quantity": 0.5, "unit": "L"}]},
            {"key": "sample", "name": "Sample", "depends_on": ["charge"],
             "instructions": "Draw a sample and measure it.",
             "captures": [{"kind": "sample_id", "key": "sample_id", "label": "Sample ID", "pattern": "^S-\\d{4}$"},
                          {"kind": "number", "key": "ph", "label": "pH", "parameter": "ph"},
                          {"kind": "choice", "key": "appearance", "label": "Appearance",
                           "options": ["Clear", "Turbid"], "acceptable": ["Clear"]},
                          {"kind": "number", "key": "volume", "label": "Volume", "unit": "L", "required": False}],
             "timing": {"expected_duration": "PT15M", "min_duration": "PT0S", "max_duration": "PT30M"},
             "signatures": [{"meaning": "performed"}]},
        ]}],
    }]},
}


def short_recipe(**changes: Any) -> dict[str, Any]:
    """A copy of SHORT_RECIPE (tests bend it)."""
    doc = copy.deepcopy(SHORT_RECIPE)
    doc.update(changes)
    return doc


_codes = itertools.count(1)


def make_recipe_version(session: Any, document: dict[str, Any], *, effective: bool = True) -> RecipeVersion:
    """An approved, effective recipe version (inserted directly: the recipes area's approval flow is its own)."""
    doc = parse_document(document)
    assert not has_errors(validate(doc)), validate(doc)
    n = next(_codes)
    code = f"{doc.header.recipe_code}-{n}"
    data = to_data(doc)
    data["header"]["recipe_code"] = code
    doc = parse_document(data)
    master = MasterRecipe(code=code, name=doc.header.product_name, product_code=doc.header.product_code)
    session.add(master)
    session.flush()
    now = session.execute(text("SELECT now()")).scalar_one()
    version = RecipeVersion(master_recipe_id=master.id, version=1, status="approved", document=to_data(doc),
                            content_hash=content_hash(doc), recipe_code=code, product_code=doc.header.product_code,
                            product_name=doc.header.product_name, batch_size=doc.header.batch_size.value,
                            batch_size_unit=doc.header.batch_size.unit, approved_at=now,
                            effective_from=now - timedelta(minutes=1) if effective else None)
    session.add(version)
    session.flush()
    return version


def key() -> str:
    """A fresh idempotency key, as the tablet makes one per entry."""
    return uuid.uuid4().hex


@dataclass
class Floor:
    """One tenant with a line, equipment, lots, people and a recipe; methods run the real services."""

    tenant: Any
    operator: Member
    operator2: Member
    supervisor: Member
    line_id: int
    reactor_id: int
    reactor_tag: str
    master_recipe_id: int
    version_id: int
    lots: dict[str, str] = field(default_factory=dict)
    product_code: str = "PROD-T"

    def tx(self, who: Member | None = None) -> Any:
        """A tenant transaction acting as `who` (the operator by default)."""
        return tenant_transaction(self.tenant.ref, actor=(who or self.operator).actor)

    def plan(self, size: str = "10", **kwargs: Any) -> int:
        with self.tx(self.supervisor) as s:
            batch = services.plan_batch(s, master_recipe_id=self.master_recipe_id, batch_size=size, unit="L",
                                        line_id=self.line_id, planned_start=datetime.now(UTC),
                                        equipment=kwargs.pop("equipment", {"bioreactor": self.reactor_id}), **kwargs)
            return batch.id

    def dispatch(self, batch_id: int) -> None:
        with self.tx(self.supervisor) as s:
            services.dispatch_batch(s, batch_id=batch_id, password=TEST_PASSWORD, user_id=self.supervisor.user_id,
                                    actor=self.supervisor.actor)

    def new_batch(self, size: str = "10") -> int:
        batch_id = self.plan(size)
        self.dispatch(batch_id)
        return batch_id

    def step(self, batch_id: int, phase_key: str) -> StepExecution:
        with self.tx() as s:
            return s.scalars(select(StepExecution).where(StepExecution.batch_id == batch_id,
                                                         StepExecution.phase_key == phase_key)).one()

    def batch(self, batch_id: int) -> Batch:
        with self.tx() as s:
            return s.get(Batch, batch_id)

    def control_hash(self, batch_id: int) -> str:
        with self.tx() as s:
            return s.execute(text("SELECT content_hash FROM control_recipes WHERE batch_id = :b"),
                             {"b": batch_id}).scalar_one()

    def start(self, batch_id: int, phase_key: str, who: Member | None = None, **kwargs: Any) -> StepExecution:
        step_id = self.step(batch_id, phase_key).id
        with self.tx(who) as s:
            return execution.start_step(s, batch_id=batch_id, step_id=step_id, **kwargs)

    def enter(self, batch_id: int, phase_key: str, capture: str, raw: dict[str, Any], who: Member | None = None,
              **kwargs: Any) -> execution.EntryResult:
        step_id = self.step(batch_id, phase_key).id
        kwargs.setdefault("idempotency_key", key())
        kwargs.setdefault("control_recipe_hash", self.control_hash(batch_id))
        with self.tx(who) as s:
            return execution.record_entry(s, batch_id=batch_id, step_id=step_id, capture_key=capture, raw=raw,
                                          **kwargs)

    def correct(self, batch_id: int, entry_id: int, raw: dict[str, Any], reason: str, who: Member | None = None,
                **kwargs: Any) -> execution.EntryResult:
        kwargs.setdefault("idempotency_key", key())
        kwargs.setdefault("control_recipe_hash", self.control_hash(batch_id))
        with self.tx(who) as s:
            return execution.correct_entry(s, batch_id=batch_id, entry_id=entry_id, raw=raw, reason=reason, **kwargs)

    def sign(self, batch_id: int, phase_key: str, meaning: str, who: Member | None = None,
             password: str = TEST_PASSWORD) -> Any:
        who = who or self.operator
        step_id = self.step(batch_id, phase_key).id
        with self.tx(who) as s:
            signer = services.member_signer(self.tenant.ref, user_id=who.user_id, actor=who.actor, email=who.email)
            return execution.sign_step(s, batch_id=batch_id, step_id=step_id, meaning=meaning, password=password,
                                       signer=signer, identification=who.email, identification_required=True)

    def complete(self, batch_id: int, phase_key: str, who: Member | None = None) -> StepExecution:
        step_id = self.step(batch_id, phase_key).id
        with self.tx(who) as s:
            return execution.complete_step(s, batch_id=batch_id, step_id=step_id)

    def override(self, reason: str = "QA agreed by phone, deviation to follow") -> execution.OverrideRequest:
        return execution.OverrideRequest(email=self.supervisor.email, password=TEST_PASSWORD, reason=reason)

    def exceptions(self, batch_id: int) -> list[tuple[str, str, str | None]]:
        with self.tx() as s:
            return [tuple(r) for r in s.execute(text(
                "SELECT e.type, e.severity, st.phase_key FROM batch_exceptions e "
                "LEFT JOIN step_executions st ON st.id = e.step_execution_id WHERE e.batch_id = :b ORDER BY e.id"),
                {"b": batch_id})]

    def lot_balance(self, lot_number: str) -> Any:
        with self.tx() as s:
            return s.execute(text("SELECT balance FROM lots WHERE lot_number = :n"), {"n": lot_number}).scalar_one()

    # -- whole steps ---------------------------------------------------------------------------------------------

    def do_clearance(self, batch_id: int) -> None:
        self.start(batch_id, "clearance")
        self.enter(batch_id, "clearance", "room_clear", {"value": True})
        self.enter(batch_id, "clearance", "vessel", {"code": f"EQ:{self.reactor_tag}"})
        self.sign(batch_id, "clearance", "performed")
        self.sign(batch_id, "clearance", "verified", who=self.operator2)
        self.complete(batch_id, "clearance")

    def do_charge(self, batch_id: int, temp: str = "37.0") -> None:
        self.start(batch_id, "charge")
        self.enter(batch_id, "charge", "medium", {"code": f"LOT:{self.lots['MED-T']}", "quantity": "8", "unit": "L"})
        self.enter(batch_id, "charge", "temp", {"value": temp, "unit": "degC"})
        self.sign(batch_id, "charge", "performed")
        self.complete(batch_id, "charge")

    def do_sample(self, batch_id: int) -> None:
        self.start(batch_id, "sample")
        self.enter(batch_id, "sample", "sample_id", {"value": "S-0001"})
        self.enter(batch_id, "sample", "ph", {"value": "7.0"})
        self.enter(batch_id, "sample", "appearance", {"value": "Clear"})
        self.sign(batch_id, "sample", "performed")
        self.complete(batch_id, "sample")


@pytest.fixture
def make_floor(make_tenant: Callable[..., Any], make_member: Callable[..., Member]) -> Callable[..., Floor]:
    """Factory: a tenant ready to plan and execute batches of SHORT_RECIPE (or another document)."""

    def make(document: dict[str, Any] | None = None) -> Floor:
        tenant = make_tenant()
        operator = make_member(tenant, ("Operator",), name="Olga Operator")
        operator2 = make_member(tenant, ("Operator",), name="Oscar Operator")
        supervisor = make_member(tenant, ("Supervisor",), name="Sam Supervisor")
        with tenant_transaction(tenant.ref, actor=supervisor.actor) as s:
            line = make_line(s)
            reactor = make_equipment(s, line, equipment_class="bioreactor", capacity="20", capacity_unit="L")
            lots = {}
            for code, unit in (("MED-T", "L"), ("GLC-T", "L")):
                material = make_material(s, code=code, name=code, unit=unit)
                lots[code] = make_lot(s, material, "100").lot_number
            make_material(s, code="PROD-T", name="Test harvest", unit="L", material_type="product")
            version = make_recipe_version(s, document or SHORT_RECIPE)
            return Floor(tenant=tenant, operator=operator, operator2=operator2, supervisor=supervisor,
                         line_id=line.id, reactor_id=reactor.id, reactor_tag=reactor.tag,
                         master_recipe_id=version.master_recipe_id, version_id=version.id, lots=lots)

    return make
