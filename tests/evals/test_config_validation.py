"""Malformed ``routelab eval`` / ``routelab export`` configs: one line naming the file and the field, exit 2.

Exit status 1 means "a gate failed" (CI reads it so), so a bad config must never exit 1, and never show a
traceback. Every case of issue 13 item 9 is here, each named after what it proves.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from evals.cli import main
from evals.exceptions import ConfigError
from evals.workbench.config import config_from_dict
from evals.workbench.gates import GATE_CHECKS

GOOD = {
    "name": "validation",
    "dataset": {"source": "outcomes.csv", "max_samples": 100},
    "split": {"fractions": [0.6, 0.2, 0.2], "seed": 0, "stratify": True},
    "evaluation": {"n_points": 50, "margin": 0.005, "n_resamples": 100, "seed": 0},
    "target": {"kind": "parity", "value": 0.01},
    "gates": {"router": "knn", "max_quality_drop": 0.02, "min_savings": 0.5},
    "routers": [{"name": "category"}, {"name": "knn", "params": {"encoder": "hash-bow-256", "k": 5}}],
}


def _toml_value(v: object) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return f'"{v}"'
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{ " + ", ".join(f"{k} = {_toml_value(x)}" for k, x in v.items()) + " }"
    return repr(v)


def _write(tmp_path: Path, section: str, key: str, value: object) -> Path:
    """GOOD as a TOML file, with ``[section] key = value`` replaced (section "routers": the knn entry)."""
    lines = [f'name = "{GOOD["name"]}"']
    for sec in ("dataset", "split", "evaluation", "target", "gates"):
        lines.append(f"[{sec}]")
        for k, v in GOOD[sec].items():
            lines.append(f"{k} = {_toml_value(value if (sec, k) == (section, key) else v)}")
    for spec in GOOD["routers"]:
        lines.append("[[routers]]")
        for k, v in spec.items():
            is_bad = section == "routers" and spec["name"] == "knn" and k == key
            lines.append(f"{k} = {_toml_value(value if is_bad else v)}")
    (tmp_path / "outcomes.csv").write_text("not read: the config is refused first\n", encoding="utf-8")
    path = tmp_path / "bad.toml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _refused(tmp_path: Path, capsys, section: str, key: str, value: object) -> str:
    path = _write(tmp_path, section, key, value)
    status = main(["eval", str(path), "--no-mlflow", "--quiet", "--out", str(tmp_path / "rep")])
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert status == 2, (status, err)
    assert err.startswith("routelab: error:") and "\n" not in err, err
    assert "Traceback" not in captured.err + captured.out
    assert str(path) in err, err  # names the file
    assert not (tmp_path / "rep").exists()  # refused before anything ran
    return err


# The ten configs of issue 13 that gave a traceback with exit status 1.
@pytest.mark.parametrize(
    ("section", "key", "value", "named"),
    [
        ("split", "fractions", ["a", 0.2, 0.2], "[split] fractions"),
        ("split", "fractions", 0.6, "[split] fractions"),
        ("evaluation", "n_points", "abc", "[evaluation] n_points"),
        ("evaluation", "n_resamples", 0, "[evaluation] n_resamples"),
        ("dataset", "max_samples", -5, "[dataset] max_samples"),
        ("evaluation", "margin", "x", "[evaluation] margin"),
        ("evaluation", "seed", "abc", "[evaluation] seed"),
        ("target", "value", "x", "[target] value"),
        ("routers", "params", "k=5", "params must be a table"),
        ("gates", "min_savings", "half", "[gates] min_savings"),
    ],
    ids=[
        "fractions-not-numbers",
        "fractions-not-a-list",
        "n_points-not-an-integer",
        "n_resamples-zero",
        "max_samples-negative",
        "margin-not-a-number",
        "seed-not-an-integer",
        "target-value-not-a-number",
        "router-params-not-a-table",
        "gate-limit-not-a-number",
    ],
)
def test_a_malformed_field_exits_2_with_one_line_naming_it(tmp_path, capsys, section, key, value, named):
    err = _refused(tmp_path, capsys, section, key, value)
    assert named in err, err
    assert repr(value) in err or str(value) in err, err  # shows what was given


def test_split_seed_of_the_wrong_type_names_the_split_section(tmp_path, capsys):
    assert "[split] seed must be an integer >= 0" in _refused(tmp_path, capsys, "split", "seed", "abc")


def test_stratify_must_be_a_boolean_not_a_string(tmp_path, capsys):
    assert "[split] stratify must be true or false" in _refused(tmp_path, capsys, "split", "stratify", "yes")


def test_fractions_that_do_not_sum_to_one_are_refused(tmp_path, capsys):
    err = _refused(tmp_path, capsys, "split", "fractions", [0.5, 0.5, 0.5])
    assert "summing to 1" in err


def test_a_knn_router_with_negative_k_is_refused_by_its_declared_constraint(tmp_path, capsys):
    err = _refused(tmp_path, capsys, "routers", "params", {"encoder": "hash-bow-256", "k": -5})
    assert "knn" in err and "'k'" in err and "-5" in err


def test_an_unknown_router_parameter_is_refused_naming_the_entry(tmp_path, capsys):
    err = _refused(tmp_path, capsys, "routers", "params", {"kk": 5})
    assert "[[routers]] entry 2 (knn)" in err and "kk" in err


def test_a_parity_target_of_2_is_refused_with_its_range(tmp_path, capsys):
    err = _refused(tmp_path, capsys, "target", "value", 2)
    assert "[target]" not in err or "value" in err
    assert "in [0, 1]" in err and "parity" in err


def test_a_boolean_is_not_accepted_as_a_number(tmp_path, capsys):
    assert "[evaluation] margin" in _refused(tmp_path, capsys, "evaluation", "margin", True)


def test_a_valid_config_parses_with_every_field_typed():
    cfg = config_from_dict(GOOD, where="good.toml")
    assert cfg.fractions == (0.6, 0.2, 0.2) and cfg.n_resamples == 100 and cfg.max_samples == 100
    assert cfg.gates == {"router": "knn", "max_quality_drop": 0.02, "min_savings": 0.5}
    assert cfg.target.kind == "parity" and cfg.target.value == 0.01


def test_errors_from_a_dict_config_name_where_it_came_from():
    raw = {**GOOD, "evaluation": {**GOOD["evaluation"], "n_points": 1}}
    with pytest.raises(ConfigError, match=r"^the Compare page: \[evaluation\] n_points must be an integer >= 2"):
        config_from_dict(raw, where="the Compare page")


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        ("parity:2", "value must be in [0, 1]"),
        ("parity:-1", "value must be in [0, 1]"),
        ("budget:-1", "value must be >= 0"),
        ("parity:abc", "--target value must be a number, got 'abc'"),
    ],
    ids=["parity-above-1", "parity-negative-says-the-range", "budget-negative", "not-a-number"],
)
def test_export_target_out_of_range_is_refused_before_fitting(tmp_path, capsys, target, expected):
    good = _write(tmp_path, "none", "none", None)
    out = tmp_path / "exp"
    status = main(["export", "--config", str(good), "--router", "knn", "--target", target, "--out", str(out)])
    err = capsys.readouterr().err.strip()
    assert status == 2 and err.startswith("routelab: error:") and "\n" not in err, err
    assert expected in err and "must be a number" not in err.replace(expected, "") and not out.exists()


@pytest.mark.parametrize("gate", sorted(GATE_CHECKS))
def test_every_gate_in_the_table_refuses_a_limit_of_the_wrong_type(gate):
    raw = {**GOOD, "gates": {"router": "knn", gate: "half"}}
    with pytest.raises(ConfigError, match=rf"^cfg.toml: \[gates\] {gate} must be "):
        config_from_dict(raw, where="cfg.toml")


def test_router_defaults_give_the_encoder_to_every_router_that_takes_one_and_does_not_set_it():
    from routers.registry import param_specs

    raw = {
        **GOOD,
        "router_defaults": {"encoder": "hash-bow-256"},
        "routers": [
            {"name": "knn"},
            {"name": "knn", "label": "knn-own", "params": {"encoder": "minilm-static"}},
            {"name": "category"},
        ],
        "gates": {},
    }
    cfg = config_from_dict(raw)
    assert not any(p["name"] == "encoder" for p in param_specs("category"))
    assert [spec["params"] for spec in cfg.routers] == [{"encoder": "hash-bow-256"}, {"encoder": "minilm-static"}, {}]
    assert cfg.router_defaults == {"encoder": "hash-bow-256"}


def test_router_defaults_are_checked_like_router_params(tmp_path, capsys):
    with pytest.raises(ConfigError, match=r"\[router_defaults\] has unknown key\(s\) \['k'\]"):
        config_from_dict({**GOOD, "router_defaults": {"k": 5}})
    with pytest.raises(ConfigError, match=r"\[router_defaults\] encoder must be a non-empty string"):
        config_from_dict({**GOOD, "router_defaults": {"encoder": ""}})


def test_a_routers_table_instead_of_entries_points_at_router_defaults():
    with pytest.raises(ConfigError, match=r"defaults for every router go in \[router_defaults\]"):
        config_from_dict({**GOOD, "routers": {"encoder": "minilm-static"}})
