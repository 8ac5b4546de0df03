"""The conformance check every registered router must pass (after scikit-learn's ``check_estimator``).

    >>> from routers.checks import check_router
    >>> check_router(MyRouter)            # raises AssertionError naming the failed check and the router

The test suite runs it over every entry of :data:`routers.router_registry`, one test per (router, check) pair
like scikit-learn's ``parametrize_with_checks`` (``tests/routers/test_conformance.py``, ids such as
``knn-cost_monotone``), so registering a router is enough to have it checked. A router class may declare:

- ``_test_params = {...}`` (e.g. a tiny encoder) used when the check builds it from its class; the check still
  fits and routes for real;
- ``_expected_failed_checks = {"check_name": "why it cannot pass"}``: checks that this router is known to fail
  (a reference line that cannot route a new prompt, say). They are reported as expected failures (pytest's
  strict ``xfail``), and a declared failure that starts passing is an error, so the list stays true.

A check that does not apply to a router (an export check for a router without ``export_state``) is reported as
not applicable, with the reason (:func:`not_applicable`), never silently passed.

Checks (each a function ``check_<name>(router, table)``, listed in :data:`CHECKS`):

- ``default_constructible``: ``cls()`` works with no arguments.
- ``no_attributes_set_in_init``: ``__init__`` stores exactly its parameters, unchanged, and nothing else.
- ``params_json``: ``get_params()`` is JSON-serialisable.
- ``clone``: ``sklearn.base.clone`` gives equal parameters.
- ``spec_round_trip``: ``make_router(router.spec())`` has the same parameters.
- ``parameter_constraints``: ``parameter_constraints`` declares exactly the ``__init__`` parameters, and the
  defaults and ``_test_params`` satisfy it.
- ``unfitted``: routing / replaying before ``fit`` raises ``NotFittedError`` naming the class.
- ``fit_returns_self``: ``fit`` returns the router, changes no parameter and does not mutate the table.
- ``valid_decisions``: every decision is one of the fitted models, at every operating point.
- ``cost_monotone``: realised mean cost over the grid, and each prompt's predicted cost, never decrease
  as the operating point rises.
- ``same_seed_same_decisions``: two fits with the same parameters (same ``random_state``) decide alike.
- ``export_parity``: for routers with ``export_state``, the runtime rebuilt from it decides identically;
  for an adaptive state also while both are fed the same feedback, one sample at a time.
- ``routes_new_prompts``: a fitted router routes prompts it has never seen (with and without a category)
  through ``route()`` to fitted models.
- ``params_validated_in_fit``: ``fit`` refuses a value outside the declared constraints with an error naming
  the parameter, and leaves the router unfitted.
- ``failed_fit_leaves_unfitted``: when ``_fit`` raises, whether first or after setting state, on a fresh or an
  already fitted router, no fitted attribute (``*_``) remains and use raises ``NotFittedError``.
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
from routers.params import InvalidParameterError

__all__ = [
    "CHECKS",
    "check_router",
    "check_table",
    "expected_failures",
    "not_applicable",
    "router_for_check",
]

_TOL = 1e-12


def check_table() -> OutcomeTable:
    """A 3-model x 36-sample table where the right routing is plain from the prompt text and category.

    ``cheap`` answers the easy prompts, ``mid`` easy and medium, ``big`` everything; costs are
    tokens x prices (longer answers cost more), so cost-aware routers have something to learn; each answer's
    text is confident when right and hedging when wrong, so a cascade has something to read.
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
                        # Recorded answers, so that routers reading them (the cascade) are checked for real.
                        response="The answer is (A)." if right else "Maybe (B), or (C); I am not sure.",
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
    """``make_router(router.spec())`` rebuilds the same parameters (registered routers; see not_applicable)."""
    from routers.registry import make_router

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
    """Routers with ``export_state`` rebuild, through the runtime, into identical decisions (see not_applicable)."""
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


def check_routes_new_prompts(router: Router, table: OutcomeTable) -> None:
    """A fitted router routes prompts it never saw, with or without a category, to fitted models."""
    r = _fresh(router).fit(table)
    prompts = ["a brand new question nobody asked before", "easy task 99: add 2 and 3", ""]
    for cats in (None, ["easy", "unseen-category", ""]):
        queries = Queries.of(prompts, cats)
        for lam in _lams(r, table)[[0, -1]]:
            names = r.route(queries, float(lam))
            assert len(names) == len(prompts), f"route() gave {len(names)} answers for {len(prompts)} prompts"
            bad = sorted(set(names) - set(r.models_))
            assert not bad, f"route() returned unknown model(s) {bad} for new prompts at lam={lam}"


