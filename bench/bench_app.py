"""Benchmark the Streamlit app: start time to a usable start page, and compare-page redraw time.

Targets (issue 6): the app starts in under 10 s to a usable start page; the Compare page redraws a frontier
of 5 routers on the default data (MMLU-Pro) in under 2 s once scores are cached.

1. **Start**: ``streamlit run app`` on a free loopback port; the clock stops when headless Chromium shows the
   start page's models table (without Chromium: when the server is healthy and an AppTest run of the start
   page has rendered). Baseline: the same measurement for a one-line Streamlit app in the same process.
2. **Redraw**: AppTest drives the Compare page, runs 5 routers once (fits them; embeddings are cached on
   disk), then times a redraw (a rerun of the page reading cached results). Baseline: the time of one run of
   the start page on the same data.

Usage::

    python bench/bench_app.py [--source mmlu-pro] [--routers category,knn,mf,cost-aware,random-mix]
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
APP = ROOT / "app" / "streamlit_app.py"
sys.path.insert(0, str(ROOT))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _healthy(url: str, proc: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"streamlit exited with code {proc.returncode}")
        try:
            with urllib.request.urlopen(url + "/_stcore/health", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError("streamlit did not become healthy")


def _browser():  # noqa: ANN202
    chromium = shutil.which("chromium")
    if not chromium or not Path("/usr/bin/chromedriver").exists():
        return None
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = chromium
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
        f"--user-data-dir={tempfile.mkdtemp(prefix='bench-chromium-')}",
    ):
        opts.add_argument(flag)
    return webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=opts)


def time_start(script: Path, wait_text: str, env: dict[str, str], workdir: Path, driver) -> float:  # noqa: ANN001
    """Seconds from ``streamlit run <script>`` to ``wait_text`` in the browser (else to a healthy server)."""
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "streamlit",
            "run",
            str(script),
            "--server.port",
            str(port),
            "--server.headless",
            "true",
        ],
        cwd=workdir,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        _healthy(url, proc)
        if driver is not None:
            from selenium.webdriver.common.by import By
            from selenium.webdriver.support.ui import WebDriverWait

            driver.get(url)
            WebDriverWait(driver, 120, poll_frequency=0.1).until(
                lambda d: wait_text in d.find_element(By.TAG_NAME, "body").text
            )
        return time.perf_counter() - t0
    finally:
        proc.terminate()
        proc.wait(10)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", default="mmlu-pro", help="task set (default: mmlu-pro)")
    parser.add_argument(
        "--routers",
        default="category,knn,mf,cost-aware,random-mix",
        help="5 routers for the redraw benchmark",
    )
    args = parser.parse_args()
    routers = [r.strip() for r in args.routers.split(",") if r.strip()]

    work = Path(tempfile.mkdtemp(prefix="bench-app-"))
    env = {
        **os.environ,
        "ROUTELAB_APP_DEFAULT_SOURCE": args.source,
        "MLFLOW_TRACKING_URI": f"sqlite:///{work / 'mlflow.db'}",
    }
    os.environ.update({k: env[k] for k in ("ROUTELAB_APP_DEFAULT_SOURCE", "MLFLOW_TRACKING_URI")})

    # ---------------------------------------------------------------------------------------------- start
    hello = work / "hello.py"
    hello.write_text("import streamlit as st\nst.title('hello')\n")
    driver = _browser()
    how = "headless Chromium shows the models table" if driver else "server healthy (no Chromium found)"
    try:
        base = time_start(hello, "hello", env, work, driver)
        start = time_start(APP.parent, "Mean quality over n samples", env, work, driver)
    finally:
        if driver is not None:
            driver.quit()
    print(
        f"start: app {start:.2f} s to a usable start page ({how}); baseline one-line app {base:.2f} s; "
        f"ratio {start / base:.2f}x; target < 10 s: {'PASS' if start < 10 else 'FAIL'}"
    )

    # ---------------------------------------------------------------------------------------------- redraw
    from streamlit.testing.v1 import AppTest

    os.chdir(work)
    at = AppTest.from_file(str(APP), default_timeout=1800)
    t0 = time.perf_counter()
    at.run()
    start_page = time.perf_counter() - t0
    t0 = time.perf_counter()
    at.run()
    start_again = time.perf_counter() - t0
    at.switch_page("app_pages/compare.py").run()
    at.multiselect(key="cmp_routers").set_value(routers).run()
    at.checkbox(key="cmp_log").uncheck().run()
    t0 = time.perf_counter()
    at.button(key="cmp_run").click().run(timeout=3600)
    first = time.perf_counter() - t0
    if at.exception or at.error:
        print("compare failed:", [e.value for e in at.exception] + [e.value for e in at.error])
        return 1
    redraws = []
    for _ in range(3):
        t0 = time.perf_counter()
        at.run()
        redraws.append(time.perf_counter() - t0)
    redraw = min(redraws)
    assert at.get("plotly_chart"), "no frontier drawn"
    print(
        f"compare: first run of {len(routers)} routers ({', '.join(routers)}) {first:.1f} s (fits + scores)"
    )
    print(
        f"redraw: compare page with {len(routers)} routers {redraw:.2f} s (best of 3: "
        f"{', '.join(f'{r:.2f}' for r in redraws)}); baseline start-page rerun {start_again:.2f} s "
        f"(first {start_page:.2f} s); ratio {redraw / start_again:.2f}x; target < 2 s: "
        f"{'PASS' if redraw < 2 else 'FAIL'}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
