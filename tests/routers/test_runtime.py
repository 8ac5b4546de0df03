"""The exportable runtime: numpy-only, and the exact decisions of the workbench routers it came from."""

from __future__ import annotations

import ast
import io
import json
from pathlib import Path

import numpy as np
import pytest
from _router_tables import prompt, separable_table

import routers
from routers import Queries, make_router, router_registry, runtime
from routers.checks import check_table, router_for_check

EXPORTABLE = [
    n
    for n in router_registry.names()
    if router_registry.get(n).exportable and hasattr(router_registry.get(n), "export_state")
]


def _saved_and_loaded(meta: dict, arrays: dict[str, np.ndarray]) -> runtime.LoadedRouter:
    """What an export folder does: JSON for meta, .npz for arrays (no pickle)."""
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    buf.seek(0)
    with np.load(buf, allow_pickle=False) as npz:
        loaded = {k: npz[k] for k in npz.files}
    return runtime.load_state(json.loads(json.dumps(meta)), loaded)


def test_the_core_routers_are_exportable() -> None:
    assert {
        "single",
        "random-mix",
        "rules",
        "category",
        "classifier",
        "knn",
        "mf",
        "cost-aware",
        "ensemble",
    } <= set(EXPORTABLE)


@pytest.mark.parametrize("name", EXPORTABLE)
def test_runtime_routes_exactly_like_the_router(name: str) -> None:
    table = separable_table(12) if name != "rules" else check_table()
    router = router_for_check(router_registry.get(name)).fit(table)
    rt = _saved_and_loaded(*router.export_state())
    assert rt.models == router.models_
    # Many prompts: the train ones, new ones, odd ones (empty, unicode, long); with and without categories.
    prompts = list(table.prompts) + [
        prompt(lv, 50 + i) for i in range(20) for lv in ("easy", "medium", "hard")
    ]
    prompts += ["", "¿Qué es 2+2? 🤔", "word " * 400]
    cats = [str(c) for c in table.categories] + ["easy", "medium", "hard"] * 20 + ["", "unseen", "hard"]
    for categories in (cats, None):
        q = Queries.of(prompts, categories)
        np.testing.assert_allclose(
            rt.predict_quality(prompts, categories), router.predict_quality(q), rtol=1e-9, atol=1e-12
        )
        np.testing.assert_allclose(
            rt.predict_cost(prompts, categories), router.predict_cost(q), rtol=1e-9, atol=1e-15
        )
        grid = router.policy(table).grid(20)
        for lam in (0.0, float(np.median(grid)), float(grid[-1])):
            assert rt.route(prompts, lam, categories) == router.route(q, lam), f"{name} differs at lam={lam}"
    assert rt.route(prompts[0], 0.0) == router.route([prompts[0]], 0.0)[0]  # one prompt in, one name out


def test_runtime_imports_only_numpy_and_the_standard_library() -> None:
    import sys

    tree = ast.parse(Path(runtime.__file__).read_text())
    top = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            top |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            top.add(node.module.split(".")[0])
    # routers: inside featurise only, for encoders it cannot compute itself; tokenizers: inside
    # static_tokenizer only, for a bundled static encoder.
    lazy = {"routers", "tokenizers"}
    assert top - lazy <= set(sys.stdlib_module_names) | {"numpy", "__future__"}


def test_base_decide_is_the_runtime_decide() -> None:
    assert routers.decide is runtime.decide
    q = np.array([[0.5, 0.5, 0.9], [0.2, 0.8, 0.8]])
    c = np.array([[2.0, 1.0, 3.0], [1.0, 2.0, 2.0]])
    assert runtime.decide(q, c, 0.0).tolist() == [1, 0]  # cheapest
    assert runtime.decide(q, c, 100.0).tolist() == [2, 1]  # best; a tie in quality and cost goes to the first
    with pytest.raises(ValueError, match="finite number >= 0"):
        runtime.decide(q, c, -1.0)


def _released_runtime(version: str = "0.1.0"):
    """The runtime module RouteLab 0.1.0 shipped (from the release fixture), executed as an export's would be."""
    from release_fixtures import release_dir

    from routers.export import _folder as F

    path = release_dir(version) / "category" / F.RUNTIME
    return F.exec_runtime(path.read_bytes(), path)


