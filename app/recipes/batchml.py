"""BatchML (ISA-88, MESA B2MML-BatchML V0600) export and import of recipe version documents.

The document becomes a ``MasterRecipe`` in the namespace ``http://www.mesa.org/xml/B2MML-V0600`` (the
namespace of BatchML-V0600-BatchInformation.xsd): the header as ``Header`` (product, ``BatchSize``,
effective and expiration dates), formula parameters and bill-of-materials lines as ``Formula/Parameter``
(materials are ``ProcessInput`` parameters with ``ParameterSubType`` ``Material``), and the procedure as
nested ``RecipeElement``s of type UnitProcedure / Operation / Phase, each level sequenced by a
``ProcedureLogic`` of steps, transitions and links. Phases reference the formula parameters they apply
(``DataInterpretation`` ``Reference``) and carry their work instructions as ``OtherInformation``.

The ProcedureLogic links each level's elements in document order (the default sequence); explicit
``depends_on`` lists, which may cross operations and unit procedures, travel in the extension.

What BatchML cannot express (limits and alarm limits, tolerances, captures, timing, signatures, dependencies)
goes into elements of the Batchline namespace below, placed where B2MML puts its ``Extended:*`` extension
group, with attribute names equal to the JSON field names. To validate such a file strictly against the
MESA schemas, declare those elements in the site's ``B2MML-V0600-AllExtensions.xsd``.

Export then import gives a document with the same content hash. Import parses with defusedxml and reports
every problem with the element path it comes from, e.g.
``MasterRecipe/Formula/Parameter[3]/Value/UnitOfMeasure``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any
from xml.etree.ElementTree import Element, ParseError, SubElement, indent, tostring

import defusedxml.ElementTree as SafeET
from defusedxml import DefusedXmlException
from pydantic import BaseModel, ValidationError

from app.recipes.document import (
    SCHEMA_ID,
    AttachmentCapture,
    ChoiceCapture,
    FormulaParameter,
    Material,
    NumberCapture,
    Operation,
    Phase,
    Problem,
    RecipeDocument,
    UnitProcedure,
    clean_loc,
    format_duration,
    format_number,
)

B2MML_NS = "http://www.mesa.org/xml/B2MML-V0600"
EXTENSION_NS = "urn:batchline:batchml-extension:1"

_PARAMETER_TYPES = {
    "process_input": "ProcessInput",
    "process_parameter": "ProcessParameter",
    "process_output": "ProcessOutput",
}
_PARAMETER_TYPES_BACK = {v: k for k, v in _PARAMETER_TYPES.items()}
_MATERIAL_SUBTYPE = "Material"
_INSTRUCTIONS_ID = "Instructions"
_EQUIPMENT_CONDITION = re.compile(r"^EquipmentClass\s*=\s*(?P<cls>\S+)$")


class BatchMLError(ValueError):
    """A BatchML file that cannot be imported; `problems` point at element paths."""

    def __init__(self, problems: Sequence[Problem]) -> None:
        self.problems = list(problems)
        super().__init__("; ".join(f"{p.path}: {p.message}" for p in self.problems) or "invalid BatchML")


def _b(tag: str) -> str:
    """Qualify a tag in the B2MML namespace."""
    return f"{{{B2MML_NS}}}{tag}"


def _x(tag: str) -> str:
    """Qualify a tag in the Batchline extension namespace."""
    return f"{{{EXTENSION_NS}}}{tag}"


# ----------------------------------------------------------------------------------------------------------
# Export
# ----------------------------------------------------------------------------------------------------------


# Elements are built with literal tags ("Formula", "bl:Phase") and the namespace declarations set on the
# root: ElementTree would otherwise invent ns0/ns1 prefixes, and its default_namespace option refuses the
# unqualified attributes B2MML uses.


def _sub(parent: Element, tag: str, text: str | None = None, **attrs: str) -> Element:
    """Append a B2MML child element."""
    el = SubElement(parent, tag, attrs)
    if text is not None:
        el.text = text
    return el


def _xsub(parent: Element, tag: str, text: str | None = None, **attrs: str) -> Element:
    """Append a Batchline extension element."""
    el = SubElement(parent, f"bl:{tag}", attrs)
    if text is not None:
        el.text = text
    return el


def _attr(value: Any) -> str:
    """Write a scalar as an extension attribute (xsd:double, xsd:boolean, xsd:duration or string)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, timedelta):
        return format_duration(value)
    return str(value)


