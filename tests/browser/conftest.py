"""Fixtures of the console's browser tests: one stack and console and one headless
Chromium for the whole package, a fresh browser context (cookies, session) per page."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from playwright.sync_api import Browser, BrowserContext, Page, expect, sync_playwright

from tests.browser.harness import (
    CHROMIUM,
    FLEET,
    WAIT_MS,
    Console,
    NewPage,
    Shot,
    running_console,
    screenshot,
)
from tests.e2e.stack import running_stack

expect.set_options(timeout=WAIT_MS)


@pytest.fixture(scope="package")
def console(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Console]:
    """The console of a whole stack whose fleet (`FLEET`) has reported."""
    prefix, count = FLEET
    with (
        running_stack(tmp_path_factory.mktemp("console"), [(prefix, count, ())]) as stack,
        running_console(stack) as running,
    ):
        yield running


@pytest.fixture(scope="package")
def browser() -> Iterator[Browser]:
    """Debian's Chromium, headless, driven by Playwright (never a downloaded browser)."""
    if not CHROMIUM.exists():
        pytest.fail(f"the browser tests need {CHROMIUM} (apt-get install chromium; CI has it)")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True)
        yield launched
        launched.close()


@pytest.fixture
def new_page(browser: Browser, console: Console) -> Iterator[NewPage]:
    """Make a page in a browser context of its own (its own cookies: one session each)."""
    contexts: list[BrowserContext] = []

    def make() -> Page:
        context = browser.new_context(base_url=console.url)
        context.set_default_timeout(WAIT_MS)
        contexts.append(context)
        return context.new_page()

    yield make
    for context in contexts:
        context.close()


@pytest.fixture
def page(new_page: NewPage) -> Page:
    """A page in a fresh browser context."""
    return new_page()


@pytest.fixture
def shot(request: pytest.FixtureRequest) -> Shot:
    """Save a full-page screenshot named after the test and the page."""
    test = request.node.name

    def save(page: Page, name: str) -> None:
        screenshot(page, test, name)

    return save
