"""A tenant's adaptation of a template: which of the template's verification scenarios still apply, and their result.

A scenario was written against the template's recipe. After a tenant adapts the recipe, a scenario is re-run
only if its **assumptions still hold**, decided mechanically: the scenario's *footprint* must be identical in
the template document and in the adapted document. The footprint is everything the evaluator reads while
running that scenario:

* each step the scenario records: the whole phase (captures, parameters, materials, timing, signatures,
  mandatory flag, equipment class including its unit procedure's) and its predecessors (explicit or implied);
* the hold time of each of those predecessors (hold-time checks read it);
* each formula parameter those steps apply or capture against (limits, unit, criticality, scaling);
* each bill-of-materials line those steps consume or scan;
* the reference batch size, when the scenario scales the recipe to a batch size of its own;
* the set of mandatory steps, when the scenario ends the batch (missing mandatory steps are reported then).

Changing a limit of `temp_production` therefore sets aside the scenarios that record a step capturing it and
re-runs every other scenario; adding a mandatory step sets aside the scenarios that end the batch. A set-aside
scenario is reported as *not applicable* with the footprint parts that changed, so QA sees which verification
the adaptation has to replace with its own.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from app.recipes.document import MaterialScanCapture, NumberCapture, RecipeDocument, effective_dependencies, to_data
from app.recipes.scenarios import Scenario, ScenarioError, ValidationPack, evaluate

Status = Literal["passed", "failed", "not_applicable"]


def _phase_rows(doc: RecipeDocument) -> dict[str, dict[str, Any]]:
    """Each phase as data, with the equipment class it inherits from its unit procedure."""
    data = to_data(doc)
    out: dict[str, dict[str, Any]] = {}
    for up in data["procedure"]["unit_procedures"]:
        for op in up["operations"]:
            for ph in op["phases"]:
                out.setdefault(ph["key"], {**ph, "unit_procedure_equipment_class": up.get("equipment_class")})
    return out


def scenario_footprint(doc: RecipeDocument, scenario: Scenario) -> dict[str, Any]:
    """Return the parts of `doc` a scenario depends on, by name; a missing step maps to None."""
    phases = doc.phase_map()
    rows = _phase_rows(doc)
    deps = effective_dependencies(doc)
    params = {p.key: p.model_dump(mode="json") for p in doc.formula.parameters}
    bom = {m.code: m.model_dump(mode="json") for m in doc.materials}
    out: dict[str, Any] = {}
    for key in dict.fromkeys(rec.step for rec in scenario.records):
        phase = phases.get(key)
        if phase is None:
            out[f"step {key!r}"] = None
            continue
        out[f"step {key!r}"] = {"phase": rows[key], "predecessors": deps.get(key, [])}
        for pred in deps.get(key, []):
            pred_phase = phases.get(pred)
            out[f"hold time of {pred!r}"] = (
                pred_phase.timing.model_dump(mode="json")["max_hold_time"] if pred_phase else None)
        used_params = set(phase.parameters)
        used_materials = {m.material for m in phase.materials}
        for cap in phase.captures:
            if isinstance(cap, NumberCapture) and cap.parameter:
                used_params.add(cap.parameter)
            if isinstance(cap, MaterialScanCapture):
                used_materials.add(cap.material)
                if cap.quantity_ref:
                    used_params.add(cap.quantity_ref)
        for name in sorted(used_params):
            out[f"parameter {name!r}"] = params.get(name)
        for code in sorted(used_materials):
            out[f"material {code!r}"] = bom.get(code)
    if scenario.batch_size is not None:
        out["reference batch size"] = doc.header.batch_size.model_dump(mode="json")
    if scenario.complete_batch:
        out["mandatory steps"] = sorted(k for k, ph in phases.items() if ph.mandatory)
    return out


def changed_assumptions(template: RecipeDocument, adapted: RecipeDocument, scenario: Scenario) -> list[str]:
    """Name the footprint parts that differ between the template and the adaptation (empty: still applies)."""
    a, b = scenario_footprint(template, scenario), scenario_footprint(adapted, scenario)

    def same(x: Any, y: Any) -> bool:
        return json.dumps(x, sort_keys=True) == json.dumps(y, sort_keys=True)

    out = []
    for name in sorted(a.keys() | b.keys()):
        if not same(a.get(name), b.get(name)):
            out.append(f"{name} removed" if b.get(name) is None and name.startswith("step ") else f"{name} changed")
    return out


@dataclass(frozen=True)
class ScenarioResult:
    """The result of one template scenario on one recipe document."""

    scenario_id: str
    title: str
    verifies: tuple[str, ...]
    status: Status
    #: What differed from the expected outcome (failed), or why it was set aside (not applicable).
    details: tuple[str, ...] = field(default=())

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form (stored in validation runs)."""
        return {"scenario": self.scenario_id, "title": self.title, "verifies": list(self.verifies),
                "status": self.status, "details": list(self.details)}


def run_scenario(doc: RecipeDocument, scenario: Scenario) -> ScenarioResult:
    """Run one scenario on a document and compare with what it expects."""
    try:
        mismatches = evaluate(doc, scenario).mismatches(scenario.expect)
    except (ScenarioError, ValueError) as exc:
        mismatches = [f"the scenario could not run: {exc}"]
    return ScenarioResult(scenario.id, scenario.title, tuple(scenario.verifies),
                          "failed" if mismatches else "passed", tuple(mismatches))


def rerun_template_scenarios(template: RecipeDocument | None, adapted: RecipeDocument,
                             pack: ValidationPack) -> list[ScenarioResult]:
    """Re-run the pack's scenarios whose assumptions still hold on the adaptation; report the others."""
    out = []
    for scenario in pack.scenarios:
        changed = changed_assumptions(template, adapted, scenario) if template is not None else []
        if changed:
            out.append(ScenarioResult(scenario.id, scenario.title, tuple(scenario.verifies), "not_applicable",
                                      tuple(changed)))
        else:
            out.append(run_scenario(adapted, scenario))
    return out


def requirement_results(pack: ValidationPack, results: list[ScenarioResult]) -> list[dict[str, Any]]:
    """Trace each requirement to its scenarios and their results (the body of the validation report)."""
    by_id: Mapping[str, ScenarioResult] = {r.scenario_id: r for r in results}
    out = []
    for req in pack.requirements:
        scenarios = [by_id[s.id].as_dict() for s in pack.scenarios if req.id in s.verifies and s.id in by_id]
        statuses = {s["status"] for s in scenarios}
        if "failed" in statuses:
            verdict = "failed"
        elif "passed" in statuses:
            verdict = "passed" if statuses == {"passed"} else "partly verified"
        else:
            verdict = "not verified"
        out.append({"id": req.id, "text": req.text, "gmp_impact": req.gmp_impact, "result": verdict,
                    "scenarios": scenarios})
    return out