def _attrs(model: BaseModel, names: Iterable[str]) -> dict[str, str]:
    """Return the set scalar fields of a model as attributes."""
    return {n: _attr(getattr(model, n)) for n in names if getattr(model, n) is not None}


def _value(parent: Element, text: str, interpretation: str, data_type: str, unit: str) -> None:
    """Append a BatchML Value (ValueString, DataInterpretation, DataType, UnitOfMeasure)."""
    value = _sub(parent, "Value")
    _sub(value, "ValueString", text)
    _sub(value, "DataInterpretation", interpretation)
    _sub(value, "DataType", data_type)
    _sub(value, "UnitOfMeasure", unit)


def _date_time(value: date) -> str:
    """Write a date as the xsd:dateTime B2MML expects (midnight UTC)."""
    return f"{value.isoformat()}T00:00:00Z"


def _equipment_requirement(parent: Element, owner: str, equipment_class: str | None) -> None:
    """Append an EquipmentRequirement constraining the equipment class."""
    if equipment_class is None:
        return
    req = _sub(parent, "EquipmentRequirement")
    _sub(req, "ID", f"{owner}.equipment")
    constraint = _sub(req, "Constraint")
    _sub(constraint, "Condition", f"EquipmentClass = {equipment_class}")


def _procedure_logic(parent: Element, keys: Sequence[str]) -> None:
    """Append an SFC running the child elements in order: step, transition on completion, next step."""
    logic = _sub(parent, "ProcedureLogic")
    links = []
    for i in range(len(keys) - 1):
        links.append((keys[i], "Step", f"T{i + 1}", "Transition"))
        links.append((f"T{i + 1}", "Transition", keys[i + 1], "Step"))
    for n, (src, src_type, dst, dst_type) in enumerate(links, start=1):
        link = _sub(logic, "Link")
        _sub(link, "ID", f"L{n}")
        from_id = _sub(link, "FromID")
        _sub(from_id, "FromIDValue", src)
        _sub(from_id, "FromType", src_type)
        _sub(from_id, "IDScope", "Internal")
        to_id = _sub(link, "ToID")
        _sub(to_id, "ToIDValue", dst)
        _sub(to_id, "ToType", dst_type)
        _sub(to_id, "IDScope", "Internal")
        _sub(link, "LinkType", "ControlLink")
        _sub(link, "Depiction", "LineAndArrow")
    for key in keys:
        step = _sub(logic, "Step")
        _sub(step, "ID", key)
        _sub(step, "RecipeElementID", key)
        _sub(step, "RecipeElementVersion", "1")
    for i in range(len(keys) - 1):
        transition = _sub(logic, "Transition")
        _sub(transition, "ID", f"T{i + 1}")
        _sub(transition, "Condition", f"{keys[i]}.State = Complete")


def _export_parameter(formula: Element, p: FormulaParameter) -> None:
    """Append a formula parameter."""
    el = _sub(formula, "Parameter")
    _sub(el, "ID", p.key)
    _sub(el, "Description", p.name)
    _sub(el, "ParameterType", _PARAMETER_TYPES[p.type])
    _sub(el, "ParameterSubType", p.criticality)
    _value(el, "" if p.target is None else format_number(p.target), "Constant", "decimal", p.unit)
    _sub(el, "Scaled", "Yes" if p.scaling.rule == "linear" else "No")
    if p.scaling.reference_batch_size is not None:
        _sub(el, "ScaleReference", format_number(p.scaling.reference_batch_size))
    ext = _xsub(el, "Parameter", **_attrs(p, ("low", "high", "alarm_low", "alarm_high")))
    if p.scaling.reference_unit is not None:
        ext.set("reference_unit", p.scaling.reference_unit)
    if p.description:
        _xsub(ext, "Description", p.description)


