"""Sign-up to usable tenant: from clicking the verification link to the onboarding page, with a real worker.

Prints bench.signup_to_tenant_s (median of several sign-ups), bench.signup_to_tenant_max_s, and
bench.signup_vs_create_tenant_ratio: the same span against a bare `create_tenant` measured in the same run
(what the job, the outbox hand-off and the progress polling add on top of building the schema).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _harness import REPO_ROOT, bench_app, median, report, timed
from rq import Worker

from app.tenancy.services import create_tenant
from tests.support_saas import last_verification_link

SAMPLES = 7


def main() -> None:
    app = bench_app("signup")
    mail = Path(tempfile.mkdtemp(prefix="bench-mail-"))
    app.config.update(MAIL_DIR=str(mail), WTF_CSRF_ENABLED=False)
    db = app.extensions["batchline.db"]
    env = {**os.environ, "DATABASE_URL": db.owner.url.render_as_string(hide_password=False),
           "REDIS_URL": app.config["REDIS_URL"], "BATCHLINE_SECRET_KEY": app.config["SECRET_KEY"]}
    # S603: this interpreter running our own CLI.
    worker = subprocess.Popen([sys.executable, "-c", "from app.cli import cli; cli()", "worker"],
                              cwd=REPO_ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        # The worker is up before anyone clicks (as in production): wait until it has registered with Redis.
        conn = app.extensions["batchline.redis"]
        deadline = time.monotonic() + 60
        while not Worker.all(connection=conn) and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(0.5)
        spans = []
        for i in range(SAMPLES):
            client = app.test_client()
            email = f"founder{i}@bench{i}.example.com"
            response = client.post("/signup", data={
                "company_name": f"Bench Bio {i}", "slug": f"bench-bio-{i}", "admin_name": "Bench Founder",
                "email": email, "password": "bench password 1234", "plan": "starter"})
            if response.status_code != 201:
                raise SystemExit(f"sign-up failed: {response.status_code} {response.get_data(as_text=True)[:300]}")
            path = re.sub(r"^https?://[^/]+", "", last_verification_link(mail, email))
            started = time.perf_counter()
            page = client.get(path).get_data(as_text=True)  # the click
            status_url = re.search(r'data-status-url="([^"]+)"', page).group(1)
            while True:
                status = client.get(status_url).get_json()
                if status["status"] == "ready":
                    break
                if status["status"] == "failed" or time.perf_counter() - started > 30:
                    raise SystemExit(f"provisioning did not finish: {status}")
                time.sleep(0.02)
            welcome = client.get(client.get(status["enter_url"]).headers["Location"])
            if welcome.status_code != 200:
                raise SystemExit(f"onboarding page answered {welcome.status_code}")
            spans.append(time.perf_counter() - started)
        with app.app_context():
            bare = [timed(lambda i=i: create_tenant(db, slug=f"bare-{i}", name=f"Bare {i}",
                                                    admin_email=f"b{i}@bare.example.com",
                                                    admin_password="bench password 1234"))
                    for i in range(SAMPLES)]
        report("signup_to_tenant_s", median(spans), "s")
        report("signup_to_tenant_max_s", max(spans), "s")
        report("signup_vs_create_tenant_ratio", median(spans) / median(bare), "x")
    finally:
        worker.terminate()
        worker.wait(10)
        db.dispose()


if __name__ == "__main__":
    main()
