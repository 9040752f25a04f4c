"""Helpers shared by the test suite and the benchmarks (real servers only)."""

from __future__ import annotations

import re

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from app.core.db import role_prefix_for


def recreate_database(url: str, *, suffix: str = "") -> str:
    """Drop and create the database named in `url` (+ suffix); drop roles an earlier run left in the cluster."""
    target = make_url(url).set(drivername="postgresql+psycopg")
    dbname = (target.database or "batchline_test") + suffix
    target = target.set(database=dbname)
    admin = create_engine(target.set(database="postgres"), isolation_level="AUTOCOMMIT")
    prefix = role_prefix_for(dbname)
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)'))
        roles = conn.execute(text("SELECT rolname FROM pg_roles WHERE rolname LIKE :p"),
                             {"p": prefix + "\\_%"}).scalars().all()
        for role in roles:
            if not re.fullmatch(r"[a-z0-9_]+", role):
                raise ValueError(f"unexpected role name {role!r}")
            conn.execute(text(f'DROP ROLE "{role}"'))
        conn.execute(text(f'CREATE DATABASE "{dbname}"'))
    admin.dispose()
    return target.render_as_string(hide_password=False)
