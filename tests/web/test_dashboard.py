"""The dashboard in a real headless browser: Debian's chromium (``make test`` installs it),
driven by Playwright with no browser download, against the app served by uvicorn."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from durably import Durably
from tests.web.conftest import Jobs
from tests.web.http_client import eventually
from tests.web.servers import serve_asgi

CHROMIUM = Path("/usr/bin/chromium")
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    assert CHROMIUM.is_file(), "chromium is missing: `make test` installs it"
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=["--no-sandbox"]
        )
        yield launched
        launched.close()


@pytest.fixture
def dashboard(durably: Durably, jobs: Jobs) -> Iterator[str]:
    with serve_asgi(durably, allow_unauthenticated=True) as url:
        yield f"{url}/"


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context()
    opened = context.new_page()
    yield opened
    context.close()


def test_the_run_list_updates_live_when_a_run_completes(
    page: Page, dashboard: str, durably: Durably, jobs: Jobs
) -> None:
    page.goto(dashboard)
    expect(page.locator("#live")).to_have_text("● live")
    gated = durably.get_job("gated")
    assert gated is not None
    run = gated.trigger({})  # after the page loaded: it can only learn of it live
    row = page.locator(f'.run[data-run-id="{run.id}"]')
    expect(row).to_have_attribute("data-status", "leased")
    expect(page.locator("#stat-running")).to_have_text("1")
    jobs.gate.set()
    expect(row).to_have_attribute("data-status", "completed")


def test_the_retry_button_retries_a_failed_run(
    page: Page, dashboard: str, durably: Durably
) -> None:
    flaky = durably.get_job("flaky")
    assert flaky is not None
    run = flaky.trigger({})
    eventually(lambda: (found := durably.get_run(run.id)) and found.status == "failed")
    page.goto(dashboard)
    page.locator(f'.run[data-run-id="{run.id}"]').click()
    detail = page.locator("#detail")
    expect(detail).to_have_attribute("data-status", "failed")
    expect(page.locator("#detail-attempts .traceback")).to_contain_text(
        "RuntimeError: flaky step failed"
    )
    expect(page.get_by_role("button", name="Cancel")).to_be_hidden()
    page.get_by_role("button", name="Retry").click()
    expect(detail).to_have_attribute("data-status", "completed")
    expect(page.locator(f'.run[data-run-id="{run.id}"]')).to_have_attribute(
        "data-status", "completed"
    )
    finished = durably.get_run(run.id)
    assert finished is not None
    assert finished.output == "recovered"


def test_the_dashboard_fits_a_phone_screen(
    browser: Browser, dashboard: str, durably: Durably
) -> None:
    greet = durably.get_job("greet")
    assert greet is not None
    run = greet.trigger({"name": "a long name " * 20}, labels={"tenant": "acme-corporation"})
    eventually(lambda: (found := durably.get_run(run.id)) and found.is_terminal)
    context = browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True)
    try:
        phone = context.new_page()
        phone.goto(dashboard)
        phone.locator(f'.run[data-run-id="{run.id}"]').click()
        expect(phone.locator("#detail")).to_have_attribute("data-status", "completed")
        overflow = phone.evaluate(
            "document.documentElement.scrollWidth - document.documentElement.clientWidth"
        )
        assert overflow <= 0
    finally:
        context.close()


def test_the_run_list_filters_by_status_job_and_label(
    page: Page, dashboard: str, durably: Durably
) -> None:
    greet, flaky = durably.get_job("greet"), durably.get_job("flaky")
    assert greet is not None
    assert flaky is not None
    acme = greet.trigger({"name": "a"}, labels={"tenant": "acme"})
    other = greet.trigger({"name": "b"}, labels={"tenant": "other"})
    failed = flaky.trigger({})
    for run in (acme, other, failed):
        eventually(lambda run=run: (found := durably.get_run(run.id)) and found.is_terminal)
    page.goto(dashboard)
    rows = page.locator(".run")
    expect(rows).to_have_count(3)
    page.select_option("#filter-status", "failed")
    expect(rows).to_have_count(1)
    expect(rows.first).to_have_attribute("data-run-id", failed.id)
    page.select_option("#filter-status", "")
    page.select_option("#filter-job", "greet")
    expect(rows).to_have_count(2)
    page.fill("#filter-label", "tenant=acme")
    page.press("#filter-label", "Enter")
    expect(rows).to_have_count(1)
    expect(rows.first).to_have_attribute("data-run-id", acme.id)
