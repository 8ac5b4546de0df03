"""The production loop end to end on loopback (issue 15): the real proxy serves a measured export with a decision
log, a rollout (share 0.5), exploration and shadow sampling against the replay server; ``routelab logs grade``
grades the pairs with the replay judge; the report and ``to-outcomes`` read what the proxy wrote."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
from export_helpers import point_upstreams
from production_logs import measured_export
from proxy_helpers import ENV, client

from evals.cli import main
from evals.production.log_reader import read_log
from evals.production.to_outcomes import PROVENANCE, to_outcomes
from evals.workbench.production_report import build_report
from routers.export.proxy import ProxyServer, build_proxy_app

N = 300


@pytest.mark.slow
def test_the_loop_from_serving_to_report_and_outcomes(table, replay, tmp_path):
    folder, measurement = measured_export(table, tmp_path)
    point_upstreams(folder, {m: replay.base_url for m in table.models})
    log_dir = tmp_path / "log"
    with (folder / "upstreams.toml").open("a") as fh:
        fh.write(f'\n[log]\ndir = "{log_dir}"\n\n[rollout]\nshare = 0.5\n\n[exploration]\nepsilon = 0.1\nseed = 1\n\n'
                 '[shadow]\nrate = 0.5\nreference = "big"\n')
    rng = np.random.default_rng(0)
    rows = rng.integers(0, table.n_samples, N)
    app = build_proxy_app(folder, environ=ENV)
    with ProxyServer(app) as srv, client(srv.base_url) as c:
        arms = []
        for i in rows:
            r = c.post("/chat/completions", headers={"x-routelab-category": str(table.categories[i])},
                       json={"model": "router", "messages": [{"role": "user", "content": table.prompts[i]}]})
            assert r.status_code == 200, r.text
            arms.append(r.headers.get("x-routelab-arm"))
        deadline = time.monotonic() + 30
        while not app.state.proxy.shadow.idle():  # reference calls still out
            assert time.monotonic() < deadline, "shadow work did not finish"
            time.sleep(0.01)
    read = read_log(log_dir)
    assert len(read.records) == N and not read.errors
    assert set(arms) == {"router", "control"}
    shadowed = {d.request_id for d in read.records if d.shadow}
    assert read.shadow_pairs and {p.request_id for p in read.shadow_pairs} <= shadowed

    assert main(["logs", "grade", str(log_dir), "--judge-url", replay.base_url, "--judge-model", "replay-judge"]) == 0
    read = read_log(log_dir)
    graded = {g.request_id for g in read.grades}
    assert len(graded) >= 0.9 * len(read.shadow_pairs)

    rep = build_report(log_dir, folder, offline=table, n_resamples=300)
    cost = rep.delivered["cost"]
    mean = {arm: np.mean([d.cost_usd for d in read.records if d.arm == arm]) for arm in ("router", "control")}
    assert cost["saving"]["value"] == pytest.approx(1 - mean["router"] / mean["control"])
    assert cost["router"]["n"] + cost["control"]["n"] == N
    assert rep.delivered["quality"]["n"] > 0 and rep.promised["savings"] == measurement.to_dict()["savings"]
    json.dumps(rep.to_dict())
    built = to_outcomes(read)
    assert built.table.card.extra["provenance"] == PROVENANCE and "big" in built.models