def test_one_decision_rule_decides_as_both_released_rules() -> None:
    # 0.1.0 had two rules: decide (base; ties -> cheapest within a tolerance, then the better model) and
    # decide_rows (adaptive; ties -> cheapest by rank). One rule now, which decides as both did, ties included.
    old = _released_runtime()
    assert runtime.decide_rows is runtime.decide
    rng = np.random.default_rng(0)
    for trial in range(300):
        n, m = int(rng.integers(1, 40)), int(rng.integers(1, 6))
        # Coarse grids make exact ties in quality, cost and utility common.
        q = rng.integers(0, 4, size=(n, m)) / 4.0
        cost_m = rng.permutation(np.arange(1, m + 1)) / 100.0  # distinct costs per model
        cost = np.broadcast_to(cost_m, (n, m)) if trial % 2 else rng.integers(1, 5, size=(n, m)) / 100.0
        for lam in (0.0, 0.02, 0.04, 0.08, 1.0, 100.0):
            assert runtime.decide(q, cost, lam).tolist() == old.decide(q, cost, lam).tolist()
        lams = rng.choice([0.0, 0.02, 0.04, 1.0], size=n)
        assert runtime.decide(q, cost_m, lams).tolist() == old.decide_rows(q, cost_m, lams).tolist()
        assert runtime.decide(q, cost_m, 0.04).tolist() == old.decide_rows(q, cost_m, 0.04).tolist()


@pytest.mark.parametrize("name", EXPORTABLE)
def test_every_exportable_state_passes_its_kind_array_check(name: str) -> None:
    table = separable_table(12) if name != "rules" else check_table()
    meta, arrays = router_for_check(router_registry.get(name)).fit(table).export_state()
    assert meta["kind"] in runtime.KINDS
    runtime.check_state_arrays(meta, {k: np.shape(v) for k, v in arrays.items()})


def test_the_array_check_names_a_missing_or_misshaped_array() -> None:
    router = make_router({"name": "knn", "params": {"encoder": "hash-bow-64", "k": 3}}).fit(separable_table(12))
    meta, arrays = router.export_state()
    shapes = {k: np.shape(v) for k, v in arrays.items()}
    n = shapes["train_x"][0]
    with pytest.raises(ValueError, match="array 'train_x' is missing"):
        runtime.check_state_arrays(meta, {k: v for k, v in shapes.items() if k != "train_x"})
    with pytest.raises(ValueError, match=f"array 'train_x' has shape \\({n}, 32\\), expected \\({n}, 64\\)"):
        runtime.check_state_arrays(meta, {**shapes, "train_x": (n, 32)})
    with pytest.raises(ValueError, match=f"'train_quality' has shape \\({n + 1}, 3\\), expected \\({n}, 3\\)"):
        runtime.check_state_arrays(meta, {**shapes, "train_quality": (n + 1, 3)})


def test_hash_bow_is_deterministic_and_normalised() -> None:
    x = runtime.hash_bow(["the cat sat", "the cat sat", "", "dogs bark"], 64)
    assert x.shape == (4, 64) and x.dtype == np.float32
    assert np.array_equal(x[0], x[1])
    assert np.allclose(np.linalg.norm(x[[0, 1, 3]], axis=1), 1.0) and not x[2].any()
    assert runtime.featurise(["a b"], "hash-bow-32").shape == (1, 32)


def test_load_state_rejects_unknown_kinds_and_formats() -> None:
    with pytest.raises(ValueError, match="unknown router state kind 'nope'"):
        runtime.load_state({"kind": "nope", "models": ["a"]}, {})
    with pytest.raises(ValueError, match="format 99"):
        runtime.load_state({"format": 99, "kind": "single", "models": ["a"]}, {})


def test_an_embed_fn_replaces_the_workbench_encoders() -> None:
    calls = []

    def fake(texts, encoder):
        calls.append(encoder)
        return runtime.hash_bow(texts, 256)

    router = make_router(
        {"name": "classifier", "params": {"encoder": "hash-bow-256", "use_category": False}}
    ).fit(separable_table(6))
    meta, arrays = router.export_state()
    rt = runtime.load_state({**meta, "encoder": "my-encoder"}, arrays, embed_fn=fake)
    ps = [prompt("hard", 7), prompt("easy", 8)]
    assert rt.route(ps, 0.05) == router.route(ps, 0.05) and calls == ["my-encoder"]


def test_routing_a_batch_or_one_prompt_at_a_time_agrees() -> None:
    router = make_router({"name": "knn", "params": {"encoder": "hash-bow-256", "k": 3}}).fit(
        separable_table(8)
    )
    rt = runtime.load_state(*router.export_state())
    ps = [prompt(lv, i) for i in range(30, 36) for lv in ("easy", "hard")]
    assert [rt.route(p, 0.05) for p in ps] == rt.route(ps, 0.05)
