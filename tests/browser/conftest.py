"""The web page in headless Chromium (Debian's /usr/bin/chromium, driven by Playwright) against the local stack.

The stack is the integration suite's session fixture, imported rather than copied, so the page runs against the
same LocalRuntime (on free ports) the integration tests use. Browser tests run in their own pytest process, like
the integration tests (moto keeps its state per process). No browser is ever downloaded: ``make browser`` installs
Debian's chromium when /usr/bin/chromium is missing.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, BrowserContext, Page, Playwright, sync_playwright

from modelrun_local.runtime import LocalRuntime
from tests.integration.conftest import REPO, api, images_bucket, s3, stack  # noqa: F401 - shared fixtures

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}


@pytest.fixture(scope="session")
def models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The repo's demo models, one per task the page draws: digits (the default), shapes (detection), cells
    (segmentation), ct (segmentation of DICOM)."""
    root = tmp_path_factory.mktemp("models")
    for name in ("digits", "shapes", "cells", "ct"):
        shutil.copytree(REPO / "models" / name, root / name)
    return root


@pytest.fixture(scope="session")
def playwright() -> Iterator[Playwright]:
    with sync_playwright() as driver:
        yield driver


@pytest.fixture(scope="session")
def browser(playwright: Playwright) -> Iterator[Browser]:
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: run `make browser` (as root) to install Debian's chromium")
    chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
    try:
        yield chromium
    finally:
        chromium.close()


@pytest.fixture
def context(browser: Browser) -> Iterator[BrowserContext]:
    context = browser.new_context(viewport=DESKTOP)
    context.set_default_timeout(30_000)
    try:
        yield context
    finally:
        context.close()


@pytest.fixture
def page(context: BrowserContext) -> Iterator[Page]:
    """A tab at 1280x800; a script error on the page fails the test that caused it."""
    tab = context.new_page()
    script_errors: list[str] = []
    tab.on("pageerror", lambda error: script_errors.append(str(error)))
    yield tab
    assert not script_errors, f"the page threw: {script_errors}"


@pytest.fixture(scope="session")
def page_url(stack: LocalRuntime) -> str:  # noqa: F811 - the imported fixture
    return f"{stack.url}/ui/"
