"""Genealogy trace over 100,000 lots (issue: plant and materials onboarding).

Builds one tenant with 11 generations of lots (raw, 9 intermediates, product: 10 levels of batches), 9,091
lots per generation (100,001 lots, ~290,000 movements). Every batch consumes its "own" lot and one other lot of
the generation before, and produces one lot, so a trace fans out over the whole depth.

Prints bench.genealogy_trace_10_levels_ms (median of full traces, forward from raw lots and backward from
finished lots, each walking 10 levels; target < 100 ms), its p95, the lots a trace visits, and the ratio to a
single indexed lookup of a lot by number measured in the same run.
"""

from __future__ import annotations

import random
import statistics
import time

from _harness import bench_app, median, report
from sqlalchemy import select, text

from app.core.tenancy import tenant_transaction
from app.materials.models import Lot
from app.materials.queries import trace_lot
from app.tenancy.services import create_tenant

GENERATIONS = 11  # raw + 10 levels of production
PER_GENERATION = 9091
SAMPLES = 60


def _load(session) -> None:
    """Bulk-load the graph with set-based SQL (services are for people; 290k movements are not typed by hand)."""
    n = PER_GENERATION
    session.execute(text("""
        INSERT INTO materials (id, code, name, material_type, unit, storage_conditions, created_at)
        SELECT g, 'M' || g, 'Material ' || g,
               CASE WHEN g = 1 THEN 'raw' WHEN g = :gens THEN 'product' ELSE 'intermediate' END, 'kg', '', now()
        FROM generate_series(1, :gens) g"""), {"gens": GENERATIONS})
    session.execute(text("""
        INSERT INTO lots (id, lot_number, material_id, supplier, supplier_lot, received_on, quantity, unit,
                          status, balance, produced_by_batch, created_at)
        SELECT gen * :n + j + 1, 'L' || gen || '-' || j, gen + 1,
               CASE WHEN gen = 0 THEN 'Supplier ' || (j % 40) ELSE '' END, CASE WHEN gen = 0 THEN 'S' || j ELSE '' END,
               date '2026-01-01' + gen, 10, 'kg', 'released', 8,
               CASE WHEN gen = 0 THEN NULL ELSE 'B' || gen || '-' || j END, now()
        FROM generate_series(0, :gens - 1) gen, generate_series(0, :n - 1) j"""), {"n": n, "gens": GENERATIONS})
    session.execute(text("""
        INSERT INTO lot_movements (lot_id, kind, quantity, balance_after, batch_number, reason, actor_label)
        SELECT gen * :n + j + 1, CASE WHEN gen = 0 THEN 'receive' ELSE 'produce' END, 10, 10,
               CASE WHEN gen = 0 THEN NULL ELSE 'B' || gen || '-' || j END, '', 'bench'
        FROM generate_series(0, :gens - 1) gen, generate_series(0, :n - 1) j"""), {"n": n, "gens": GENERATIONS})
    # Each batch B<gen>-<j> consumes lot j and a scattered second lot of generation gen-1.
    session.execute(text("""
        INSERT INTO lot_movements (lot_id, kind, quantity, balance_after, batch_number, reason, actor_label)
        SELECT (gen - 1) * :n + src + 1, 'consume', -1, 9, 'B' || gen || '-' || j, '', 'bench'
        FROM generate_series(1, :gens - 1) gen, generate_series(0, :n - 1) j,
             LATERAL (VALUES (j), ((j * 7919 + gen * 104729) % :n)) AS s(src)"""), {"n": n, "gens": GENERATIONS})


def main() -> None:
    app = bench_app("genealogy")
    db = app.extensions["batchline.db"]
    with app.app_context():
        made = create_tenant(db, slug="genealogy", name="Genealogy bench", admin_email="bench@genealogy.example.com",
                             admin_password="bench password 123")
        started = time.perf_counter()
        with tenant_transaction(made.ref) as session:
            _load(session)
            lots = session.execute(text("SELECT count(*) FROM lots")).scalar_one()
            movements = session.execute(text("SELECT count(*) FROM lot_movements")).scalar_one()
        with db.owner.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            for table in ("lots", "lot_movements", "materials"):  # as after autovacuum: stats + visibility map
                conn.execute(text(f'VACUUM ANALYZE "{made.ref.schema}".{table}'))
        print(f"# loaded {lots} lots and {movements} movements in {time.perf_counter() - started:.1f}s", flush=True)

        rng = random.Random(5)  # noqa: S311 (reproducible sample of start lots, not a secret)
        last = (GENERATIONS - 1) * PER_GENERATION
        starts = [rng.randrange(PER_GENERATION) + 1 if i % 2 == 0 else last + rng.randrange(PER_GENERATION) + 1
                  for i in range(SAMPLES)]
        traces, lookups, visited = [], [], []
        with tenant_transaction(made.ref) as session:
            trace_lot(session, starts[0])  # warm the plan cache and buffers once, as a running server would be
            for lot_id in starts:
                t0 = time.perf_counter()
                result = trace_lot(session, lot_id).as_dict()
                traces.append((time.perf_counter() - t0) * 1000)
                levels = max(result["forward"]["levels"], result["backward"]["levels"])
                if levels != GENERATIONS - 1:
                    raise SystemExit(f"trace of lot {lot_id} walked {levels} levels, expected {GENERATIONS - 1}")
                visited.append(len(result["forward"]["lots"]) + len(result["backward"]["lots"]))
                number = f"L{rng.randrange(GENERATIONS)}-{rng.randrange(PER_GENERATION)}"
                t0 = time.perf_counter()
                session.execute(select(Lot.id, Lot.status).where(Lot.lot_number == number)).one()
                lookups.append((time.perf_counter() - t0) * 1000)
        p95 = statistics.quantiles(traces, n=20)[-1]
        report("genealogy_trace_10_levels_ms", median(traces), "ms")
        report("genealogy_trace_10_levels_p95_ms", p95, "ms")
        report("genealogy_trace_lots_visited", statistics.mean(visited), "lots")
        report("genealogy_lots_total", lots, "lots")
        report("genealogy_trace_vs_indexed_lookup_ratio", median(traces) / median(lookups), "x")
    db.dispose()


if __name__ == "__main__":
    main()
