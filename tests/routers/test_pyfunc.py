"""The MLflow pyfunc ("model from code"): logged without pickles, loaded with mlflow.pyfunc, same decisions.

PARITY on MMLU-Pro: for every exportable router, one model is logged (exported at the middle of its three
operating points) and asked for the whole test split at each of the three points (the exported one by
default, the others through the ``lam`` param); every decision must equal the workbench's.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from routers import make_router
from routers.export import TamperedExportError, export_router, log_exported

sys.path.insert(0, str(Path(__file__).parent))
from export_helpers import PRICES, mmlu_parity_setup, small_table, stateless_exportable  # noqa: E402

EXPORTABLE = stateless_exportable()  # adaptive: tests/routers/test_export_adaptive.py


@pytest.fixture(scope="module")
def table():
    return small_table()


def _log(folder):
    import mlflow

    with mlflow.start_run():
        return log_exported(folder)


@pytest.mark.slow
def test_logged_model_is_source_not_pickle_and_predicts_decisions(table, tmp_path, mlflow_uri):
    import mlflow

    router = make_router({"name": "knn", "params": {"encoder": "hash-bow-256", "k": 3}}).fit(table)
    folder = export_router(router, tmp_path / "knn", lam=0.05, prices=PRICES)
    info = _log(folder)
    local = Path(mlflow.artifacts.download_artifacts(info.model_uri, dst_path=str(tmp_path / "dl")))
    files = {p.relative_to(local).as_posix() for p in local.rglob("*") if p.is_file()}
    assert not [f for f in files if f.endswith((".pkl", ".pickle", ".cloudpickle"))], files
    assert "mlflow_model.py" in files and "artifacts/runtime.py" in files
    mlmodel = (local / "MLmodel").read_text()
    assert "loader_module: mlflow.pyfunc.loaders.code_model" in mlmodel  # "model from code"
    assert "python_model.pkl" not in files
    reqs = (local / "requirements.txt").read_text()
    assert "numpy==" in reqs and "routelab" not in reqs
    model = mlflow.pyfunc.load_model(info.model_uri)
    prompts = list(table.prompts)
    out = model.predict(pd.DataFrame({"prompt": prompts}))
    assert list(out.columns) == ["model", "provider", "predicted_quality", "predicted_cost_usd"]
    assert out["model"].tolist() == router.route(prompts, 0.05)
    assert out["provider"].tolist() == [PRICES[m]["provider"] for m in out["model"]]
    assert (
        out["model"].tolist()
        != model.predict(pd.DataFrame({"prompt": prompts}), params={"lam": 0.0})["model"].tolist()
    )
    with pytest.raises(Exception, match="prompt"):
        model.predict(pd.DataFrame({"text": prompts}))


def test_tampered_folder_is_not_logged(table, tmp_path, mlflow_uri):
    folder = export_router(make_router("category").fit(table), tmp_path / "cat", lam=0.05)
    (folder / "extra.py").write_text("print('hi')")
    with pytest.raises(TamperedExportError):
        _log(folder)


@pytest.mark.slow
def test_model_loads_and_predicts_where_routelab_is_not_importable(table, tmp_path, mlflow_uri):
    router = make_router({"name": "classifier", "params": {"encoder": "hash-bow-256"}}).fit(table)
    info = _log(export_router(router, tmp_path / "clf", lam=0.01, prices=PRICES))
    prompts = list(table.prompts)
    script = textwrap.dedent(f"""
        import json, sys
        class Block:  # RouteLab is "not installed": importing routers / evals fails
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in ("routers", "evals"):
                    raise ImportError("routelab is not installed here: " + name)
        sys.meta_path.insert(0, Block())
        import mlflow, pandas as pd
        mlflow.set_tracking_uri({mlflow_uri!r})
        model = mlflow.pyfunc.load_model({info.model_uri!r})
        out = model.predict(pd.DataFrame({{"prompt": json.loads(sys.stdin.read())}}))
        assert not [m for m in sys.modules if m.split(".")[0] in ("routers", "evals")]
        print(json.dumps(out["model"].tolist()))
    """)
    proc = subprocess.run(
        [sys.executable, "-c", script],
        input=json.dumps(prompts),
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == router.route(prompts, 0.01)


@pytest.mark.slow
@pytest.mark.parametrize("name", EXPORTABLE)
def test_pyfunc_matches_the_workbench_on_every_test_prompt(name, shared_data, tmp_path, mlflow_uri):
    import mlflow

    test, routers = mmlu_parity_setup()
    router, lams, measured = routers[name]
    info = _log(export_router(router, tmp_path / name, lam=lams[1]))
    model = mlflow.pyfunc.load_model(info.model_uri)
    frame = pd.DataFrame({"prompt": list(test.prompts), "category": [str(c) for c in test.categories]})
    index = {m: i for i, m in enumerate(router.models_)}
    for lam in lams:
        out = model.predict(frame, params=None if lam == lams[1] else {"lam": lam})
        got = np.array([index[m] for m in out["model"]])
        mismatch = np.flatnonzero(got != measured[lam])
        assert len(mismatch) == 0, f"{name} at lam={lam:g}: {len(mismatch)} of {len(frame)} decisions differ"
