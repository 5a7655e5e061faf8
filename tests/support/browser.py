"""A real headless chromium for the console tests: selenium driving Debian's chromedriver.

``chromium()`` yields a selenium ``WebDriver``; everything ends with the block. The driver
and the browser are the Debian packages (``chromium``, ``chromium-driver``, installed by
``scripts/install-system-deps``): both paths are given to selenium, so Selenium Manager never
looks for (or downloads) a driver of its own. ``find`` and ``wait_text`` are the two idioms
the tests repeat: a CSS lookup, and waiting for a page that loads after a click.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager

from selenium import webdriver
from selenium.common.exceptions import TimeoutException
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support import expected_conditions
from selenium.webdriver.support.ui import WebDriverWait

CHROMIUM = "/usr/bin/chromium"
PAGE_TIMEOUT_S = 60.0


@contextmanager
def chromium() -> Iterator[webdriver.Chrome]:
    """A headless chromium session through Debian's chromedriver."""
    driver_path = shutil.which("chromedriver")
    if driver_path is None:
        raise AssertionError("chromedriver is missing: apt-get install chromium chromium-driver")
    options = Options()
    options.binary_location = CHROMIUM
    # The console's certificate comes from the test PKI, which chromium does not know.
    options.accept_insecure_certs = True
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu",
                     "--disable-dev-shm-usage", "--window-size=1280,900"):  # fmt: skip
        options.add_argument(argument)
    driver = webdriver.Chrome(options=options, service=Service(executable_path=driver_path))
    try:
        driver.set_page_load_timeout(PAGE_TIMEOUT_S)
        yield driver
    finally:
        driver.quit()


def find(browser: webdriver.Chrome, css: str) -> WebElement:
    """The first element matching ``css`` (selenium raises when there is none)."""
    return browser.find_element(By.CSS_SELECTOR, css)


def wait_text(browser: webdriver.Chrome, css: str, expected: str, timeout: float = 10.0) -> str:
    """The text of ``css`` once it contains ``expected`` (pages load after a click)."""
    located = (By.CSS_SELECTOR, css)
    try:
        WebDriverWait(browser, timeout).until(
            expected_conditions.text_to_be_present_in_element(located, expected)
        )
    except TimeoutException:
        shown = [e.text for e in browser.find_elements(*located)] or ["<absent>"]
        raise AssertionError(f"{css} never showed {expected!r}; last {shown[0]!r}") from None
    return find(browser, css).text
