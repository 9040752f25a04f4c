"""Editor validation of a recipe document: what an engineer must fix (errors) or should look at (warnings).

The schema in `document.py` refuses what is malformed; this module finds what is well-formed but wrong: broken
references, limits out of order, critical parameters without limits, dependency cycles, phases an operator
could not execute. A version with errors cannot go to review; warnings are shown and may be accepted.
"""

from __future__ import annotations

import itertools
import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from app.recipes.document import (
    LIMIT_FIELDS,
    ChoiceCapture,
    EquipmentScanCapture,
    FormulaParameter,
    InlineLimits,
    MaterialScanCapture,
    NumberCapture,
    Phase,
    RecipeDocument,
    TextCapture,
    effective_dependencies,
    is_offset_unit,
    units_compatible,
)

Level = Literal["error", "warning"]

_ATTACHMENT_REF = re.compile(r"attachment:([A-Za-z0-9][A-Za-z0-9._-]*)")


@dataclass(frozen=True)
class Message:
    """One editor message: how bad, where (a JSON path into the document), and what to do."""

    level: Level
    path: str
    message: str

    def as_dict(self) -> dict[str, str]:
        """Return the message as a JSON-ready dict."""
        return {"level": self.level, "path": self.path, "message": self.message}


def has_errors(messages: Iterable[Message]) -> bool:
    """Tell whether any message is an error."""
    return any(m.level == "error" for m in messages)


def validate(doc: RecipeDocument) -> list[Message]:
    """Return every error and warning for a recipe document, errors first, each pointing at its path."""
    out: list[Message] = []
    _check_header(doc, out)
    _check_formula(doc, out)
    _check_materials(doc, out)
    _check_keys(doc, out)
    for path, phase in doc.iter_phase_paths():
        _check_phase(doc, path, phase, out)
    _check_dependencies(doc, out)
    _check_usage(doc, out)
    return sorted(out, key=lambda m: m.level != "error")


def _err(out: list[Message], path: str, message: str) -> None:
    """Record an error."""
    out.append(Message("error", path, message))


def _warn(out: list[Message], path: str, message: str) -> None:
    """Record a warning."""
    out.append(Message("warning", path, message))


def _check_header(doc: RecipeDocument, out: list[Message]) -> None:
    """Check dates and the batch size range."""
    h = doc.header
    if h.effective_date and h.expiry_date and h.expiry_date <= h.effective_date:
        _err(out, "header.expiry_date", "the expiry date must be after the effective date")
    size = h.batch_size
    if size.min is not None and size.min > size.value:
        _err(out, "header.batch_size.min", "the minimum batch size is above the reference batch size")
    if size.max is not None and size.max < size.value:
        _err(out, "header.batch_size.max", "the maximum batch size is below the reference batch size")


def _check_limit_order(path: str, limits: FormulaParameter | InlineLimits, out: list[Message]) -> None:
    """Require low <= alarm_low <= target <= alarm_high <= high for the limits that are set."""
    present = [(name, getattr(limits, name)) for name in LIMIT_FIELDS if getattr(limits, name) is not None]
    for (a_name, a), (b_name, b) in itertools.pairwise(present):
        if a > b:
            _err(
                out,
                f"{path}.{b_name}",
                f"limits are out of order: {a_name} ({a:g}) is above {b_name} ({b:g}); "
                "expected low <= alarm_low <= target <= alarm_high <= high",
            )


def _check_formula(doc: RecipeDocument, out: list[Message]) -> None:
    """Check each formula parameter's limits and scaling."""
    batch_unit = doc.header.batch_size.unit
    for i, p in enumerate(doc.formula.parameters):
        path = f"formula.parameters[{i}]"
        _check_limit_order(path, p, out)
        if p.criticality == "critical" and p.low is None and p.high is None:
            _err(out, path, f"critical parameter {p.key!r} has no limits: set low and/or high")
        elif p.criticality == "key" and p.low is None and p.high is None:
            _warn(out, path, f"key parameter {p.key!r} has no limits")
        if p.scaling.rule == "linear":
            if is_offset_unit(p.unit):
                _err(out, f"{path}.scaling.rule", f"a value in {p.unit} cannot scale linearly; use fixed")
            ref_unit = p.scaling.reference_unit
            if ref_unit is not None and not units_compatible(ref_unit, batch_unit):
                _err(
                    out,
                    f"{path}.scaling.reference_unit",
                    f"reference unit {ref_unit} cannot be compared with the batch size unit {batch_unit}",
                )


