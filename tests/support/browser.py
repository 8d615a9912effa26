"""Headless Chromium for the console's browser tests: Debian's chromium and chromedriver
driven by selenium (`make browser-deps` installs both; nothing is downloaded by a test tool).

Chromium here runs with the flags a closed network needs (no background networking,
no component updates, no sync, no QUIC) and a fresh, empty profile per browser, so
nothing reaches outside 127.0.0.1 and no state leaks between tests.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = os.environ.get("EAS_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("EAS_CHROMEDRIVER", "/usr/bin/chromedriver")
#: Where the tests write one screenshot per page (ignored by git): reviewers look here.
SCREENSHOTS = Path(os.environ.get("EAS_SCREENSHOTS", Path(__file__).resolve().parents[2] / ".screenshots" / "console"))
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--window-size=1440,960")
#: The longest any browser wait here takes before failing the test.
WAIT_S = 20.0


def require_browser() -> None:
    """Skip with the command to run when chromium or chromedriver is missing."""
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not (os.path.exists(p) and os.access(p, os.X_OK))]
    if missing:
        pytest.skip(f"{' and '.join(missing)} missing: run 'make browser-deps' (apt-get install chromium chromium-driver)")


class Browser:
    """One headless Chromium with its own empty profile, and helpers the tests share."""

    def __init__(self, shots: Path = SCREENSHOTS) -> None:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service

        require_browser()
        self.profile = tempfile.mkdtemp(prefix="eas-chromium-")
        opts = webdriver.ChromeOptions()
        opts.binary_location = CHROMIUM
        for flag in (*FLAGS, f"--user-data-dir={self.profile}"):
            opts.add_argument(flag)
        opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
        self.driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
        self.driver.set_page_load_timeout(30)
        self.shots = shots
        self.shots.mkdir(parents=True, exist_ok=True)

    def close(self) -> None:
        try:
            self.driver.quit()
        finally:
            shutil.rmtree(self.profile, ignore_errors=True)

    # -- finding and waiting -------------------------------------------------------------

    def find(self, css: str) -> Any:
        from selenium.webdriver.common.by import By

        return self.wait(lambda: self.driver.find_element(By.CSS_SELECTOR, css), f"element {css}")

    def all(self, css: str) -> list[Any]:
        from selenium.webdriver.common.by import By

        return self.driver.find_elements(By.CSS_SELECTOR, css)

    def wait(self, check: Callable[[], Any], what: str, timeout: float = WAIT_S) -> Any:
        """Poll `check` until it returns something truthy (exceptions count as not yet)."""
        deadline = time.monotonic() + timeout
        last: BaseException | None = None
        while True:
            try:
                value = check()
                if value:
                    return value
            except Exception as exc:  # noqa: BLE001 - stale or missing elements while the page renders
                last = exc
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout} s waiting for {what}"
                                     + (f" (last error: {last})" if last else "") + f"\n{self.problems()}")
            time.sleep(0.1)

    def text(self, css: str) -> str:
        return self.find(css).text

    def wait_text(self, css: str, want: str, timeout: float = WAIT_S) -> str:
        """Wait until the element's text contains `want`; its text."""
        return self.wait(lambda: (t := self.find(css).text) and want in t and t, f"'{want}' in {css}", timeout)

    def click(self, css: str) -> None:
        """Click once the element is there and enabled (found again if the page redrew it)."""
        def clicked() -> bool:
            element = self.find(css)
            if not element.is_enabled():
                return False
            element.click()
            return True

        self.wait(clicked, f"{css} to click")

    def problems(self) -> str:
        """JavaScript errors the page logged since the last call."""
        try:
            entries = self.driver.get_log("browser")
        except Exception:  # noqa: BLE001
            return ""
        # Refused API calls (401 before sign-in, a 400 the test provokes) are logged by
        # Chromium as failed loads: only script errors count here.
        bad = [e["message"] for e in entries if e["level"] == "SEVERE" and "Failed to load resource" not in e["message"]]
        return "browser errors:\n" + "\n".join(bad) if bad else ""

    def shot(self, name: str, max_height: int = 2400) -> Path:
        """The whole page (not only the window), up to `max_height` CSS pixels tall."""
        import base64

        path = self.shots / f"{name}.png"
        size = self.driver.execute_cdp_cmd("Page.getLayoutMetrics", {})["cssContentSize"]
        clip = {"x": 0, "y": 0, "width": size["width"], "height": min(size["height"], max_height), "scale": 1}
        data = self.driver.execute_cdp_cmd("Page.captureScreenshot", {
            "format": "png", "captureBeyondViewport": True, "clip": clip})["data"]
        path.write_bytes(base64.b64decode(data))
        return path


@pytest.fixture
def browser() -> Iterator[Browser]:
    b = Browser()
    try:
        yield b
    finally:
        b.close()
