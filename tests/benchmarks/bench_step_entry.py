"""Step-entry submission latency with 50 concurrent simulated tablets against gunicorn on this machine.

Each tablet is a real HTTP client with its own signed-in session (one operator per tablet), working its own
batch. An operator types a value (the live check is called, as the tablet script does), presses Save (the
measured submission: POST of an entry with its idempotency key, through the full engine, audit trail and
commit), then reads the next value off an instrument (a think time of 0.5-1.5 s). In the same run every tablet
also calls a trivial endpoint (`/healthz`), so the entry latency is compared with the server's floor on the same
machine and load. Nothing is mocked: gunicorn with the production settings, PostgreSQL, Redis.

Prints bench.step_entry_p50_ms, bench.step_entry_p99_ms, bench.step_entry_errors, bench.trivial_p99_ms and
bench.step_entry_vs_trivial_p99_ratio. Target: p99 under 150 ms and no errors.

Wall-clock latency on a shared two-core machine says as much about the neighbours as about the code, so the same
requests are also timed inside this process first (Flask test client, no server, one request at a time), as CPU
time: bench.step_entry_cpu_ms and bench.trivial_cpu_ms (medians) and their ratio.
"""

from __future__ import annotations

import http.client
import json
import os
import random
import re
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.parse
import uuid
from datetime import UTC, datetime

import requests
from _harness import REPO_ROOT, bench_app, report
from sqlalchemy import text

from app.accounts.models import Membership, User
from app.accounts.passwords import hash_password
from app.batches import execution, services
from app.core.tenancy import Actor, control_session, tenant_transaction
from app.tenancy.services import create_tenant
from tests.batches.conftest import make_recipe_version
from tests.factories import make_equipment, make_line

TABLETS = 50
ENTRIES_PER_TABLET = 24
#: Tablets whose entries are timed in-process (CPU time), before the server starts.
IN_PROCESS_TABLETS = 4
PASSWORD = "bench password 1234 tablet"

#: One long step with many measurements: a tablet records value after value (no start/complete in between).
RECIPE = {
    "schema": "batchline.recipe/1",
    "header": {"recipe_code": "BENCH", "product_code": "BENCH-P", "product_name": "Bench product",
               "batch_size": {"value": 10, "unit": "L"}},
    "formula": {"parameters": [
        {"key": "temp", "name": "Temperature", "type": "process_parameter", "unit": "degC", "target": 37.0,
         "low": 36.0, "high": 38.0, "alarm_low": 36.5, "alarm_high": 37.5, "criticality": "critical"}]},
    "procedure": {"unit_procedures": [{"key": "run", "name": "Run", "equipment_class": "bioreactor",
                                       "operations": [{"key": "op", "name": "Op", "phases": [
                                           {"key": "hourly", "name": "Hourly readings",
                                            "instructions": "Read the temperature every hour.",
                                            "captures": [{"kind": "number", "key": f"t{i:02d}",
                                                          "label": f"Temperature {i}", "parameter": "temp"}
                                                         for i in range(ENTRIES_PER_TABLET)]}]}]}]},
}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _setup(app, count: int) -> tuple[str, list[dict]]:
    db = app.extensions["batchline.db"]
    made = create_tenant(db, slug="bench-floor", name="Bench floor", admin_email="admin@bench-floor.example.com",
                         admin_password=PASSWORD)
    ref = made.ref
    hashed = hash_password(PASSWORD)
    tablets = []
    with control_session(db=db) as cp:
        people = []
        for i in range(count + 1):
            user = User(email=f"op{i}@bench-floor.example.com", name=f"Operator {i}", password_hash=hashed)
            cp.add(user)
            cp.flush()
            member = Membership(user_id=user.id, tenant_id=ref.id,
                                roles=["Supervisor"] if i == count else ["Operator"])
            cp.add(member)
            cp.flush()
            people.append((user.id, member.id, user.email))
    sup_user, sup_member, sup_email = people[-1]
    supervisor = Actor(member_id=sup_member, label=f"Supervisor <{sup_email}>", request_id="bench")
    with tenant_transaction(ref, db=db, actor=supervisor) as s:
        line = make_line(s)
        version = make_recipe_version(s, RECIPE)
        reactors = [make_equipment(s, line, tag=f"BR-B{i:02d}", capacity="20").id for i in range(count)]
    for i in range(count):
        with tenant_transaction(ref, db=db, actor=supervisor) as s:
            batch = services.plan_batch(s, master_recipe_id=version.master_recipe_id, batch_size="10", unit="L",
                                        line_id=line.id, planned_start=datetime.now(UTC),
                                        equipment={"bioreactor": reactors[i]})
            control = services.dispatch_batch(s, batch_id=batch.id, password=PASSWORD, user_id=sup_user,
                                              actor=supervisor)
            step = s.execute(text("SELECT id FROM step_executions WHERE batch_id = :b"),
                             {"b": batch.id}).scalar_one()
            _user_id, member_id, email = people[i]
            operator = Actor(member_id=member_id, label=f"Operator {i} <{email}>", request_id="bench")
            s.info["actor"] = operator
            execution.start_step(s, batch_id=batch.id, step_id=step)
            tablets.append({"email": email, "batch": batch.id, "step": step, "hash": control.content_hash})
    return ref.slug, tablets


