"""Editor operations on a draft recipe document: pure functions from (document data, form fields) to new data.

Each operation takes the document as JSON data and the fields an editor form posted (strings, as a browser
sends them), and returns new document data; it never mutates its input. Typing mistakes in a field (a number
that is not a number) raise `RecipeDocumentError` naming the field's JSON path, so the editor can show the
message beside it. The result is then validated as a whole by `parse_document` (schema) and `validate`
(editor messages) in `app.recipes.services.edit_draft`.

Operations are looked up by name in `OPERATIONS`, which is what the editor's forms post as ``op``.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable, Mapping
from typing import Any

from app.recipes.document import CAPTURE_KINDS, LIMIT_FIELDS, Problem, RecipeDocumentError, load_json

Data = dict[str, Any]
Fields = Mapping[str, Any]

_KEY_RE = re.compile(r"^[a-z][a-z0-9_]{0,63}$")


def _fail(path: str, message: str) -> RecipeDocumentError:
    return RecipeDocumentError([Problem(path, message)])


def _text(fields: Fields, name: str, default: str = "") -> str:
    value = fields.get(name)
    return default if value is None else str(value).replace("\r\n", "\n").strip()


def _opt_text(fields: Fields, name: str) -> str | None:
    return _text(fields, name) or None


def _number(fields: Fields, name: str, path: str) -> float | None:
    """A number from a form field ("" is none); commas are refused rather than guessed."""
    raw = _text(fields, name)
    if raw == "":
        return None
    try:
        value = float(raw)
    except ValueError:
        raise _fail(path, f"{raw!r} is not a number (use a point for decimals, e.g. 36.5)") from None
    if value != value or value in (float("inf"), float("-inf")):
        raise _fail(path, f"{raw!r} is not a finite number")
    return value


def _flag(fields: Fields, name: str) -> bool:
    return _text(fields, name).lower() in ("1", "true", "on", "yes")


def _lines(fields: Fields, name: str) -> list[str]:
    """A list from a textarea (one per line) or a comma-separated field."""
    raw = _text(fields, name)
    parts = re.split(r"[\n,]", raw) if raw else []
    return [p.strip() for p in parts if p.strip()]


def _key(fields: Fields, name: str, path: str) -> str:
    key = _text(fields, name)
    if not _KEY_RE.match(key):
        raise _fail(path, f"key {key!r} is invalid: start with a lower-case letter, then letters, digits or '_'")
    return key


# ---------------------------------------------------------------------------------------------------------------
# Finding things


def phase_locations(data: Data) -> list[tuple[int, int, int]]:
    """Every phase's (unit procedure, operation, phase) indexes in document order."""
    return [(u, o, p) for u, up in enumerate(data["procedure"]["unit_procedures"])
            for o, op in enumerate(up["operations"]) for p, _ in enumerate(op["phases"])]


def _find_phase(data: Data, key: str) -> tuple[int, int, int]:
    for u, o, p in phase_locations(data):
        if data["procedure"]["unit_procedures"][u]["operations"][o]["phases"][p]["key"] == key:
            return u, o, p
    raise _fail("procedure", f"there is no step {key!r}")


def _phase(data: Data, key: str) -> tuple[dict[str, Any], str]:
    u, o, p = _find_phase(data, key)
    return (data["procedure"]["unit_procedures"][u]["operations"][o]["phases"][p],
            f"procedure.unit_procedures[{u}].operations[{o}].phases[{p}]")


def _find_up(data: Data, key: str) -> int:
    for u, up in enumerate(data["procedure"]["unit_procedures"]):
        if up["key"] == key:
            return u
    raise _fail("procedure.unit_procedures", f"there is no unit procedure {key!r}")


def _find_op(data: Data, up_key: str, op_key: str) -> tuple[int, int]:
    u = _find_up(data, up_key)
    for o, op in enumerate(data["procedure"]["unit_procedures"][u]["operations"]):
        if op["key"] == op_key:
            return u, o
    raise _fail(f"procedure.unit_procedures[{u}].operations", f"there is no operation {op_key!r} in {up_key!r}")


