"""Headless Chromium (Debian's), driven by Playwright's sync API."""

import os
import shutil
from pathlib import Path

import pytest
from playwright.sync_api import sync_playwright

# Playwright's sync API runs an event loop in this thread; Django's database
# calls from the test body are still synchronous and safe.
os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")

CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
# `make screenshots` sets this: the README's screenshots are saved there too.
DOCS_SCREENSHOTS = os.environ.get("NEWSROOM_DOCS_SCREENSHOTS")


def _chromium_path():
    return os.environ.get("CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"


@pytest.fixture(scope="session")
def browser():
    path = _chromium_path()
    if not os.path.exists(path):
        message = "Chromium is not installed (apt-get install chromium), or set CHROMIUM=path"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=path, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1200, "height": 900})
    page = context.new_page()
    page.set_default_timeout(20_000)
    yield page
    context.close()


@pytest.fixture
def screenshot():
    """screenshot(page, name, docs=False): saves test-artifacts/<name>.png for
    a person to look at; with docs=True, also docs/screenshots/<name>.png
    when NEWSROOM_DOCS_SCREENSHOTS is set (`make screenshots`)."""

    def save(page, name, docs=False):
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)
        if docs and DOCS_SCREENSHOTS:
            Path(DOCS_SCREENSHOTS).mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(Path(DOCS_SCREENSHOTS) / f"{name}.png"), full_page=True)

    return save