def _export_material(formula: Element, m: Material) -> None:
    """Append a bill-of-materials line as a ProcessInput parameter of subtype Material."""
    el = _sub(formula, "Parameter")
    _sub(el, "ID", m.code)
    _sub(el, "Description", m.name)
    _sub(el, "ParameterType", "ProcessInput")
    _sub(el, "ParameterSubType", _MATERIAL_SUBTYPE)
    _value(el, format_number(m.quantity), "Constant", "decimal", m.unit)
    _sub(el, "Scaled", "Yes" if m.scaling.rule == "linear" else "No")
    if m.scaling.reference_batch_size is not None:
        _sub(el, "ScaleReference", format_number(m.scaling.reference_batch_size))
    ext = _xsub(el, "Material", tolerance_pct=_attr(m.tolerance_pct))
    if m.scaling.reference_unit is not None:
        ext.set("reference_unit", m.scaling.reference_unit)


def _export_capture(parent: Element, cap: Any) -> None:
    """Append a capture with its scalar fields as attributes and its lists as children."""
    scalars = [n for n in type(cap).model_fields if n not in ("limits", "options", "acceptable", "accept")]
    el = _xsub(parent, "Capture", **_attrs(cap, scalars))
    if isinstance(cap, NumberCapture) and cap.limits is not None:
        _xsub(el, "Limits", **_attrs(cap.limits, type(cap.limits).model_fields))
    if isinstance(cap, ChoiceCapture):
        for option in cap.options:
            _xsub(el, "Option", option)
        for option in cap.acceptable:
            _xsub(el, "Acceptable", option)
    if isinstance(cap, AttachmentCapture):
        for media_type in cap.accept:
            _xsub(el, "Accept", media_type)


def _export_phase(parent: Element, ph: Phase, doc: RecipeDocument) -> None:
    """Append a Phase recipe element."""
    el = _sub(parent, "RecipeElement")
    _sub(el, "ID", ph.key)
    _sub(el, "Description", ph.name)
    _sub(el, "RecipeElementType", "Phase")
    _equipment_requirement(el, ph.key, ph.equipment_class)
    params = doc.parameter_map()
    for key in ph.parameters:
        ref = _sub(el, "Parameter")
        _sub(ref, "ID", key)
        known = params.get(key)
        if known is not None:
            _sub(ref, "ParameterType", _PARAMETER_TYPES[known.type])
        else:
            _sub(ref, "ParameterType", "Other", OtherValue="Unresolved")
        _value(ref, key, "Reference", "string", known.unit if known else "")
    if ph.instructions:
        info = _sub(el, "OtherInformation")
        _sub(info, "ID", _INSTRUCTIONS_ID)
        _value(info, ph.instructions, "Constant", "string", "")
    ext = _xsub(el, "Phase", mandatory=_attr(ph.mandatory))
    for name in ph.attachments:
        _xsub(ext, "Attachment", name=name)
    for cap in ph.captures:
        _export_capture(ext, cap)
    for req in ph.materials:
        _xsub(ext, "Material", **_attrs(req, type(req).model_fields))
    _xsub(ext, "Timing", **_attrs(ph.timing, type(ph.timing).model_fields))
    for sig in ph.signatures:
        _xsub(ext, "Signature", **_attrs(sig, type(sig).model_fields))
    if ph.depends_on is not None:
        deps = _xsub(ext, "DependsOn")
        for key in ph.depends_on:
            _xsub(deps, "Step", key)


def _export_operation(parent: Element, op: Operation, doc: RecipeDocument) -> None:
    """Append an Operation recipe element with its phases."""
    el = _sub(parent, "RecipeElement")
    _sub(el, "ID", op.key)
    _sub(el, "Description", op.name)
    _sub(el, "RecipeElementType", "Operation")
    _procedure_logic(el, [ph.key for ph in op.phases])
    for ph in op.phases:
        _export_phase(el, ph, doc)