def _all_keys(data: Data) -> set[str]:
    keys = set()
    for up in data["procedure"]["unit_procedures"]:
        keys.add(up["key"])
        for op in up["operations"]:
            keys.add(op["key"])
            keys.update(ph["key"] for ph in op["phases"])
    return keys


# ---------------------------------------------------------------------------------------------------------------
# Header, formula, bill of materials


def set_header(data: Data, fields: Fields) -> Data:
    """Change the header (the recipe code is fixed: it names the master recipe)."""
    out = copy.deepcopy(data)
    header = out["header"]
    header["product_code"] = _text(fields, "product_code")
    header["product_name"] = _text(fields, "product_name")
    header["description"] = _text(fields, "description")
    size = {"value": _number(fields, "batch_size", "header.batch_size.value"), "unit": _text(fields, "batch_unit"),
            "min": _number(fields, "batch_min", "header.batch_size.min"),
            "max": _number(fields, "batch_max", "header.batch_size.max")}
    if size["value"] is None:
        raise _fail("header.batch_size.value", "the reference batch size is required")
    header["batch_size"] = size
    for name in ("effective_date", "expiry_date"):
        value = _text(fields, name)
        if value and not re.fullmatch(r"\d{4}-\d{2}-\d{2}", value):
            raise _fail(f"header.{name}", f"{value!r} is not a date (YYYY-MM-DD)")
        header[name] = value or None
    return out


def _scaling(fields: Fields, path: str) -> dict[str, Any]:
    rule = _text(fields, "scaling_rule", "fixed") or "fixed"
    if rule == "linear":
        return {"rule": "linear", "reference_batch_size": _number(fields, "reference_batch_size",
                                                                  f"{path}.scaling.reference_batch_size"),
                "reference_unit": _opt_text(fields, "reference_unit")}
    return {"rule": rule}


def upsert_parameter(data: Data, fields: Fields) -> Data:
    """Add a formula parameter, or change the one named by `original_key` (its key may be renamed)."""
    out = copy.deepcopy(data)
    params = out["formula"]["parameters"]
    original = _text(fields, "original_key")
    index = next((i for i, p in enumerate(params) if p["key"] == original), None) if original else None
    path = f"formula.parameters[{index if index is not None else len(params)}]"
    key = _key(fields, "key", f"{path}.key")
    if key != original and any(p["key"] == key for p in params):
        raise _fail(f"{path}.key", f"a parameter {key!r} already exists")
    param: dict[str, Any] = {"key": key, "name": _text(fields, "name"), "type": _text(fields, "type"),
                             "unit": _text(fields, "unit"), "criticality": _text(fields, "criticality", "non_key"),
                             "scaling": _scaling(fields, path), "description": _text(fields, "description")}
    for limit in LIMIT_FIELDS:
        param[limit] = _number(fields, limit, f"{path}.{limit}")
    if index is None:
        params.append(param)
    else:
        params[index] = param
        if key != original:
            _rename_parameter_references(out, original, key)
    return out


def _rename_parameter_references(data: Data, old: str, new: str) -> None:
    for u, o, p in phase_locations(data):
        phase = data["procedure"]["unit_procedures"][u]["operations"][o]["phases"][p]
        phase["parameters"] = [new if k == old else k for k in phase.get("parameters", [])]
        for cap in phase.get("captures", []):
            for ref in ("parameter", "quantity_ref"):
                if cap.get(ref) == old:
                    cap[ref] = new


def remove_parameter(data: Data, fields: Fields) -> Data:
    """Remove a formula parameter (validation then names any step still using it)."""
    out = copy.deepcopy(data)
    key = _text(fields, "key")
    params = out["formula"]["parameters"]
    if not any(p["key"] == key for p in params):
        raise _fail("formula.parameters", f"there is no parameter {key!r}")
    out["formula"]["parameters"] = [p for p in params if p["key"] != key]
    return out


