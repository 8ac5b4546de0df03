"""The app in a real browser: ``streamlit run app`` on a free loopback port, driven by headless Chromium.

Walks the start page and the compare page (runs a comparison), then the drill-down and experiments pages
that read its results, and saves a screenshot of each to
``$ROUTELAB_SCREENSHOT_DIR`` (default: the test's tmp folder). Skips cleanly when Chromium, its driver or
selenium is absent. ``ROUTELAB_BROWSER_SOURCE`` opens another task set (default: the small toy table).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from app_fixtures import APP  # type: ignore[import-not-found]
from processes import stop_process  # type: ignore[import-not-found]

pytestmark = [pytest.mark.browser, pytest.mark.slow]

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = "/usr/bin/chromedriver" if Path("/usr/bin/chromedriver").exists() else shutil.which("chromedriver")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_http(url: str, proc: subprocess.Popen, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"streamlit exited early with code {proc.returncode}")
        try:
            with urllib.request.urlopen(url + "/_stcore/health", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.3)
    raise AssertionError(f"streamlit did not answer at {url} within {timeout} s")


@pytest.fixture()
def app_url(app_env: Path, toy_source: Path, mlflow_store: Path):  # noqa: ANN201
    """Start ``streamlit run <repo>/app`` (the folder form) on a free port; stop it afterwards."""
    port = _free_port()
    env = dict(os.environ)
    env["ROUTELAB_APP_DEFAULT_SOURCE"] = os.environ.get("ROUTELAB_BROWSER_SOURCE") or str(toy_source)
    env.setdefault("ROUTELAB_APP_ROUTERS", "category,random-mix,single")
    log = open(app_env / "streamlit.log", "w")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", str(APP.parent), "--server.port", str(port)],
        cwd=app_env,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_http(url, proc, 60)
        yield url
    finally:
        stop_process(proc, grace_s=10)
        log.close()


@pytest.fixture()
def browser(tmp_path: Path):  # noqa: ANN201
    if not CHROMIUM or not DRIVER:
        pytest.skip("chromium / chromedriver not installed (apt-get install chromium chromium-driver)")
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        f"--user-data-dir={tmp_path / 'chromium-profile'}",
        "--window-size=1500,1300",
    ):
        opts.add_argument(flag)
    driver = webdriver.Chrome(service=Service(DRIVER), options=opts)
    try:
        yield driver
    finally:
        driver.quit()


def _wait_text(driver, text: str, timeout: float) -> None:  # noqa: ANN001
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(driver, timeout, poll_frequency=0.3).until(
        lambda d: text in d.find_element(By.TAG_NAME, "body").text,
        message=f"{text!r} did not appear within {timeout} s",
    )


def _click(driver, xpath: str, timeout: float = 30) -> None:  # noqa: ANN001
    """Click the element at ``xpath`` once it is clickable (Streamlit re-renders: a found element may go stale)."""
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as EC
    from selenium.webdriver.support.ui import WebDriverWait

    def click(d):  # noqa: ANN001, ANN202
        try:
            EC.element_to_be_clickable((By.XPATH, xpath))(d).click()
            return True
        except (StaleElementReferenceException, AttributeError):
            return False

    WebDriverWait(driver, timeout, poll_frequency=0.3, ignored_exceptions=(StaleElementReferenceException,)).until(
        click, message=f"{xpath} was not clickable within {timeout} s"
    )


def test_start_and_compare_pages_in_chromium(app_url: str, browser, tmp_path: Path) -> None:  # noqa: ANN001
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    shots = Path(os.environ.get("ROUTELAB_SCREENSHOT_DIR") or tmp_path)
    shots.mkdir(parents=True, exist_ok=True)

    # Start page: the task set card, the cost warning, the models table.
    t0 = time.monotonic()
    browser.get(app_url)
    _wait_text(browser, "Task set:", 60)
    _wait_text(browser, "Models", 30)
    start_s = time.monotonic() - t0
    body = browser.find_element(By.TAG_NAME, "body").text
    assert "Costs are ESTIMATED" in body or "Costs are measured" in body
    assert "Compare" in body and "Tag traffic" in body  # the navigation
    time.sleep(1.0)  # let the data grid paint
    browser.save_screenshot(str(shots / "app_start.png"))

    # Compare page: run the preselected routers, wait for the frontier and the ranking.
    _click(browser, "//a[contains(@href, 'compare')]")
    _wait_text(browser, "Run comparison", 30)
    _click(browser, "//button[.//p[text()='Run comparison']]")
    _wait_text(browser, "Savings at parity", 300)
    WebDriverWait(browser, 30).until(lambda d: d.find_elements(By.CSS_SELECTOR, ".js-plotly-plot .scatterlayer"))
    plot = browser.find_element(By.CSS_SELECTOR, ".js-plotly-plot")
    browser.execute_script("arguments[0].scrollIntoView({block: 'start'});", plot)
    time.sleep(2.0)  # plotly transitions
    body = browser.find_element(By.TAG_NAME, "body").text
    assert "Best single model" in body and "Test split" in body
    browser.save_screenshot(str(shots / "app_compare.png"))

    # Drill down and Experiments read the comparison just run (cached fits, the MLflow run it logged).
    for page, text, name in (
        ("drilldown", "Per prompt", "app_drilldown.png"),
        ("experiments", "Frontiers overlaid", "app_experiments.png"),
    ):
        _click(browser, f"//a[contains(@href, '{page}')]")
        _wait_text(browser, text, 120)
        time.sleep(2.0)
        browser.save_screenshot(str(shots / name))
    for name in ("app_start.png", "app_compare.png", "app_drilldown.png", "app_experiments.png"):
        assert (shots / name).stat().st_size > 10_000
    print(f"start page usable after {start_s:.1f} s; screenshots in {shots}")