def check_parameter_constraints(router: Router, table: OutcomeTable) -> None:
    """``parameter_constraints`` declares exactly the ``__init__`` parameters; defaults and test values pass."""
    import inspect

    cls = type(router)
    declared = set(cls.parameter_constraints)
    params = set(cls._get_param_names())
    assert declared == params, (
        f"parameter_constraints must declare exactly the __init__ parameters: "
        f"missing {sorted(params - declared)}, not parameters {sorted(declared - params)}"
    )
    defaults = {
        p.name: p.default
        for p in inspect.signature(cls.__init__).parameters.values()
        if p.default is not inspect.Parameter.empty
    }
    for label, values in (("default", defaults), ("checked", router.get_params(deep=False))):
        for name, value in values.items():
            problem = cls.parameter_constraints[name].problem(value)
            assert problem is None, f"the {label} value of {name!r} breaks its own constraint: {problem}"


def check_params_validated_in_fit(router: Router, table: OutcomeTable) -> None:
    """``fit`` refuses a value outside the declared constraints, naming it, and leaves the router unfitted."""
    params = router.get_params(deep=False)
    r = _fresh(router).fit(table)  # fitted first: a refused refit must not keep the earlier state either
    for name, good in params.items():
        r.set_params(**{name: object()})  # no declared constraint admits an arbitrary object
        try:
            r.fit(table)
        except InvalidParameterError as exc:
            assert repr(name) in str(exc), f"the error for a bad {name!r} does not name it: {exc}"
        except Exception as exc:  # noqa: BLE001 - anything else is the finding
            raise AssertionError(
                f"fit with {name}=object() raised {type(exc).__name__} ({exc}), expected InvalidParameterError"
            ) from exc
        else:
            raise AssertionError(f"fit accepted {name}=object(): the parameter is not validated")
        left = sorted(a for a in vars(r) if a.endswith("_") and not a.startswith("__"))
        assert not left, f"a refused fit left fitted attributes {left}"
        r.set_params(**{name: good})


class _InjectedFailure(RuntimeError):
    """Raised inside ``_fit`` by :func:`check_failed_fit_leaves_unfitted`."""


def check_failed_fit_leaves_unfitted(router: Router, table: OutcomeTable) -> None:
    """A fit whose ``_fit`` raises leaves no fitted attribute behind, on a fresh or a fitted router."""
    cls = type(router)
    failing_now = {"on": False}  # off for the good first fit of a router that is then refitted

    def fail_after(self: Router, train: OutcomeTable) -> None:
        cls._fit(self, train)  # the real fit sets its state, then something goes wrong
        if failing_now["on"]:
            raise _InjectedFailure("injected failure after _fit")

    def fail_first(self: Router, train: OutcomeTable) -> None:
        if failing_now["on"]:
            raise _InjectedFailure("injected failure before _fit")
        cls._fit(self, train)

    for how, fake in (("after setting its state", fail_after), ("at its start", fail_first)):
        failing = type(cls.__name__, (cls,), {"_fit": fake, "__module__": cls.__module__})
        for previously_fitted in (False, True):
            r = failing(**router.get_params(deep=False))
            failing_now["on"] = False
            if previously_fitted:
                r.fit(table)  # a good fit first: a failed refit must not leave the old state either
            failing_now["on"] = True
            try:
                r.fit(table)
            except _InjectedFailure:
                pass
            else:
                raise AssertionError(f"fit swallowed an exception raised by _fit {how}")
            left = sorted(a for a in vars(r) if a.endswith("_") and not a.startswith("__"))
            when = "a fitted router's refit" if previously_fitted else "fit"
            assert not left, f"{when} failing {how} left fitted attributes {left}"
            assert not r.is_fitted, f"{when} failing {how} left is_fitted True"
            try:
                r.policy(table)
            except NotFittedError:
                pass
            except Exception as exc:  # noqa: BLE001
                raise AssertionError(
                    f"after {when} failing {how}, policy() raised {type(exc).__name__} ({exc}), "
                    "expected NotFittedError"
                ) from exc
            else:
                raise AssertionError(f"after {when} failing {how}, policy() did not raise NotFittedError")