def upsert_material(data: Data, fields: Fields) -> Data:
    """Add a bill-of-materials line, or change the one named by `original_code`."""
    out = copy.deepcopy(data)
    lines = out["materials"]
    original = _text(fields, "original_code")
    index = next((i for i, m in enumerate(lines) if m["code"] == original), None) if original else None
    path = f"materials[{index if index is not None else len(lines)}]"
    code = _text(fields, "code")
    if code != original and any(m["code"] == code for m in lines):
        raise _fail(f"{path}.code", f"material {code!r} is already on the bill of materials")
    quantity = _number(fields, "quantity", f"{path}.quantity")
    if quantity is None:
        raise _fail(f"{path}.quantity", f"material {code!r} has no quantity per batch")
    line = {"code": code, "name": _text(fields, "name"), "unit": _text(fields, "unit"), "quantity": quantity,
            "tolerance_pct": _number(fields, "tolerance_pct", f"{path}.tolerance_pct") or 0.0,
            "scaling": _scaling(fields, path)}
    if index is None:
        lines.append(line)
    else:
        lines[index] = line
    return out


def remove_material(data: Data, fields: Fields) -> Data:
    """Remove a bill-of-materials line."""
    out = copy.deepcopy(data)
    code = _text(fields, "code")
    if not any(m["code"] == code for m in out["materials"]):
        raise _fail("materials", f"material {code!r} is not on the bill of materials")
    out["materials"] = [m for m in out["materials"] if m["code"] != code]
    return out


# ---------------------------------------------------------------------------------------------------------------
# Procedure structure


def _new_phase(key: str, name: str) -> dict[str, Any]:
    return {"key": key, "name": name, "instructions": "", "captures": [],
            "signatures": [{"meaning": "performed"}]}


def add_unit_procedure(data: Data, fields: Fields) -> Data:
    """Append a unit procedure with one operation and one step to fill in."""
    out = copy.deepcopy(data)
    path = f"procedure.unit_procedures[{len(out['procedure']['unit_procedures'])}]"
    key = _key(fields, "key", f"{path}.key")
    taken = _all_keys(out)
    if key in taken:
        raise _fail(f"{path}.key", f"key {key!r} is already used in the procedure")
    name = _text(fields, "name") or key.replace("_", " ").capitalize()
    op_key, phase_key = f"{key}_op", f"{key}_step"
    if op_key in taken or phase_key in taken:
        raise _fail(f"{path}.key", f"choose another key: {op_key!r} or {phase_key!r} is taken")
    out["procedure"]["unit_procedures"].append({
        "key": key, "name": name, "equipment_class": _opt_text(fields, "equipment_class"),
        "operations": [{"key": op_key, "name": name, "phases": [_new_phase(phase_key, "New step")]}],
    })
    return out


def update_unit_procedure(data: Data, fields: Fields) -> Data:
    """Rename a unit procedure or change the equipment class its steps need."""
    out = copy.deepcopy(data)
    u = _find_up(out, _text(fields, "key"))
    up = out["procedure"]["unit_procedures"][u]
    up["name"] = _text(fields, "name")
    up["equipment_class"] = _opt_text(fields, "equipment_class")
    return out


def add_operation(data: Data, fields: Fields) -> Data:
    """Append an operation (with one step to fill in) to a unit procedure."""
    out = copy.deepcopy(data)
    u = _find_up(out, _text(fields, "unit_procedure"))
    ops = out["procedure"]["unit_procedures"][u]["operations"]
    path = f"procedure.unit_procedures[{u}].operations[{len(ops)}]"
    key = _key(fields, "key", f"{path}.key")
    taken = _all_keys(out)
    if key in taken or f"{key}_step" in taken:
        raise _fail(f"{path}.key", f"key {key!r} is already used in the procedure")
    name = _text(fields, "name") or key.replace("_", " ").capitalize()
    ops.append({"key": key, "name": name, "phases": [_new_phase(f"{key}_step", "New step")]})
    return out


def update_operation(data: Data, fields: Fields) -> Data:
    """Rename an operation."""
    out = copy.deepcopy(data)
    u, o = _find_op(out, _text(fields, "unit_procedure"), _text(fields, "key"))
    out["procedure"]["unit_procedures"][u]["operations"][o]["name"] = _text(fields, "name")
    return out


