"""Scale a recipe version to a batch size: the first step from master recipe to control recipe.

Each formula parameter and bill-of-materials line follows its own rule: `fixed` stays as written, `linear`
is multiplied by (batch size / its reference batch size), the sizes converted with pint so a 50 L recipe can
be scaled to 200 L or to 0.2 m³. Phase material requirements follow their material's rule; inline capture
limits never scale. The scaled document is self-consistent (its references are the new batch size), so scaling
it again starts from the new size. Values are rounded to 12 significant digits to keep conversion noise out
of the record and the hash.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from app.recipes.document import (
    LIMIT_FIELDS,
    IncompatibleUnitsError,
    RecipeDocument,
    Scaling,
    content_hash,
    convert,
    dimension_name,
    document_from_python,
    is_offset_unit,
    parse_unit,
    round_sig,
    to_data,
    units_compatible,
)


class ScalingError(ValueError):
    """A recipe that cannot be scaled to the requested size."""


@dataclass(frozen=True)
class ScaleChange:
    """One value that scaling changed."""

    path: str
    item: str
    field: str
    unit: str
    before: float
    after: float


@dataclass(frozen=True)
class ScaledRecipe:
    """A recipe scaled to a batch size, with what changed, for review before a batch starts."""

    document: RecipeDocument
    source_hash: str
    source_batch_size: float
    source_unit: str
    batch_size: float
    unit: str
    #: New batch size / reference batch size of the header.
    factor: float
    changes: tuple[ScaleChange, ...]

    def summary(self) -> list[dict[str, str]]:
        """Return display rows (item, field, before, after): the batch size first, then each scaled value."""
        rows = [
            {
                "item": "Batch size",
                "field": "batch_size",
                "before": f"{_fmt(self.source_batch_size)} {self.source_unit}",
                "after": f"{_fmt(self.batch_size)} {self.unit}",
            }
        ]
        rows.extend(
            {
                "item": c.item,
                "field": c.field,
                "before": f"{_fmt(c.before)} {c.unit}",
                "after": f"{_fmt(c.after)} {c.unit}",
            }
            for c in self.changes
        )
        return rows


def _fmt(value: float) -> str:
    """Write a number without float noise."""
    return f"{round_sig(value, 10):g}"


def _factor(batch_size: float, unit: str, scaling: Scaling, where: str) -> float:
    """Return the linear factor of one item: batch size over its reference size, in the same unit."""
    if scaling.reference_batch_size is None or scaling.reference_unit is None:
        raise ScalingError(f"{where}: linear scaling without a reference batch size")
    try:
        size = convert(batch_size, unit, scaling.reference_unit)
    except IncompatibleUnitsError as exc:
        raise ScalingError(
            f"{where}: its reference size is in {scaling.reference_unit} "
            f"({dimension_name(scaling.reference_unit)}), the batch in {unit} ({dimension_name(unit)})"
        ) from exc
    return size / scaling.reference_batch_size


def scale(doc: RecipeDocument, batch_size: float, unit: str) -> ScaledRecipe:
    """Scale a recipe to a batch size, refusing sizes in incompatible units or outside the recipe's range."""
    parse_unit(unit)
    if not batch_size > 0:
        raise ScalingError("the batch size must be greater than zero")
    ref = doc.header.batch_size
    if not units_compatible(unit, ref.unit):
        raise ScalingError(
            f"cannot scale a recipe sized in {ref.unit} ({dimension_name(ref.unit)}) "
            f"to {_fmt(batch_size)} {unit} ({dimension_name(unit)})"
        )
    in_ref_unit = convert(batch_size, unit, ref.unit)
    if ref.min is not None and in_ref_unit < ref.min * (1 - 1e-12):
        raise ScalingError(
            f"{_fmt(batch_size)} {unit} is below the recipe's minimum {_fmt(ref.min)} {ref.unit}"
        )
    if ref.max is not None and in_ref_unit > ref.max * (1 + 1e-12):
        raise ScalingError(
            f"{_fmt(batch_size)} {unit} is above the recipe's maximum {_fmt(ref.max)} {ref.unit}"
        )

    data = to_data(doc)
    changes: list[ScaleChange] = []
    new_reference = {"rule": "linear", "reference_batch_size": round_sig(batch_size), "reference_unit": unit}

    for i, param in enumerate(doc.formula.parameters):
        if param.scaling.rule != "linear":
            continue
        path = f"formula.parameters[{i}]"
        if is_offset_unit(param.unit):
            raise ScalingError(f"{path} ({param.key}): a value in {param.unit} cannot scale linearly")
        factor = _factor(batch_size, unit, param.scaling, f"{path} ({param.key})")
        target = data["formula"]["parameters"][i]
        for field in LIMIT_FIELDS:
            before = getattr(param, field)
            if before is not None:
                target[field] = round_sig(before * factor)
                if target[field] != before:
                    changes.append(
                        ScaleChange(f"{path}.{field}", param.name, field, param.unit, before, target[field])
                    )
        target["scaling"] = dict(new_reference)

    material_factor: dict[str, float] = {}
    for i, mat in enumerate(doc.materials):
        if mat.scaling.rule != "linear":
            continue
        path = f"materials[{i}]"
        factor = _factor(batch_size, unit, mat.scaling, f"{path} ({mat.code})")
        material_factor.setdefault(mat.code, factor)
        line = data["materials"][i]
        line["quantity"] = round_sig(mat.quantity * factor)
        line["scaling"] = dict(new_reference)
        if line["quantity"] != mat.quantity:
            changes.append(
                ScaleChange(
                    f"{path}.quantity", mat.name, "quantity", mat.unit, mat.quantity, line["quantity"]
                )
            )

    _scale_phase_materials(doc, data, material_factor, changes)

    size = data["header"]["batch_size"]
    size["value"] = round_sig(batch_size)
    size["unit"] = unit
    for bound in ("min", "max"):
        if size[bound] is not None:
            size[bound] = convert(size[bound], ref.unit, unit)
    scaled = document_from_python(data)
    return ScaledRecipe(
        document=scaled,
        source_hash=content_hash(doc),
        source_batch_size=ref.value,
        source_unit=ref.unit,
        batch_size=round_sig(batch_size),
        unit=unit,
        factor=round_sig(in_ref_unit / ref.value),
        changes=tuple(changes),
    )


def _scale_phase_materials(
    doc: RecipeDocument, data: dict[str, Any], material_factor: dict[str, float], changes: list[ScaleChange]
) -> None:
    """Scale each phase's material requirements with the factor of its bill-of-materials line."""
    names = {m.code: m.name for m in doc.materials}
    units = {m.code: m.unit for m in doc.materials}
    for u, up in enumerate(doc.procedure.unit_procedures):
        for o, op in enumerate(up.operations):
            for p, ph in enumerate(op.phases):
                for r, req in enumerate(ph.materials):
                    factor = material_factor.get(req.material)
                    if factor is None or req.quantity is None:
                        continue
                    node = data["procedure"]["unit_procedures"][u]["operations"][o]["phases"][p]["materials"][
                        r
                    ]
                    node["quantity"] = round_sig(req.quantity * factor)
                    if node["quantity"] != req.quantity:
                        changes.append(
                            ScaleChange(
                                f"procedure.unit_procedures[{u}].operations[{o}].phases[{p}].materials[{r}].quantity",
                                f"{names.get(req.material, req.material)} ({ph.name})",
                                "quantity",
                                req.unit or units.get(req.material, ""),
                                req.quantity,
                                node["quantity"],
                            )
                        )
