"""QA reviews a batch with two exceptions in real Chromium: accepts one, escalates the other to a deviation,
investigates and closes the deviation with a signature, and releases the batch."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from playwright.sync_api import Page, expect

from tests.conftest import TEST_PASSWORD
from tests.support import chromium


@pytest.fixture
def browser_page() -> Iterator[Page]:
    with chromium() as browser:
        page = browser.new_context(viewport={"width": 1280, "height": 900}).new_page()
        page.set_default_timeout(15_000)
        yield page


def _sign(form, email: str) -> None:
    user_id = form.locator("input[name=signature_user_id]")
    if user_id.count():  # the first signature after signing in asks for the user ID too (21 CFR 11.200)
        user_id.fill(email)
    form.locator("input[name=signature_password]").fill(TEST_PASSWORD)


def test_qa_dispositions_escalates_closes_the_deviation_and_releases(live_server, browser_page,
                                                                      make_review_floor) -> None:
    page = browser_page
    floor = make_review_floor()
    batch_id = floor.two_exception_batch()
    floor.rbe(batch_id)
    found = {r.type: r.id for r in floor.exception_rows(batch_id)}
    assert set(found) == {"out_of_limit", "alarm_limit"}
    qa = floor.qa

    page.goto(f"{live_server}/login")
    page.fill("input[name=email]", qa.email)
    page.fill("input[name=password]", TEST_PASSWORD)
    page.click("button[type=submit]")
    page.goto(f"{live_server}/t/{floor.tenant.ref.slug}/review/")
    batch_number = floor.batch(batch_id).batch_number
    page.locator(f"tr[data-batch='{batch_number}'] a").click()
    expect(page.locator("#readiness")).to_contain_text("Not ready for release")
    expect(page.locator("#readiness-blockers")).to_contain_text("2 exceptions not dispositioned")
    expect(page.locator(f"#exception-{found['out_of_limit']}")).to_contain_text("heater overshoot")

    # 1. accept the alarm-limit pH with a justification (one signature)
    page.check(f"#exception-{found['alarm_limit']} input[name=exception_id]")
    form = page.locator("#disposition-form")
    form.locator("input[name=decision][value=accepted]").check()
    form.locator("textarea[name=reason]").fill("pH within the proven acceptable range (PAR 6.8-7.2)")
    _sign(form, qa.email)
    form.locator("button[type=submit]").click()
    expect(page.locator(".flash.ok")).to_contain_text("Disposition signed")
    expect(page.locator(f"#exception-{found['alarm_limit']}")).to_contain_text("accepted (complete)")

    # 2. escalate the out-of-limit temperature to a new deviation
    page.check(f"#exception-{found['out_of_limit']} input[name=exception_id]")
    form = page.locator("#disposition-form")
    form.locator("input[name=decision][value=escalated]").check()
    form.locator("input[name=deviation_title]").fill("Charge temperature above limit")
    form.locator("select[name=deviation_classification]").select_option("major")
    form.locator("textarea[name=deviation_description]").fill("38.4 °C recorded during charge (limit 38 °C).")
    form.locator("textarea[name=reason]").fill("critical parameter out of limit: investigate")
    _sign(form, qa.email)
    form.locator("button[type=submit]").click()
    expect(page.locator(".flash.ok")).to_contain_text("Disposition signed")
    expect(page.locator("#readiness-blockers")).to_contain_text("needs deviation DEV-")

    # 3. investigate, plan a CAPA and close the deviation with a signature
    page.locator("#deviations a").first.click()
    expect(page.locator("#deviation-status")).to_have_text("open")
    page.fill("#investigation textarea[name=investigation]", "Logger trend shows a 2 min overshoot after the heater "
                                                              "restart.")
    page.fill("#investigation textarea[name=root_cause]", "Heater PID gain left at commissioning value.")
    page.fill("#investigation textarea[name=product_impact]", "None: within the validated excursion window.")
    page.locator("#investigation button[type=submit]").click()
    expect(page.locator(".flash.ok")).to_contain_text("Deviation updated")
    capa = page.locator("#capa-form")
    capa.locator("textarea[name=description]").fill("Re-tune the heater PID and add it to the maintenance checklist")
    capa.locator("select[name=owner_member_id]").select_option(str(floor.supervisor.member_id))
    capa.locator("input[name=due_date]").fill((datetime.now(UTC) + timedelta(days=30)).date().isoformat())
    capa.locator("button[type=submit]").click()
    expect(page.locator("#capa")).to_contain_text("Re-tune the heater PID")
    close = page.locator("#close-form")
    close.locator("textarea[name=reason]").fill("Root cause found and corrected; no product impact.")
    _sign(close, qa.email)
    close.locator("button[type=submit]").click()
    expect(page.locator("#deviation-status")).to_have_text("closed")
    expect(page.locator(".manifestation")).to_contain_text("Quinn Quality")

    # 4. release the batch with one signature
    page.locator("dd a", has_text=batch_number).click()
    expect(page.locator("#readiness")).to_contain_text("Ready for release")
    release = page.locator("#release-form")
    _sign(release, qa.email)
    release.locator("button[type=submit]").click()
    expect(page.locator(".flash.ok")).to_contain_text("Batch released")
    expect(page.locator("#batch-status")).to_have_text("released")
    expect(page.locator("#release")).to_contain_text("Audit chain head at the decision")
    assert floor.batch_status(batch_id) == "released"
    assert floor.lot_status(f"OUT-{batch_id}-{floor.tenant.ref.id}") == "released"
