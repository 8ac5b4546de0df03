"""Export a fitted router to a deployable folder; load it safely; serve it; log it to MLflow.

* :func:`export_router` writes the folder (``router.json``, ``arrays.npz``, ``runtime.py``,
  ``upstreams.toml``, ``README.md``, ``mlflow_model.py``); :func:`load_exported` verifies and loads it.
* :mod:`routers.export.proxy`: the OpenAI-compatible proxy behind ``routelab serve``.
* :mod:`routers.export.pyfunc`: :func:`log_exported` logs the folder as an MLflow pyfunc "model from code".
"""

from routers.export._folder import ExportError, TamperedExportError
from routers.export.exporter import (
    Decision,
    ExportedRouter,
    export_router,
    exportable_router_names,
    load_exported,
    verify_folder,
)

__all__ = [
    "Decision",
    "ExportError",
    "ExportedRouter",
    "TamperedExportError",
    "export_router",
    "exportable_router_names",
    "load_exported",
    "log_exported",
    "verify_folder",
]


def log_exported(folder, **kwargs):  # noqa: ANN001, ANN201 - thin lazy wrapper (keeps mlflow out of imports)
    """Log an export folder as an MLflow pyfunc; see :func:`routers.export.pyfunc.log_exported`."""
    from routers.export.pyfunc import log_exported as _log

    return _log(folder, **kwargs)