def _export_unit_procedure(parent: Element, up: UnitProcedure, doc: RecipeDocument) -> None:
    """Append a UnitProcedure recipe element with its operations."""
    el = _sub(parent, "RecipeElement")
    _sub(el, "ID", up.key)
    _sub(el, "Description", up.name)
    _sub(el, "RecipeElementType", "UnitProcedure")
    _equipment_requirement(el, up.key, up.equipment_class)
    _procedure_logic(el, [op.key for op in up.operations])
    for op in up.operations:
        _export_operation(el, op, doc)


def to_batchml(doc: RecipeDocument, *, version: str | None = None) -> str:
    """Export a recipe document as a BatchML MasterRecipe (UTF-8 XML text)."""
    h = doc.header
    root = Element("MasterRecipe", {"xmlns": B2MML_NS, "xmlns:bl": EXTENSION_NS})
    _sub(root, "ID", h.recipe_code)
    if version is not None:
        _sub(root, "Version", version)
    if h.description:
        _sub(root, "Description", h.description)
    header = _sub(root, "Header")
    if h.effective_date is not None:
        _sub(header, "EffectiveDate", _date_time(h.effective_date))
    if h.expiry_date is not None:
        _sub(header, "ExpirationDate", _date_time(h.expiry_date))
    _sub(header, "ProductID", h.product_code)
    _sub(header, "ProductName", h.product_name)
    size = _sub(header, "BatchSize")
    _sub(size, "Nominal", format_number(h.batch_size.value))
    if h.batch_size.min is not None:
        _sub(size, "Min", format_number(h.batch_size.min))
    if h.batch_size.max is not None:
        _sub(size, "Max", format_number(h.batch_size.max))
    _sub(size, "UnitOfMeasure", h.batch_size.unit)
    formula = _sub(root, "Formula")
    for p in doc.formula.parameters:
        _export_parameter(formula, p)
    for m in doc.materials:
        _export_material(formula, m)
    _procedure_logic(root, [up.key for up in doc.procedure.unit_procedures])
    for up in doc.procedure.unit_procedures:
        _export_unit_procedure(root, up, doc)
    _xsub(root, "Recipe", schema=SCHEMA_ID)
    indent(root, space="  ")  # only between elements: leaf text such as instructions is left as written
    body = tostring(root, encoding="unicode")
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + body + "\n"


# ----------------------------------------------------------------------------------------------------------
# Import
# ----------------------------------------------------------------------------------------------------------


@dataclass
class _Node:
    """An element and the path a person reads in a message."""

    el: Element
    path: str

    def child(self, tag: str, *, ext: bool = False) -> _Node | None:
        """Return the first child with a tag, or None."""
        found = self.el.find(_x(tag) if ext else _b(tag))
        return None if found is None else _Node(found, f"{self.path}/{'bl:' if ext else ''}{tag}")

    def children(self, tag: str, *, ext: bool = False) -> list[_Node]:
        """Return every child with a tag, paths numbered from 1 as in XPath."""
        prefix = "bl:" if ext else ""
        found = self.el.findall(_x(tag) if ext else _b(tag))
        return [_Node(el, f"{self.path}/{prefix}{tag}[{i}]") for i, el in enumerate(found, start=1)]

    def text(self) -> str:
        """Return the element's text ('' when empty)."""
        return self.el.text or ""