def remove_operation(data: Data, fields: Fields) -> Data:
    """Remove an operation and its steps (a unit procedure keeps at least one operation)."""
    out = copy.deepcopy(data)
    u, o = _find_op(out, _text(fields, "unit_procedure"), _text(fields, "key"))
    ops = out["procedure"]["unit_procedures"][u]["operations"]
    if len(ops) == 1:
        raise _fail(f"procedure.unit_procedures[{u}].operations", "a unit procedure needs at least one operation; "
                    "remove the unit procedure instead")
    del ops[o]
    return out


def remove_unit_procedure(data: Data, fields: Fields) -> Data:
    """Remove a unit procedure and everything in it (the procedure keeps at least one)."""
    out = copy.deepcopy(data)
    u = _find_up(out, _text(fields, "key"))
    if len(out["procedure"]["unit_procedures"]) == 1:
        raise _fail("procedure.unit_procedures", "the procedure needs at least one unit procedure")
    del out["procedure"]["unit_procedures"][u]
    return out


def add_phase(data: Data, fields: Fields) -> Data:
    """Add a step to an operation: after the step named `after`, else at the end of the operation."""
    out = copy.deepcopy(data)
    u, o = _find_op(out, _text(fields, "unit_procedure"), _text(fields, "operation"))
    phases = out["procedure"]["unit_procedures"][u]["operations"][o]["phases"]
    after = _text(fields, "after")
    position = len(phases)
    if after:
        index = next((i for i, ph in enumerate(phases) if ph["key"] == after), None)
        if index is None:
            raise _fail(f"procedure.unit_procedures[{u}].operations[{o}]", f"there is no step {after!r} here")
        position = index + 1
    path = f"procedure.unit_procedures[{u}].operations[{o}].phases[{position}]"
    key = _key(fields, "key", f"{path}.key")
    if key in _all_keys(out):
        raise _fail(f"{path}.key", f"key {key!r} is already used in the procedure")
    phases.insert(position, _new_phase(key, _text(fields, "name") or key.replace("_", " ").capitalize()))
    return out


def move_phase(data: Data, fields: Fields) -> Data:
    """Move a step one place up or down; at an operation's edge it moves into the neighbouring operation."""
    out = copy.deepcopy(data)
    key, direction = _text(fields, "key"), _text(fields, "direction")
    if direction not in ("up", "down"):
        raise _fail("procedure", "direction must be 'up' or 'down'")
    u, o, p = _find_phase(out, key)
    ups = out["procedure"]["unit_procedures"]
    phases = ups[u]["operations"][o]["phases"]
    step = -1 if direction == "up" else 1
    if 0 <= p + step < len(phases):
        phases[p], phases[p + step] = phases[p + step], phases[p]
        return out
    # Crossing into the neighbouring operation (possibly of the neighbouring unit procedure).
    flat = [(uu, oo) for uu, up in enumerate(ups) for oo, _ in enumerate(up["operations"])]
    i = flat.index((u, o)) + step
    if not 0 <= i < len(flat):
        raise _fail("procedure", f"step {key!r} is already the {'first' if step < 0 else 'last'} step")
    if len(phases) == 1:
        raise _fail(f"procedure.unit_procedures[{u}].operations[{o}]",
                    f"step {key!r} is the only step of its operation; add another step first or remove the operation")
    phase = phases.pop(p)
    tu, to = flat[i]
    target = ups[tu]["operations"][to]["phases"]
    if step < 0:
        target.append(phase)
    else:
        target.insert(0, phase)
    return out


def remove_phase(data: Data, fields: Fields) -> Data:
    """Remove a step (an operation keeps at least one)."""
    out = copy.deepcopy(data)
    key = _text(fields, "key")
    u, o, p = _find_phase(out, key)
    phases = out["procedure"]["unit_procedures"][u]["operations"][o]["phases"]
    if len(phases) == 1:
        raise _fail(f"procedure.unit_procedures[{u}].operations[{o}]",
                    f"step {key!r} is the only step of its operation; remove the operation instead")
    del phases[p]
    return out


def _durations(fields: Fields) -> dict[str, Any]:
    timing: dict[str, Any] = {}
    for name in ("expected_duration", "min_duration", "max_duration", "max_hold_time"):
        value = _text(fields, name)
        timing[name] = value.upper() if value else None
    return timing


