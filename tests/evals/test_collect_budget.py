"""Collection never pays twice by accident (issue 13 item 8), against the real replay server on loopback.

- a cache file that exists but is not a valid database stops the run before any request, naming the file and
  the way out, and is left untouched;
- ``routelab collect`` prints the estimated spend (prompts x models x expected tokens x prices) before the first
  call, excluding answers already cached;
- ``max_spend_usd`` / ``--max-spend`` stop the run before the cap is passed, say what was spent, keep what was
  received (a rerun asks only for the rest).
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import httpx
import pandas as pd
import pytest

from evals.cli import main
from evals.collect import collect, load_config, parse_config
from evals.collect.budget import DEFAULT_EXPECTED_OUTPUT_TOKENS, reservation
from evals.collect.cache import CacheError, ResponseCache
from evals.exceptions import ConfigError
from evals.outcomes import OutcomeTable
from evals.prices import Price
from evals.serving import ReplayServer

N_SAMPLES = 12
# USD per 1M tokens (input, output), set in the config so the expected bill is exact.
PRICES = {"big": (10.0, 30.0), "small": (0.5, 1.5)}
OUTPUT_TOKENS = {"big": 800, "small": 200}


@pytest.fixture(scope="module")
def answers() -> OutcomeTable:
    """12 multiple-choice questions x 2 models with recorded answers and usage."""
    rows = []
    for i in range(N_SAMPLES):
        prompt = f"Question {i}: which letter comes first? " + "context " * (20 + 7 * i)
        for model in PRICES:
            rows.append(
                dict(
                    sample_id=f"q{i}",
                    model=model,
                    prompt=prompt,
                    reference="A",
                    response="The answer is (A)." if model == "big" or i % 2 else "The answer is (B).",
                    score=0.0,
                    cost_usd=0.0,
                    input_tokens=len(prompt) // 4,
                    output_tokens=OUTPUT_TOKENS[model],
                )
            )
    return OutcomeTable(pd.DataFrame(rows))


@pytest.fixture()
def replay(answers):
    with ReplayServer(answers) as srv:
        yield srv


def write_config(folder: Path, source: Path, base_url: str, extra: str = "") -> Path:
    models = "".join(
        f'[[models]]\nname = "{m}"\nprovider = "replay"\ninput_per_1m = {i}\noutput_per_1m = {o}\n'
        "params = { temperature = 0.0, max_tokens = 1000 }\n"
        for m, (i, o) in PRICES.items()
    )
    cfg = folder / "collect.toml"
    cfg.write_text(
        f'output = "out.parquet"\ncache = "answers.sqlite"\n{extra}\n[tasks]\nsource = "{source}"\n'
        f'[grader]\nname = "mcq_letter"\n[providers.replay]\nbase_url = "{base_url}"\nconcurrency = 4\n{models}'
    )
    return cfg


@pytest.fixture()
def setup(tmp_path, answers, replay) -> tuple[Path, Path]:
    """(config path, cache path) of a collection against the replay server."""
    source = tmp_path / "answers.parquet"
    answers.to_parquet(source)
    cfg = write_config(tmp_path, source, replay.base_url)
    return cfg, tmp_path / "answers.sqlite"


def full_bill(answers: OutcomeTable) -> float:
    """What asking every (sample, model) once costs at the recorded usage."""
    f = answers.frame
    return float(
        sum(
            (row.input_tokens * PRICES[row.model][0] + row.output_tokens * PRICES[row.model][1]) / 1e6
            for row in f.itertuples()
        )
    )


def assert_refused_untouched(cache: Path, capsys, replay, cfg: Path) -> None:
    before = cache.read_bytes()
    status = main(["collect", str(cfg), "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert status == 2
    assert len(err.splitlines()) == 1, err  # one line, no traceback
    assert str(cache) in err and "--cache NEW" in err and "Move it aside" in err
    assert replay.stats()["requests"] == 0  # nothing asked, nothing paid
    assert cache.read_bytes() == before  # the file is left as it was for the user to inspect


def test_empty_cache_file_stops_the_run_before_any_request(setup, replay, capsys):
    cfg, cache = setup
    cache.write_bytes(b"")
    assert_refused_untouched(cache, capsys, replay, cfg)


def test_truncated_cache_file_stops_the_run_before_any_request(setup, replay, capsys):
    cfg, cache = setup
    assert main(["collect", str(cfg), "--no-progress"]) == 0
    capsys.readouterr()
    data = cache.read_bytes()
    assert len(data) > 8192
    cache.write_bytes(data[: len(data) // 2])
    replay.reset_stats()
    assert_refused_untouched(cache, capsys, replay, cfg)


def test_garbage_and_foreign_database_cache_files_are_refused(setup, replay, capsys):
    cfg, cache = setup
    cache.write_bytes(b"this is not a database\n" * 100)
    assert_refused_untouched(cache, capsys, replay, cfg)
    cache.unlink()
    other = sqlite3.connect(cache)
    other.execute("CREATE TABLE responses (id INTEGER, text TEXT)")
    other.commit()
    other.close()
    with pytest.raises(CacheError, match="columns"):
        ResponseCache(cache)


def test_estimate_is_printed_before_the_first_call_and_excludes_cached_answers(setup, replay, answers, capsys):
    cfg, _ = setup
    assert main(["collect", str(cfg), "--no-progress"]) == 0
    out = capsys.readouterr().out
    first = out.splitlines()[0]
    # prompts x models x (characters / 4 input, expected output tokens capped by max_tokens) x config prices
    expected = sum(
        (len(p) / 4 * PRICES[m][0] + DEFAULT_EXPECTED_OUTPUT_TOKENS * PRICES[m][1]) / 1e6
        for p in answers.samples["prompt"]
        for m in PRICES
    )
    assert first.startswith(f"estimated spend: ${expected:.4f} for 24 of 24 answers (12 prompts x 2 models; 0 ")
    assert "at most $" in first
    # The estimate comes before any request: the callback sees a server that was never asked.
    seen = []
    config = load_config(cfg)
    replay.reset_stats()
    collect(config, progress=False, write=False, on_estimate=lambda e: seen.append((e, replay.stats()["requests"])))
    estimate, requests_then = seen[0]
    assert requests_then == 0 and estimate.cached == 24 and estimate.to_ask == 0 and estimate.expected_usd == 0


def test_max_spend_stops_before_the_cap_and_a_rerun_pays_only_for_the_rest(setup, replay, answers, capsys):
    cfg, _ = setup
    bill = full_bill(answers)
    cap = round(bill * 0.4, 6)
    status = main(["collect", str(cfg), "--no-progress", "--max-spend", str(cap)])
    out = capsys.readouterr().out
    assert status == 3
    assert f"spend cap: ${cap:.4f}" in out and "the estimate" in out
    assert "STOPPED at the spend cap" in out and "rerun with a higher --max-spend" in out
    first_ok = replay.stats()["ok"]
    spent = float(out.split("this run spent $")[1].split(";")[0])
    assert 0 < spent <= cap  # stopped before passing the cap ...
    assert 0 < first_ok < 2 * N_SAMPLES  # ... after paying for some answers, not all ...
    config = load_config(cfg)
    largest = max(
        reservation(Price(m.name, "replay", *PRICES[m.name]), m, len(p))
        for m in config.models
        for p in answers.samples["prompt"]
    )
    assert spent > cap - largest  # ... and within one call's reservation of it (in-flight calls are waited for)
    # Rerun without a cap: every answer received before comes from the cache; each pair was paid once.
    replay.reset_stats()
    assert main(["collect", str(cfg), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert replay.stats()["ok"] == 2 * N_SAMPLES - first_ok
    assert f"{first_ok} already cached" in out.splitlines()[0]
    # Answers from the cache cost nothing to this run but keep their price in the table.
    table = OutcomeTable.read_parquet(cfg.parent / "out.parquet")
    assert table.n_samples == N_SAMPLES and (table.frame["cost_usd"] > 0).all()


def test_max_spend_from_the_config_is_honoured_and_validated(setup, replay, answers, tmp_path):
    cfg, _ = setup
    cap = full_bill(answers) / 4
    cfg.write_text(f"max_spend_usd = {cap}\n" + cfg.read_text())
    result = collect(load_config(cfg), progress=False, write=False)
    assert result.stopped_at_cap and result.max_spend_usd == pytest.approx(cap)
    assert 0 < result.total_cost <= cap and result.not_asked > 0
    base = {
        "output": "o.parquet",
        "tasks": {"source": "x.parquet"},
        "providers": {"p": {"base_url": "http://x.test/v1"}},
        "models": [{"name": "m", "provider": "p"}],
    }
    for bad in (-1, "five", float("inf")):
        with pytest.raises(ConfigError, match="max_spend_usd must be a number >= 0"):
            parse_config({**base, "max_spend_usd": bad})
    assert main(["collect", str(cfg), "--max-spend", "-1"]) == 2
    assert replay.stats()["requests"] > 0  # only the in-process run above asked anything


class ScriptedJudge(httpx.AsyncBaseTransport):
    """Loopback to the replay server for candidates; a scripted judge (fixed usage) at ``judge.test``."""

    def __init__(self) -> None:
        self.network = httpx.AsyncHTTPTransport()
        self.judge_requests = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.host != "judge.test":
            return await self.network.handle_async_request(request)
        self.judge_requests += 1
        return httpx.Response(
            200,
            json={
                "choices": [{"message": {"role": "assistant", "content": "Fine. Rating: [[7]]"}}],
                "usage": {"prompt_tokens": 1000, "completion_tokens": 10},
            },
        )

    async def aclose(self) -> None:
        await self.network.aclose()


def test_judge_calls_are_capped_too_and_nothing_is_graded_without_a_verdict(setup, replay):
    cfg, _ = setup
    assert main(["collect", str(cfg), "--no-progress"]) == 0  # every candidate answer is now cached
    judge = (
        'name = "judge_single"\njudge = { name = "judge-1", provider = "judge", input_per_1m = 10.0, '
        "output_per_1m = 30.0, params = { max_tokens = 50 } }\n[providers.judge]\n"
        'base_url = "http://judge.test/v1"\nconcurrency = 2'
    )
    cfg.write_text(cfg.read_text().replace('name = "mcq_letter"', judge))
    per_verdict = (1000 * 10 + 10 * 30) / 1e6
    cap = 5.5 * per_verdict
    config = load_config(cfg)
    config = type(config)(**{**config.__dict__, "max_spend_usd": cap})
    transport = ScriptedJudge()
    result = collect(config, transport=transport, progress=False, write=False)
    judge_spend = next(s for s in result.spend if s.role == "judge")
    assert all(s.cache_hits == N_SAMPLES and s.calls == 0 for s in result.spend if s.role == "candidate")
    assert 0 < judge_spend.calls == transport.judge_requests < 2 * N_SAMPLES
    assert judge_spend.cost_usd == pytest.approx(judge_spend.calls * per_verdict) and result.total_cost <= cap
    # Identical judge prompts (two models giving the same answer) are asked once; the rest were not asked.
    verdicts = judge_spend.calls + judge_spend.cache_hits
    assert result.stopped_at_cap and result.not_asked == 2 * N_SAMPLES - verdicts
    graded = 0 if result.table is None else len(result.table.frame)
    assert graded <= verdicts  # an answer without a verdict is left out, never guessed
