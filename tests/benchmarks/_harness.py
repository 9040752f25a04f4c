"""Shared set-up of the benchmarks: a fresh database on the configured (or embedded) server, and output."""

from __future__ import annotations

import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO_ROOT))

from flask import Flask  # noqa: E402  (after the path set-up above)

from app.core.embedded import embedded_postgres_url, embedded_redis_url  # noqa: E402
from app.factory import create_app  # noqa: E402
from app.tenancy.schema import upgrade_public  # noqa: E402
from tests.support import recreate_database  # noqa: E402


def server_url() -> str:
    """The benchmarks' PostgreSQL server (BENCH_DATABASE_URL, TEST_DATABASE_URL, or the embedded one, started if
    need be), as a URL of its `postgres` database or of the one the variable names."""
    return os.environ.get("BENCH_DATABASE_URL") or os.environ.get("TEST_DATABASE_URL") or embedded_postgres_url(
        REPO_ROOT / "instance" / "test-pg", database="postgres")


def drop_bench_databases() -> list[str]:
    """Drop the benchmarks' databases (every `batchline_bench_*`, or BENCH_DATABASE_NAME); return their names.

    `run_all.py` calls this between benchmarks: what one benchmark loaded (a million readings, a hundred thousand
    lots) would otherwise be vacuumed and analysed by autovacuum during the next one, on the same two cores.
    """
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    admin = create_engine(make_url(server_url()).set(drivername="postgresql+psycopg", database="postgres"),
                          isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            # With BENCH_DATABASE_NAME every benchmark uses that one database; else each its own default name.
            pattern = os.environ.get("BENCH_DATABASE_NAME") or r"batchline\_bench\_%"
            names = conn.execute(text("SELECT datname FROM pg_database WHERE datname LIKE :p"), {"p": pattern})\
                .scalars().all()
            for name in names:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        admin.dispose()
    return list(names)


def bench_app(name: str) -> Flask:
    """An app on a fresh database `batchline_bench_<name>` (BENCH_DATABASE_URL / TEST_DATABASE_URL server).

    BENCH_DATABASE_NAME names the database instead (several people benchmarking on one server each get theirs).
    """
    base = server_url()
    from sqlalchemy.engine import make_url

    url = recreate_database(make_url(base).set(
        database=os.environ.get("BENCH_DATABASE_NAME") or f"batchline_bench_{name}").render_as_string(False))
    redis_url = os.environ.get("BENCH_REDIS_URL") or os.environ.get("TEST_REDIS_URL") or embedded_redis_url(
        REPO_ROOT / "instance" / "test-redis")
    # The database is new, so its outbox ids start again at 1: jobs a previous run left in Redis under the same
    # deterministic ids (t1-ob1, ...) would make the new ones look already queued. Start Redis clean too.
    import redis

    redis.Redis.from_url(redis_url).flushdb()
    app = create_app({"DATABASE_URL": url, "REDIS_URL": redis_url, "SECRET_KEY": "bench-only-secret-key-0123"})
    db = app.extensions["batchline.db"]
    with db.owner.connect() as conn, conn.begin():
        upgrade_public(conn, db.roles)
    return app


def report(name: str, value: float, unit: str) -> None:
    """Print one figure in the `bench.NAME: VALUE UNIT` format `make bench` promises."""
    print(f"bench.{name}: {value:.4g} {unit}", flush=True)


def timed(fn: Callable[[], Any]) -> float:
    """Wall-clock seconds of one call."""
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def median(values: list[float]) -> float:
    """Median of the samples."""
    return statistics.median(values)
