"""Headless Chromium for the browser tests: Debian's /usr/bin/chromium (Playwright's own download
cannot work here). Without it the tests are skipped with the reason, except in CI
(PORTAL_REQUIRE_BROWSER=1), where a missing browser is a failure. Screenshots go to test-artifacts/."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.helpers import ARTIFACTS

CHROMIUM = os.environ.get("PORTAL_CHROMIUM", "/usr/bin/chromium")


@pytest.fixture
def browser():
    if not Path(CHROMIUM).is_file():
        if os.environ.get("PORTAL_REQUIRE_BROWSER"):
            pytest.fail(f"Chromium not found at {CHROMIUM}; install Debian's chromium package.")
        pytest.skip(f"Chromium not found at {CHROMIUM} (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update"],
        )
        yield browser
        browser.close()
