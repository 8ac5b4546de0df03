"""``ExportedRouter.predictions``: one pass that returns the export's decision and every model's predictions
(what the proxy's decision log and exploration read) decides exactly as ``route_indices`` for every kind."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from routers import make_router
from routers.export import export_router, load_exported

sys.path.insert(0, str(Path(__file__).parent))
from export_helpers import PRICES, stateless_exportable  # noqa: E402

# ensemble is a blend like irt-blend, fitted far more slowly; the blend kind is covered by irt-blend.
NAMES = [n for n in stateless_exportable() if n != "ensemble"] + ["adaptive"]
SLOW_TO_FIT = {"classifier", "cost-aware", "irt-blend", "mf"}


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n in SLOW_TO_FIT else n for n in NAMES])
def test_predictions_decide_as_route_indices_and_predict_as_the_state(name, table, tmp_path):
    params = {"encoder": "hash-bow-256"} if "encoder" in make_router(name).get_params() else {}
    router = make_router({"name": name, "params": params}).fit(table)
    exported = load_exported(export_router(router, tmp_path / name, lam=0.05, prices=PRICES))
    for prompt, category in zip(table.prompts, table.categories, strict=True):
        for cat in (None, str(category)):
            cats = [cat] if cat else None
            idx, quality, cost = exported.predictions(prompt, cat)
            assert idx == int(exported.route_indices([prompt], None, cats)[0]), (name, prompt, cat)
            np.testing.assert_array_equal(quality, exported.state.predict_quality([prompt], cats)[0])
            np.testing.assert_array_equal(cost, exported.state.predict_cost([prompt], cats)[0])
