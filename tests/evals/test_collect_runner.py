"""The collection runner in-process: judge graders through the cached client, prompts files, config errors."""

from __future__ import annotations

import json
import re
from pathlib import Path

import httpx
import pandas as pd
import pytest

from evals.cli import main
from evals.collect import collect, load_config, parse_config
from evals.exceptions import ConfigError, DataNotFoundError, SchemaError
from evals.outcomes import OutcomeTable
from evals.serving import build_replay_app


class Hosts(httpx.AsyncBaseTransport):
    """Route requests by host: the replay app for candidates, a scripted judge for ``judge.test``."""

    def __init__(self, replay_app, judge):
        self.replay = httpx.ASGITransport(app=replay_app)
        self.judge = judge
        self.judge_requests: list[dict] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.host == "judge.test":
            body = json.loads(await request.aread())
            self.judge_requests.append(body)
            text = self.judge(body["messages"])
            return httpx.Response(
                200,
                json={
                    "choices": [{"message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
                    "usage": {"prompt_tokens": 100, "completion_tokens": 10},
                },
            )
        return await self.replay.handle_async_request(request)


@pytest.fixture()
def answers() -> OutcomeTable:
    rows = []
    for i in range(6):
        for model in ("good", "bad"):
            rows.append(
                dict(
                    sample_id=f"q{i}",
                    model=model,
                    prompt=f"What is {i} + {i}?",
                    reference=str(2 * i),
                    response=f"It is {2 * i}." if model == "good" else "No idea.",
                    score=0.0,
                    cost_usd=0.0,
                )
            )
    return OutcomeTable(pd.DataFrame(rows))


def config_text(tmp_path: Path, source: Path, grader: str) -> Path:
    cfg = tmp_path / "c.toml"
    cfg.write_text(f"""
output = "out.parquet"
cache = "cache.sqlite"
[tasks]
source = "{source}"
{grader}
[providers.replay]
base_url = "http://replay.test/v1"
[providers.judge]
base_url = "http://judge.test/v1"
concurrency = 2
[[models]]
name = "good"
provider = "replay"
input_per_1m = 1.0
output_per_1m = 2.0
[[models]]
name = "bad"
provider = "replay"
input_per_1m = 0.1
output_per_1m = 0.2
""")
    return cfg


def rating_judge(messages):
    answer = re.search(r"<answer-(DATA-\w+)>\n(.*?)\n</answer-\1>", messages[-1]["content"], re.S).group(2)
    return "Correct. Rating: [[9]]" if answer.startswith("It is") else "Useless. Rating: [[2]]"


def test_single_judge_grades_through_the_cached_client(tmp_path, answers):
    source = tmp_path / "answers.parquet"
    answers.to_parquet(source)
    judge = (
        '[grader]\nname = "judge_single"\nparams = { reference = true }\n'
        'judge = { name = "judge-1", provider = "judge", input_per_1m = 10.0, output_per_1m = 30.0 }'
    )
    cfg = load_config(config_text(tmp_path, source, judge))
    transport = Hosts(build_replay_app(answers), rating_judge)
    result = collect(cfg, transport=transport, progress=False)
    t = result.table
    assert t.n_samples == 6 and set(t.frame["grader"]) == {"judge_single:judge-1"}
    scores = t.frame.set_index("model")["score"]
    assert scores["good"].tolist() == pytest.approx([8 / 9] * 6) and scores["bad"].tolist() == pytest.approx(
        [1 / 9] * 6
    )
    assert len(transport.judge_requests) == 12
    assert "reference" in transport.judge_requests[0]["messages"][0]["content"].lower()
    judge_spend = next(s for s in result.spend if s.role == "judge")
    assert judge_spend.calls == 12 and judge_spend.cost_usd == pytest.approx(12 * (100 * 10 + 10 * 30) / 1e6)
    # A second run asks nobody: answers and verdicts come from the cache, and nothing is spent.
    again = collect(cfg, transport=transport, progress=False)
    assert len(transport.judge_requests) == 12 and again.total_cost == 0.0
    assert all(s.calls == 0 and s.cache_hits > 0 for s in again.spend)
    assert "cache hits cost nothing" in again.format_spend()


def test_unparsable_verdicts_are_counted_and_left_out(tmp_path, answers):
    source = tmp_path / "answers.parquet"
    answers.to_parquet(source)
    judge = (
        '[grader]\nname = "judge_single"\njudge = { name = "j", provider = "judge", input_per_1m = 1.0, '
        "output_per_1m = 1.0 }"
    )
    cfg = load_config(config_text(tmp_path, source, judge))

    def moody(messages):
        return "Rating: [[7]]" if "It is 0." not in messages[-1]["content"] else "I cannot decide."

    result = collect(cfg, transport=Hosts(build_replay_app(answers), moody), progress=False)
    assert result.unparsable == 1 and result.table.n_samples == 5  # sample q0 dropped, not guessed
    assert result.table.card.extra["unparsable_verdicts"] == 1
    assert "1 judge verdict(s) could not be parsed" in result.format_spend()


def test_pairwise_judge_against_a_baseline(tmp_path, answers):
    source = tmp_path / "answers.parquet"
    answers.to_parquet(source)
    judge = (
        '[grader]\nname = "judge_pairwise"\nparams = { baseline = "bad" }\n'
        'judge = { name = "j", provider = "judge", input_per_1m = 1.0, output_per_1m = 1.0 }'
    )
    cfg = load_config(config_text(tmp_path, source, judge))

    def prefers_numbers(messages):
        user = messages[-1]["content"]
        a = re.search(r"<answer_a-(DATA-\w+)>\n(.*?)\n</answer_a-\1>", user, re.S).group(2)
        b = re.search(r"<answer_b-(DATA-\w+)>\n(.*?)\n</answer_b-\1>", user, re.S).group(2)
        return "[[C]]" if a == b else ("[[A]]" if a.startswith("It is") else "[[B]]")

    transport = Hosts(build_replay_app(answers), prefers_numbers)
    result = collect(cfg, transport=transport, progress=False)
    scores = result.table.frame.set_index("model")["score"]
    assert (scores["good"] == 1.0).all() and (scores["bad"] == 0.5).all()  # the baseline ties with itself
    # Two orders per answer of "good"; the baseline's own answers tie without a call.
    assert len(transport.judge_requests) == 12
    assert set(result.table.frame.loc[result.table.frame["model"] == "bad", "extracted"]) == {"same"}


def test_prompts_file_and_missing_usage_is_flagged_estimated(tmp_path):
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("\n".join(json.dumps({"prompt": f"Say {i}", "reference": str(i)}) for i in range(3)))

    def handler(request):
        body = json.loads(request.content)
        return httpx.Response(
            200, json={"choices": [{"message": {"content": body["messages"][-1]["content"][4:]}}]}
        )

    cfg = tmp_path / "c.toml"
    cfg.write_text(f"""
output = "o.parquet"
cache = "c.sqlite"
[tasks]
prompts = "{prompts.name}"
[grader]
name = "number"
[providers.local]
base_url = "http://local.test/v1"
[[models]]
name = "echo"
provider = "local"
system = "Answer with a number."
input_per_1m = 4.0
output_per_1m = 4.0
""")
    result = collect(load_config(cfg), transport=httpx.MockTransport(handler), progress=False)
    f = result.table.frame
    assert f["score"].tolist() == [1.0, 1.0, 1.0] and f["sample_id"].tolist() == ["0", "1", "2"]
    assert f["cost_estimated"].all() and "ESTIMATED" in result.format_spend()
    assert f["input_tokens"].iat[0] == pytest.approx((len("Say 0") + len("Answer with a number.")) / 4)
    assert (tmp_path / "o.parquet").exists()


def test_failed_calls_are_reported_and_the_cli_exits_1(tmp_path, answers, capsys, monkeypatch):
    source = tmp_path / "answers.parquet"
    answers.to_parquet(source)
    cfg = config_text(tmp_path, source, '[grader]\nname = "text"')
    text = cfg.read_text().replace('[[models]]\nname = "bad"', '[[models]]\nname = "missing-model"')
    cfg.write_text(text)
    import evals.collect.runner as runner

    app = build_replay_app(answers)
    real = runner.acollect

    async def with_transport(config, **kw):
        return await real(config, **{**kw, "transport": httpx.ASGITransport(app=app)})

    monkeypatch.setattr(runner, "acollect", with_transport)
    status = main(["collect", str(cfg), "--no-progress"])
    out, err = capsys.readouterr()
    assert status == 1
    assert "6 call(s) failed" in out and "model_not_found" not in out and "does not exist" in err
    assert "HTTP 404" in err and "not retried" in err


def test_config_errors_name_the_problem(tmp_path):
    base = {
        "output": "o.parquet",
        "tasks": {"source": "mmlu-pro"},
        "providers": {"p": {"base_url": "http://x.test/v1"}},
        "models": [{"name": "m", "provider": "p"}],
    }
    assert parse_config(base).models[0].wire_name == "m"
    bad_cases = [
        ({"tasks": {"source": "a", "prompts": "b"}}, "exactly one of 'source'"),
        (
            {"models": [{"name": "m", "provider": "nope"}]},
            "provider 'nope' is not defined; defined providers: p",
        ),
        ({"providers": {"p": {"base_url": "ftp://x"}}}, "base_url must be an http"),
        (
            {"providers": {"p": {"base_url": "http://x", "api_key_env": "sk-live-123 456"}}},
            "NAME of an environment",
        ),
        (
            {"providers": {"p": {"base_url": "http://x", "concurrency": 0}}},
            "concurrency must be an integer >= 1",
        ),
        (
            {"providers": {"p": {"base_url": "http://x", "api_key": "sk-1"}}},
            r"unknown key\(s\) \['api_key'\]",
        ),
        ({"models": [{"name": "m", "provider": "p"}, {"name": "m", "provider": "p"}]}, "more than once"),
        ({"models": [{"name": "m", "provider": "p", "input_per_1m": 1.0}]}, "give both input_per_1m"),
        ({"colour": "blue"}, r"unknown key\(s\) \['colour'\]"),
    ]
    for patch, message in bad_cases:
        with pytest.raises(ConfigError, match=message):
            parse_config({**base, **patch})
    with pytest.raises(ConfigError, match="'output'"):
        parse_config({k: v for k, v in base.items() if k != "output"})
    with pytest.raises(DataNotFoundError):
        load_config(tmp_path / "nope.toml")
    broken = tmp_path / "b.toml"
    broken.write_text("output = [")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(broken)


def test_unknown_price_and_missing_judge_fail_before_any_call(tmp_path, answers):
    source = tmp_path / "answers.parquet"
    answers.to_parquet(source)
    cfg = parse_config(
        {
            "output": "o.parquet",
            "cache": str(tmp_path / "c.sqlite"),
            "tasks": {"source": str(source)},
            "providers": {"p": {"base_url": "http://x.test/v1"}},
            "models": [{"name": "unpriced-model-x", "provider": "p"}],
        }
    )

    def no_calls(request):
        raise AssertionError("no request may be made")

    with pytest.raises(ConfigError, match="no price for model 'unpriced-model-x'"):
        collect(cfg, transport=httpx.MockTransport(no_calls), progress=False)
    cfg = load_config(config_text(tmp_path, source, '[grader]\nname = "judge_single"'))
    with pytest.raises(ConfigError, match="needs a judge"):
        collect(cfg, transport=httpx.MockTransport(no_calls), progress=False)
    bad_prompts = tmp_path / "p.csv"
    bad_prompts.write_text("question\nhi\n")
    cfg = parse_config(
        {
            "output": "o.parquet",
            "tasks": {"prompts": str(bad_prompts)},
            "providers": {"p": {"base_url": "http://x.test/v1"}},
            "models": [{"name": "m", "provider": "p", "input_per_1m": 1, "output_per_1m": 1}],
        }
    )
    with pytest.raises(SchemaError, match="no 'prompt' column"):
        collect(cfg, transport=httpx.MockTransport(no_calls), progress=False)


def test_collect_works_inside_a_running_event_loop(tmp_path):
    """From Jupyter (a loop already running) ``collect`` must not fail with asyncio.run's error."""
    import asyncio

    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text(json.dumps({"prompt": "Say 7", "reference": "7"}))

    def handler(request):
        return httpx.Response(200, json={"choices": [{"message": {"content": "7"}}]})

    cfg = tmp_path / "c.toml"
    cfg.write_text(f"""
output = "o.parquet"
cache = "c.sqlite"
[tasks]
prompts = "{prompts.name}"
[grader]
name = "number"
[providers.local]
base_url = "http://local.test/v1"
[[models]]
name = "echo"
provider = "local"
input_per_1m = 1.0
output_per_1m = 1.0
""")

    async def inside_a_loop():
        return collect(load_config(cfg), transport=httpx.MockTransport(handler), progress=False)

    result = asyncio.run(inside_a_loop())
    assert result.table.frame["score"].tolist() == [1.0]
