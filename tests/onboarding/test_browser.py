"""The onboarding flow walked in headless Chromium at tablet size, from an empty tenant to a line with
equipment and sensors (a real server on loopback, Debian's chromium driven by Playwright)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from playwright.sync_api import Page, expect

from tests.conftest import TEST_PASSWORD
from tests.support import chromium


@pytest.fixture
def tablet() -> Iterator[Page]:
    with chromium() as browser:
        page = browser.new_page(viewport={"width": 1024, "height": 768}, has_touch=True)
        page.set_default_timeout(15_000)
        yield page


def _button_heights(page: Page) -> list[float]:
    return [box["height"] for box in (b.bounding_box() for b in page.locator("main button:visible").all()) if box]


def test_onboarding_from_an_empty_tenant_to_a_line_with_equipment_and_sensors(live_server, tablet, make_tenant,
                                                                              tmp_path) -> None:
    tenant = make_tenant()
    page = tablet
    page.goto(f"{live_server}/login")
    page.fill("input[name=email]", tenant.admin_email)
    page.fill("input[name=password]", TEST_PASSWORD)
    page.click("button[type=submit]")
    expect(page.locator("[aria-label='Onboarding checklist'] li.todo")).to_have_count(6)

    page.click("text=Continue onboarding")
    expect(page).to_have_url(f"{live_server}/t/{tenant.ref.slug}/onboarding/site")
    assert min(_button_heights(page)) >= 48  # gloved fingers
    site_form = page.locator("form[aria-label='Add a site']")
    site_form.locator("input[name=code]").fill("ZH1")
    site_form.locator("input[name=name]").fill("Zurich GMP suite")
    site_form.locator("input[name=timezone]").fill("Europe/Zurich")
    site_form.locator("input[value='equipment.calibration']").check()
    site_form.locator("textarea[name=sop_references]").fill("SOP-EQ-001 Equipment cleaning")
    site_form.locator("button[type=submit]").click()

    expect(page.locator("h2")).to_have_text("Line")
    line_form = page.locator("form[aria-label='Add a line']")
    line_form.locator("input[name=code]").fill("USP1")
    line_form.locator("input[name=name]").fill("Upstream line 1")
    line_form.locator("button[type=submit]").click()

    expect(page.locator("h2")).to_have_text("Equipment")
    for tag, name, klass, status in [("BR-101", "Bioreactor 50 L", "bioreactor", "clean"),
                                     ("BAL-01", "Balance 6 kg", "balance", "dirty")]:
        form = page.locator("form[aria-label='Add equipment']")
        form.locator("input[name=tag]").fill(tag)
        form.locator("input[name=name]").fill(name)
        form.locator("select[name=equipment_class]").select_option(klass)
        form.locator("select[name=status]").select_option(status)
        form.locator("button[type=submit]").click()
        expect(page.locator("[aria-label='Already added']")).to_contain_text(tag)
    page.click("text=Continue to the next step")

    expect(page.locator("h2")).to_have_text("Sensors")
    form = page.locator("form[aria-label='Add a sensor']")
    form.locator("select[name=equipment_id]").select_option(label="BR-101 — Bioreactor 50 L")
    form.locator("input[name=tag]").fill("BR-101.TT01")
    form.locator("input[name=quantity_kind]").fill("temperature")
    form.locator("input[name=unit]").fill("°C")
    form.locator("input[name=range_low]").fill("0")
    form.locator("input[name=range_high]").fill("60")
    form.locator("button[type=submit]").click()
    expect(page.locator("[aria-label='Already added']")).to_contain_text("BR-101.TT01 on BR-101")
    page.click("text=Continue to the next step")

    expect(page.locator("h2")).to_have_text("Materials")
    page.click("text=Skip this step for now")
    expect(page.locator("h2")).to_have_text("Invite users")
    page.click("text=Skip this step for now")
    expect(page.locator("h1")).to_have_text("Onboarding: nothing left to do")

    page.click("nav.areas >> text=Home")
    checklist = page.locator("[aria-label='Onboarding checklist']")
    for step in ("site", "line", "equipment", "sensors"):
        expect(checklist.locator(f"li[data-step={step}]")).to_have_class("done")
    for step in ("materials", "users"):
        expect(checklist.locator(f"li[data-step={step}]")).to_have_class("skipped")

    page.click("nav.areas >> text=Plant")
    page.click("text=USP1")
    board = page.locator("ul.board")
    expect(board.locator("li.board-tile")).to_have_count(2)
    expect(board.locator("li.board-tile.ready")).to_contain_text("BR-101")
    expect(board.locator("li.board-tile.ready")).to_contain_text("1 sensor")
    expect(board.locator("li.board-tile:not(.ready)")).to_contain_text("BAL-01 is dirty")
    page.screenshot(path=str(tmp_path / "status-board.png"), full_page=True)

    page.fill("input[name=code][data-scan]", "EQ:BAL-01")  # the scan field on every page
    page.keyboard.press("Enter")
    expect(page.locator("h1")).to_have_text("BAL-01 — Balance 6 kg")
