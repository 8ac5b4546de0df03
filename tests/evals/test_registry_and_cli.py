"""The generic registry, data-folder resolution, and the CLI's error handling."""

from __future__ import annotations

import pytest

from evals.cli import build_parser, main
from evals.exceptions import DataNotFoundError, UnknownComponentError
from evals.paths import data_dir, source_dir
from evals.registry import Registry


def test_registry_lists_valid_names_on_unknown():
    reg: Registry[object] = Registry("widget")
    reg.add("alpha", object)
    reg.add("beta", int)
    with pytest.raises(UnknownComponentError, match=r"unknown widget 'gamma'; registered widgets: alpha, beta"):
        reg.get("gamma")
    assert reg.names() == ["alpha", "beta"] and "alpha" in reg and len(reg) == 2


def test_registry_rejects_a_different_object_under_a_taken_name():
    reg: Registry[object] = Registry("widget")
    reg.add("alpha", int)
    reg.add("alpha", int)  # the same object again is fine
    with pytest.raises(ValueError, match="already registered"):
        reg.add("alpha", str)


def test_data_dir_resolution_order(tmp_path, monkeypatch):
    monkeypatch.setenv("ROUTELAB_DATA_DIR", str(tmp_path))
    assert data_dir() == tmp_path
    explicit = tmp_path / "x"
    explicit.mkdir()
    assert data_dir(explicit) == explicit  # --data-dir wins over the environment
    monkeypatch.setenv("ROUTELAB_DATA_DIR", str(tmp_path / "missing"))
    with pytest.raises(DataNotFoundError, match="from ROUTELAB_DATA_DIR"):
        data_dir()
    with pytest.raises(DataNotFoundError, match="from --data-dir"):
        data_dir(tmp_path / "nope")


def test_source_dir_names_the_missing_folder(shared_data):
    with pytest.raises(DataNotFoundError, match="no-such-source"):
        source_dir("no-such-source", shared_data)
    assert source_dir("mmlu-pro-outputs", shared_data).is_dir()


def test_cli_has_subcommands_and_prints_errors_without_traceback(capsys, tmp_path):
    parser = build_parser()
    assert parser.prog == "routelab"
    with pytest.raises(SystemExit):
        main(["--help"])
    assert "COMMAND" in capsys.readouterr().out


def test_unknown_names_suggest_the_closest():
    from evals.graders import get_grader
    from evals.registry import did_you_mean, suggest
    from routers import make_router

    assert suggest("mmlu_pro", ["mmlu-pro", "routerbench", "gsm8k"]) == ["mmlu-pro"]  # separators ignored
    assert suggest("knnn", ["knn", "mf", "category"]) == ["knn"]  # a typo
    assert suggest("zzz", ["knn", "mf"]) == [] and did_you_mean("zzz", ["knn"]) == ""
    assert did_you_mean("cost_aware", ["cost-aware", "knn"]) == " (did you mean 'cost-aware'?)"
    with pytest.raises(UnknownComponentError, match=r"^unknown router 'knnn' \(did you mean 'knn'\?\); registered"):
        make_router("knnn")
    with pytest.raises(UnknownComponentError, match=r"^unknown grader 'mcq-letter' \(did you mean 'mcq_letter'\?\)"):
        get_grader("mcq-letter")
    reg: Registry[object] = Registry("widget")
    reg.add("alpha", object)
    with pytest.raises(UnknownComponentError, match=r"^unknown widget \['alpha'\]; registered widgets: alpha$"):
        reg.get(["alpha"])  # an unhashable name from a broken config is still a clean error
