"""Headless Debian Chromium driven by Playwright against real gateway processes.

Playwright's wheel brings its driver; the browser is the system's
/usr/bin/chromium (never ``playwright install``). Screenshots go to
test-artifacts/browser/ (gitignored) so a person can look at the pages.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from playwright.sync_api import Browser, BrowserContext, Page, expect, sync_playwright

from tests.conftest import ADMIN_PASSWORD, Databases
from tests.support.admin import ADMIN_EMAIL
from tests.support.processes import REPO

CHROMIUM = "/usr/bin/chromium"
SCREENSHOTS = REPO / "test-artifacts" / "browser"
VIEWPORT = {"width": 1280, "height": 900}  # a laptop


def new_database(databases: Databases) -> str:
    """A throwaway PostgreSQL database. Playwright's sync API keeps an event loop running in
    this thread, where the fixtures' asyncio.run() cannot start another: create it from a thread."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(databases.new, "postgres").result()


@pytest.fixture(scope="module")
def browser(databases: Databases) -> Iterator[Browser]:
    # Module scope: while Playwright runs, its loop occupies this thread, and other modules' tests
    # (asyncio.run, pytest-asyncio) must not see it. Depends on `databases` so that the databases
    # are dropped after the browser ends.
    with sync_playwright() as playwright:
        # --no-sandbox: the tests may run as root, where Chromium refuses its sandbox.
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield launched
        launched.close()


@pytest.fixture
def context(browser: Browser) -> Iterator[BrowserContext]:
    ctx = browser.new_context(viewport=VIEWPORT)
    yield ctx
    ctx.close()


def screenshot(page: Page, name: str) -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


def log_in(page: Page, base_url: str, password: str = ADMIN_PASSWORD) -> None:
    page.goto(base_url + "/admin")
    expect(page).to_have_url(re.compile(r"/admin/login$"))
    page.get_by_label("Email").fill(ADMIN_EMAIL)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Log in").click()