@dataclass
class _Reader:
    """Builds document data from BatchML, remembering which element each value came from."""

    problems: list[Problem] = field(default_factory=list)
    source: dict[tuple[int | str, ...], str] = field(default_factory=dict)

    def fail(self, path: str, message: str) -> None:
        """Record a problem."""
        self.problems.append(Problem(path, message))

    def text(
        self,
        node: _Node,
        tag: str,
        loc: tuple[int | str, ...] | None = None,
        *,
        required: bool = True,
        ext: bool = False,
    ) -> str | None:
        """Return a child's text, recording where it came from, or a problem if a required one is missing."""
        child = node.child(tag, ext=ext)
        if child is None:
            if required:
                self.fail(f"{node.path}/{tag}", f"required element {tag} is missing")
            return None
        if loc is not None:
            self.source[loc] = child.path
        return child.text()

    def attrs(self, node: _Node, loc: tuple[int | str, ...], *, owner: bool = True) -> dict[str, str]:
        """Return an extension element's attributes as field values, recording their paths.

        `owner` says whether the element stands for the whole object at `loc` (a timing, a signature), or only
        adds fields to an object a B2MML element stands for (a parameter, a phase).
        """
        if owner:
            self.source[loc] = node.path
        for name in node.el.attrib:
            self.source[(*loc, name)] = f"{node.path}/@{name}"
        return dict(node.el.attrib)

    def master_recipe(self, root: _Node) -> dict[str, Any]:
        """Read a MasterRecipe into document data."""
        ext = root.child("Recipe", ext=True)
        if ext is not None and ext.el.get("schema", SCHEMA_ID) != SCHEMA_ID:
            self.fail(
                f"{ext.path}/@schema", f"unsupported schema {ext.el.get('schema')!r}; expected {SCHEMA_ID}"
            )
        header: dict[str, Any] = {
            "recipe_code": self.text(root, "ID", ("header", "recipe_code")),
            "description": self.text(root, "Description", ("header", "description"), required=False) or "",
        }
        hnode = root.child("Header")
        if hnode is None:
            self.fail(f"{root.path}/Header", "required element Header is missing")
        else:
            header.update(self.header(hnode))
        data: dict[str, Any] = {
            "schema": SCHEMA_ID,
            "header": header,
            "formula": {"parameters": []},
            "materials": [],
        }
        formula = root.child("Formula")
        if formula is not None:
            for node in formula.children("Parameter"):
                subtypes = [s.text() for s in node.children("ParameterSubType")]
                if _MATERIAL_SUBTYPE in subtypes:
                    loc: tuple[int | str, ...] = ("materials", len(data["materials"]))
                    data["materials"].append(self.material(node, loc))
                else:
                    loc = ("formula", "parameters", len(data["formula"]["parameters"]))
                    data["formula"]["parameters"].append(self.parameter(node, loc, subtypes))
        ups = []
        for u, node in enumerate(self.elements(root, "UnitProcedure")):
            ups.append(self.unit_procedure(node, ("procedure", "unit_procedures", u)))
        if not ups:
            self.fail(root.path, "the master recipe has no RecipeElement of type UnitProcedure")
        self.source[("procedure", "unit_procedures")] = root.path
        data["procedure"] = {"unit_procedures": ups}
        return data

    def header(self, node: _Node) -> dict[str, Any]:
        """Read the Header."""
        out: dict[str, Any] = {
            "product_code": self.text(node, "ProductID", ("header", "product_code")),
            "product_name": self.text(node, "ProductName", ("header", "product_name")),
        }
        for tag, name in (("EffectiveDate", "effective_date"), ("ExpirationDate", "expiry_date")):
            raw = self.text(node, tag, ("header", name), required=False)
            if raw:
                out[name] = raw.strip()[:10]
        size_node = node.child("BatchSize")
        if size_node is None:
            self.fail(f"{node.path}/BatchSize", "required element BatchSize is missing")
            return out
        size: dict[str, Any] = {
            "value": self.text(size_node, "Nominal", ("header", "batch_size", "value")),
            "unit": self.text(size_node, "UnitOfMeasure", ("header", "batch_size", "unit")),
        }
        for tag, name in (("Min", "min"), ("Max", "max")):
            raw = self.text(size_node, tag, ("header", "batch_size", name), required=False)
            if raw is not None:
                size[name] = raw
        self.source[("header", "batch_size")] = size_node.path
        out["batch_size"] = size
        return out

    def value(
        self, node: _Node, loc: tuple[int | str, ...], value_field: str
    ) -> tuple[str | None, str | None]:
        """Read Value/ValueString and Value/UnitOfMeasure, recording both paths."""
        value = node.child("Value")
        if value is None:
            self.fail(f"{node.path}/Value", "required element Value is missing")
            return None, None
        raw = self.text(value, "ValueString", (*loc, value_field))
        unit = self.text(value, "UnitOfMeasure", (*loc, "unit"))
        return (raw.strip() if raw is not None else None), (unit if unit is not None else None)

    def scaling(self, node: _Node, ext: _Node | None, loc: tuple[int | str, ...]) -> dict[str, Any]:
        """Read Scaled, ScaleReference and the extension's reference unit."""
        scaled = (self.text(node, "Scaled", (*loc, "scaling", "rule"), required=False) or "No").strip()
        if scaled not in ("Yes", "No"):
            self.fail(f"{node.path}/Scaled", f"Scaled is {scaled!r}; expected Yes or No")
        out: dict[str, Any] = {"rule": "linear" if scaled == "Yes" else "fixed"}
        reference = self.text(
            node, "ScaleReference", (*loc, "scaling", "reference_batch_size"), required=False
        )
        if reference is not None:
            out["reference_batch_size"] = reference.strip()
        if ext is not None and "reference_unit" in ext.el.attrib:
            out["reference_unit"] = ext.el.get("reference_unit")
            self.source[(*loc, "scaling", "reference_unit")] = f"{ext.path}/@reference_unit"
        self.source[(*loc, "scaling")] = node.path
        return out

    def parameter(self, node: _Node, loc: tuple[int | str, ...], subtypes: list[str]) -> dict[str, Any]:
        """Read a formula parameter."""
        self.source[loc] = node.path
        kind = (self.text(node, "ParameterType", (*loc, "type")) or "").strip()
        if kind not in _PARAMETER_TYPES_BACK:
            self.fail(
                f"{node.path}/ParameterType",
                f"ParameterType {kind!r} is not one of {list(_PARAMETER_TYPES_BACK)}",
            )
        target, unit = self.value(node, loc, "target")
        out: dict[str, Any] = {
            "key": self.text(node, "ID", (*loc, "key")),
            "name": self.text(node, "Description", (*loc, "name")),
            "type": _PARAMETER_TYPES_BACK.get(kind, kind),
            "unit": unit,
            "target": target or None,
        }
        if subtypes:
            out["criticality"] = subtypes[0]
            self.source[(*loc, "criticality")] = f"{node.path}/ParameterSubType[1]"
        ext = node.child("Parameter", ext=True)
        if ext is not None:
            attrs = self.attrs(ext, loc, owner=False)
            attrs.pop("reference_unit", None)
            out.update(attrs)
            description = self.text(ext, "Description", (*loc, "description"), required=False, ext=True)
            if description is not None:
                out["description"] = description
        out["scaling"] = self.scaling(node, ext, loc)
        return out

    def material(self, node: _Node, loc: tuple[int | str, ...]) -> dict[str, Any]:
        """Read a bill-of-materials line."""
        self.source[loc] = node.path
        quantity, unit = self.value(node, loc, "quantity")
        out: dict[str, Any] = {
            "code": self.text(node, "ID", (*loc, "code")),
            "name": self.text(node, "Description", (*loc, "name")),
            "unit": unit,
            "quantity": quantity,
        }
        ext = node.child("Material", ext=True)
        if ext is not None:
            attrs = self.attrs(ext, loc, owner=False)
            attrs.pop("reference_unit", None)
            out.update(attrs)
        out["scaling"] = self.scaling(node, ext, loc)
        return out

    def elements(self, node: _Node, kind: str) -> list[_Node]:
        """Return the child RecipeElements of a type, refusing children of another type."""
        out = []
        for child in node.children("RecipeElement"):
            found = (self.text(child, "RecipeElementType") or "").strip()
            if found == kind:
                out.append(child)
            else:
                self.fail(f"{child.path}/RecipeElementType", f"expected a {kind}, found {found!r}")
        return out

    def equipment_class(self, node: _Node, loc: tuple[int | str, ...]) -> str | None:
        """Read the equipment class from an EquipmentRequirement's constraint."""
        for req in node.children("EquipmentRequirement"):
            for constraint in req.children("Constraint"):
                condition = constraint.child("Condition")
                if condition is None:
                    continue
                match = _EQUIPMENT_CONDITION.match(condition.text().strip())
                if match is None:
                    self.fail(condition.path, "expected a condition of the form 'EquipmentClass = <class>'")
                    continue
                self.source[(*loc, "equipment_class")] = condition.path
                return match.group("cls")
        return None

    def unit_procedure(self, node: _Node, loc: tuple[int | str, ...]) -> dict[str, Any]:
        """Read a UnitProcedure."""
        self.source[loc] = node.path
        ops = [
            self.operation(child, (*loc, "operations", o))
            for o, child in enumerate(self.elements(node, "Operation"))
        ]
        self.source[(*loc, "operations")] = node.path
        return {
            "key": self.text(node, "ID", (*loc, "key")),
            "name": self.text(node, "Description", (*loc, "name")),
            "equipment_class": self.equipment_class(node, loc),
            "operations": ops,
        }

    def operation(self, node: _Node, loc: tuple[int | str, ...]) -> dict[str, Any]:
        """Read an Operation."""
        self.source[loc] = node.path
        phases = [
            self.phase(child, (*loc, "phases", p)) for p, child in enumerate(self.elements(node, "Phase"))
        ]
        self.source[(*loc, "phases")] = node.path
        return {
            "key": self.text(node, "ID", (*loc, "key")),
            "name": self.text(node, "Description", (*loc, "name")),
            "phases": phases,
        }

    def phase(self, node: _Node, loc: tuple[int | str, ...]) -> dict[str, Any]:
        """Read a Phase with its Batchline extension."""
        self.source[loc] = node.path
        out: dict[str, Any] = {
            "key": self.text(node, "ID", (*loc, "key")),
            "name": self.text(node, "Description", (*loc, "name")),
            "equipment_class": self.equipment_class(node, loc),
            "parameters": [],
            "instructions": "",
        }
        for i, ref in enumerate(node.children("Parameter")):
            out["parameters"].append(self.text(ref, "ID", (*loc, "parameters", i)))
        for info in node.children("OtherInformation"):
            if (self.text(info, "ID") or "").strip() == _INSTRUCTIONS_ID:
                value = info.child("Value")
                text = self.text(value, "ValueString", (*loc, "instructions")) if value is not None else None
                out["instructions"] = text or ""
        ext = node.child("Phase", ext=True)
        if ext is not None:
            out.update(self.phase_extension(ext, loc))
        return out

    def phase_extension(self, ext: _Node, loc: tuple[int | str, ...]) -> dict[str, Any]:
        """Read what BatchML cannot say about a phase."""
        out: dict[str, Any] = self.attrs(ext, loc, owner=False)
        out["attachments"] = []
        for i, node in enumerate(ext.children("Attachment", ext=True)):
            self.source[(*loc, "attachments", i)] = node.path
            out["attachments"].append(node.el.get("name"))
        out["captures"] = [
            self.capture(node, (*loc, "captures", i))
            for i, node in enumerate(ext.children("Capture", ext=True))
        ]
        out["materials"] = [
            self.attrs(node, (*loc, "materials", i))
            for i, node in enumerate(ext.children("Material", ext=True))
        ]
        timing = ext.child("Timing", ext=True)
        if timing is not None:
            out["timing"] = self.attrs(timing, (*loc, "timing"))
        out["signatures"] = [
            self.attrs(node, (*loc, "signatures", i))
            for i, node in enumerate(ext.children("Signature", ext=True))
        ]
        deps = ext.child("DependsOn", ext=True)
        if deps is not None:
            self.source[(*loc, "depends_on")] = deps.path
            out["depends_on"] = []
            for i, node in enumerate(deps.children("Step", ext=True)):
                self.source[(*loc, "depends_on", i)] = node.path
                out["depends_on"].append(node.text())
        known = {_x(t) for t in ("Attachment", "Capture", "Material", "Timing", "Signature", "DependsOn")}
        for child in ext.el:
            if child.tag not in known:
                self.fail(
                    f"{ext.path}/{_local(child.tag)}", "unknown element in the Batchline phase extension"
                )
        return out

    def capture(self, node: _Node, loc: tuple[int | str, ...]) -> dict[str, Any]:
        """Read a capture."""
        out: dict[str, Any] = self.attrs(node, loc)
        limits = node.child("Limits", ext=True)
        if limits is not None:
            out["limits"] = self.attrs(limits, (*loc, "limits"))
        for tag, name in (("Option", "options"), ("Acceptable", "acceptable"), ("Accept", "accept")):
            children = node.children(tag, ext=True)
            if children:
                self.source[(*loc, name)] = node.path
                out[name] = []
                for i, child in enumerate(children):
                    self.source[(*loc, name, i)] = child.path
                    out[name].append(child.text())
        return out

    def locate(self, loc: tuple[int | str, ...]) -> str:
        """Return the element path a document location came from (its nearest recorded ancestor)."""
        for end in range(len(loc), 0, -1):
            path = self.source.get(loc[:end])
            if path is not None:
                missing = loc[end:]
                return path if not missing else f"{path} ({'.'.join(str(p) for p in missing)})"
        return "MasterRecipe"


