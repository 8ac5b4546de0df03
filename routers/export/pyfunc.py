"""Log an export folder as an MLflow pyfunc "model from code" (MLflow >= 2.12; no pickle, no cloudpickle).

MLflow stores the folder's ``mlflow_model.py`` as source and its ``router.json``, ``arrays.npz`` and
``runtime.py`` (plus ``encoder.npz`` and ``tokenizer.json`` when the export bundles its ``minilm-static``
encoder) as artifacts. Loading the model runs that file, which imports only the standard library, numpy,
pandas and mlflow, verifies the artifacts' sha256 against ``router.json`` and executes ``runtime.py``; RouteLab
does not need to be installed where the model is loaded. The requirements logged with the model are the
export's (``router.json`` ``requirements``): ``tokenizers`` for a bundled static encoder, sentence-transformers
and torch for ``minilm`` (see the code file for the encoders).

Example:
    >>> info = log_exported("exports/knn")                                  # doctest: +SKIP
    >>> model = mlflow.pyfunc.load_model(info.model_uri)                    # doctest: +SKIP
    >>> model.predict(pd.DataFrame({"prompt": ["What is 2 + 2?"]}))         # doctest: +SKIP
         model provider  predicted_quality  predicted_cost_usd
    0  mistral  mistral           0.91             0.00012
"""

from __future__ import annotations

import os
import warnings
from importlib import metadata
from pathlib import Path
from typing import Any

from routers.export import _folder as F
from routers.export._arrays import inspect_arrays
from routers.export._manifest import declared_arrays
from routers.export.loader import verify_folder

__all__ = ["log_exported", "model_signature"]


def model_signature(lam: float) -> Any:
    """Input ``prompt`` (+ optional ``category``), output the decision columns, param ``lam``."""
    from mlflow.models.signature import ModelSignature
    from mlflow.types.schema import ColSpec, ParamSchema, ParamSpec, Schema

    inputs = Schema([ColSpec("string", "prompt"), ColSpec("string", "category", required=False)])
    outputs = Schema(
        [
            ColSpec("string", "model"),
            ColSpec("string", "provider"),
            ColSpec("double", "predicted_quality"),
            ColSpec("double", "predicted_cost_usd"),
        ]
    )
    params = ParamSchema([ParamSpec("lam", "double", float(lam))])
    return ModelSignature(inputs=inputs, outputs=outputs, params=params)


def log_exported(
    folder: str | os.PathLike[str],
    *,
    name: str = "router",
    registered_model_name: str | None = None,
    trust_foreign_runtime: bool = False,
) -> Any:
    """Log a verified export folder to the active MLflow run (one is started if none is active).

    Args:
        folder: The export folder (checked with :func:`~routers.export.verify_folder` and its arrays' headers
            with :func:`routers.export._arrays.inspect_arrays` first).
        name: The model's name inside the run.
        registered_model_name: Also register it in the model registry under this name.
        trust_foreign_runtime: See :func:`~routers.export.load_exported`.

    Returns:
        MLflow's ``ModelInfo`` (``.model_uri`` loads it with ``mlflow.pyfunc.load_model``).
    """
    import mlflow

    root = Path(folder)
    manifest, _ = verify_folder(root, trust_foreign_runtime=trust_foreign_runtime)
    # arrays.npz's sizes, dtypes and shapes against router.json, from its headers (nothing decompressed).
    inspect_arrays(root / F.ARRAYS, declared_arrays(manifest, root / F.MANIFEST))
    requirements = list(manifest.get("requirements") or ["numpy", "pandas"])
    requirements.append(f"mlflow=={metadata.version('mlflow')}")
    artifacts = {
        "router_json": str(root / F.MANIFEST),
        "arrays": str(root / F.ARRAYS),
        "runtime": str(root / F.RUNTIME),
    }
    if F.bundled_encoder(manifest) is not None:  # data only: the token table and the tokenizer
        artifacts["encoder_vectors"] = str(root / F.ENCODER_VECTORS)
        artifacts["encoder_tokenizer"] = str(root / F.ENCODER_TOKENIZER)
    with warnings.catch_warnings():
        # The code file is deliberately untyped (MLflow's type-hint validation would fight the explicit
        # signature), and an input example would make MLflow run the model (and its encoder) at log time.
        warnings.filterwarnings("ignore", message=".*type hints to the `predict` method.*")
        warnings.filterwarnings("ignore", message=".*input example was not provided.*")
        return _log(mlflow, root, name, requirements, artifacts, manifest, registered_model_name)


def _log(
    mlflow: Any,
    root: Path,
    name: str,
    requirements: list[str],
    artifacts: dict[str, str],
    manifest: dict[str, Any],
    registered_model_name: str | None,
) -> Any:
    return mlflow.pyfunc.log_model(
        name=name,
        python_model=str(root / F.PYFUNC_CODE),
        artifacts=artifacts,
        pip_requirements=requirements,
        signature=model_signature(float(manifest["operating_point"]["lam"])),
        registered_model_name=registered_model_name,
        metadata={
            "routelab_router": manifest["router"]["name"],
            "routelab_lam": manifest["operating_point"]["lam"],
            "routelab_schema_version": manifest["schema_version"],
        },
    )