def _check_materials(doc: RecipeDocument, out: list[Message]) -> None:
    """Check bill-of-materials scaling references."""
    batch_unit = doc.header.batch_size.unit
    for i, m in enumerate(doc.materials):
        ref_unit = m.scaling.reference_unit
        if ref_unit is not None and not units_compatible(ref_unit, batch_unit):
            _err(
                out,
                f"materials[{i}].scaling.reference_unit",
                f"reference unit {ref_unit} cannot be compared with the batch size unit {batch_unit}",
            )


def _duplicates(keys: list[str]) -> set[str]:
    """Return the keys that occur more than once."""
    return {k for k, n in Counter(keys).items() if n > 1}


def _check_keys(doc: RecipeDocument, out: list[Message]) -> None:
    """Refuse duplicate keys: parameters, materials, unit procedures, operations and steps must be unique."""
    dup = _duplicates([p.key for p in doc.formula.parameters])
    for i, p in enumerate(doc.formula.parameters):
        if p.key in dup:
            _err(out, f"formula.parameters[{i}].key", f"duplicate parameter key {p.key!r}")
    dup = _duplicates([m.code for m in doc.materials])
    for i, m in enumerate(doc.materials):
        if m.code in dup:
            _err(out, f"materials[{i}].code", f"material {m.code!r} is listed twice")
    ups = doc.procedure.unit_procedures
    dup = _duplicates([up.key for up in ups])
    for u, up in enumerate(ups):
        if up.key in dup:
            _err(out, f"procedure.unit_procedures[{u}].key", f"duplicate unit procedure key {up.key!r}")
    dup = _duplicates([op.key for up in ups for op in up.operations])
    for u, up in enumerate(ups):
        for o, op in enumerate(up.operations):
            if op.key in dup:
                _err(
                    out,
                    f"procedure.unit_procedures[{u}].operations[{o}].key",
                    f"duplicate operation key {op.key!r}",
                )
    dup = _duplicates([ph.key for ph in doc.phases()])
    for path, ph in doc.iter_phase_paths():
        if ph.key in dup:
            _err(out, f"{path}.key", f"duplicate step key {ph.key!r}: every step needs its own key")


def _check_phase(doc: RecipeDocument, path: str, ph: Phase, out: list[Message]) -> None:
    """Check one phase: instructions, references, captures, materials, timing and signatures."""
    params = doc.parameter_map()
    materials = doc.material_map()
    if not ph.instructions.strip():
        _err(out, f"{path}.instructions", f"step {ph.key!r} has no instructions for the operator")
    referenced = set(_ATTACHMENT_REF.findall(ph.instructions))
    for name in sorted(referenced - set(ph.attachments)):
        _err(
            out,
            f"{path}.instructions",
            f"instructions show attachment {name!r}, which the step does not list",
        )
    for a, name in enumerate(ph.attachments):
        if name not in referenced:
            _warn(out, f"{path}.attachments[{a}]", f"attachment {name!r} is not shown in the instructions")
    for k, key in enumerate(ph.parameters):
        if key not in params:
            _err(out, f"{path}.parameters[{k}]", f"step {ph.key!r} applies unknown parameter {key!r}")
    dup = _duplicates([c.key for c in ph.captures])
    for c, cap in enumerate(ph.captures):
        cpath = f"{path}.captures[{c}]"
        if cap.key in dup:
            _err(out, f"{cpath}.key", f"capture key {cap.key!r} is used twice in step {ph.key!r}")
        _check_capture(doc, ph, cpath, cap, out)
    for r, req in enumerate(ph.materials):
        rpath = f"{path}.materials[{r}]"
        mat = materials.get(req.material)
        if mat is None:
            _err(out, f"{rpath}.material", f"material {req.material!r} is not in the bill of materials")
        if req.quantity is None:
            _err(out, f"{rpath}.quantity", f"step {ph.key!r} requires {req.material!r} but gives no quantity")
        unit = req.unit or (mat.unit if mat else None)
        if mat is not None and unit is not None and not units_compatible(unit, mat.unit):
            _err(out, f"{rpath}.unit", f"unit {unit} cannot be compared with the material's unit {mat.unit}")
    scanned = {c.equipment_class for c in ph.captures if isinstance(c, EquipmentScanCapture)}
    if ph.equipment_class is not None and ph.equipment_class not in scanned:
        _warn(out, f"{path}.equipment_class", f"step {ph.key!r} needs a {ph.equipment_class} but scans none")
    _check_timing(path, ph, out)
    _check_signatures(path, ph, out)