def update_phase(data: Data, fields: Fields) -> Data:
    """Change a step's name, instructions, applied parameters, equipment, timing, dependencies and signatures."""
    out = copy.deepcopy(data)
    phase, path = _phase(out, _text(fields, "key"))
    phase["name"] = _text(fields, "name")
    phase["instructions"] = _text(fields, "instructions")
    phase["equipment_class"] = _opt_text(fields, "equipment_class")
    phase["mandatory"] = _flag(fields, "mandatory")
    phase["parameters"] = _lines(fields, "parameters")
    phase["attachments"] = _lines(fields, "attachments")
    phase["timing"] = _durations(fields)
    depends = _text(fields, "depends_on")
    phase["depends_on"] = None if depends in ("", "previous") else _lines(fields, "depends_on")
    if depends == "none":
        phase["depends_on"] = []
    signatures = []
    for meaning in ("performed", "verified", "witnessed", "reviewed", "approved"):
        if _flag(fields, f"sign_{meaning}"):
            sig: dict[str, Any] = {"meaning": meaning, "independent": _flag(fields, f"independent_{meaning}")}
            role = _opt_text(fields, f"role_{meaning}")
            if role:
                sig["role"] = role
            signatures.append(sig)
    phase["signatures"] = signatures
    materials = []
    for i in range(int(_number(fields, "material_rows", f"{path}.materials") or 0)):
        code = _text(fields, f"material_{i}_code")
        if not code:
            continue
        materials.append({"material": code,
                          "quantity": _number(fields, f"material_{i}_quantity", f"{path}.materials[{i}].quantity"),
                          "unit": _opt_text(fields, f"material_{i}_unit"),
                          "tolerance_pct": _number(fields, f"material_{i}_tolerance",
                                                   f"{path}.materials[{i}].tolerance_pct")})
    phase["materials"] = materials
    return out


# ---------------------------------------------------------------------------------------------------------------
# Captures


def capture_from_fields(fields: Fields, path: str) -> dict[str, Any]:
    """Build a capture (data to record) of any kind from form fields."""
    kind = _text(fields, "kind")
    if kind not in CAPTURE_KINDS:
        raise _fail(f"{path}.kind", f"unknown kind {kind!r}; choose one of {', '.join(CAPTURE_KINDS)}")
    cap: dict[str, Any] = {"kind": kind, "key": _key(fields, "key", f"{path}.key"), "label": _text(fields, "label"),
                           "required": _flag(fields, "required")}
    if kind == "number":
        cap["parameter"] = _opt_text(fields, "parameter")
        cap["unit"] = _opt_text(fields, "unit")
        limits = {name: _number(fields, name, f"{path}.limits.{name}") for name in LIMIT_FIELDS}
        if cap["parameter"] is None and any(v is not None for v in limits.values()):
            cap["limits"] = {**limits, "criticality": _text(fields, "criticality", "non_key") or "non_key"}
    elif kind == "text":
        cap.update(pattern=_opt_text(fields, "pattern"), identity=_opt_text(fields, "identity"),
                   scan=_flag(fields, "scan"))
    elif kind == "choice":
        cap.update(options=_lines(fields, "options"), acceptable=_lines(fields, "acceptable"))
    elif kind == "material_scan":
        cap.update(material=_text(fields, "material"), quantity_ref=_opt_text(fields, "quantity_ref"),
                   tolerance_pct=_number(fields, "tolerance_pct", f"{path}.tolerance_pct"))
    elif kind == "equipment_scan":
        cap["equipment_class"] = _text(fields, "equipment_class")
    elif kind == "sample_id":
        cap.update(sample_type=_text(fields, "sample_type"),
                   pattern=_opt_text(fields, "sample_pattern") or _opt_text(fields, "pattern"))
    elif kind == "attachment":
        cap["accept"] = _lines(fields, "accept")
    return cap


