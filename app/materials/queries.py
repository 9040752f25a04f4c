"""Read-side queries of the materials area: lists for pages and the API, and genealogy traces."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from typing import Any

from sqlalchemy import Select, func, or_, select, text
from sqlalchemy.orm import Session, joinedload

from app.materials.models import Lot, LotMovement, LotStatusChange, Material

#: Deepest trace followed (a guard against a cycle created by bad data; real genealogies are far shallower).
MAX_TRACE_DEPTH = 50

# One recursive CTE per direction over the two genealogy edges held by the movements:
#   lot --consume--> batch --produce--> lot.
# The partial indexes ix_lot_movements_{consumed_by,batch_outputs,produced_by,batch_inputs} serve each join.
TRACE_FORWARD_SQL = text("""
WITH RECURSIVE edges(parent_id, batch_number, child_id, depth) AS (
    SELECT c.lot_id, c.batch_number, p.lot_id, 1
    FROM lot_movements c
    JOIN lot_movements p ON p.batch_number = c.batch_number AND p.kind = 'produce'
    WHERE c.lot_id = :lot_id AND c.kind = 'consume'
  UNION
    SELECT c.lot_id, c.batch_number, p.lot_id, e.depth + 1
    FROM edges e
    JOIN lot_movements c ON c.lot_id = e.child_id AND c.kind = 'consume'
    JOIN lot_movements p ON p.batch_number = c.batch_number AND p.kind = 'produce'
    WHERE e.depth < :max_depth
)
SELECT parent_id, batch_number, child_id, min(depth) AS depth
FROM edges GROUP BY parent_id, batch_number, child_id
""")

TRACE_BACKWARD_SQL = text("""
WITH RECURSIVE edges(parent_id, batch_number, child_id, depth) AS (
    SELECT c.lot_id, p.batch_number, p.lot_id, 1
    FROM lot_movements p
    JOIN lot_movements c ON c.batch_number = p.batch_number AND c.kind = 'consume'
    WHERE p.lot_id = :lot_id AND p.kind = 'produce'
  UNION
    SELECT c.lot_id, p.batch_number, p.lot_id, e.depth + 1
    FROM edges e
    JOIN lot_movements p ON p.lot_id = e.parent_id AND p.kind = 'produce'
    JOIN lot_movements c ON c.batch_number = p.batch_number AND c.kind = 'consume'
    WHERE e.depth < :max_depth
)
SELECT parent_id, batch_number, child_id, min(depth) AS depth
FROM edges GROUP BY parent_id, batch_number, child_id
""")


def materials_query(*, material_type: str | None = None, search: str | None = None) -> Select[tuple[Material]]:
    """Materials ordered by code, optionally filtered."""
    query = select(Material).order_by(Material.code)
    if material_type:
        query = query.where(Material.material_type == material_type)
    if search:
        like = f"%{search.strip()}%"
        query = query.where(or_(Material.code.ilike(like), Material.name.ilike(like)))
    return query


def lots_query(*, material_id: int | None = None, status: str | None = None,
               search: str | None = None, limit: int = 200) -> Select[tuple[Lot]]:
    """Lots, newest first, with their material loaded."""
    query = select(Lot).options(joinedload(Lot.material)).order_by(Lot.id.desc()).limit(limit)
    if material_id:
        query = query.where(Lot.material_id == material_id)
    if status:
        query = query.where(Lot.status == status)
    if search:
        like = f"%{search.strip()}%"
        query = query.where(or_(Lot.lot_number.ilike(like), Lot.supplier_lot.ilike(like),
                                Lot.supplier.ilike(like)))
    return query


def lot_with_material(session: Session, lot_id: int) -> Lot | None:
    """One lot with its material."""
    return session.scalar(select(Lot).options(joinedload(Lot.material)).where(Lot.id == lot_id))


def lot_by_number(session: Session, lot_number: str) -> Lot | None:
    """A lot by its (scanned) lot number."""
    return session.scalar(select(Lot).where(Lot.lot_number == lot_number))


def material_by_code(session: Session, code: str) -> Material | None:
    """A material by its code."""
    return session.scalar(select(Material).where(Material.code == code))


def lot_movements(session: Session, lot_id: int) -> list[LotMovement]:
    """The lot's ledger, oldest first."""
    return list(session.scalars(select(LotMovement).where(LotMovement.lot_id == lot_id).order_by(LotMovement.id)))


def lot_status_history(session: Session, lot_id: int) -> list[LotStatusChange]:
    """The lot's QA dispositions, oldest first."""
    return list(session.scalars(
        select(LotStatusChange).where(LotStatusChange.lot_id == lot_id).order_by(LotStatusChange.id)))


def ledger_sum(session: Session, lot_id: int) -> Any:
    """Sum of a lot's movements (must equal its balance to the last digit)."""
    return session.scalar(select(func.coalesce(func.sum(LotMovement.quantity), 0)).where(LotMovement.lot_id == lot_id))