def _local(tag: str) -> str:
    """Return a tag without its namespace."""
    return tag.rsplit("}", 1)[-1]


def _root(text: str | bytes) -> _Node:
    """Parse BatchML safely and return its MasterRecipe element."""
    try:
        root_el = SafeET.fromstring(text)
    except ParseError as exc:
        line, column = exc.position
        raise BatchMLError([Problem(f"line {line} column {column}", f"malformed XML: {exc}")]) from exc
    except DefusedXmlException as exc:
        raise BatchMLError([Problem("$", f"refused: the XML declares a DTD or entities ({exc})")]) from exc
    if root_el.tag == _b("BatchInformation"):
        recipes = root_el.findall(_b("MasterRecipe"))
        if len(recipes) != 1:
            raise BatchMLError(
                [Problem("BatchInformation", f"expected one MasterRecipe, found {len(recipes)}")]
            )
        root = _Node(recipes[0], "BatchInformation/MasterRecipe")
    elif root_el.tag == _b("MasterRecipe"):
        root = _Node(root_el, "MasterRecipe")
    else:
        raise BatchMLError(
            [
                Problem(
                    _local(root_el.tag),
                    f"expected a MasterRecipe in namespace {B2MML_NS}, found {root_el.tag}",
                )
            ]
        )
    return root


def from_batchml(text: str | bytes) -> RecipeDocument:
    """Import a BatchML MasterRecipe (or a BatchInformation holding one), naming element paths in problems."""
    root = _root(text)
    reader = _Reader()
    data = reader.master_recipe(root)
    if reader.problems:
        raise BatchMLError(reader.problems)
    try:
        return RecipeDocument.model_validate(data, strict=False)
    except ValidationError as exc:
        problems = []
        for err in exc.errors(include_url=False):
            loc = clean_loc(err["loc"], data)
            message = str(err["msg"]).removeprefix("Value error, ")
            if err["type"] == "extra_forbidden":
                message = f"unknown attribute or element {loc[-1]!r}"
            problems.append(Problem(reader.locate(loc), message))
        raise BatchMLError(problems) from exc


def batchml_locator(text: str | bytes) -> Callable[[Sequence[int | str]], str]:
    """Return a function naming the BatchML element a document location (e.g. materials[2].code) came from."""
    reader = _Reader()
    reader.master_recipe(_root(text))
    return lambda loc: reader.locate(tuple(loc))
