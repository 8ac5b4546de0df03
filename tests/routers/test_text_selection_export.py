"""Text selection in exports: the learned rule is stored in router.json, checked on load, applied by the folder's
own runtime (and by ``load_folder`` without RouteLab), refused by a runtime released before it; exports without a
rule (every earlier one) decide exactly as before with the installed runtime."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from routers import Queries, make_router, runtime
from routers.export import TamperedExportError, export_router, load_exported
from routers.export import _folder as F
from routers.export._arrays import read_arrays

sys.path.insert(0, str(Path(__file__).parent))
from export_helpers import PRICES, small_table  # noqa: E402
from release_fixtures import release_dir, released_versions  # noqa: E402

SYSTEM = "You are a support assistant for a school.\nAnswer briefly and kindly.\nExamples follow.\n"
SHOTS = "".join(f"Q: sample question {i}?\nA: sample answer {i}.\n" for i in range(3))
CUE = "\nA: Let's think."
LAM = 0.05


def templated(prompt: str) -> str:
    return SYSTEM + SHOTS + "Q: " + prompt + CUE


@pytest.fixture(scope="module")
def table():
    base = small_table()
    frame = base.frame.copy()
    frame["prompt"] = [templated(p) for p in frame["prompt"]]
    from evals.outcomes import OutcomeTable

    return OutcomeTable(frame)


def _fit(table, name: str, text: str, **params):
    return make_router({"name": name, "params": {"encoder": "hash-bow-64", "text": text, **params}}).fit(table)


@pytest.mark.parametrize(("name", "text"), [("knn", "auto"), ("classifier", "last_user"), ("irt-blend", "auto"),
                                            ("cost-aware", "question"), ("mf", "auto")])
def test_an_export_stores_the_rule_and_decides_like_the_workbench(table, tmp_path, name, text):
    router = _fit(table, name, text)
    folder = export_router(router, tmp_path / "export", lam=LAM, prices=PRICES)
    manifest = json.loads((folder / F.MANIFEST).read_text())
    state = manifest["state"]
    rules = [state.get("text_selection")] + [p.get("text_selection") for p in state.get("parts", [])]
    assert router.text_selection_state() in rules
    if text in ("auto", "question"):
        assert router.text_selection_state()["prefix"] == SYSTEM + SHOTS
    assert f'`text = "{text}"`' in (folder / F.README).read_text()

    exported = load_exported(folder)
    prompts, cats = list(table.prompts), [str(c) for c in table.categories]
    for lam in (0.0, LAM, 1.0):
        assert exported.route(prompts, lam=lam, categories=cats) == list(
            router.route(Queries.of(prompts, cats), lam)
        )
    # New templated traffic: stripped the same way by the folder as by the workbench.
    live = [templated(f"brand new request {i} please think hard") for i in range(5)]
    assert exported.route(live) == list(router.route(Queries.of(live), LAM))
    # The folder's runtime alone (no RouteLab: what mlflow_model.py and a bare deployment run) agrees.
    alone, lam = runtime.load_folder(folder)
    assert lam == LAM and [alone.models[i] for i in alone.route_indices(prompts, lam, cats)] == exported.route(
        prompts, categories=cats
    )


def test_a_malformed_rule_in_router_json_is_refused_naming_the_field(table, tmp_path):
    folder = export_router(_fit(table, "knn", "auto"), tmp_path / "export", lam=LAM, prices=PRICES)
    mpath = folder / F.MANIFEST
    good = json.loads(mpath.read_text())
    for field, value, message in (
        ("mode", "everything", r"field state\.text_selection\.mode must be one of"),
        ("recurring_lines", "Options:", r"field state\.text_selection\.recurring_lines must be a list"),
        ("format", 7, r"field state\.text_selection\.format is 7"),
    ):
        bad = json.loads(json.dumps(good))
        bad["state"]["text_selection"][field] = value
        mpath.write_text(json.dumps(bad))
        with pytest.raises(TamperedExportError, match=message):
            load_exported(folder)
    mpath.write_text(json.dumps(good))
    assert load_exported(folder).route([templated("ok")])


def test_a_runtime_released_before_text_selection_is_refused_for_a_rule(table, tmp_path):
    """An old released runtime would ignore the rule and route on the whole prompt: refuse, do not mis-route."""
    old_runtime = (release_dir(released_versions()[0]) / "classifier" / F.RUNTIME).read_bytes()
    folder = export_router(_fit(table, "classifier", "auto"), tmp_path / "export", lam=LAM, prices=PRICES)
    (folder / F.RUNTIME).write_bytes(old_runtime)
    manifest = json.loads((folder / F.MANIFEST).read_text())
    manifest["files"][F.RUNTIME] = F.sha256_bytes(old_runtime)
    (folder / F.MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(TamperedExportError, match=r"selects text \(text_selection\), which .* does not apply"):
        load_exported(folder)
    # Without a rule, that same released runtime still loads (the refusal is about the rule only).
    plain = export_router(_fit(table, "classifier", "full"), tmp_path / "plain", lam=LAM, prices=PRICES)
    (plain / F.RUNTIME).write_bytes(old_runtime)
    manifest = json.loads((plain / F.MANIFEST).read_text())
    manifest["files"][F.RUNTIME] = F.sha256_bytes(old_runtime)
    (plain / F.MANIFEST).write_text(json.dumps(manifest))
    assert load_exported(plain).route([templated("ok")])


@pytest.mark.parametrize("version", released_versions())
def test_the_installed_runtime_decides_earlier_exports_as_recorded(version, tmp_path):
    """States written before text selection carry no rule: the installed runtime decides them as they did."""
    release = release_dir(version)
    expected = json.loads((release / "expected.json").read_text())
    prompts, cats = expected["prompts"], [c or "" for c in expected["categories"]]
    folders = [n for n in sorted(expected) if (release / n).is_dir()]
    assert folders
    for name in folders:
        manifest = json.loads((release / name / F.MANIFEST).read_text())
        assert "text_selection" not in json.dumps(manifest["state"])
        state = runtime.load_state(manifest["state"], read_arrays(release / name / F.ARRAYS))
        want = expected[name]
        lam = float(manifest["operating_point"]["lam"])
        assert [state.models[i] for i in state.route_indices(prompts, lam, cats)] == want["at_exported_point"]
        assert [state.models[i] for i in state.route_indices(prompts, lam)] == want["without_categories"]
        for point, models in want["by_lam"].items():
            assert [state.models[i] for i in state.route_indices(prompts, float(point), cats)] == models, point