CHECKS: dict[str, Callable[[Router, OutcomeTable], None]] = {
    "default_constructible": check_default_constructible,
    "no_attributes_set_in_init": check_no_attributes_set_in_init,
    "params_json": check_params_json,
    "clone": check_clone,
    "spec_round_trip": check_spec_round_trip,
    "parameter_constraints": check_parameter_constraints,
    "unfitted": check_unfitted,
    "fit_returns_self": check_fit_returns_self,
    "valid_decisions": check_valid_decisions,
    "cost_monotone": check_cost_monotone,
    "same_seed_same_decisions": check_same_seed_same_decisions,
    "export_parity": check_export_parity,
    "routes_new_prompts": check_routes_new_prompts,
    "params_validated_in_fit": check_params_validated_in_fit,
    "failed_fit_leaves_unfitted": check_failed_fit_leaves_unfitted,
}


def not_applicable(router_or_cls: Router | type, check: str) -> str | None:
    """Why ``check`` does not apply to this router (None when it does).

    Not applicable is not a pass: the test suite reports it as a skip with this reason.
    """
    from routers.registry import name_of, router_registry

    cls = router_or_cls if isinstance(router_or_cls, type) else type(router_or_cls)
    name = name_of(cls)
    if check == "spec_round_trip" and (name not in router_registry or router_registry.get(name) is not cls):
        return "not registered: there is no spec to rebuild it from"
    if check == "export_parity" and not (cls.exportable and hasattr(cls, "export_state")):
        return "not exportable (no export_state)" if hasattr(cls, "export_state") else "has no export_state"
    if check == "params_validated_in_fit" and not cls._get_param_names():
        return "takes no parameters"
    return None


def expected_failures(router_or_cls: Router | type) -> dict[str, str]:
    """The checks this router declares it fails (``_expected_failed_checks``: check name -> reason)."""
    cls = router_or_cls if isinstance(router_or_cls, type) else type(router_or_cls)
    declared = dict(getattr(cls, "_expected_failed_checks", {}) or {})
    unknown = sorted(set(declared) - set(CHECKS))
    if unknown:
        raise ValueError(f"{cls.__name__}._expected_failed_checks names unknown check(s) {unknown}")
    return declared


def check_router(
    router_or_cls: Router | type,
    table: OutcomeTable | None = None,
    *,
    checks: list[str] | None = None,
    allow_expected_failures: bool = True,
) -> list[str]:
    """Run the conformance checks on a router class or instance; returns the names of the checks that passed.

    Checks that do not apply (:func:`not_applicable`) are not run; checks the router declares it fails
    (:func:`expected_failures`) are run and must fail.

    Args:
        router_or_cls: A Router subclass (built with its ``_test_params``) or an unfitted instance (cloned).
        table: The table to fit and replay on; default :func:`check_table`.
        checks: Names of the checks to run (default: all of :data:`CHECKS`).
        allow_expected_failures: False runs declared expected failures like any check (the test suite does,
            under a strict ``xfail``).

    Raises:
        AssertionError: ``"<check> failed for <router>: <what went wrong>"`` at the first failing check, or
            ``"<check> passed for <router> but is declared an expected failure"``.
    """
    if isinstance(router_or_cls, type) and not issubclass(router_or_cls, Router):
        raise TypeError(f"check_router needs a Router subclass or instance, got {router_or_cls!r}")
    table = check_table() if table is None else table
    names = list(CHECKS) if checks is None else checks
    unknown = sorted(set(names) - set(CHECKS))
    if unknown:
        raise ValueError(f"unknown check(s) {unknown}; known: {', '.join(CHECKS)}")
    expected = expected_failures(router_or_cls) if allow_expected_failures else {}
    try:
        router = router_for_check(router_or_cls)
    except Exception as exc:  # noqa: BLE001
        raise AssertionError(f"building failed for {router_or_cls!r}: {exc!r}") from exc
    passed = []
    for name in names:
        if not_applicable(router, name) is not None:
            continue
        try:
            CHECKS[name](router, table)
        except AssertionError as exc:
            if name in expected:
                continue
            raise AssertionError(f"{name} failed for {_name(router)}: {exc}") from exc
        except Exception as exc:  # noqa: BLE001 - an unexpected error is a failure of that check too
            if name in expected:
                continue
            raise AssertionError(
                f"{name} failed for {_name(router)}: raised {type(exc).__name__}: {exc}"
            ) from exc
        if name in expected:
            raise AssertionError(
                f"{name} passed for {_name(router)} but is declared an expected failure "
                f"({expected[name]}); remove it from _expected_failed_checks"
            )
        passed.append(name)
    return passed
