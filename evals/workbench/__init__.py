"""The workbench layer: the only code that imports both the evals core and ``routers``.

Layers (imports point down this list only; the import-linter contracts in ``.importlinter``, run by
``tests/test_layers.py``, enforce it, function-level imports included):

1. ``evals`` core: outcomes, sources, prices, graders, collect, serving, stats, metrics, tracking, report.
2. ``routers``: the router contract, strategies, embeddings, runtime, export folder and proxy.
3. ``evals.workbench`` (this package): frontier sweeps (``frontier``), calibration of operating points
   (``calibration``: absolute, relative and risk-controlled targets), evaluation configs (``config``), the
   train/validation/test split (``splits``: seeded, a ``split`` column, or a separate test source), experiments
   (``experiment``) and what they measured
   (``results``), their gates (``gates``), and the export workflow from a config or an MLflow run
   (``export_workflow``; MLflow runs are read through :mod:`evals.tracking`).
4. ``evals.cli`` and ``app``: thin commands and pages on top.
"""
