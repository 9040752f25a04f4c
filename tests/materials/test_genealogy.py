"""Genealogy: forward and backward traces over a generated multi-level graph are exact."""

from __future__ import annotations

import random
from collections import defaultdict

from app.core.tenancy import tenant_transaction
from app.materials.queries import trace_lot
from app.materials.services import change_lot_status, consume_lot, produce_lot
from tests.factories import admin_actor, credentials, make_lot, make_material

LEVELS = 5  # raw -> 3 intermediate levels -> product


def _build(session, rng: random.Random):
    """Lots per level; every batch consumes 1-3 lots of the level below (some lots feed several batches)."""
    raw = make_material(session, material_type="raw")
    mids = [make_material(session, material_type="intermediate") for _ in range(LEVELS - 2)]
    product = make_material(session, material_type="product")
    levels = [[make_lot(session, raw, "100", supplier=f"Supplier {i % 3}") for i in range(8)]]
    consumed_by: dict[int, set[str]] = defaultdict(set)  # lot id -> batches
    produced: dict[str, list[int]] = defaultdict(list)  # batch -> lot ids
    for depth, material in enumerate([*mids, product], start=1):
        level = []
        for b in range(6):
            batch = f"B{depth}-{b}"
            for parent in rng.sample(levels[-1], rng.randint(1, 3)):
                consume_lot(session, lot_id=parent.id, quantity="1", batch_number=batch)
                consumed_by[parent.id].add(batch)
            for _ in range(rng.randint(1, 2)):  # a batch may split its output into two lots
                lot = produce_lot(
                    session,
                    material_id=material.id,
                    lot_number=f"P{depth}-{b}-{len(produced[batch])}",
                    quantity="50",
                    batch_number=batch,
                )
                change_lot_status(
                    session,
                    lot_id=lot.id,
                    to_status="released",
                    reason="batch released",
                    credentials=credentials(session),
                )
                produced[batch].append(lot.id)
                level.append(lot)
        levels.append(level)
    return levels, consumed_by, produced


def _expected(start: int, consumed_by, produced) -> tuple[dict[int, int], dict[int, int]]:
    """Breadth-first walks in Python: {lot id: shortest depth} forward and backward."""
    inputs: dict[str, set[int]] = defaultdict(set)
    for lot_id, batches in consumed_by.items():
        for batch in batches:
            inputs[batch].add(lot_id)
    made_by = {lot_id: batch for batch, lots in produced.items() for lot_id in lots}

    def walk(step) -> dict[int, int]:
        seen: dict[int, int] = {}
        frontier, depth = {start}, 0
        while frontier:
            depth += 1
            frontier = {n for lot in frontier for n in step(lot)} - set(seen) - {start}
            seen.update({n: depth for n in frontier})
        return seen

    forward = walk(lambda lot: {c for b in consumed_by.get(lot, ()) for c in produced[b]})
    backward = walk(lambda lot: inputs[made_by[lot]] if lot in made_by else set())
    return forward, backward


def test_forward_and_backward_traces_match_an_independent_walk(make_tenant) -> None:
    tenant = make_tenant()
    rng = random.Random(20261125)  # noqa: S311 (a reproducible test graph, not a secret)
    with tenant_transaction(tenant.ref, actor=admin_actor(tenant)) as session:
        levels, consumed_by, produced = _build(session, rng)
    with tenant_transaction(tenant.ref) as session:
        checked = 0
        for level in levels:
            for lot in level:
                forward, backward = _expected(lot.id, consumed_by, produced)
                trace = trace_lot(session, lot.id).as_dict()
                assert {n["id"]: n["depth"] for n in trace["forward"]["lots"]} == forward, lot.lot_number
                assert {n["id"]: n["depth"] for n in trace["backward"]["lots"]} == backward, lot.lot_number
                checked += 1
        assert checked == sum(len(level) for level in levels)


def test_recall_impact_lists_every_finished_lot_and_backward_trace_reaches_suppliers(make_tenant) -> None:
    tenant = make_tenant()
    rng = random.Random(7)  # noqa: S311 (a reproducible test graph, not a secret)
    with tenant_transaction(tenant.ref, actor=admin_actor(tenant)) as session:
        levels, consumed_by, produced = _build(session, rng)
        fed = next(lot for lot in levels[0] if consumed_by.get(lot.id))
        product = levels[-1][0]
        change_lot_status(
            session,
            lot_id=product.id,
            to_status="quarantine",
            reason="hold pending investigation",
            credentials=credentials(session),
        )
    forward, _ = _expected(fed.id, consumed_by, produced)
    finished_ids = {lot.id for lot in levels[-1]} & set(forward)
    _, backward = _expected(product.id, consumed_by, produced)
    raw_ids = {lot.id for lot in levels[0]} & set(backward)
    with tenant_transaction(tenant.ref) as session:
        impact = trace_lot(session, fed.id).as_dict()["recall_impact"]
        assert {n["id"] for n in impact["finished_lots"]} == finished_ids
        assert impact["finished_lot_count"] == len(finished_ids) > 0
        statuses = {n["id"]: n["status"] for n in impact["finished_lots"]}
        assert all(s == ("quarantine" if i == product.id else "released") for i, s in statuses.items())
        sources = trace_lot(session, product.id).as_dict()["sources"]
        assert {n["id"] for n in sources["lots"]} == raw_ids
        assert set(sources["suppliers"]) == {n["supplier"] for n in sources["lots"]}
        edges = trace_lot(session, product.id).as_dict()["backward"]["edges"]
        assert all(e["batch_number"].startswith("B") for e in edges)
