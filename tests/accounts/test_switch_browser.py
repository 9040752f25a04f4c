"""Shared tablet in a real browser (Debian's chromium via Playwright): a keyboard-wedge badge scan, then the
password, hands the tablet to the next operator; the previous session is gone and the CSP holds (no inline JS)."""

from __future__ import annotations

from playwright.sync_api import expect

from app.accounts.sessions import _key
from app.core.jobs import redis_connection
from tests.accounts.conftest import events
from tests.conftest import TEST_PASSWORD
from tests.support import chromium, serve


def test_badge_scan_switches_the_operator_on_a_shared_tablet(app, make_tenant, make_person) -> None:
    tenant = make_tenant()
    first = make_person(tenant, ["Operator"], name="First Operator")
    second = make_person(tenant, ["Operator"], name="Second Operator")
    with serve(app) as base, chromium() as browser:
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
    (switched,) = events(tenant, "user.switched", second.user_id)
    assert switched.detail["previous_user_id"] == first.user_id