def upsert_capture(data: Data, fields: Fields) -> Data:
    """Add data to capture to a step, or change the capture named by `original_key`."""
    out = copy.deepcopy(data)
    phase, path = _phase(out, _text(fields, "phase"))
    captures = phase.setdefault("captures", [])
    original = _text(fields, "original_key")
    index = next((i for i, c in enumerate(captures) if c["key"] == original), None) if original else None
    cpath = f"{path}.captures[{index if index is not None else len(captures)}]"
    cap = capture_from_fields(fields, cpath)
    if cap["key"] != original and any(c["key"] == cap["key"] for c in captures):
        raise _fail(f"{cpath}.key", f"step {phase['key']!r} already captures {cap['key']!r}")
    if index is None:
        captures.append(cap)
    else:
        captures[index] = cap
    return out


def remove_capture(data: Data, fields: Fields) -> Data:
    """Remove data to capture from a step."""
    out = copy.deepcopy(data)
    phase, path = _phase(out, _text(fields, "phase"))
    key = _text(fields, "key")
    if not any(c["key"] == key for c in phase.get("captures", [])):
        raise _fail(f"{path}.captures", f"step {phase['key']!r} has no capture {key!r}")
    phase["captures"] = [c for c in phase["captures"] if c["key"] != key]
    return out


def move_capture(data: Data, fields: Fields) -> Data:
    """Move a capture one place up or down within its step."""
    out = copy.deepcopy(data)
    phase, path = _phase(out, _text(fields, "phase"))
    captures = phase.get("captures", [])
    key = _text(fields, "key")
    index = next((i for i, c in enumerate(captures) if c["key"] == key), None)
    if index is None:
        raise _fail(f"{path}.captures", f"step {phase['key']!r} has no capture {key!r}")
    target = index + (-1 if _text(fields, "direction") == "up" else 1)
    if 0 <= target < len(captures):
        captures[index], captures[target] = captures[target], captures[index]
    return out


def add_attachment_name(data: Data, fields: Fields) -> Data:
    """List an uploaded image on a step, so its instructions may show it as ``attachment:NAME``."""
    out = copy.deepcopy(data)
    phase, _ = _phase(out, _text(fields, "phase"))
    name = _text(fields, "name")
    if name not in phase.setdefault("attachments", []):
        phase["attachments"].append(name)
    return out


def replace_document(data: Data, fields: Fields) -> Data:
    """Replace the whole document with posted JSON (the editor's JSON tab); the recipe code must stay."""
    new = load_json(_text(fields, "document"))
    if not isinstance(new, dict):
        raise _fail("$", "a recipe document is a JSON object")
    code = (new.get("header") or {}).get("recipe_code") if isinstance(new.get("header"), dict) else None
    if code != data["header"]["recipe_code"]:
        raise _fail("header.recipe_code", f"the recipe code is {data['header']['recipe_code']!r} and cannot change "
                    "in a version; import the document as a new recipe instead")
    return new


OPERATIONS: dict[str, Callable[[Data, Fields], Data]] = {
    "set_header": set_header,
    "upsert_parameter": upsert_parameter,
    "remove_parameter": remove_parameter,
    "upsert_material": upsert_material,
    "remove_material": remove_material,
    "add_unit_procedure": add_unit_procedure,
    "update_unit_procedure": update_unit_procedure,
    "remove_unit_procedure": remove_unit_procedure,
    "add_operation": add_operation,
    "update_operation": update_operation,
    "remove_operation": remove_operation,
    "add_phase": add_phase,
    "move_phase": move_phase,
    "remove_phase": remove_phase,
    "update_phase": update_phase,
    "upsert_capture": upsert_capture,
    "remove_capture": remove_capture,
    "move_capture": move_capture,
    "replace_document": replace_document,
}


def apply_operation(data: Data, op: str, fields: Fields) -> Data:
    """Apply one named editor operation."""
    operation = OPERATIONS.get(op)
    if operation is None:
        raise _fail("$", f"unknown editor operation {op!r}")
    return operation(data, fields)


def describe_operation(op: str, fields: Fields) -> str:
    """A one-line note of an edit for the draft's revision history."""
    target = _text(fields, "key") or _text(fields, "code") or _text(fields, "phase")
    words = op.replace("_", " ")
    return f"{words} {target}".strip() if target else words
