"""An operator executes a short recipe on a shared tablet in real Chromium (1024x768, touch): a scan, an
out-of-limit value acknowledged into an exception, a re-weigh, a second-person verification on the same tablet,
an entry kept through a Wi-Fi drop and saved once, then a second operator takes over by quick user switch."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from playwright.sync_api import Page, expect
from sqlalchemy import select

from app.batches.models import BatchAttachment, StepEntry
from tests.batches.conftest import short_recipe
from tests.conftest import TEST_PASSWORD
from tests.support import chromium


@pytest.fixture
def tablet() -> Iterator[tuple[Page, object]]:
    with chromium() as browser:
        context = browser.new_context(viewport={"width": 1024, "height": 768}, has_touch=True)
        page = context.new_page()
        page.set_default_timeout(15_000)
        yield page, context


def _capture(page: Page, key: str):
    return page.locator(f"#c-{key}")


def _save(page: Page, key: str) -> None:
    section = _capture(page, key)
    section.locator("form.entry-form button[type=submit]").first.click()
    expect(_capture(page, key).locator(".entry.current")).to_be_visible()  # saved, then the page reloaded


def _sign(page: Page, meaning: str, email: str) -> None:
    form = page.locator(f"#sign-{meaning}")
    if form.locator("input[name=signer_email]").count():  # asked after a fresh sign-in or for a second person
        form.locator("input[name=signer_email]").fill(email)
    form.locator("input[name=signature_password]").fill(TEST_PASSWORD)
    form.locator("button[type=submit]").click()
    expect(page.locator(".flash.ok")).to_contain_text("Signed:")


def test_a_shared_tablet_runs_a_short_recipe_end_to_end(live_server, tablet, make_floor) -> None:
    page, context = tablet
    floor = make_floor()
    batch_id = floor.new_batch()
    slug = floor.tenant.ref.slug
    base = f"{live_server}/t/{slug}"

    page.goto(f"{live_server}/login")
    page.fill("input[name=email]", floor.operator.email)
    page.fill("input[name=password]", TEST_PASSWORD)
    page.click("button[type=submit]")
    page.goto(f"{base}/floor/{floor.line_id}")
    page.locator("a.batch-number").click()
    expect(page.locator("h1")).to_contain_text("Line clearance")
    heights = [b["height"] for b in (x.bounding_box() for x in page.locator("main button:visible").all()) if b]
    assert heights and min(heights) >= 48  # gloved fingers
    page.click("#start-step")
    expect(page.locator("#step-status")).to_have_text("In progress")
    expect(page.locator("[data-elapsed]")).to_have_text(re.compile(r"00:00:\d\d"))

    # A confirmation whose response is lost on the way back: the server recorded it, the tablet retries with the
    # same idempotency key and is told it is already recorded (saved once).
    def lose_the_response(route) -> None:
        route.fetch()
        route.abort("connectionreset")

    page.route("**/api/v1/batches/*/steps/*/entries", lose_the_response, times=1)
    _capture(page, "room_clear").locator("input[name=value]").check()
    _capture(page, "room_clear").locator("form.entry-form button[type=submit]").click()
    expect(page.locator("#save-state")).to_contain_text("NOT SAVED")
    _save_done = _capture(page, "room_clear").locator(".entry.current")
    expect(_save_done).to_be_visible(timeout=20_000)
    # A scan (keyboard-wedge: the label, then Enter).
    scan = _capture(page, "vessel").locator("input[name=code]")
    scan.fill(f"EQ:{floor.reactor_tag}")
    scan.press("Enter")
    expect(_capture(page, "vessel").locator(".entry.current")).to_contain_text(floor.reactor_tag)
    expect(page.locator("#save-state")).to_have_text("All entries saved")

    # Performed by the operator, verified by a second person on the same tablet.
    _sign(page, "performed", floor.operator.email)
    _sign(page, "verified", floor.operator2.email)
    page.click("#complete-step")
    expect(page.locator("h1")).to_contain_text("Charge medium")
    page.click("#start-step")

    # Out of tolerance (7.7 L against 8 L ± 2 %): the server asks for an acknowledgement, nothing recorded yet.
    medium = _capture(page, "medium")
    medium.locator("input[name=code]").fill(f"LOT:{floor.lots['MED-T']}")
    medium.locator("input[name=quantity]").fill("7.7")
    medium.locator("form.entry-form button[type=submit]").click()
    expect(medium.locator(".sent-state")).to_contain_text("NOT SAVED: Medium lot")
    expect(medium.locator("[data-ack]")).to_have_attribute("open", "")
    medium.locator("textarea[name=acknowledgement]").fill("short bag, will top up")
    # The Wi-Fi drops as it is saved: the entry stays on the tablet, says so, and is sent when back online.
    context.set_offline(True)
    medium.locator("form.entry-form button[type=submit]").click()
    expect(page.locator("#save-state")).to_contain_text("NOT SAVED yet")
    context.set_offline(False)
    page.evaluate("window.dispatchEvent(new Event('online'))")
    expect(_capture(page, "medium").locator(".entry.current")).to_contain_text("7.7 L")
    expect(page.locator("#save-state")).to_have_text("All entries saved")

    # An out-of-limit value: live feedback says so while typing; saving needs a comment and raises an exception.
    temp = _capture(page, "temp")
    temp.locator("input[name=value]").fill("38.9")
    expect(temp.locator(".feedback")).to_contain_text("above the high limit 38 degC")
    expect(temp.locator(".feedback")).to_have_class(re.compile("red"))
    temp.locator("textarea[name=acknowledgement]").fill("jacket overshoot, second probe reads 37.4")
    _save(page, "temp")
    expect(page.locator("ul.exceptions")).to_contain_text("out_of_limit")

    # A re-weigh: the first attempt stays, struck through, with the reason.
    medium = _capture(page, "medium")
    medium.locator("details.correct > summary").click()
    form = medium.locator("form.correct-form")
    form.locator("input[name=code]").fill(f"LOT:{floor.lots['MED-T']}")
    form.locator("input[name=quantity]").fill("8.02")
    form.locator("select[name=action]").select_option("reweigh")
    form.locator("input[name=reason]").fill("topped up and re-weighed")
    form.locator("button[type=submit]").click()
    expect(_capture(page, "medium").locator(".entry.current")).to_contain_text("8.02 L")
    expect(_capture(page, "medium").locator(".entry.superseded del")).to_contain_text("7.7 L")

    _sign(page, "performed", floor.operator.email)
    page.click("#complete-step")
    expect(page.locator("h1")).to_contain_text(re.compile("Glucose bolus|Sample"))

    # Quick user switch: the second operator takes over the shared tablet.
    page.goto(f"{base}/batches/{batch_id}/steps/{floor.step(batch_id, 'sample').id}")
    page.click("#switch-user")
    page.fill("input[name=badge]", floor.operator2.email)
    page.fill("input[name=password]", TEST_PASSWORD)
    page.click("#switch-form button[type=submit]")
    page.wait_for_url(f"{base}/")  # the tenant's home, as the second operator
    page.goto(f"{base}/batches/{batch_id}/steps/{floor.step(batch_id, 'sample').id}")
    expect(page.locator(".topbar .who")).to_have_text(floor.operator2.name)
    page.click("#start-step")
    _capture(page, "sample_id").locator("input[name=value]").fill("S-0042")
    _save(page, "sample_id")
    _capture(page, "ph").locator("input[name=value]").fill("7.02")
    _save(page, "ph")
    _capture(page, "appearance").locator("label.choice", has_text="Clear").click()
    _save(page, "appearance")
    _sign(page, "performed", floor.operator2.email)
    page.click("#complete-step")

    with floor.tx() as s:
        rows = s.scalars(select(StepEntry).where(StepEntry.batch_id == batch_id).order_by(StepEntry.id)).all()
    by_capture = {r.capture_key: r for r in rows}
    captures = [r.capture_key for r in rows]
    assert captures.count("room_clear") == 1  # the retry after the lost response recorded nothing new
    assert captures.count("medium") == 2  # the offline entry once, then its re-weigh
    assert floor.operator.name in by_capture["temp"].actor_label and by_capture["temp"].check_state == "red"
    assert floor.operator2.name in by_capture["ph"].actor_label
    assert all(r.device_time is not None for r in rows)
    found = floor.exceptions(batch_id)
    assert ("out_of_limit", "critical", "charge") in found and ("reweigh", "minor", "charge") in found
    page.goto(f"{base}/batches/{batch_id}/record")
    expect(page.locator(".ebr")).to_contain_text("topped up and re-weighed")
    expect(page.locator(".ebr")).to_contain_text(f"Verified by {floor.operator2.name}")


def test_an_attachment_that_fails_to_upload_is_kept_in_the_page_and_saved_once(live_server, tablet,
                                                                               make_floor) -> None:
    page, context = tablet
    document = short_recipe()
    clearance = document["procedure"]["unit_procedures"][0]["operations"][0]["phases"][0]
    clearance["captures"].append({"kind": "attachment", "key": "checklist", "label": "Clearance checklist",
                                  "accept": ["application/pdf"]})
    floor = make_floor(document)
    batch_id = floor.new_batch()
    floor.start(batch_id, "clearance")
    step_id = floor.step(batch_id, "clearance").id
    step_url = f"{live_server}/t/{floor.tenant.ref.slug}/batches/{batch_id}/steps/{step_id}"
    page.goto(f"{live_server}/login")
    page.fill("input[name=email]", floor.operator.email)
    page.fill("input[name=password]", TEST_PASSWORD)
    page.click("button[type=submit]")
    page.goto(step_url)
    checklist = _capture(page, "checklist")
    pdf = b"%PDF-1.4\n% clearance checklist signed on paper\n"
    checklist.locator("input[type=file]").set_input_files(
        {"name": "checklist.pdf", "mimeType": "application/pdf", "buffer": pdf})

    # First the Wi-Fi is gone: nothing reaches the server, the file waits in the page and the banner says so.
    context.set_offline(True)
    checklist.locator("form.entry-form button[type=submit]").click()
    expect(checklist.locator(".sent-state")).to_contain_text("NOT SAVED YET")
    expect(page.locator("#save-state")).to_contain_text("1 file is held in this page")
    with floor.tx() as s:
        assert s.scalars(select(StepEntry).where(StepEntry.batch_id == batch_id)).all() == []

    # Back online, the retry reaches the server but its response is lost: the next retry (same key) is told the
    # file is already recorded.
    def lose_the_response(route) -> None:
        route.fetch()
        route.abort("connectionreset")

    page.route("**/api/v1/batches/*/steps/*/entries", lose_the_response, times=1)
    context.set_offline(False)
    page.evaluate("window.dispatchEvent(new Event('online'))")
    expect(checklist.locator(".entry.current")).to_contain_text("checklist.pdf", timeout=30_000)
    expect(page.locator("#save-state")).to_have_text("All entries saved")

    with floor.tx() as s:
        entries = s.scalars(select(StepEntry).where(StepEntry.batch_id == batch_id)).all()
        attachments = s.scalars(select(BatchAttachment).where(BatchAttachment.batch_id == batch_id)).all()
    assert [e.capture_key for e in entries] == ["checklist"]  # recorded once despite three sends
    assert len(attachments) == 1 and attachments[0].data == pdf and attachments[0].filename == "checklist.pdf"
