"""Read-side queries of the materials area: lists for pages and the API, and genealogy traces."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Select, func, or_, select, text
from sqlalchemy.orm import Session, joinedload

from app.materials.models import Lot, LotMovement, LotStatusChange, Material

#: Deepest trace followed (a guard against a cycle created by bad data; real genealogies are far shallower).
MAX_TRACE_DEPTH = 50

# One recursive CTE per direction over the two genealogy edges held by the movements:
#   lot --consume--> batch --produce--> lot.
# The partial indexes ix_lot_movements_{consumed_by,batch_outputs,produced_by,batch_inputs} serve each join
# (index-only scans). Each edge row carries the facts of the lot it reaches, so one statement per direction
# returns the whole trace; plain rows, because building JSON per lot in the database cost more than it saved.
_FORWARD_EDGES = """
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
"""
_BACKWARD_EDGES = """
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
"""
_LOT_COLUMNS = """l.id, l.lot_number, l.status,
    coalesce(l.expiry_date < (now() AT TIME ZONE 'UTC')::date, false) AS expired, l.expiry_date,
    trim_scale(l.balance)::text AS balance, l.unit, l.supplier, l.supplier_lot, l.produced_by_batch,
    m.code AS material_code, m.name AS material_name, m.material_type"""
LOT_FIELDS = ("id", "lot_number", "status", "expired", "expiry_date", "balance", "unit", "supplier", "supplier_lot",
              "produced_by_batch", "material_code", "material_name", "material_type")


def _trace_sql(edges: str, reached: str) -> Any:
    return text(f"""
WITH RECURSIVE edges(parent_id, batch_number, child_id, depth) AS ({edges}),
e AS (SELECT parent_id, batch_number, child_id, min(depth) AS depth FROM edges
      GROUP BY parent_id, batch_number, child_id)
SELECT e.parent_id, e.batch_number, e.child_id, e.depth, {_LOT_COLUMNS}
FROM e JOIN lots l ON l.id = e.{reached} JOIN materials m ON m.id = l.material_id
ORDER BY e.depth, e.parent_id, e.batch_number, e.child_id
""")  # noqa: S608 (the fragments are constants of this module; values are bound parameters)


TRACE_FORWARD_SQL = _trace_sql(_FORWARD_EDGES, "child_id")
TRACE_BACKWARD_SQL = _trace_sql(_BACKWARD_EDGES, "parent_id")
ROOT_SQL = text(f"SELECT {_LOT_COLUMNS} FROM lots l JOIN materials m ON m.id = l.material_id "  # noqa: S608
                "WHERE l.id = :lot_id")


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


def lot_movements_query(lot_id: int) -> Select[tuple[LotMovement]]:
    """The lot's ledger, oldest first."""
    return select(LotMovement).where(LotMovement.lot_id == lot_id).order_by(LotMovement.id)


def lot_movements(session: Session, lot_id: int) -> list[LotMovement]:
    """The lot's ledger, oldest first."""
    return list(session.scalars(lot_movements_query(lot_id)))


def lot_status_history_query(lot_id: int) -> Select[tuple[LotStatusChange]]:
    """The lot's QA dispositions, oldest first."""
    return select(LotStatusChange).where(LotStatusChange.lot_id == lot_id).order_by(LotStatusChange.id)


def lot_status_history(session: Session, lot_id: int) -> list[LotStatusChange]:
    """The lot's QA dispositions, oldest first."""
    return list(session.scalars(lot_status_history_query(lot_id)))


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


def _lot(row: Any, offset: int, depth: int) -> dict[str, Any]:
    lot = dict(zip(LOT_FIELDS, row[offset:], strict=True))
    if lot["expiry_date"] is not None:
        lot["expiry_date"] = lot["expiry_date"].isoformat()
    lot["depth"] = depth
    return lot


def _walk(session: Session, sql: Any, lot_id: int, max_depth: int, *,
          reached: int) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Edges in order, and each reached lot once at its shortest depth."""
    edges, lots = [], {}
    for row in session.execute(sql, {"lot_id": lot_id, "max_depth": max_depth}):
        edges.append({"from": row[0], "batch_number": row[1], "to": row[2], "depth": row[3]})
        if row[reached] not in lots:  # rows come by depth: the first is the shortest
            lots[row[reached]] = _lot(row, 4, row[3])
    return edges, sorted(lots.values(), key=lambda n: (n["depth"], n["lot_number"]))


def trace_lot(session: Session, lot_id: int, *, max_depth: int = MAX_TRACE_DEPTH) -> Trace | None:
    """Trace a lot forward (where it went, down to finished lots) and backward (what went in, up to suppliers)."""
    root_row = session.execute(ROOT_SQL, {"lot_id": lot_id}).first()
    if root_row is None:
        return None
    root = _lot(root_row, 0, 0)
    forward_edges, forward = _walk(session, TRACE_FORWARD_SQL, lot_id, max_depth, reached=2)
    backward_edges, backward = _walk(session, TRACE_BACKWARD_SQL, lot_id, max_depth, reached=0)
    finished = [n for n in [root, *forward] if n["material_type"] == "product"]
    sources = [n for n in [root, *backward] if n["material_type"] in ("raw", "consumable")]
    suppliers = sorted({n["supplier"] for n in sources if n["supplier"]})
    return Trace(root=root, forward=forward, backward=backward, forward_edges=forward_edges,
                 backward_edges=backward_edges, finished_lots=finished, sources=sources, suppliers=suppliers)


def disposition_signatures(session: Session, changes: list[LotStatusChange]) -> dict[int, str]:
    """Manifestation line of each disposition's signature, verified against the disposition as stored."""
    from app import esign
    from app.materials.models import _lot_status_change_content

    lines = {}
    for change in changes:
        signatures = esign.signatures_of(session, record_type="lot_status_change", record_id=change.id)
        content = _lot_status_change_content(session, str(change.id))
        lines[change.id] = "; ".join(esign.manifestation_text(c.signature, valid=c.valid)
                                     for c in esign.check_signatures(session, signatures, content))
    return lines
