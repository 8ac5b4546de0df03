"""Benchmark: back-off without a human. An adaptive export learns from its own shadow grades and moves a category
away from a cheap model that starts failing, then back when the fault stops.

Setup (loopback, in this process, no keys):

* upstream and judge: the replay server (:mod:`evals.serving.replay`) over a four-category table: ``cheap`` is right
  on ``math`` and ``chat``, ``mid`` also on ``code``, ``big`` on everything (``proof`` too). Its judge
  (``replay-judge``) decides pairwise verdicts from the recorded correctness of the two answers;
* proxy: an export of the adaptive router (explore 0: every decision is the posterior's; re-tries come from its
  forgetting) with ``[shadow] rate``, ``grade_online = true``, ``judge = "replay-judge"`` and the default reference
  (``big``, the most expensive model) and a decision log;
* load: ``--rounds`` rounds of one request per category (math, chat, code, proof), one at a time. From round
  ``--drift-at`` the replay server's drift switch makes ``cheap``'s answers to ``math`` wrong
  (``POST /_drift``); from round ``--drift-until`` it stops (``DELETE /_drift``).

Printed (per shadow rate): the model each category was routed to before, during and after the fault; **N**, the
number of ``math`` requests from the start of the fault until ``math`` had moved off ``cheap`` (and how many of the
later ``math`` requests during the fault re-tried ``cheap``); **M**, the number of ``math`` requests after the fault
stopped until ``math`` was back on ``cheap`` for good; whether any other category ever changed model; the online
grades and the feedback the export received.

    python bench/bench_backoff.py [--rates 1.0,0.5,0.2] [--rounds 400] [--drift-at 40] [--drift-until 140]
        [--no-settle]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pandas as pd

from evals.outcomes import OutcomeTable
from evals.serving import ReplayServer
from routers.export import export_router
from routers.export.proxy import ProxyServer, build_proxy_app
from routers.strategies.adaptive import AdaptiveRouter

CATEGORIES = ("math", "chat", "code", "proof")
MODELS = ("cheap", "mid", "big")
#: Cost per call in the table (what the router's cost head learns) and the prices the proxy bills with.
COSTS = {"cheap": 0.001, "mid": 0.005, "big": 0.02}
PRICES = {
    "cheap": {"provider": "together", "input_per_1m": 0.1, "output_per_1m": 0.2, "request_fee": 0.0},
    "mid": {"provider": "together", "input_per_1m": 0.5, "output_per_1m": 1.0, "request_fee": 0.0},
    "big": {"provider": "openai", "input_per_1m": 5.0, "output_per_1m": 15.0, "request_fee": 0.0},
}
LAM = 0.05
DRIFTED, STABLE_CHEAP = "math", "chat"


def right(model: str, category: str) -> bool:
    """cheap is right on math and chat, mid also on code, big everywhere."""
    return model == "big" or (model == "mid" and category != "proof") or (model == "cheap" and category in
                                                                            ("math", "chat"))


def backoff_table(n_per_cat: int = 30) -> OutcomeTable:
    """3 models x (4 x n_per_cat) prompts with distinct responses, scores per :func:`right` and costs :data:`COSTS`."""
    rows = []
    for cat in CATEGORIES:
        for i in range(n_per_cat):
            sid = f"{cat}-{i}"
            for model in MODELS:
                rows.append(dict(sample_id=sid, category=cat, prompt=f"{cat} question number {i}", model=model,
                                 score=float(right(model, cat)), cost_usd=COSTS[model],
                                 response=f"{model} on {sid}: the answer is (A)", input_tokens=40.0,
                                 output_tokens=12.0))
    return OutcomeTable(pd.DataFrame(rows))


def adaptive_router() -> AdaptiveRouter:
    """The adaptive router of the scenario: a per-category prior worth 10 answers, memory of ~30 feedbacks."""
    return AdaptiveRouter(smoothing=0.0, prior_strength=10.0, forgetting=0.97, explore=0.0, random_state=7)


def upstreams_toml(replay_url: str, rate: float, log_dir: Path, **shadow: Any) -> str:
    """An upstreams.toml: every model and the judge on the replay server, shadow grading online (``shadow``
    overrides or adds ``[shadow]`` keys), a decision log."""
    ups = "".join(
        f'[upstreams."{m}"]\nbase_url = "{replay_url}"\nmodel = "{m}"\ntimeout_s = 5.0\nretries = 1\n\n'
        for m in (*MODELS, "replay-judge")
    )
    keys = {"rate": rate, "grade_online": True, "judge": "replay-judge", "workers": 2, "seed": 0} | shadow
    return (
        '[proxy]\nroute_names = ["router"]\nfallback_order = ["cheap", "mid", "big"]\n\n' + ups
        + "[shadow]\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in keys.items()) + "\n"
        + f'[log]\ndir = "{log_dir}"\n\n'
        # No epsilon exploration: every choice is the adaptive router's own, so a category's moves are its doing.
        + "[exploration]\nepsilon = 0.0\n"
    )


@dataclass
class BackoffRun:
    """What one run measured."""

    rate: float
    routed: dict[str, list[str]] = field(default_factory=dict)
    """Per category, the model chosen for each of its requests, in order."""
    drift_index: int = 0
    """Index (per category) of the first request after the fault started."""
    stop_index: int = 0
    """Index of the first request after the fault stopped."""
    shadow: dict[str, Any] = field(default_factory=dict)
    """The proxy's /healthz shadow section at the end."""
    feedback: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def backed_off_after(self) -> int | None:
        """N: math requests from the fault's start until the first one routed away from cheap (1 = the first)."""
        during = self.routed[DRIFTED][self.drift_index:self.stop_index]
        return next((k + 1 for k, m in enumerate(during) if m != "cheap"), None)

    @property
    def retries_during_fault(self) -> tuple[int, int]:
        """(math requests still sent to cheap after the back-off and before the fault stopped, all of them)."""
        n = self.backed_off_after
        if n is None:
            return (0, 0)
        later = self.routed[DRIFTED][self.drift_index + n:self.stop_index]
        return sum(m == "cheap" for m in later), len(later)

    @property
    def recovered_after(self) -> int | None:
        """M: math requests after the fault stopped until math is on cheap for the rest of the run."""
        after = self.routed[DRIFTED][self.stop_index:]
        return next((k + 1 for k in range(len(after)) if all(m == "cheap" for m in after[k:])), None)

    def others_moved(self) -> dict[str, list[str]]:
        """Categories other than math whose choices changed during the run (category -> the models seen)."""
        return {c: sorted(set(v)) for c, v in self.routed.items() if c != DRIFTED and len(set(v)) > 1}


