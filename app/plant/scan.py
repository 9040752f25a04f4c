"""What a scanned label (or a typed code) refers to.

Labels carry a prefixed code: `EQ:<tag>`, `LOT:<lot number>` (a container label adds `#<n>/<of>`),
`SEN:<tag>`, `MAT:<code>`, `LINE:<code>`. A bare code typed by hand is looked up as an equipment tag, lot
number, sensor tag, material code and line code, in that order.
"""

from __future__ import annotations

import re

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.materials.models import Lot, Material
from app.plant.models import Equipment, Line, Sensor

PREFIXES = {"EQ": "equipment", "LOT": "lot", "SEN": "sensor", "MAT": "material", "LINE": "line"}
_MODELS = {"equipment": (Equipment, Equipment.tag), "lot": (Lot, Lot.lot_number), "sensor": (Sensor, Sensor.tag),
           "material": (Material, Material.code), "line": (Line, Line.code)}
_CONTAINER = re.compile(r"^(?P<lot>.+?)#(?P<n>\d+)/(?P<of>\d+)$")


def label_code(kind: str, code: str, *, container: tuple[int, int] | None = None) -> str:
    """The text printed in a label's barcode."""
    prefix = next(p for p, k in PREFIXES.items() if k == kind)
    suffix = f"#{container[0]}/{container[1]}" if container else ""
    return f"{prefix}:{code}{suffix}"


def resolve_scan(session: Session, code: str) -> tuple[str, int] | None:
    """Return (kind, id) of the record a scanned or typed code names, or None."""
    code = (code or "").strip()
    if not code or len(code) > 200:
        return None
    prefix, sep, rest = code.partition(":")
    if sep and prefix.upper() in PREFIXES:
        kind = PREFIXES[prefix.upper()]
        if kind == "lot" and (match := _CONTAINER.match(rest)):
            rest = match.group("lot")
        model, column = _MODELS[kind]
        found = session.scalar(select(model.id).where(column == rest))
        return (kind, found) if found is not None else None
    for kind in ("equipment", "lot", "sensor", "material", "line"):
        model, column = _MODELS[kind]
        found = session.scalar(select(model.id).where(column == code))
        if found is not None:
            return kind, found
    return None
