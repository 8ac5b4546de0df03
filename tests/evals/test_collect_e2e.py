"""Done-when of issue 4: collect 3 models x 300 MMLU-Pro prompts from the replay server with 20% faults.

- every (sample, model) is graded once, and the exact-match scores equal the MMLU-Pro importer's;
- killed with SIGKILL half-way and restarted, no request is repeated for anything already answered;
- the API key (a fake one) is sent to the server but appears in nothing written.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from evals.collect import ResponseCache, collect, load_config, request_key
from evals.outcomes import OutcomeTable
from evals.serving import ReplayServer

MODELS = ["gpt-4o-2024-05-13", "gemini-1.5-flash-002", "Llama-3.1-8B-Instruct"]
FAKE_KEY = "sk-fake-DO-NOT-WRITE-7f3a9c2e51b8"
PARAMS = {"temperature": 0.0, "max_tokens": 2048}


@pytest.fixture(scope="module")
def mmlu3(tmp_path_factory) -> tuple[OutcomeTable, Path]:
    """300 MMLU-Pro questions (distinct prompts, spread over the id range) x 3 models, from the importer."""
    from evals import sources

    full = sources.load("mmlu-pro")
    samples = full.samples
    samples = samples[~samples["prompt"].duplicated(keep=False)]
    ids = samples["sample_id"].iloc[:: len(samples) // 300][:300]
    table = full.select(models=MODELS, sample_ids=ids)
    assert table.n_samples == 300
    path = tmp_path_factory.mktemp("mmlu3") / "mmlu3.parquet"
    table.to_parquet(path)
    return table, path


def write_config(folder: Path, source: Path, base_url: str) -> Path:
    models = "\n".join(
        f'[[models]]\nname = "{m}"\nprovider = "replay"\n'
        'params = { temperature = 0.0, max_tokens = 2048 }\n'
        for m in MODELS
    )
    cfg = folder / "collect.toml"
    cfg.write_text(f"""
