"""The conformance check every registered router must pass (after scikit-learn's ``check_estimator``).

    >>> from routers.checks import check_router
    >>> check_router(MyRouter)            # raises AssertionError naming the failed check and the router

The test suite runs it over every entry of :data:`routers.router_registry`
(``tests/routers/test_conformance.py``), so registering a router is enough to have it checked. A router class
may declare ``_test_params = {...}`` (e.g. a tiny encoder) used when the check builds it from its class; the
check still fits and routes for real.

Checks (each a function ``check_<name>(router, table)``, listed in :data:`CHECKS`):

- ``default_constructible``: ``cls()`` works with no arguments.
- ``no_attributes_set_in_init``: ``__init__`` stores exactly its parameters, unchanged, and nothing else.
- ``params_json``: ``get_params()`` is JSON-serialisable.
- ``clone``: ``sklearn.base.clone`` gives equal parameters.
- ``spec_round_trip``: ``make_router(router.spec())`` has the same parameters.
- ``unfitted``: routing / replaying before ``fit`` raises ``NotFittedError`` naming the class.
- ``fit_returns_self``: ``fit`` returns the router, changes no parameter and does not mutate the table.
- ``valid_decisions``: every decision is one of the fitted models, at every operating point.
- ``cost_monotone``: realised mean cost over the grid, and each prompt's predicted cost, never decrease
  as the operating point rises.
- ``same_seed_same_decisions``: two fits with the same parameters (same ``random_state``) decide alike.
- ``export_parity``: for routers with ``export_state``, the runtime rebuilt from it decides identically;
  for an adaptive state also while both are fed the same feedback, one sample at a time.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd

from evals.exceptions import NotFittedError
from evals.outcomes import OutcomeTable
from routers.base import Queries, Router, ScorePolicy

__all__ = ["CHECKS", "check_router", "check_table", "router_for_check"]

_TOL = 1e-12


def check_table() -> OutcomeTable:
    """A 3-model x 36-sample table where the right routing is plain from the prompt text and category.

    ``cheap`` answers the easy prompts, ``mid`` easy and medium, ``big`` everything; costs are
    tokens x prices (longer answers cost more), so cost-aware routers have something to learn.
    """
    topics = ["sums", "colours", "capitals", "animals", "fruit", "planets"]
    words = {
        "easy": "add the two small numbers quickly",
        "medium": "explain the reasoning step by step with care",
        "hard": "prove the theorem rigorously using advanced analysis and lemmas",
    }
    prices = {"cheap": (1e-7, 2e-7), "mid": (5e-7, 1e-6), "big": (3e-6, 6e-6)}
    rows = []
    for level, text in words.items():
        for i in range(12):
            prompt = f"{level} task {i}: {text} about {topics[i % len(topics)]}" + " please" * (i % 3)
            for model, (p_in, p_out) in prices.items():
                right = (
                    model == "big"
                    or (model == "mid" and level != "hard")
                    or (model == "cheap" and level == "easy")
                )
                tin = float(len(prompt) // 4)
                tout = float({"easy": 20, "medium": 80, "hard": 200}[level] * (2 if model == "big" else 1))
                rows.append(
                    dict(
                        sample_id=f"{level}-{i}",
                        category=level,
                        prompt=prompt,
                        model=model,
                        score=float(right),
                        cost_usd=tin * p_in + tout * p_out,
                        input_tokens=tin,
                        output_tokens=tout,
                    )
                )
    return OutcomeTable(pd.DataFrame(rows))


def router_for_check(router_or_cls: Router | type) -> Router:
    """An unfitted router to check: the class built with its ``_test_params``, or a clone of an instance."""
    from sklearn.base import clone

    if isinstance(router_or_cls, type):
        return router_or_cls(**dict(getattr(router_or_cls, "_test_params", {}) or {}))
    return clone(router_or_cls)


def _name(router: Router) -> str:
    from routers.registry import name_of

    return f"{name_of(type(router))} ({type(router).__name__})"


def _params_equal(a: dict[str, Any], b: dict[str, Any]) -> bool:
    return json.dumps(a, sort_keys=True, default=repr) == json.dumps(b, sort_keys=True, default=repr)


def _fresh(router: Router) -> Router:
    return type(router)(**router.get_params(deep=False))


def _lams(router: Router, table: OutcomeTable) -> np.ndarray:
    grid = router.policy(table).grid(25)
    pick = grid[np.linspace(0, len(grid) - 1, min(len(grid), 12)).astype(int)]
    return np.unique(pick)


# ---------------------------------------------------------------------------------------------- checks
def check_default_constructible(router: Router, table: OutcomeTable) -> None:
    """The class can be built with no arguments (every hyper-parameter has a default)."""
    try:
        type(router)()
    except Exception as exc:  # noqa: BLE001 - any failure is the finding
        raise AssertionError(f"cannot be built without arguments: {exc!r}") from exc


def check_no_attributes_set_in_init(router: Router, table: OutcomeTable) -> None:
    """``__init__`` stores each parameter unchanged under its own name, and nothing else."""
    import inspect

    defaults = {
        p.name: p.default
        for p in inspect.signature(type(router).__init__).parameters.values()
        if p.default is not inspect.Parameter.empty
    }
    built = type(router)()
    for k, v in defaults.items():
        assert getattr(built, k, None) is v, (
            f"__init__ changed the default of {k!r} ({v!r} -> {getattr(built, k, None)!r})"
        )
    params = router.get_params(deep=False)
    fresh = type(router)(**params)
    attrs = {k for k in vars(fresh) if not k.startswith("__")}
    extra = sorted(attrs - set(params))
    assert not extra, f"__init__ sets attributes that are not parameters: {extra}"
    for k, v in params.items():
        assert getattr(fresh, k) is v, (
            f"__init__ changed parameter {k!r} (stored {getattr(fresh, k)!r}, given {v!r})"
        )


def check_params_json(router: Router, table: OutcomeTable) -> None:
    """Parameters are JSON-serialisable (they go into configs, MLflow and exported folders)."""
    try:
        json.dumps(router.get_params(deep=False))
    except TypeError as exc:
        raise AssertionError(f"get_params() is not JSON-serialisable: {exc}") from exc


def check_clone(router: Router, table: OutcomeTable) -> None:
    """``sklearn.base.clone`` rebuilds an equal router."""
    from sklearn.base import clone

    twin = clone(router)
    assert _params_equal(twin.get_params(deep=False), router.get_params(deep=False)), (
        "clone changed the parameters"
    )


def check_spec_round_trip(router: Router, table: OutcomeTable) -> None:
    """``make_router(router.spec())`` rebuilds the same parameters."""
    from routers.registry import make_router, name_of, router_registry

    if name_of(type(router)) not in router_registry or router_registry.get(name_of(type(router))) is not type(
        router
    ):
        return  # not registered: there is no spec to rebuild from
    spec = json.loads(json.dumps(router.spec()))
    twin = make_router(spec)
    assert type(twin) is type(router), f"make_router(spec) built a {type(twin).__name__}"
    assert _params_equal(twin.get_params(deep=False), router.get_params(deep=False)), (
        f"make_router(spec) changed the parameters: "
        f"{twin.get_params(deep=False)} != {router.get_params(deep=False)}"
    )


def check_unfitted(router: Router, table: OutcomeTable) -> None:
    """Routing or replaying before ``fit`` raises NotFittedError with a message naming the class."""
    fresh = _fresh(router)
    attempts: list[tuple[str, Callable[[], Any]]] = [("policy(table)", lambda: fresh.policy(table))]
    if not fresh.uses_outcomes_at_route_time:
        attempts += [
            ("route(prompts)", lambda: fresh.route(list(table.prompts[:2]), 0.0)),
            ("predict_quality", lambda: fresh.predict_quality(Queries.of(table.prompts[:2]))),
        ]
    for what, call in attempts:
        try:
            call()
        except NotFittedError as exc:
            assert type(fresh).__name__ in str(exc), (
                f"{what} before fit: NotFittedError message does not name the class: {exc}"
            )
        except Exception as exc:  # noqa: BLE001
            raise AssertionError(
                f"{what} before fit raised {type(exc).__name__} ({exc}), expected NotFittedError"
            ) from exc
        else:
            raise AssertionError(f"{what} before fit did not raise NotFittedError")


def check_fit_returns_self(router: Router, table: OutcomeTable) -> None:
    """``fit`` returns the router itself, leaves its parameters and the train table unchanged."""
    r = _fresh(router)
    before_params = json.dumps(r.get_params(deep=False), sort_keys=True, default=repr)
    before_frame = table.frame
    before_q = np.array(table.quality)
    out = r.fit(table)
    assert out is r, f"fit returned {type(out).__name__}, not self"
    assert json.dumps(r.get_params(deep=False), sort_keys=True, default=repr) == before_params, (
        "fit changed a parameter"
    )
    pd.testing.assert_frame_equal(table.frame, before_frame, obj="the train table after fit")
    assert np.array_equal(table.quality, before_q), "fit mutated the train table's scores"
    assert r.is_fitted, "is_fitted is False after fit"


def check_valid_decisions(router: Router, table: OutcomeTable) -> None:
    """Every decision, at every operating point, is one of the fitted models."""
    r = _fresh(router).fit(table)
    m = len(r.models_)
    policy = r.policy(table)
    for lam in _lams(r, table):
        choice, cost, qual = policy.outcomes(float(lam))
        assert choice.shape == (table.n_samples,), (
            f"policy.outcomes gave {choice.shape} choices for {table.n_samples} samples"
        )
        assert ((choice >= 0) & (choice < m)).all(), f"policy chose an index outside 0..{m - 1} at lam={lam}"
        assert np.isfinite(cost).all() and np.isfinite(qual).all(), (
            f"non-finite realised cost/quality at lam={lam}"
        )
        if not r.uses_outcomes_at_route_time:
            names = r.route(Queries.from_table(table), float(lam))
            bad = sorted(set(names) - set(r.models_))
            assert not bad, f"route() returned unknown model(s) {bad} at lam={lam}"


def check_cost_monotone(router: Router, table: OutcomeTable) -> None:
    """Mean realised cost over the policy's grid, and each prompt's predicted cost, never decrease in lam."""
    r = _fresh(router).fit(table)
    policy = r.policy(table)
    grid = policy.grid(50)
    assert (np.diff(grid) >= 0).all(), "policy.grid() is not increasing"
    cost, _, share = policy.curve(grid)
    drops = np.flatnonzero(np.diff(cost) < -_TOL * (1 + np.abs(cost[:-1])))
    assert len(drops) == 0, (
        f"mean cost falls from {cost[drops[0]]:.6g} to {cost[drops[0] + 1]:.6g} "
        f"as lam rises past {grid[drops[0]]:.6g}"
    )
    assert np.allclose(share.sum(axis=1), 1.0), "traffic shares do not sum to 1"
    if isinstance(policy, ScorePolicy):  # the fast sweep must agree with deciding point by point
        for k in np.linspace(0, len(grid) - 1, min(len(grid), 6)).astype(int):
            _, c, _ = policy.outcomes(float(grid[k]))
            assert abs(c.mean() - cost[k]) <= 1e-9 * (1 + abs(cost[k])), (
                f"curve() and outcomes() disagree at lam={grid[k]}"
            )
    if r.uses_outcomes_at_route_time:
        return
    queries = Queries.from_table(table)
    c_hat = r.predict_cost(queries)
    rows = np.arange(len(queries))
    prev = np.full(len(queries), -np.inf)
    for lam in _lams(r, table):
        now = c_hat[rows, r.route_indices(queries, float(lam))]
        worse = np.flatnonzero(now < prev - _TOL * (1 + np.abs(prev)))
        assert len(worse) == 0, (
            f"prompt {worse[0]}'s predicted cost falls from {prev[worse[0]]:.6g} "
            f"to {now[worse[0]]:.6g} at lam={lam}"
        )
        prev = now


def check_same_seed_same_decisions(router: Router, table: OutcomeTable) -> None:
    """Two fits with the same parameters (including ``random_state``) make the same decisions."""
    a = _fresh(router).fit(table)
    b = _fresh(router).fit(table)
    pa, pb = a.policy(table), b.policy(table)
    for lam in _lams(a, table):
        ca, cb = pa.outcomes(float(lam))[0], pb.outcomes(float(lam))[0]
        assert np.array_equal(ca, cb), f"two fits with the same parameters decide differently at lam={lam}"


def check_export_parity(router: Router, table: OutcomeTable) -> None:
    """Routers with ``export_state`` rebuild, through the runtime, into identical decisions."""
    if not router.exportable or not hasattr(router, "export_state"):
        return
    from routers import runtime

    r = _fresh(router).fit(table)
    meta, arrays = r.export_state()
    meta = json.loads(json.dumps(meta))  # what an export folder stores
    rt = runtime.load_state(meta, {k: np.array(v) for k, v in arrays.items()})
    queries = Queries.from_table(table)
    lams = _lams(r, table)
    for lam in lams:
        mine = r.route_indices(queries, float(lam))
        theirs = rt.route_indices(list(queries.prompts), float(lam), queries.categories)
        assert np.array_equal(mine, theirs), f"the exported runtime decides differently at lam={lam}"
    if not meta.get("adaptive"):
        return
    # A router that learns from feedback must learn alike: the table's stream, each sample's recorded score of
    # the model routed to fed back to both (the workbench's ``update``, the runtime's ``feedback``), in order.
    assert callable(getattr(r, "update", None)), "its state is adaptive but the router has no update()"
    cats = queries.categories or ("",) * len(queries)
    lam = float(lams[len(lams) // 2])
    for i in range(len(queries)):
        q_i = Queries.of([queries.prompts[i]], [cats[i]])
        j = int(r.route_indices(q_i, lam)[0])
        assert int(rt.route_indices([queries.prompts[i]], lam, [cats[i]])[0]) == j, (
            f"the exported runtime decides differently after {i} feedbacks at lam={lam}"
        )
        model = r.models_[j]
        score = float(table.quality[i, list(table.models).index(model)])
        r.update(cats[i], model, score)
        rt.feedback(cats[i], model, score)
    for lam in lams:
        mine = r.route_indices(queries, float(lam))
        theirs = rt.route_indices(list(queries.prompts), float(lam), queries.categories)
        assert np.array_equal(mine, theirs), f"after feedback the exported runtime decides differently at lam={lam}"


CHECKS: dict[str, Callable[[Router, OutcomeTable], None]] = {
    "default_constructible": check_default_constructible,
    "no_attributes_set_in_init": check_no_attributes_set_in_init,
    "params_json": check_params_json,
    "clone": check_clone,
    "spec_round_trip": check_spec_round_trip,
    "unfitted": check_unfitted,
    "fit_returns_self": check_fit_returns_self,
    "valid_decisions": check_valid_decisions,
    "cost_monotone": check_cost_monotone,
    "same_seed_same_decisions": check_same_seed_same_decisions,
    "export_parity": check_export_parity,
}


def check_router(
    router_or_cls: Router | type, table: OutcomeTable | None = None, *, checks: list[str] | None = None
) -> list[str]:
    """Run the conformance checks on a router class or instance; returns the names of the checks run.

    Args:
        router_or_cls: A Router subclass (built with its ``_test_params``) or an unfitted instance (cloned).
        table: The table to fit and replay on; default :func:`check_table`.
        checks: Names of the checks to run (default: all of :data:`CHECKS`).

    Raises:
        AssertionError: ``"<check> failed for <router>: <what went wrong>"`` at the first failing check.
    """
    if isinstance(router_or_cls, type) and not issubclass(router_or_cls, Router):
        raise TypeError(f"check_router needs a Router subclass or instance, got {router_or_cls!r}")
    table = check_table() if table is None else table
    names = list(CHECKS) if checks is None else checks
    unknown = sorted(set(names) - set(CHECKS))
    if unknown:
        raise ValueError(f"unknown check(s) {unknown}; known: {', '.join(CHECKS)}")
    try:
        router = router_for_check(router_or_cls)
    except Exception as exc:  # noqa: BLE001
        raise AssertionError(f"building failed for {router_or_cls!r}: {exc!r}") from exc
    for name in names:
        try:
            CHECKS[name](router, table)
        except AssertionError as exc:
            raise AssertionError(f"{name} failed for {_name(router)}: {exc}") from exc
        except Exception as exc:  # noqa: BLE001 - an unexpected error is a failure of that check too
            raise AssertionError(
                f"{name} failed for {_name(router)}: raised {type(exc).__name__}: {exc}"
            ) from exc
    return names
