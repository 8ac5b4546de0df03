"""Export folders: content, round trip for every exportable router, atomic writes, refusals, tampering."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from routers import Queries, make_router, router_registry
from routers.export import ExportError, TamperedExportError, export_router, load_exported
from routers.export import _folder as F
from routers.export import writer as writer_module

sys.path.insert(0, str(Path(__file__).parent))
from export_helpers import PRICES, small_table  # noqa: E402

EXPORTABLE = [n for n in router_registry.names() if getattr(router_registry.get(n), "exportable", True)]
NOT_EXPORTABLE = [n for n in router_registry.names() if n not in EXPORTABLE]


def _fit(name: str, table):
    cls = router_registry.get(name)
    return cls(**getattr(cls, "_test_params", {})).fit(table)


@pytest.fixture(scope="module")
def table():
    return small_table()


@pytest.fixture(scope="module")
def knn_folder(table, tmp_path_factory):
    router = make_router({"name": "knn", "params": {"encoder": "hash-bow-256", "k": 3}}).fit(table)
    return export_router(
        router,
        tmp_path_factory.mktemp("exp") / "knn",
        lam=0.05,
        prices=PRICES,
        table_card=table.card,
        measurement={"n_test": 60, "accuracy": 0.9},
    )


def _copy(folder: Path, tmp_path: Path) -> Path:
    import shutil

    dst = tmp_path / "copy"
    shutil.copytree(folder, dst)
    return dst


@pytest.mark.parametrize("name", EXPORTABLE)
def test_every_exportable_router_round_trips_with_the_same_decisions(name, table, tmp_path):
    router = _fit(name, table)
    queries = Queries.from_table(table)
    for lam in (0.0, 0.004, 0.05, 10.0):
        folder = export_router(router, tmp_path / f"{name}-{lam}", lam=lam, prices=PRICES)
        exported = load_exported(folder)
        expected = router.route_indices(queries, lam)
        assert (
            exported.route_indices(list(queries.prompts), categories=list(queries.categories)).tolist()
            == expected.tolist()
        )
        no_cat = router.route(list(table.prompts), lam)
        assert exported.route(list(table.prompts)) == no_cat


def test_folder_holds_exactly_the_documented_files_with_checksums(knn_folder):
    names = sorted(p.name for p in knn_folder.iterdir())
    assert names == sorted([F.MANIFEST, F.ARRAYS, F.RUNTIME, F.PYFUNC_CODE, F.UPSTREAMS, F.README])
    manifest = json.loads((knn_folder / F.MANIFEST).read_text())
    assert manifest["schema_version"] == F.SCHEMA_VERSION
    assert manifest["router"]["name"] == "knn" and manifest["router"]["params"]["k"] == 3
    assert manifest["operating_point"]["lam"] == 0.05
    assert manifest["models"] == ["cheap", "mid", "big"]
    assert (
        manifest["prices"]["big"]["provider"] == "openai"
        and manifest["prices"]["big"]["output_per_1m"] == 15.0
    )
    assert manifest["encoder"] == "hash-bow-256"
    # One versioned measurement block (issue 12): known fields in place, the rest under "extra".
    m = manifest["measurement"]
    assert m["schema_version"] == 2 and m["n_test"] == 60 and m["extra"] == {"accuracy": 0.9}
    for name in F.CHECKED_FILES:
        assert manifest["files"][name] == F.sha256_file(knn_folder / name)
    # The runtime is a verbatim copy of the installed one; the arrays need no pickle.
    assert (knn_folder / F.RUNTIME).read_bytes() == F.installed_runtime_source()
    with np.load(knn_folder / F.ARRAYS, allow_pickle=False) as z:
        assert "train_x" in z.files
    readme = (knn_folder / F.README).read_text()
    assert "routelab serve" in readme and "ROUTELAB_PROXY_KEYS" in readme and "accuracy" in readme
    ups = (knn_folder / F.UPSTREAMS).read_text()
    assert 'api_key_env = "OPENAI_API_KEY"' in ups and "https://api.openai.com/v1" in ups


def test_decide_reports_model_provider_and_predictions(knn_folder, table):
    exported = load_exported(knn_folder)
    decisions = exported.decide(list(table.prompts[:3]))
    assert [d.model for d in decisions] == exported.route(list(table.prompts[:3]))
    for d in decisions:
        assert d.provider == PRICES[d.model]["provider"]
        assert 0.0 <= d.predicted_quality <= 1.0 and d.predicted_cost_usd > 0


@pytest.mark.parametrize("name", NOT_EXPORTABLE)
def test_non_exportable_routers_are_refused_with_a_reason(name, tmp_path):
    router = router_registry.get(name)()
    with pytest.raises(ExportError, match="not exportable") as info:
        export_router(router, tmp_path / "x", lam=0.1)
    assert "Exportable routers:" in str(info.value)
    # the reason is the router class's own sentence (cascade-stacked inherits the cascade's), not a generic one
    reason = type(router).not_exportable_because
    assert reason and reason in str(info.value), name
    assert not (tmp_path / "x").exists()


def test_an_export_routes_slowly_only_with_a_transformer_encoder(knn_folder):
    """Callers on an event loop (the proxy, the LiteLLM integrations) offload only exports whose encoder takes
    milliseconds; hashing and static encoders, and routers without an encoder, decide inline."""
    exported = load_exported(knn_folder)
    assert exported.manifest["encoder"] == "hash-bow-256" and not exported.routes_slowly
    for encoder, slow in (("minilm-static", False), ("", False), (None, False), ("minilm", True), ("bge-small", True)):
        exported.manifest["encoder"] = encoder
        assert exported.routes_slowly is slow, encoder


def test_unfitted_router_and_bad_operating_point_are_refused(table, tmp_path):
    with pytest.raises(ExportError, match="not fitted"):
        export_router(make_router("category"), tmp_path / "a", lam=0.1)
    router = make_router("category").fit(table)
    for bad in (-1.0, float("nan"), float("inf")):
        with pytest.raises(ExportError, match="finite number >= 0"):
            export_router(router, tmp_path / "b", lam=bad)


def test_existing_folder_needs_overwrite(table, tmp_path):
    router = make_router("category").fit(table)
    folder = export_router(router, tmp_path / "a", lam=0.1)
    with pytest.raises(ExportError, match="already exists"):
        export_router(router, folder, lam=0.2)
    export_router(router, folder, lam=0.2, overwrite=True)
    assert load_exported(folder).lam == 0.2
    (tmp_path / "plain").mkdir()
    with pytest.raises(ExportError, match="already exists"):
        export_router(router, tmp_path / "plain", lam=0.2, overwrite=True)  # not an export: never replaced


def test_a_failure_mid_export_leaves_nothing_behind(table, tmp_path, monkeypatch):
    router = make_router("category").fit(table)

    def boom(*a, **k):
        raise RuntimeError("disk full")

    monkeypatch.setattr(writer_module, "render_readme", boom)
    with pytest.raises(RuntimeError, match="disk full"):
        export_router(router, tmp_path / "out", lam=0.1)
    assert list(tmp_path.iterdir()) == []


def test_a_key_in_the_upstreams_is_refused(table, tmp_path):
    router = make_router("category").fit(table)
    with pytest.raises(ExportError, match="never put a key"):
        export_router(router, tmp_path / "a", lam=0.1, upstreams={"big": {"api_key": "sk-123"}})
    with pytest.raises(ExportError, match="not models of this router"):
        export_router(router, tmp_path / "a", lam=0.1, upstreams={"nope": {"base_url": "http://x/v1"}})


def test_object_arrays_are_refused_at_export(table, tmp_path, monkeypatch):
    router = make_router("category").fit(table)
    meta, arrays = router.export_state()
    monkeypatch.setattr(
        type(router), "export_state", lambda self: (meta, {**arrays, "bad": np.array([{}], dtype=object)})
    )
    with pytest.raises(ExportError, match="dtype object"):
        export_router(router, tmp_path / "a", lam=0.1)


# ------------------------------------------------------------------------------------------------ tampering
MARKER_CODE = "import pathlib\npathlib.Path({path!r}).write_text('executed')\n"


def _rewrite_manifest(folder: Path, **files: str) -> None:
    manifest = json.loads((folder / F.MANIFEST).read_text())
    manifest["files"].update(files)
    (folder / F.MANIFEST).write_text(json.dumps(manifest))


def test_changed_runtime_is_refused_and_never_executed(knn_folder, tmp_path):
    folder = _copy(knn_folder, tmp_path)
    marker = tmp_path / "marker"
    evil = (folder / F.RUNTIME).read_bytes() + b"\n" + MARKER_CODE.format(path=str(marker)).encode()
    (folder / F.RUNTIME).write_bytes(evil)
    with pytest.raises(TamperedExportError, match="changed after export"):
        load_exported(folder)
    # Even with router.json's checksum updated to match, it differs from the runtime this RouteLab ships.
    _rewrite_manifest(folder, **{F.RUNTIME: F.sha256_bytes(evil)})
    with pytest.raises(TamperedExportError, match="differs from the runtime shipped"):
        load_exported(folder)
    assert not marker.exists()
    # A reviewer may opt in explicitly; only then does that file run.
    load_exported(folder, trust_foreign_runtime=True)
    assert marker.read_text() == "executed"


@pytest.mark.parametrize("extra", ["evil.py", "sitecustomize.py", "state.pkl", "model.joblib", "notes.txt"])
def test_added_files_are_refused_and_never_executed(knn_folder, tmp_path, extra):
    folder = _copy(knn_folder, tmp_path)
    marker = tmp_path / "marker"
    (folder / extra).write_text(MARKER_CODE.format(path=str(marker)))
    with pytest.raises(TamperedExportError, match="unexpected file") as info:
        load_exported(folder)
    assert extra in str(info.value)
    assert not marker.exists()


def test_added_folder_and_symlink_are_refused(knn_folder, tmp_path):
    folder = _copy(knn_folder, tmp_path)
    (folder / "__pycache__").mkdir()
    (folder / "__pycache__" / "runtime.cpython-311.pyc").write_bytes(b"\x00" * 16)
    with pytest.raises(TamperedExportError, match="a folder"):
        load_exported(folder)
    (folder / "__pycache__" / "runtime.cpython-311.pyc").unlink()
    (folder / "__pycache__").rmdir()
    (folder / F.README).unlink()
    (folder / F.README).symlink_to(folder / F.MANIFEST)
    with pytest.raises(TamperedExportError, match="symbolic link"):
        load_exported(folder)


def test_changed_arrays_and_pickled_arrays_are_refused(knn_folder, tmp_path):
    folder = _copy(knn_folder, tmp_path)
    with np.load(folder / F.ARRAYS, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    arrays["prior"] = arrays["prior"] + 0.5
    np.savez(folder / F.ARRAYS, **arrays)
    with pytest.raises(TamperedExportError, match="arrays.npz was changed"):
        load_exported(folder)
    arrays["prior"] = np.array([object()], dtype=object)
    np.savez(folder / F.ARRAYS, **arrays)  # numpy pickles object arrays silently
    _rewrite_manifest(folder, **{F.ARRAYS: F.sha256_file(folder / F.ARRAYS)})
    with pytest.raises(TamperedExportError, match="pickled object"):
        load_exported(folder)


def test_missing_file_and_not_an_export(knn_folder, tmp_path):
    folder = _copy(knn_folder, tmp_path)
    (folder / F.PYFUNC_CODE).unlink()
    with pytest.raises(TamperedExportError, match="missing mlflow_model.py"):
        load_exported(folder)
    with pytest.raises(ExportError, match="not a folder"):
        load_exported(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ExportError, match="no router.json"):
        load_exported(tmp_path / "empty")


def test_editable_files_may_change(knn_folder, tmp_path, table):
    folder = _copy(knn_folder, tmp_path)
    (folder / F.README).write_text("our deployment notes")
    text = (folder / F.UPSTREAMS).read_text().replace("https://api.openai.com/v1", "https://llm.internal/v1")
    (folder / F.UPSTREAMS).write_text(text)
    exported = load_exported(folder)
    assert exported.proxy_config().upstreams["big"].base_url == "https://llm.internal/v1"
    assert exported.route(list(table.prompts)) == load_exported(knn_folder).route(list(table.prompts))


# ------------------------------------------------------------------------------------------------ measurement
def test_measurement_blocks_of_both_older_schemas_load_as_one():
    from evals.formatting import POINT_VALIDATION_CHOSEN
    from routers.export import Measurement

    cli = {  # routelab export before schema 2
        "dataset": "mmlu-pro", "n_test": 2053, "operating_point": "calibrated on validation",
        "quality": 0.70, "quality_ci95": [0.68, 0.72], "cost_per_1k_usd": 0.36, "cost_per_1k_ci95": [0.35, 0.37],
        "best_single_model": "big", "savings_vs_best_single": 0.882, "savings_ci95": [0.877, 0.888],
        "quality_diff_vs_best_single": -0.01, "quality_diff_ci95": [-0.02, 0.0], "mlflow_run_id": "r1",
    }
    app = {  # the app's Export page before schema 2
        "task_set": "mmlu-pro", "n_test_samples": 2053, "reference_model": "big",
        "quality": 0.70, "quality_ci": [0.68, 0.72], "cost_per_1k": 0.36, "cost_per_1k_ci": [0.35, 0.37],
        "savings": 0.882, "savings_ci": [0.877, 0.888], "quality_diff": -0.01, "quality_diff_ci": [-0.02, 0.0],
    }
    a, b = Measurement.from_dict(cli), Measurement.from_dict(app)
    for m in (a, b):
        assert m.dataset == "mmlu-pro" and m.n_test == 2053 and m.reference_model == "big"
        assert m.quality == {"value": 0.70, "low": 0.68, "high": 0.72}
        assert m.savings == {"value": 0.882, "low": 0.877, "high": 0.888}
        assert m.cost_per_1k_usd == {"value": 0.36, "low": 0.35, "high": 0.37}
        assert Measurement.from_dict(m.to_dict()) == m  # schema 2 round trip
        assert any("savings 88.2% [87.7%, 88.8%]" in line for line in m.lines())
    assert a.extra == {"mlflow_run_id": "r1"} and a.to_dict()["schema_version"] == 2
    point = Measurement.from_dict({**a.to_dict(), "point": POINT_VALIDATION_CHOSEN})
    assert point.lines()[0].startswith(f"point: {POINT_VALIDATION_CHOSEN}")
