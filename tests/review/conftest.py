"""Review test harness: a recipe whose clean run raises nothing, a floor with QA people, and batches built through
the real batch, materials and review services (real PostgreSQL; nothing mocked).

`make_review_floor()` builds a tenant like the batch area's `make_floor` plus two QA reviewers; its `clean_batch()`
executes every step by the book, records the output lot and completes the batch.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from sqlalchemy import text

from app.batches import services as batch_services
from app.core.tenancy import tenant_transaction
from app.review import engine, services
from tests.batches.conftest import SHORT_RECIPE, Floor, make_recipe_version
from tests.conftest import TEST_PASSWORD, Member
from tests.factories import make_equipment, make_line, make_lot, make_material


def review_recipe(**phase_changes: dict[str, Any]) -> dict[str, Any]:
    """SHORT_RECIPE made review-clean: second-person verification where 21 CFR 211.101 wants it, pH alarm limits.

    `phase_changes` updates phases by key, e.g. `review_recipe(sample={"timing": {...}})`.
    """
    doc = copy.deepcopy(SHORT_RECIPE)
    for param in doc["formula"]["parameters"]:
        if param["key"] == "ph":
            param.update({"alarm_low": 6.9, "alarm_high": 7.1})
    phases = {p["key"]: p for p in doc["procedure"]["unit_procedures"][0]["operations"][0]["phases"]}
    phases["clearance"]["timing"] = {"expected_duration": "PT20M", "max_hold_time": "PT1H"}
    phases["charge"]["signatures"] = [{"meaning": "performed"}, {"meaning": "verified", "independent": True}]
    phases["bolus"]["signatures"] = [{"meaning": "performed"}, {"meaning": "verified", "independent": True}]
    for key, change in phase_changes.items():
        phases[key].update(change)
    return doc


@dataclass
class ReviewFloor(Floor):
    """A batch floor with QA reviewers."""

    qa: Member | None = None
    qa2: Member | None = None

    def sign_all(self, batch_id: int, phase_key: str) -> None:
        """Sign a step as the recipe asks: performed by the operator, verified by the second operator."""
        self.sign(batch_id, phase_key, "performed")
        with self.tx() as s:
            control = batch_services.control_document(batch_services.control_recipe_of(
                s, batch_services.get_batch(s, batch_id)))
        if any(sig.meaning == "verified" for sig in control.phase_map()[phase_key].signatures):
            self.sign(batch_id, phase_key, "verified", who=self.operator2)

    def finish(self, batch_id: int, lot_number: str | None = None) -> None:
        """Record the output lot and complete the batch."""
        with self.tx(self.supervisor) as s:
            batch_services.record_output(s, batch_id=batch_id, quantity="9.5", unit="L",
                                         lot_number=lot_number or f"OUT-{batch_id}-{self.tenant.ref.id}")
        with self.tx(self.supervisor) as s:
            batch_services.complete_batch(s, batch_id=batch_id)

    def clean_batch(self) -> int:
        """A batch executed by the book (nothing off-script), completed."""
        return self._completed_batch(temp="37.0", ph="7.0", sample_id="S-0001")

    def two_exception_batch(self) -> int:
        """A completed batch with an out-of-limit temperature (critical) and an alarm-limit pH (minor)."""
        return self._completed_batch(temp="38.4", ph="7.14", sample_id="S-0005",
                                     temp_acknowledgement="heater overshoot, back in range within 2 min")

    def _completed_batch(self, *, temp: str, ph: str, sample_id: str, temp_acknowledgement: str | None = None) -> int:
        """Every step of the short recipe with these measured values, signed and completed; then the batch."""
        batch_id = self.new_batch()
        self.start(batch_id, "clearance")
        self.enter(batch_id, "clearance", "room_clear", {"value": True})
        self.enter(batch_id, "clearance", "vessel", {"code": f"EQ:{self.reactor_tag}"})
        self.sign_all(batch_id, "clearance")
        self.complete(batch_id, "clearance")
        self.start(batch_id, "charge")
        self.enter(batch_id, "charge", "medium", {"code": f"LOT:{self.lots['MED-T']}", "quantity": "8", "unit": "L"})
        self.enter(batch_id, "charge", "temp", {"value": temp, "unit": "degC"}, acknowledgement=temp_acknowledgement)
        self.sign_all(batch_id, "charge")
        self.complete(batch_id, "charge")
        self.start(batch_id, "bolus")
        self.enter(batch_id, "bolus", "glucose", {"code": f"LOT:{self.lots['GLC-T']}", "quantity": "0.5", "unit": "L"})
        self.sign_all(batch_id, "bolus")
        self.complete(batch_id, "bolus")
        self.start(batch_id, "sample")
        self.enter(batch_id, "sample", "sample_id", {"value": sample_id})
        self.enter(batch_id, "sample", "ph", {"value": ph})
        self.enter(batch_id, "sample", "appearance", {"value": "Clear"})
        self.sign_all(batch_id, "sample")
        self.complete(batch_id, "sample")
        self.finish(batch_id)
        return batch_id

    # -- review ---------------------------------------------------------------------------------------------------

    def rbe(self, batch_id: int, who: Member | None = None) -> Any:
        """Run the RBE over a batch (as the job does, or on demand as `who`)."""
        if who is None:
            with tenant_transaction(self.tenant.ref) as s:
                return engine.run_rbe(s, batch_id=batch_id, trigger="completion")
        with self.tx(who) as s:
            return engine.run_rbe(s, batch_id=batch_id, trigger="on_demand")

    def credentials(self, who: Member) -> dict[str, Any]:
        return {"password": TEST_PASSWORD, "identification": who.email, "identification_required": True}

    def dispose(self, batch_id: int, exception_ids: list[int], decision: str = "accepted",
                justification: str = "assessed: no impact on product quality", who: Member | None = None,
                **kwargs: Any) -> Any:
        who = who or self.qa
        with self.tx(who) as s:
            return services.dispose_exceptions(s, batch_id=batch_id, exception_ids=exception_ids, decision=decision,
                                               justification=justification, user_id=who.user_id,
                                               credentials=self.credentials(who), **kwargs)

    def decide(self, batch_id: int, decision: str = "released", reason: str = "", who: Member | None = None) -> Any:
        who = who or self.qa
        with self.tx(who) as s:
            return services.decide_batch(s, batch_id=batch_id, decision=decision, reason=reason, user_id=who.user_id,
                                         credentials=self.credentials(who))

    def exception_rows(self, batch_id: int) -> list[Any]:
        with self.tx() as s:
            return list(s.execute(text(
                "SELECT e.id, e.type, e.severity, e.status, e.evidence, e.acknowledgement, e.entry_id, "
                "st.phase_key FROM batch_exceptions e LEFT JOIN step_executions st ON st.id = e.step_execution_id "
                "WHERE e.batch_id = :b ORDER BY e.id"), {"b": batch_id}))

    def lot_status(self, lot_number: str) -> str:
        with self.tx() as s:
            return s.execute(text("SELECT status FROM lots WHERE lot_number = :n"), {"n": lot_number}).scalar_one()

    def batch_status(self, batch_id: int) -> str:
        return self.batch(batch_id).status


@pytest.fixture
def make_review_floor(make_tenant: Callable[..., Any],
                      make_member: Callable[..., Member]) -> Callable[..., ReviewFloor]:
    """Factory: a tenant ready to run and review batches of `review_recipe()` (or another document)."""

    def make(document: dict[str, Any] | None = None, *, reactor_status: str = "clean") -> ReviewFloor:
        tenant = make_tenant()
        operator = make_member(tenant, ("Operator",), name="Olga Operator")
        operator2 = make_member(tenant, ("Operator",), name="Oscar Operator")
        supervisor = make_member(tenant, ("Supervisor",), name="Sam Supervisor")
        qa = make_member(tenant, ("QA",), name="Quinn Quality")
        qa2 = make_member(tenant, ("QA",), name="Rita Reviewer")
        with tenant_transaction(tenant.ref, actor=supervisor.actor) as s:
            line = make_line(s)
            reactor = make_equipment(s, line, equipment_class="bioreactor", capacity="20", capacity_unit="L",
                                     status=reactor_status)
            lots = {}
            for code, unit in (("MED-T", "L"), ("GLC-T", "L")):
                material = make_material(s, code=code, name=code, unit=unit)
                lots[code] = make_lot(s, material, "100").lot_number
                if code == "MED-T":
                    lots["MED-T-quarantine"] = make_lot(s, material, "100", release=False).lot_number
            make_material(s, code="PROD-T", name="Test harvest", unit="L", material_type="product")
            version = make_recipe_version(s, document or review_recipe())
            return ReviewFloor(tenant=tenant, operator=operator, operator2=operator2, supervisor=supervisor,
                               line_id=line.id, reactor_id=reactor.id, reactor_tag=reactor.tag,
                               master_recipe_id=version.master_recipe_id, version_id=version.id, lots=lots,
                               qa=qa, qa2=qa2)

    return make
