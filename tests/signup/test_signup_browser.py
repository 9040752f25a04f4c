"""A visitor signs up in a real browser (Debian's chromium via Playwright) and reaches the onboarding flow."""

from __future__ import annotations

import re
import time

import pytest
from playwright.sync_api import expect

from tests.support import chromium, serve
from tests.support_saas import last_verification_link, run_jobs


@pytest.fixture
def mailbox(app, tmp_path, monkeypatch):
    directory = tmp_path / "mail"
    monkeypatch.setitem(app.config, "MAIL_DIR", str(directory))
    return directory


def test_sign_up_in_the_browser_lands_in_onboarding(app, mailbox) -> None:
    suffix = time.time_ns() % 10**6
    email = f"founder{suffix}@browser.example.com"
    with serve(app) as base, chromium() as browser:
        page = browser.new_page()
        page.goto(base + "/signup")
        page.fill("input[name=company_name]", f"Browser Bio {suffix}")
        # The slug is suggested from the company name and checked live.
        expect(page.locator("#slug")).to_have_value(f"browser-bio-{suffix}")
        expect(page.locator("#slug-status")).to_have_text(f"'browser-bio-{suffix}' is available.")
        page.fill("input[name=admin_name]", "Robin Founder")
        page.fill("input[name=email]", email)
        page.fill("input[name=password]", "a long enough password")
        page.click("button[type=submit]")
        expect(page.locator("#check-mail")).to_contain_text(email)

        page.goto(last_verification_link(mailbox, email))  # the click in the mail
        expect(page.locator("h1")).to_have_text("Creating your workspace")
        run_jobs()  # the provisioning job, on a real RQ worker, while the page polls its progress
        page.wait_for_url(re.compile(rf"/t/browser-bio-{suffix}/welcome$"), timeout=15_000)
        expect(page.locator("#onboarding-title")).to_have_text(f"Welcome to browser-bio-{suffix}")

        # A second visitor cannot take the same address: the live check says so before submitting.
        other = browser.new_page()
        other.goto(base + "/signup")
        other.fill("#slug", f"browser-bio-{suffix}")
        expect(other.locator("#slug-status")).to_contain_text("already taken")
