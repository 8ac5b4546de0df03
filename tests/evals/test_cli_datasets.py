"""``routelab datasets list`` and ``routelab datasets show``, called through ``evals.cli.main``."""

from __future__ import annotations

import json

import pytest

from evals.cli import main
from evals.paths import repo_datasets_dir

FIXTURE = repo_datasets_dir() / "fixtures" / "example_outcomes.csv"


@pytest.mark.slow
def test_list_shows_the_six_sources(shared_data, capsys):
    assert main(["datasets", "list", "--data-dir", str(shared_data)]) == 0
    out = capsys.readouterr().out
    lines = {line.split()[0]: line.split() for line in out.splitlines() if line.strip()}
    assert lines["mmlu-pro"][1:4] == ["10,262", "14", "estimated"]
    assert lines["routerbench-mbpp"][1:4] == ["427", "11", "measured"]
    assert lines["arena-bench-v1"][1:4] == ["271", "15", "estimated"]
    assert lines["routellm-mmlu"][2] == lines["routellm-gsm8k"][2] == lines["routellm-mt-bench"][2] == "2"
    assert "license" in out and "Apache-2.0" in out


def test_show_a_source(shared_data, capsys):
    assert main(["datasets", "show", "routellm-mt-bench", "--data-dir", str(shared_data)]) == 0
    out = capsys.readouterr().out
    assert "routellm-mt-bench: 160 samples x 2 models" in out
    row = next(line for line in out.splitlines() if line.startswith("gpt-4-1106-preview"))
    cells = row.split()
    assert cells[1] == "160" and float(cells[2]) == 0.914 and cells[-1] == "estimated"
    assert "95% CI" in out and "categories (8)" in out and "cost_note: ESTIMATED" in out


def test_show_a_file_in_the_long_format_as_json(capsys):
    assert main(["datasets", "show", str(FIXTURE), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["samples"] == 10 and [m["model"] for m in summary["models"]] == [
        "Llama-3.1-8B-Instruct",
        "Llama-3.1-70B-Instruct",
        "gpt-4o-2024-05-13",
    ]
    small = summary["models"][0]
    assert small["quality"] == 0.6 and small["cost"] == "measured"
    assert small["ci95"][0] < 0.6 < small["ci95"][1]
    assert summary["categories"] == {"arithmetic": 3, "geography": 3, "reasoning": 4}


def test_bad_inputs_exit_2_with_one_line(tmp_path, capsys):
    cases = [
        (["datasets", "show", "no-such-source"], "unknown source 'no-such-source'"),
        (["datasets", "list", "--data-dir", str(tmp_path / "missing")], "does not exist"),
        (["datasets", "show", str(FIXTURE), "--data-dir", str(tmp_path / "missing")], "does not exist"),
        (["datasets", "show", str(tmp_path / "missing.csv")], "missing.csv"),
    ]
    for argv, expected in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip()
        assert err.startswith("routelab: error:") and expected in err and "\n" not in err, argv


def test_a_mistyped_source_name_gets_a_did_you_mean(shared_data, capsys):
    assert main(["datasets", "show", "mmlu_pro", "--data-dir", str(shared_data)]) == 2
    err = capsys.readouterr().err.strip()
    assert "unknown source 'mmlu_pro'" in err and "did you mean 'mmlu-pro'?" in err and "\n" not in err


def test_the_quality_interval_is_the_shared_wilson_helper(capsys):
    from evals.stats import wilson_interval

    assert main(["datasets", "show", str(FIXTURE), "--json"]) == 0
    small = json.loads(capsys.readouterr().out)["models"][0]
    assert small["samples"] == 10 and small["quality"] == 0.6  # 6 right of 10, 0/1 scores
    assert small["ci95"] == list(wilson_interval(6, 10))