def _check_capture(doc: RecipeDocument, ph: Phase, cpath: str, cap: object, out: list[Message]) -> None:
    """Check one capture's references and units."""
    params = doc.parameter_map()
    if isinstance(cap, NumberCapture):
        if cap.parameter is not None:
            param = params.get(cap.parameter)
            if param is None:
                _err(
                    out,
                    f"{cpath}.parameter",
                    f"capture {cap.key!r} references unknown parameter {cap.parameter!r}",
                )
            else:
                if cap.unit is not None and not units_compatible(cap.unit, param.unit):
                    _err(
                        out,
                        f"{cpath}.unit",
                        f"unit {cap.unit} cannot be compared with {param.key!r} in {param.unit}",
                    )
                if param.criticality == "critical" and not cap.required:
                    _warn(
                        out, f"{cpath}.required", f"critical parameter {param.key!r} is captured as optional"
                    )
        if cap.limits is not None:
            _check_limit_order(f"{cpath}.limits", cap.limits, out)
            if cap.limits.criticality == "critical" and not cap.limits.has_limits():
                _err(out, f"{cpath}.limits", f"critical capture {cap.key!r} has no limits")
    elif isinstance(cap, MaterialScanCapture):
        mat = doc.material_map().get(cap.material)
        if mat is None:
            _err(out, f"{cpath}.material", f"material {cap.material!r} is not in the bill of materials")
        if cap.quantity_ref is not None:
            param = params.get(cap.quantity_ref)
            if param is None:
                _err(
                    out,
                    f"{cpath}.quantity_ref",
                    f"quantity reference {cap.quantity_ref!r} is not a parameter",
                )
            elif mat is not None and not units_compatible(param.unit, mat.unit):
                _err(
                    out,
                    f"{cpath}.quantity_ref",
                    f"{param.key!r} in {param.unit} is not a quantity of {mat.unit}",
                )
    elif isinstance(cap, ChoiceCapture) and cap.acceptable and set(cap.acceptable) == set(cap.options):
        _warn(out, f"{cpath}.acceptable", "every option is acceptable; leave acceptable empty")
    elif isinstance(cap, TextCapture) and cap.identity is not None and not cap.required:
        _err(out, f"{cpath}.required", "a chain-of-identity check cannot be optional")


def _check_timing(path: str, ph: Phase, out: list[Message]) -> None:
    """Require min <= expected <= max durations."""
    t = ph.timing
    if t.min_duration is not None and t.max_duration is not None and t.min_duration > t.max_duration:
        _err(out, f"{path}.timing.max_duration", "the maximum duration is shorter than the minimum")
    if t.expected_duration is not None:
        if t.min_duration is not None and t.expected_duration < t.min_duration:
            _warn(out, f"{path}.timing.expected_duration", "the expected duration is below the minimum")
        if t.max_duration is not None and t.expected_duration > t.max_duration:
            _warn(out, f"{path}.timing.expected_duration", "the expected duration is above the maximum")


def _check_signatures(path: str, ph: Phase, out: list[Message]) -> None:
    """Check signature meanings: unique, and a verification that is really a second person's."""
    meanings = [s.meaning for s in ph.signatures]
    for s, sig in enumerate(ph.signatures):
        spath = f"{path}.signatures[{s}]"
        if meanings.count(sig.meaning) > 1 and meanings.index(sig.meaning) != s:
            _err(out, f"{spath}.meaning", f"signature {sig.meaning!r} is required twice")
        if sig.meaning == "verified" and not sig.independent:
            _warn(out, f"{spath}.independent", "a verification should be independent (second person)")
        if sig.meaning == "verified" and "performed" not in meanings:
            _warn(out, spath, "a verification without a 'performed' signature has nothing to verify")