def _percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(pct / 100 * (len(ordered) - 1)))]


class _Client:
    """A tablet's HTTP/1.1 keep-alive connection with its session cookie (light: 50 of these share two cores
    with the server under test)."""

    def __init__(self, port: int) -> None:
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        self.cookies: dict[str, str] = {}

    def request(self, method: str, path: str, body: bytes | None = None,
                headers: dict[str, str] | None = None) -> tuple[int, bytes]:
        headers = dict(headers or {})
        if self.cookies:
            headers["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        try:
            self.conn.request(method, path, body=body, headers=headers)
            response = self.conn.getresponse()
        except (http.client.HTTPException, OSError):
            self.conn.close()  # a keep-alive connection the server closed: reconnect once
            self.conn.request(method, path, body=body, headers=headers)
            response = self.conn.getresponse()
        data = response.read()
        for header, value in response.getheaders():
            if header.lower() == "set-cookie":
                name, _, rest = value.partition("=")
                self.cookies[name.strip()] = rest.split(";", 1)[0]
        return response.status, data


class _InProcessClient:
    """The same interface on the Flask test client: the request runs in this process, no server in between."""

    def __init__(self, app) -> None:
        self.client = app.test_client()

    def request(self, method: str, path: str, body: bytes | None = None,
                headers: dict[str, str] | None = None) -> tuple[int, bytes]:
        response = self.client.open(path, method=method, data=body, headers=headers or {})
        return response.status_code, response.get_data()


def _open_step(http_: _Client | _InProcessClient, slug: str, tablet: dict) -> tuple[dict[str, str], str]:
    """Sign the tablet's operator in and open its step page: the headers the tablet script sends, the step's API."""
    _, login = http_.request("GET", "/login")
    token = re.search(r'name="csrf_token" value="([^"]+)"', login.decode()).group(1)
    form = urllib.parse.urlencode({"email": tablet["email"], "password": PASSWORD, "csrf_token": token}).encode()
    http_.request("POST", "/login", form, {"Content-Type": "application/x-www-form-urlencoded"})
    _, page = http_.request("GET", f"/t/{slug}/batches/{tablet['batch']}/steps/{tablet['step']}")
    csrf = re.search(r'data-csrf="([^"]+)"', page.decode()).group(1)
    headers = {"X-CSRFToken": csrf, "Accept": "application/json", "Content-Type": "application/json"}
    return headers, f"/t/{slug}/api/v1/batches/{tablet['batch']}/steps/{tablet['step']}"


def _entry_body(tablet: dict, capture: str, value: str) -> bytes:
    return json.dumps({"capture": capture, "value": value, "unit": "degC", "idempotency_key": uuid.uuid4().hex,
                       "control_recipe_hash": tablet["hash"], "device_time": datetime.now(UTC).isoformat(),
                       "device_sent_at": datetime.now(UTC).isoformat()}).encode()


def _in_process_cpu(app, slug: str, tablets: list[dict]) -> tuple[float, float]:
    """Median CPU milliseconds of one entry POST and of one /healthz, each run in this process, one at a time."""
    entry_cpu: list[float] = []
    trivial_cpu: list[float] = []
    for tablet in tablets:
        http_ = _InProcessClient(app)
        headers, api = _open_step(http_, slug, tablet)
        for i in range(ENTRIES_PER_TABLET):
            capture, value = f"t{i:02d}", f"{37 + (i % 7 - 3) / 10:.2f}"
            http_.request("POST", f"{api}/check", json.dumps({"capture": capture, "value": value}).encode(), headers)
            body = _entry_body(tablet, capture, value)
            began = time.process_time()
            status, data = http_.request("POST", f"{api}/entries", body, headers)
            entry_cpu.append((time.process_time() - began) * 1000)
            if status != 201:
                raise RuntimeError(f"in-process entry answered {status}: {data[:200]!r}")
            began = time.process_time()
            status, _ = http_.request("GET", "/healthz")
            trivial_cpu.append((time.process_time() - began) * 1000)
    return statistics.median(entry_cpu), statistics.median(trivial_cpu)


def _tablet(port: int, slug: str, tablet: dict, entry_ms: list[float], trivial_ms: list[float],
            errors: list[str], start: threading.Barrier) -> None:
    http_ = _Client(port)
    headers, api = _open_step(http_, slug, tablet)
    rng = random.Random(tablet["batch"])  # noqa: S311 (think times, not secrets)
    start.wait()
    for i in range(ENTRIES_PER_TABLET):
        time.sleep(rng.uniform(0.5, 1.5))
        value = f"{rng.uniform(36.6, 37.4):.2f}"
        capture = f"t{i:02d}"
        http_.request("POST", f"{api}/check", json.dumps({"capture": capture, "value": value}).encode(), headers)
        body = _entry_body(tablet, capture, value)
        began = time.perf_counter()
        try:
            status, data = http_.request("POST", f"{api}/entries", body, headers)
            took = (time.perf_counter() - began) * 1000
            if status != 201:
                errors.append(f"{status} {data[:200]!r}")
            else:
                entry_ms.append(took)
        except (http.client.HTTPException, OSError) as exc:
            errors.append(str(exc))
        began = time.perf_counter()
        try:
            status, _ = http_.request("GET", "/healthz")
            if status == 200:
                trivial_ms.append((time.perf_counter() - began) * 1000)
            else:
                errors.append(f"healthz answered {status}")
        except (http.client.HTTPException, OSError) as exc:
            errors.append(f"healthz: {exc}")


def main() -> None:
    app = bench_app("step_entry")
    with app.app_context():
        slug, tablets = _setup(app, TABLETS + IN_PROCESS_TABLETS)
    tablets, timed_in_process = tablets[:TABLETS], tablets[TABLETS:]
    entry_cpu, trivial_cpu = _in_process_cpu(app, slug, timed_in_process)
    db = app.extensions["batchline.db"]
    port = _free_port()
    env = {**os.environ, "DATABASE_URL": db.owner.url.render_as_string(hide_password=False),
           "REDIS_URL": app.config["REDIS_URL"], "BATCHLINE_SECRET_KEY": app.config["SECRET_KEY"],
           "BATCHLINE_RATELIMIT_ENABLED": "false", "BATCHLINE_BIND": f"127.0.0.1:{port}"}
    db.dispose()
    log = open(os.devnull, "w")  # noqa: SIM115 (lives as long as the server)
    # S603: this virtualenv's own gunicorn with the repository's production settings.
    server = subprocess.Popen([str(os.path.join(os.path.dirname(sys.executable), "gunicorn")), "-c",
                               str(REPO_ROOT / "infra" / "gunicorn.conf.py"), "--access-logfile", "/dev/null",
                               "app.wsgi:app"], cwd=REPO_ROOT, env=env, stdout=log, stderr=log)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if requests.get(f"{base}/healthz", timeout=2).status_code == 200:
                    break
            except requests.RequestException:
                time.sleep(0.2)
        entry_ms: list[float] = []
        trivial_ms: list[float] = []
        errors: list[str] = []
        barrier = threading.Barrier(TABLETS)
        threads = [threading.Thread(target=_tablet, args=(port, slug, t, entry_ms, trivial_ms, errors, barrier))
                   for t in tablets]
        load_before = os.getloadavg()[0]
        started = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        wall = time.perf_counter() - started
        load_after = os.getloadavg()[0]
    finally:
        server.terminate()
        server.wait(30)
        log.close()
    if errors:
        print(f"# first errors: {errors[:3]}", file=sys.stderr)
    print(f"# {len(entry_ms)} entries from {TABLETS} tablets in {wall:.1f}s "
          f"({len(entry_ms) / wall:.1f} entries/s, with as many live checks and health calls); "
          f"1-min load average {load_before:.1f} before, {load_after:.1f} after, on {os.cpu_count()} CPUs")
    p99_entry, p99_trivial = _percentile(entry_ms, 99), _percentile(trivial_ms, 99)
    report("step_entry_p50_ms", statistics.median(entry_ms), "ms")
    report("step_entry_p99_ms", p99_entry, "ms")
    report("step_entry_errors", len(errors), "count")
    report("trivial_p99_ms", p99_trivial, "ms")
    report("step_entry_vs_trivial_p99_ratio", p99_entry / p99_trivial, "x")
    report("step_entry_cpu_ms", entry_cpu, "ms")
    report("trivial_cpu_ms", trivial_cpu, "ms")
    report("step_entry_vs_trivial_cpu_ratio", entry_cpu / trivial_cpu, "x")


if __name__ == "__main__":
    main()
