"""Headless Chromium for the UI tests: Debian's `chromium` and `chromium-driver` (`make browser` installs them),
driven by Selenium with an explicit driver path (Selenium Manager never downloads anything)."""

from __future__ import annotations

import contextlib
import shutil
import tempfile
import time
from pathlib import Path

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
# the network is closed here: without these Chromium floods refused connections (updates, sync, QUIC, ...)
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--window-size=1400,1000"]  # fmt: skip


def missing() -> str | None:
    """Why no browser can start here, or None."""
    for path in (CHROMIUM, CHROMEDRIVER):
        if not Path(path).exists():
            return f"{path} is missing: `make browser` installs Debian's chromium and chromium-driver"
    return None


@contextlib.contextmanager
def chromium():
    """A fresh headless Chromium (its own empty profile), quit and its profile removed afterwards."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="hsc-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in FLAGS + [f"--user-data-dir={profile}"]:
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def wait_for(driver, script: str, timeout: float = 30.0, what: str = ""):
    """Polls a JavaScript expression until it is truthy; returns its value."""
    deadline = time.monotonic() + timeout
    while True:
        value = driver.execute_script("return " + script)
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what or script}")
        time.sleep(0.5)


def script_errors(driver) -> list[str]:
    """Uncaught JavaScript errors since the last call (the browser log's SEVERE entries from scripts)."""
    return [e["message"] for e in driver.get_log("browser") if e["level"] == "SEVERE" and e.get("source") == "javascript"]


def body_text(driver) -> str:
    return driver.execute_script("return document.body ? document.body.innerText : ''") or ""
