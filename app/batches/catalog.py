"""The tables the batch engine ships in `tenants/batches/`: exception severities and equipment class matching."""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Any

CATALOG_DIR = Path(__file__).resolve().parents[2] / "tenants" / "batches"


@lru_cache(maxsize=1)
def _severity_table() -> dict[str, Any]:
    data = json.loads((CATALOG_DIR / "exception_severity.json").read_text())
    return dict(data["severity"])


@lru_cache(maxsize=1)
def _class_table() -> dict[str, str]:
    data = json.loads((CATALOG_DIR / "equipment_classes.json").read_text())
    return {str(k).upper(): str(v) for k, v in data["classes"].items()}


def exception_types() -> list[str]:
    """Every exception type the engine may raise."""
    return sorted(_severity_table())


def severity_of(exception_type: str, criticality: str | None = None) -> str:
    """The default severity of an exception type (out_of_limit: by the crossed parameter's criticality)."""
    entry = _severity_table().get(exception_type)
    if entry is None:
        raise KeyError(f"unknown batch exception type {exception_type!r}")
    if isinstance(entry, dict):
        return str(entry.get(criticality or "non_key", entry.get("non_key", "minor")))
    return str(entry)


def plant_class_for(recipe_class: str) -> str | None:
    """The plant equipment class that fills a recipe's equipment class, or None when none is known."""
    from app.plant.models import EQUIPMENT_CLASSES

    name = (recipe_class or "").strip()
    if name.lower() in EQUIPMENT_CLASSES:
        return name.lower()
    return _class_table().get(name.upper())


def class_matches(recipe_class: str, equipment_class: str) -> bool:
    """Whether an item of plant class `equipment_class` may fill the recipe's `recipe_class`."""
    return plant_class_for(recipe_class) == equipment_class
