"""Shared helpers of the export / proxy / pyfunc tests (a small outcome table, folders, upstream configs)."""

from __future__ import annotations

import re
import sys
from pathlib import Path

# The shared tables live in tests/ (on sys.path under pytest; added here for scripts such as
# fixtures/make_release_exports.py that import this module directly).
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from shared_tables import small_table  # noqa: E402,F401 - re-exported: the export tests import it from here

PRICES = {
    "cheap": {"provider": "together", "input_per_1m": 0.1, "output_per_1m": 0.2, "request_fee": 0.0},
    "mid": {"provider": "together", "input_per_1m": 0.5, "output_per_1m": 1.0, "request_fee": 0.0},
    "big": {"provider": "openai", "input_per_1m": 5.0, "output_per_1m": 15.0, "request_fee": 0.0},
}


def point_upstreams(
    folder: Path,
    urls: dict[str, str],
    *,
    timeout_s: float = 5.0,
    retries: int = 1,
    cooldown_s: float = 30.0,
    key_env: str = "TEST_UPSTREAM_KEY",
) -> None:
    """Rewrite a folder's upstreams.toml so each model points at ``urls[model]`` (what an owner does)."""
    path = folder / "upstreams.toml"
    text = path.read_text()
    for model, url in urls.items():
        block = re.compile(rf'(\[upstreams\."{re.escape(model)}"\]\n)(.*?)(?=\n\[|\Z)', re.S)
        body = (
            f'base_url = "{url}"\napi_key_env = "{key_env}"\nmodel = "{model}"\n'
            f"timeout_s = {timeout_s}\nretries = {retries}\n"
        )
        text, n = block.subn(lambda m, body=body: m.group(1) + body, text)
        assert n == 1, model
    text = re.sub(r"cooldown_s = [0-9.]+", f"cooldown_s = {cooldown_s}", text)
    path.write_text(text)


# ------------------------------------------------------------------------------------------ MMLU-Pro parity
PARITY_TRAIN = (
    1500  # routers are fitted on this many train samples (speed); decisions are checked on all of test
)


def fast_encoder() -> str:
    """The encoder the parity tests give embedding routers: static MiniLM when registered, else hash-bow."""
    from routers.embeddings import encoder_names

    return "minilm-static" if "minilm-static" in encoder_names() else "hash-bow"


def learns_from_feedback(name: str) -> bool:
    """Whether a registered router changes its decisions with live feedback (it has ``update``)."""
    from routers import router_registry

    return callable(getattr(router_registry.get(name), "update", None))


def stateless_exportable() -> list[str]:
    """Exportable registered routers whose measured decisions are a batch of per-prompt decisions.

    An adaptive router's evaluation is a replay that feeds each recorded score back before the next request,
    so one batch of decisions from its export cannot equal it: its parity (fresh, after the same feedback,
    and the replay fed through the export) is checked in ``test_export_adaptive.py``.
    """
    from routers import router_registry

    return [
        n
        for n in router_registry.names()
        if getattr(router_registry.get(n), "exportable", True) and not learns_from_feedback(n)
    ]


_PARITY: dict = {}


def mmlu_parity_setup():
    """(test table, {router name: (fitted router, [3 operating points], {lam: workbench choice indices})}).

    Computed once per test session: every exportable registered router (default parameters, embedding routers
    on :func:`fast_encoder`) fitted on the first ``PARITY_TRAIN`` train
    samples of the MMLU-Pro split (seed 0),
    three operating points at the 25/50/75% quantiles of its decision grid on test, and the decisions the
    evaluator measures there (``router.policy(test).outcomes(lam)``).
    """
    if "routers" in _PARITY:
        return _PARITY["test"], _PARITY["routers"]
    import numpy as np

    from routers import router_registry

    train_all, test = mmlu_split()
    train = train_all.select(sample_ids=list(train_all.sample_ids[:PARITY_TRAIN]))
    out = {}
    for name in router_registry.names():
        cls = router_registry.get(name)
        if not getattr(cls, "exportable", True):
            continue
        params = {"encoder": fast_encoder()} if "encoder" in cls._get_param_names() else {}
        router = cls(**params).fit(train)
        policy = router.policy(test)
        grid = np.asarray(policy.grid(60))
        lams = sorted({float(np.quantile(grid, q)) for q in (0.25, 0.5, 0.75)})
        if len(lams) < 3:
            lams = [0.0, 1e-3, 1.0]
        out[name] = (router, lams, {lam: policy.outcomes(lam)[0] for lam in lams})
    _PARITY["test"], _PARITY["routers"] = test, out
    return test, out



def mmlu_split():
    """MMLU-Pro split as the workbench splits it (seed 0): (train, test), loaded once per test session."""
    if "split" not in _PARITY:
        from evals import sources

        split = sources.load("mmlu-pro").split(random_state=0)
        _PARITY["split"] = (split.train, split.test)
    return _PARITY["split"]


def mmlu_category_export(folder: Path, n_prompts: int, seed: int):
    """A ``category`` router fitted on :func:`mmlu_split`'s train part, exported to ``folder`` at the median of
    its decision grid on test: (fitted router, lam, ``n_prompts`` test rows drawn with ``seed``).

    The setup of the LiteLLM integration tests (the Router adapter and the proxy plugin), which compare the
    deployments LiteLLM calls with this export's decisions on those rows.
    """
    import numpy as np

    from routers import router_registry
    from routers.export import export_router

    train, test = mmlu_split()
    router = router_registry.get("category")().fit(train)
    lam = float(np.quantile(np.asarray(router.policy(test).grid(60)), 0.5))
    export_router(router, folder, lam=lam)
    rows = np.random.default_rng(seed).choice(test.n_samples, size=n_prompts, replace=False)
    return router, lam, rows