def _wait_idle(st: Any, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not st.shadow.idle():
        if time.monotonic() > deadline:
            raise TimeoutError("shadow grading did not finish in time")
        time.sleep(0.002)


def run_backoff(rate: float = 1.0, rounds: int = 400, drift_at: int = 40, drift_until: int = 140,
                workdir: Path | None = None, settle: bool = True) -> BackoffRun:
    """Run the scenario once (see the module docstring) and return what it measured.

    Args:
        rate: ``[shadow] rate``.
        rounds: Rounds of one request per category.
        drift_at: First round served under the fault.
        drift_until: First round after the fault.
        workdir: Where the export and the log go (a temporary directory when None).
        settle: Wait for each request's shadow grade before the next request (a steady trickle of traffic, so
            N counts requests, not how fast a client can send them); False measures with grading lag.
    """
    table = backoff_table()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(workdir or tmp)
        folder = export_router(adaptive_router().fit(table), root / "export", lam=LAM, prices=PRICES)
        out = BackoffRun(rate)
        with ReplayServer(table) as replay:
            cfg = root / "upstreams.toml"
            cfg.write_text(upstreams_toml(replay.base_url, rate, root / "log"))
            app = build_proxy_app(folder, no_auth=True, upstreams_path=cfg)
            st = app.state.proxy
            with ProxyServer(app) as proxy, httpx.Client(base_url=proxy.base_url, timeout=30) as c:
                prompts = {cat: [p for p, k in zip(table.prompts, table.categories, strict=True) if k == cat]
                           for cat in CATEGORIES}
                out.routed = {cat: [] for cat in CATEGORIES}
                t0 = time.perf_counter()
                for r in range(rounds):
                    if r == drift_at:
                        replay.start_drift("cheap", DRIFTED)
                        out.drift_index = r
                    if r == drift_until:
                        replay.stop_drift("cheap", DRIFTED)
                        out.stop_index = r
                    for cat in CATEGORIES:
                        p = prompts[cat][r % len(prompts[cat])]
                        resp = c.post("/chat/completions", headers={"x-routelab-category": cat},
                                      json={"model": "router", "messages": [{"role": "user", "content": p}]})
                        if resp.status_code != 200:
                            raise RuntimeError(f"request failed: {resp.status_code} {resp.text[:200]}")
                        out.routed[cat].append(resp.headers["x-routelab-choice"])
                        if settle:
                            _wait_idle(st)
                _wait_idle(st)
                out.seconds = time.perf_counter() - t0
                out.shadow = st.shadow.health()
                out.feedback = {f"{k[1]}={k[2]}": v for k, v in st.shadow.counts.items() if k[0] == "feedback"}
    return out


def _phase(models: list[str]) -> str:
    counts = Counter(models)
    return ", ".join(f"{m} {n}" for m, n in counts.most_common())


def report(run: BackoffRun) -> list[str]:
    """The printed lines of one run."""
    n_requests = sum(len(v) for v in run.routed.values())
    lines = [f"shadow rate {run.rate:g}: {n_requests} requests in {run.seconds:.1f} s; fault on cheap/math from "
             f"round {run.drift_index} to {run.stop_index}"]
    for cat, models in run.routed.items():
        before, during, after = (models[:run.drift_index], models[run.drift_index:run.stop_index],
                                 models[run.stop_index:])
        lines.append(f"  {cat:<6} before: {_phase(before):<18} fault: {_phase(during):<26} after: {_phase(after)}")
    n, (retried, later), m = run.backed_off_after, run.retries_during_fault, run.recovered_after
    lines.append(f"  N (math requests until it left cheap after the fault began): {n}")
    lines.append(f"  re-tries of cheap on math during the fault after that: {retried} of {later}")
    lines.append(f"  M (math requests after the fault until back on cheap for good): {m}")
    lines.append(f"  other categories that moved: {run.others_moved() or 'none'}")
    sh = run.shadow
    lines.append(f"  shadow: sampled {sh['sampled']}, dropped {sum(sh['dropped'].values())}, grades {sh['grades']}, "
                 f"spent {sh['spent_today_usd']:.6f} USD; feedback {run.feedback}")
    return lines


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rates", default="1.0,0.5,0.2", help="comma-separated shadow rates to run")
    ap.add_argument("--rounds", type=int, default=400)
    ap.add_argument("--drift-at", type=int, default=40)
    ap.add_argument("--drift-until", type=int, default=140)
    ap.add_argument("--no-settle", action="store_true",
                    help="send the next request without waiting for the last one's grade (N then includes the lag)")
    args = ap.parse_args(argv)
    ok = True
    for rate in (float(x) for x in args.rates.split(",")):
        run = run_backoff(rate, args.rounds, args.drift_at, args.drift_until, settle=not args.no_settle)
        print("\n".join(report(run)), flush=True)
        ok &= run.backed_off_after is not None and run.recovered_after is not None and not run.others_moved()
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
