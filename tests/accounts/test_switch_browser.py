"""Shared tablet in a real browser (Debian's chromium via Playwright): a keyboard-wedge badge scan, then the
password, hands the tablet to the next operator; the previous session is gone and the CSP holds (no inline JS)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

from playwright.sync_api import expect, sync_playwright
from werkzeug.serving import make_server

from app.accounts.sessions import _key
from app.core.jobs import redis_connection
from tests.accounts.conftest import events
from tests.conftest import TEST_PASSWORD

CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]


@contextmanager
def live_server(app) -> Iterator[str]:
    """Serve the app over real HTTP on a free loopback port, in a thread; yield its base URL."""
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.port}"
    finally:
        server.shutdown()
        server.server_close()


def test_badge_scan_switches_the_operator_on_a_shared_tablet(app, make_tenant, make_person) -> None:
    tenant = make_tenant()
    first = make_person(tenant, ["Operator"], name="First Operator")
    second = make_person(tenant, ["Operator"], name="Second Operator")
    with live_server(app) as base, sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        try:
            context = browser.new_context()
            page = context.new_page()
            csp_violations: list[str] = []
            page.on("console", lambda m: csp_violations.append(m.text) if "Content Security Policy" in m.text
                    else None)
            page.goto(f"{base}/login")
            page.fill("input[name=email]", first.email)
            page.fill("input[name=password]", TEST_PASSWORD)
            page.click("button[type=submit]")
            page.wait_for_url(f"{base}/t/{tenant.ref.slug}/")
            expect(page.locator(".who")).to_have_text("First Operator")
            first_sid = next(c["value"] for c in context.cookies() if c["name"] == "batchline_session")

            page.click("text=Switch user")
            page.wait_for_url(f"{base}/switch?tenant={tenant.ref.slug}")
            expect(page.locator("#badge")).to_be_focused()
            # The scanner "types" the code and Enter; the cursor must jump to the password, not submit.
            page.keyboard.type(second.user_code)
            page.keyboard.press("Enter")
            expect(page.locator("#password")).to_be_focused()
            assert page.url.endswith(f"/switch?tenant={tenant.ref.slug}")
            page.keyboard.type(TEST_PASSWORD)
            page.keyboard.press("Enter")
            page.wait_for_url(f"{base}/t/{tenant.ref.slug}/")
            expect(page.locator(".who")).to_have_text("Second Operator")
            assert redis_connection().get(_key(first_sid)) is None
            assert csp_violations == []
        finally:
            browser.close()
    (switched,) = events(tenant, "user.switched", second.user_id)
    assert switched.detail["previous_user_id"] == first.user_id
