"""PARITY on MMLU-Pro: the exported runtime decides exactly as the workbench measured, on every test prompt.

For every exportable registered router at three operating points: export, load the folder (verified; its own
``runtime.py``), and compare its choice per prompt on the whole test split with the evaluator's
(``router.policy(test).outcomes(lam)``, categories included), and with ``router.route`` without categories.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from routers import Queries
from routers.export import export_router, load_exported

sys.path.insert(0, str(Path(__file__).parent))
from export_helpers import mmlu_parity_setup, stateless_exportable  # noqa: E402

pytestmark = pytest.mark.slow
EXPORTABLE = stateless_exportable()  # adaptive: tests/routers/test_export_adaptive.py


@pytest.mark.parametrize("name", EXPORTABLE)
def test_exported_runtime_matches_the_workbench_on_every_test_prompt(name, shared_data, tmp_path):
    test, routers = mmlu_parity_setup()
    router, lams, measured = routers[name]
    prompts, cats = list(test.prompts), [str(c) for c in test.categories]
    assert len(prompts) > 2000
    shares = []
    for lam in lams:
        exported = load_exported(
            export_router(router, tmp_path / f"{lam:.3e}", lam=lam, table_card=test.card)
        )
        got = exported.route_indices(prompts, categories=cats)
        mismatch = np.flatnonzero(got != measured[lam])
        assert len(mismatch) == 0, (
            f"{name} at lam={lam:g}: {len(mismatch)} of {len(prompts)} decisions differ"
        )
        assert exported.route(prompts) == router.route(
            Queries.of(prompts), lam
        )  # no categories (live traffic)
        shares.append(np.bincount(got, minlength=len(exported.models)))
    if name != "single":  # the three operating points are genuinely different decisions
        assert not all((s == shares[0]).all() for s in shares[1:])