def _check_dependencies(doc: RecipeDocument, out: list[Message]) -> None:
    """Find unknown dependencies, self-dependencies, cycles and steps that can never start."""
    keys = {ph.key for ph in doc.phases()}
    paths = {ph.key: path for path, ph in doc.iter_phase_paths()}
    deps = effective_dependencies(doc)
    graph: dict[str, list[str]] = {}
    for path, ph in doc.iter_phase_paths():
        if ph.depends_on is None:
            graph.setdefault(ph.key, deps.get(ph.key, []))
            continue
        usable = []
        for d, dep in enumerate(ph.depends_on):
            if dep == ph.key:
                _err(out, f"{path}.depends_on[{d}]", f"step {ph.key!r} depends on itself")
            elif dep not in keys:
                _err(out, f"{path}.depends_on[{d}]", f"step {ph.key!r} depends on unknown step {dep!r}")
            else:
                usable.append(dep)
        graph.setdefault(ph.key, usable)

    cycles = _find_cycles(graph)
    in_cycle = {k for cycle in cycles for k in cycle}
    for cycle in cycles:
        _err(out, f"{paths[cycle[0]]}.depends_on", "dependency cycle: " + " -> ".join([*cycle, cycle[0]]))
    # Kahn's algorithm: whatever is never released waits, directly or not, on a cycle.
    done: set[str] = set()
    progress = True
    while progress:
        progress = False
        for key, preds in graph.items():
            if key not in done and all(p in done for p in preds):
                done.add(key)
                progress = True
    for key in graph:
        if key not in done and key not in in_cycle:
            blockers = sorted(p for p in graph[key] if p not in done)
            _err(
                out,
                f"{paths[key]}.depends_on",
                f"step {key!r} is unreachable: it waits on {', '.join(repr(b) for b in blockers)}, "
                "which can never complete",
            )


def _find_cycles(graph: dict[str, list[str]]) -> list[list[str]]:
    """Return each elementary cycle found by depth-first search, once, starting at its first step in order."""
    order = {k: i for i, k in enumerate(graph)}
    cycles: list[list[str]] = []
    seen_sets: set[frozenset[str]] = set()
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for pred in graph.get(node, []):
            if state.get(pred) == 1:
                cycle = stack[stack.index(pred) :]
                start = min(range(len(cycle)), key=lambda i: order[cycle[i]])
                cycle = cycle[start:] + cycle[:start]
                if frozenset(cycle) not in seen_sets:
                    seen_sets.add(frozenset(cycle))
                    # Written in execution order: each step runs after the one before it.
                    cycles.append([cycle[0], *reversed(cycle[1:])])
            elif pred not in state:
                visit(pred)
        stack.pop()
        state[node] = 2

    for node in graph:
        if node not in state:
            visit(node)
    return cycles


def _check_usage(doc: RecipeDocument, out: list[Message]) -> None:
    """Warn about parameters and materials no step uses."""
    used_params: set[str] = set()
    used_materials: set[str] = set()
    for ph in doc.phases():
        used_params.update(ph.parameters)
        used_materials.update(r.material for r in ph.materials)
        for cap in ph.captures:
            if isinstance(cap, NumberCapture) and cap.parameter:
                used_params.add(cap.parameter)
            if isinstance(cap, MaterialScanCapture):
                used_materials.add(cap.material)
                if cap.quantity_ref:
                    used_params.add(cap.quantity_ref)
    for i, p in enumerate(doc.formula.parameters):
        if p.key not in used_params:
            _warn(
                out, f"formula.parameters[{i}]", f"parameter {p.key!r} is not applied or captured by any step"
            )
    for i, m in enumerate(doc.materials):
        if m.code not in used_materials:
            _warn(out, f"materials[{i}]", f"material {m.code!r} is not used by any step")