@dataclass
class Trace:
    """A genealogy trace of one lot in both directions, with its recall impact."""

    root: dict[str, Any]
    forward: list[dict[str, Any]] = field(default_factory=list)
    backward: list[dict[str, Any]] = field(default_factory=list)
    forward_edges: list[dict[str, Any]] = field(default_factory=list)
    backward_edges: list[dict[str, Any]] = field(default_factory=list)
    finished_lots: list[dict[str, Any]] = field(default_factory=list)
    sources: list[dict[str, Any]] = field(default_factory=list)
    suppliers: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        """Plain JSON-able form."""
        return {
            "lot": self.root,
            "forward": {"lots": self.forward, "edges": self.forward_edges,
                        "levels": max((n["depth"] for n in self.forward), default=0)},
            "backward": {"lots": self.backward, "edges": self.backward_edges,
                         "levels": max((n["depth"] for n in self.backward), default=0)},
            "recall_impact": {"finished_lots": self.finished_lots,
                              "finished_lot_count": len(self.finished_lots),
                              "released_finished_lots": sum(1 for n in self.finished_lots
                                                            if n["status"] == "released" and not n["expired"])},
            "sources": {"lots": self.sources, "suppliers": self.suppliers},
        }


def _edges(session: Session, sql: Any, lot_id: int, max_depth: int) -> list[dict[str, Any]]:
    rows = session.execute(sql, {"lot_id": lot_id, "max_depth": max_depth}).all()
    return [{"from": r.parent_id, "batch_number": r.batch_number, "to": r.child_id, "depth": r.depth}
            for r in sorted(rows, key=lambda r: (r.depth, r.parent_id, r.batch_number, r.child_id))]


def _nodes(session: Session, ids: set[int], today: date) -> dict[int, dict[str, Any]]:
    if not ids:
        return {}
    rows = session.execute(
        select(Lot.id, Lot.lot_number, Lot.status, Lot.expiry_date, Lot.balance, Lot.unit, Lot.supplier,
               Lot.supplier_lot, Lot.produced_by_batch, Material.code, Material.name, Material.material_type)
        .join(Material, Material.id == Lot.material_id).where(Lot.id.in_(ids))
    ).all()
    return {r.id: {"id": r.id, "lot_number": r.lot_number, "status": r.status,
                   "expired": r.expiry_date is not None and today > r.expiry_date,
                   "expiry_date": r.expiry_date.isoformat() if r.expiry_date else None,
                   "balance": f"{r.balance.normalize():f}", "unit": r.unit, "supplier": r.supplier,
                   "supplier_lot": r.supplier_lot, "produced_by_batch": r.produced_by_batch,
                   "material_code": r.code, "material_name": r.name, "material_type": r.material_type}
            for r in rows}


def trace_lot(session: Session, lot_id: int, *, max_depth: int = MAX_TRACE_DEPTH) -> Trace | None:
    """Trace a lot forward (where it went, down to finished lots) and backward (what went in, up to suppliers)."""
    today = session.execute(text("SELECT (now() AT TIME ZONE 'UTC')::date")).scalar_one()
    forward_edges = _edges(session, TRACE_FORWARD_SQL, lot_id, max_depth)
    backward_edges = _edges(session, TRACE_BACKWARD_SQL, lot_id, max_depth)
    depth_down: dict[int, int] = {}
    for e in forward_edges:
        depth_down[e["to"]] = min(depth_down.get(e["to"], e["depth"]), e["depth"])
    depth_up: dict[int, int] = {}
    for e in backward_edges:
        depth_up[e["from"]] = min(depth_up.get(e["from"], e["depth"]), e["depth"])
    nodes = _nodes(session, {lot_id, *depth_down, *depth_up}, today)
    if lot_id not in nodes:
        return None
    forward = sorted(({**nodes[i], "depth": d} for i, d in depth_down.items()),
                     key=lambda n: (n["depth"], n["lot_number"]))
    backward = sorted(({**nodes[i], "depth": d} for i, d in depth_up.items()),
                      key=lambda n: (n["depth"], n["lot_number"]))
    root = {**nodes[lot_id], "depth": 0}
    finished = [n for n in ([root] if root["material_type"] == "product" else []) + forward
                if n["material_type"] == "product"]
    sources = [n for n in backward if n["material_type"] in ("raw", "consumable")]
    if root["material_type"] in ("raw", "consumable"):
        sources.insert(0, root)
    suppliers = sorted({n["supplier"] for n in sources if n["supplier"]})
    return Trace(root=root, forward=forward, backward=backward, forward_edges=forward_edges,
                 backward_edges=backward_edges, finished_lots=finished, sources=sources, suppliers=suppliers)
