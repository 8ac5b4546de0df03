"""Export a fitted router to a deployable folder; load it safely; serve it; log it to MLflow.

* :func:`export_router` (:mod:`~routers.export.writer`) writes the folder (``router.json``, ``arrays.npz``,
  ``runtime.py``, ``upstreams.toml``, ``README.md``, ``mlflow_model.py``); :func:`load_exported`
  (:mod:`~routers.export.loader`) verifies and loads it.
* :func:`measure_point` / :class:`Measurement`: the one schema of ``router.json``'s ``measurement`` block.
* :mod:`routers.export.proxy`: the OpenAI-compatible proxy behind ``routelab serve``.
* :mod:`routers.export.pyfunc`: :func:`log_exported` logs the folder as an MLflow pyfunc "model from code".
"""

from routers.export._folder import ExportError, TamperedExportError
from routers.export.loader import Decision, ExportedRouter, load_exported, verify_folder
from routers.export.measurement import Measurement, measure_point
from routers.export.writer import export_router, exportable_router_names

__all__ = [
    "Decision",
    "ExportError",
    "ExportedRouter",
    "Measurement",
    "TamperedExportError",
    "export_router",
    "exportable_router_names",
    "load_exported",
    "log_exported",
    "measure_point",
    "verify_folder",
]


def log_exported(folder, **kwargs):  # noqa: ANN001, ANN201 - thin lazy wrapper (keeps mlflow out of imports)
    """Log an export folder as an MLflow pyfunc; see :func:`routers.export.pyfunc.log_exported`."""
    from routers.export.pyfunc import log_exported as _log

    return _log(folder, **kwargs)
