"""``routelab serve`` tunes its process's garbage collector once started (start-up objects frozen, young objects
collected less often): a full collection walking every object the runtime loaded paused every request in flight
for 80-100 ms. Tests, notebooks and the app share their process with the proxy app, so the tuning is off there."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from proxy_helpers import make_folder  # noqa: E402

SCRIPT = """
import gc, json, sys
from routers.export.proxy import ProxyServer, build_proxy_app
from routers.export.proxy.serving import GC_GEN0_THRESHOLD
seen = {"before": [gc.get_threshold()[0], gc.get_freeze_count()]}
with ProxyServer(build_proxy_app(sys.argv[1], no_auth=True)):
    seen["untuned"] = [gc.get_threshold()[0], gc.get_freeze_count()]
with ProxyServer(build_proxy_app(sys.argv[1], no_auth=True, tune_gc=True)):
    seen["tuned"] = [gc.get_threshold()[0], gc.get_freeze_count()]
seen["wanted"] = GC_GEN0_THRESHOLD
print(json.dumps(seen))
"""


def test_only_a_serving_process_freezes_its_start_up_objects_and_collects_young_ones_less_often(
    table, replay, tmp_path
):
    folder = make_folder(table, replay.base_url, tmp_path)
    out = subprocess.run([sys.executable, "-c", SCRIPT, str(folder)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    seen = json.loads(out.stdout.strip().splitlines()[-1])
    assert seen["untuned"] == seen["before"] and seen["before"][0] == 700  # CPython's default, left alone
    threshold, frozen = seen["tuned"]
    assert threshold == seen["wanted"] == 20_000 and frozen > 10_000  # the runtime, starlette, aiohttp, numpy...