name = "mmlu3-collected"
output = "out/mmlu3.parquet"
cache = "cache/collect.sqlite"
[tasks]
source = "{source}"
[grader]
name = "mcq_letter"
[providers.replay]
base_url = "{base_url}"
api_key_env = "ROUTELAB_TEST_KEY"
concurrency = 16
timeout_s = 1.0
retries = 10
backoff_s = 0.05
max_backoff_s = 0.5
{models}
""")
    return cfg


def assert_scores_equal_importer(out: OutcomeTable, ref: OutcomeTable) -> None:
    got = out.frame.set_index(["sample_id", "model"]).sort_index()
    want = ref.frame.set_index(["sample_id", "model"]).sort_index()
    assert got.index.equals(want.index)  # every (sample, model), once
    np.testing.assert_array_equal(got["score"].to_numpy(), want["score"].to_numpy())
    assert (got["response"] == want["response"]).all()
    assert not got["cost_estimated"].any() and (got["cost_usd"] > 0).all()


@pytest.mark.slow
def test_collect_with_faults_grades_every_pair_once(mmlu3, tmp_path, monkeypatch):
    table, source = mmlu3
    monkeypatch.setenv("ROUTELAB_TEST_KEY", FAKE_KEY)
    with ReplayServer(table, fault_rate=0.2, seed=0, retry_after_s=1, hang_s=5, api_key=FAKE_KEY) as srv:
        config = load_config(write_config(tmp_path, source, srv.base_url))
        result = collect(config, progress=False)
        stats = srv.stats()
    assert result.failures == [] and result.table is not None
    assert_scores_equal_importer(result.table, table)
    # Faults really happened (all five kinds), and every pair was answered exactly once despite them.
    assert set(stats["faults"]) == {"429", "500", "timeout", "malformed", "drop"}
    assert 0.12 < sum(stats["faults"].values()) / stats["requests"] < 0.28
    assert len(stats["by_key"]) == 900 and all(k["ok"] == 1 for k in stats["by_key"])
    spend = {s.model: s for s in result.spend}
    assert all(spend[m].calls == 300 and spend[m].cache_hits == 0 for m in MODELS)
    # The bill is usage tokens x the price table (gpt-4o: $5 / $15 per 1M tokens).
    f = result.table.frame
    g = f[f["model"] == "gpt-4o-2024-05-13"]
    expected = (g["input_tokens"] * 5 + g["output_tokens"] * 15).sum() / 1e6
    assert spend["gpt-4o-2024-05-13"].cost_usd == pytest.approx(expected)
    assert result.table.card.name == "mmlu3-collected" and "MEASURED" in result.table.card.cost_note


def _run_cli(cfg: Path, env: dict[str, str], log: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "evals.cli", "collect", str(cfg), "--no-progress"],
        env=env,
        stdout=open(log.with_suffix(".out"), "w"),
        stderr=open(log.with_suffix(".err"), "w"),
    )


@pytest.mark.slow
def test_sigkill_half_way_then_resume_repeats_no_answered_request(mmlu3, tmp_path):
    table, source = mmlu3
    work = tmp_path / "work"
    work.mkdir()
    env = {**os.environ, "ROUTELAB_TEST_KEY": FAKE_KEY, "ROUTELAB_CACHE_DIR": str(work / "routelab-cache")}
    with ReplayServer(table, fault_rate=0.2, seed=1, retry_after_s=1, hang_s=5, api_key=FAKE_KEY) as srv:
        cfg = write_config(work, source, srv.base_url)
        first = _run_cli(cfg, env, work / "run1")
        deadline = time.monotonic() + 120
        while srv.stats()["ok"] < 450:
            assert first.poll() is None, "collect ended before it could be killed"
            assert time.monotonic() < deadline
            time.sleep(0.02)
        os.kill(first.pid, signal.SIGKILL)
        first.wait(timeout=10)
        time.sleep(0.3)  # let the server finish handlers that were in flight at the kill
        before = {(k["model"], k["sample_id"]): k for k in srv.stats()["by_key"]}

        # What the killed run had committed: every answer received before the kill.
        with ResponseCache(work / "cache" / "collect.sqlite") as cache:
            cached = cache.keys()
        f = table.frame
        answered = {
            (m, s)
            for m, s, p in zip(f["model"], f["sample_id"], f["prompt"], strict=True)
            if request_key(srv.base_url, m, [{"role": "user", "content": p}], PARAMS) in cached
        }
        assert 430 <= len(answered) < 900, len(answered)

        second = _run_cli(cfg, env, work / "run2")
        assert second.wait(timeout=180) == 0, (work / "run2.err").read_text()
        after = {(k["model"], k["sample_id"]): k for k in srv.stats()["by_key"]}

    # Nothing already answered was asked again ...
    for pair in answered:
        assert after[pair]["requests"] == before[pair]["requests"], pair
    # ... everything else was answered; a pair answered twice can only be one in flight at the kill.
    assert len(after) == 900 and all(k["ok"] >= 1 for k in after.values())
    twice = [p for p, k in after.items() if k["ok"] > 1]
    print(
        f"\nkilled after {len(answered)} committed answers; {len(twice)} in-flight answers were asked again"
    )
    assert not set(twice) & answered and len(twice) <= 16
    out = OutcomeTable.read_parquet(work / "out" / "mmlu3.parquet")
    assert_scores_equal_importer(out, table)
    report = (work / "run2.out").read_text()
    total = next(line for line in report.splitlines() if line.startswith("total")).split()
    assert int(total[2]) == len(answered) and int(total[1]) == 900 - len(answered)  # cached, then paid

    # The key went to the server (it rejects requests without it) but into nothing that was written.
    written = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert any(p.suffix == ".parquet" for p in written) and any("sqlite" in p.name for p in written)
    for p in written:
        assert FAKE_KEY.encode() not in p.read_bytes(), p
        assert FAKE_KEY[-8:].encode() not in p.read_bytes(), p
