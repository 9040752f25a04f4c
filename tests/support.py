"""Helpers shared by the test suite and the benchmarks (real servers only)."""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from flask import Flask
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from werkzeug.serving import make_server

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


@contextmanager
def serve(app: Flask) -> Iterator[str]:
    """Serve the app over real HTTP on a free loopback port, in a thread; yield its base URL."""
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.port}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


#: Debian's chromium (never a Playwright download), headless, quiet on a closed network.
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]


@contextmanager
def chromium() -> Iterator[Any]:
    """Launch Debian's chromium through Playwright; yield the browser, closed on exit."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()
