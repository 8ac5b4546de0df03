"""The router contract: scikit-learn's estimator rules plus one monotone operating-point knob.

A router is fitted on an :class:`~evals.outcomes.OutcomeTable` and then, per request, picks one of the
models it was fitted on. Most routers are *scoring* routers: they predict, per (prompt, model), the quality
of the answer (:meth:`Router.predict_quality`) and its cost (:meth:`Router.predict_cost`), and the base class
turns the two into a decision for an **operating point** ``lam`` (a willingness to pay, in dollars per
request for +1.0 of expected quality)::

    choice(prompt, lam) = argmax_m  lam * quality_hat[m] - cost_hat[m]     (ties go to the cheaper model)

``lam = 0`` picks the cheapest model; a large ``lam`` the best-predicted one. For every prompt the chosen
model's predicted cost and quality never decrease as ``lam`` grows, so a frontier is a sweep of ``lam`` over
scores computed once (see :class:`ScorePolicy`).

Routers whose decision is not a per-prompt argmax (a cascade that calls models in turn, an adaptive router
that learns from feedback) override :meth:`Router.policy` and return their own :class:`Policy`.

Writing a router (the whole contract)::

    @register_router("my-router")
    class MyRouter(Router):
        '''One line on the idea. Source: the paper or project it comes from.'''

        parameter_constraints = {"alpha": real(low=0), "random_state": seed()}  # routers.params

        def __init__(self, *, alpha: float = 1.0, random_state: int = 0):
            self.alpha = alpha                  # store hyper-parameters unchanged; no work here
            self.random_state = random_state

        def _fit(self, train: OutcomeTable) -> None:
            self.weights_ = ...                 # learned state ends in "_"

        def predict_quality(self, queries: Queries) -> np.ndarray:
            self._check_fitted()
            return ...                          # shape (len(queries), len(self.models_))
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
from sklearn.base import BaseEstimator

from evals.exceptions import NotFittedError, SchemaError
from evals.outcomes import OutcomeTable
from routers.params import Param, validate_constraints
from routers.runtime import decide  # the decision rule lives in the exportable runtime

__all__ = ["Policy", "Queries", "Router", "ScorePolicy", "check_operating_point", "decide"]


def check_operating_point(lam: float) -> float:
    """``lam`` as a float, or a ValueError when it is not a finite number >= 0 (the rule :func:`decide` applies).

    For policies that decide without :func:`decide` (a cascade's thresholds), so that every router refuses
    the same operating points with the same message.
    """
    if not np.isfinite(lam) or lam < 0:
        raise ValueError(f"operating point must be a finite number >= 0, got {lam!r}")
    return float(lam)


@dataclass(frozen=True)
class Queries:
    """What a router sees of each request: the prompt, and a category or tag when one is known.

    Live traffic rarely carries a category, so every router must work with ``categories=None``.
    """

    prompts: tuple[str, ...]
    """The user prompts."""
    categories: tuple[str, ...] | None = None
    """One category/tag per prompt ("" for unknown), or None when the traffic has none."""

    @classmethod
    def of(cls, prompts: Sequence[str] | str, categories: Sequence[str] | None = None) -> Queries:
        """Build from a prompt (or list of prompts) and optional categories.

        Raises:
            SchemaError: if ``categories`` does not have one entry per prompt.
        """
        ps = (prompts,) if isinstance(prompts, str) else tuple(str(p) for p in prompts)
        if categories is None:
            return cls(ps, None)
        cs = tuple("" if c is None else str(c) for c in categories)
        if len(cs) != len(ps):
            raise SchemaError(f"{len(ps)} prompts but {len(cs)} categories")
        return cls(ps, cs)

    @classmethod
    def from_table(cls, table: OutcomeTable, *, use_categories: bool = True) -> Queries:
        """The queries of a table's samples, in wide-view row order."""
        cats = tuple(str(c) for c in table.categories) if use_categories else None
        return cls(tuple(table.prompts), cats)

    def __len__(self) -> int:
        return len(self.prompts)


class Policy:
    """A router's decisions over one table's samples at any operating point, with realised outcomes.

    Built by :meth:`Router.policy` once per (router, table): the expensive part (featurising, scoring) is
    done then, so that each operating point is cheap. The evaluator only uses this interface.
    """

    models: tuple[str, ...]

    def outcomes(self, lam: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per sample at one operating point: (index of the answering model, realised cost, realised score).

        Cost counts every call made (a cascade pays for the answers it discarded).
        """
        raise NotImplementedError

    def grid(self, n_points: int = 200) -> np.ndarray:
        """Operating points (increasing) that span this policy's decisions from cheapest to dearest."""
        raise NotImplementedError

    def curve(self, lams: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Means over samples at many points: (cost per request, quality, share of traffic per model (K, m)).

        The default evaluates :meth:`outcomes` at each point; subclasses may do it faster.
        """
        lams = np.asarray(lams, dtype=float)
        costs = np.empty(len(lams))
        quals = np.empty(len(lams))
        shares = np.zeros((len(lams), len(self.models)))
        for k, lam in enumerate(lams):
            choice, cost, qual = self.outcomes(float(lam))
            costs[k], quals[k] = cost.mean(), qual.mean()
            shares[k] = np.bincount(choice, minlength=len(self.models)) / len(choice)
        return costs, quals, shares


class ScorePolicy(Policy):
    """The policy of a scoring router: argmax of ``lam * quality_hat - cost_hat`` per sample.

    The sweep does not re-decide per point: for each sample, the chosen model as a function of ``lam`` is a
    step function whose steps (at most m - 1) are found once, walking the upper convex hull of that
    sample's predicted (cost, quality) points. Mean cost, quality and traffic shares at any set of points
    then come from a cumulative sum over all samples' steps, so a 200-point sweep of a 100,000 x 14 table
    takes a fraction of a second.

    Args:
        models: Model names (columns).
        quality_hat: Predicted quality (n, m).
        cost_hat: Predicted cost (n, m).
        quality: Realised scores (n, m) from the table being replayed.
        cost: Realised costs (n, m).
    """

    def __init__(
        self,
        models: Sequence[str],
        quality_hat: np.ndarray,
        cost_hat: np.ndarray,
        quality: np.ndarray,
        cost: np.ndarray,
    ) -> None:
        self.models = tuple(models)
        self.quality_hat = np.asarray(quality_hat, dtype=float)
        self.cost_hat = np.asarray(cost_hat, dtype=float)
        self.quality = np.asarray(quality, dtype=float)
        self.cost = np.asarray(cost, dtype=float)
        n, m = self.quality.shape
        for name, arr in (("quality_hat", self.quality_hat), ("cost_hat", self.cost_hat), ("cost", self.cost)):
            if arr.shape != (n, m):
                raise ValueError(f"{name} has shape {arr.shape}, expected {(n, m)}")
        self._steps: tuple[np.ndarray, ...] | None = None

    def outcomes(self, lam: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """See :meth:`Policy.outcomes`."""
        choice = decide(self.quality_hat, self.cost_hat, lam)
        rows = np.arange(len(choice))
        return choice, self.cost[rows, choice], self.quality[rows, choice]

    def steps(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """All samples' decision changes: (row, lam at which it happens, model before, model after).

        The first entry per row (lam = 0) switches from "nothing" (-1) to the cheapest model.
        """
        if self._steps is None:
            self._steps = _hull_steps(self.quality_hat, self.cost_hat)
        return self._steps  # type: ignore[return-value]

    def grid(self, n_points: int = 200) -> np.ndarray:
        """Points between adjacent distinct step points, evenly spread over them, so none sits on a tie."""
        _, lam, before, _ = self.steps()
        inner = np.unique(lam[before >= 0])
        # Steps closer than float noise are one step (the same tie computed from different numbers).
        inner = inner[np.concatenate([[True], np.diff(inner) > 1e-9 * np.abs(inner[1:])])] if len(inner) else inner
        if len(inner) == 0:
            return np.zeros(1)
        # Gaps between consecutive distinct steps; take up to n_points - 2 of them evenly by rank.
        n_gaps = max(min(n_points - 2, len(inner) - 1), 0)
        picks = np.unique(np.linspace(0, len(inner) - 2, n_gaps).round().astype(int))
        lo, hi = inner[picks], inner[picks + 1]
        mids = np.where(lo > 0, np.sqrt(lo * hi), (lo + hi) / 2)
        top = inner[-1] * 1.5 + 1e-12
        return np.unique(np.concatenate([[0.0], mids, [top]]))

    def curve(self, lams: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """See :meth:`Policy.curve`; exact at every point not on a tie, O(n m + K log) time."""
        lams = np.asarray(lams, dtype=float)
        row, lam, before, after = self.steps()
        n, m = self.quality.shape
        k = len(lams)
        # A step at lam_s applies to grid points strictly above it (at the tie the cheaper model wins),
        # except the initial step at 0, which applies everywhere.
        initial = before < 0
        pos = np.searchsorted(lams, lam, side="right")
        pos[initial] = 0
        keep = np.flatnonzero(pos < k)
        row, before, after, pos, initial = row[keep], before[keep], after[keep], pos[keep], initial[keep]
        # Flat gathers and bincounts (np.add.at is an order of magnitude slower at this size).
        fa, fb = row * m + after, row * m + np.maximum(before, 0)
        cflat, qflat = self.cost.ravel(), self.quality.ravel()
        d_cost = cflat[fa] - np.where(initial, 0.0, cflat[fb])
        d_qual = qflat[fa] - np.where(initial, 0.0, qflat[fb])
        cost = np.cumsum(np.bincount(pos, weights=d_cost, minlength=k)) / n
        qual = np.cumsum(np.bincount(pos, weights=d_qual, minlength=k)) / n
        share = np.bincount(pos * m + after, minlength=k * m).astype(float)
        moved = ~initial
        share -= np.bincount(pos[moved] * m + before[moved], minlength=k * m)
        return cost, qual, np.cumsum(share.reshape(k, m), axis=0) / n


_BLOCK = 16_384  # rows per block in _hull_steps: keeps the per-column working vectors in cache


def _hull_steps(q: np.ndarray, c: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Walk each row's upper convex hull of (cost, quality) from the cheapest point (see ScorePolicy).

    A monotone chain per row, vectorised over rows: models are visited in increasing predicted cost and
    kept on a per-row stack while they keep the hull concave, so each pass works on (n,) vectors rather
    than (n, m) arrays. Returns all rows' first steps, then all second steps, and so on.
    """
    q = np.asarray(q, dtype=float)
    c = np.asarray(c, dtype=float)
    n, m = q.shape
    # With the default cost prediction every row has the same costs: one model order serves all rows.
    shared = bool(n) and bool((c == c[:1]).all())
    tol = 1e-12 * ((np.abs(c[0]).max() if shared else np.abs(c).max()) + 1.0) if c.size else 0.0
    # Per-row stacks of hull vertices, flat (row * m + depth): model, its quality and cost, and the lam at
    # which the decision steps onto it from the vertex below (-inf for the first vertex).
    st_i = np.empty(n * m, dtype=np.intp)
    st_q = np.empty(n * m)
    st_c = np.empty(n * m)
    st_s = np.empty(n * m)
    size = np.ones(n, dtype=np.intp)
    for lo in range(0, n, _BLOCK):
        hi = min(n, lo + _BLOCK)
        sl = slice(lo * m, hi * m)
        _hull_chain(q[lo:hi], c[lo:hi], shared, tol, st_i[sl], st_q[sl], st_c[sl], st_s[sl], size[lo:hi])
    rows = np.arange(n)
    out_row, out_lam, out_before, out_after = [rows], [np.zeros(n)], [np.full(n, -1)], [st_i[rows * m]]
    for k in range(1, int(size.max(initial=1))):
        idx = np.flatnonzero(size > k)
        fa = idx * m + k
        out_row.append(idx)
        out_lam.append(st_s[fa])
        out_before.append(st_i[fa - 1])
        out_after.append(st_i[fa])
    return (
        np.concatenate(out_row),
        np.concatenate(out_lam),
        np.concatenate(out_before),
        np.concatenate(out_after),
    )


def _hull_chain(
    q: np.ndarray,
    c: np.ndarray,
    shared: bool,
    tol: float,
    st_i: np.ndarray,
    st_q: np.ndarray,
    st_c: np.ndarray,
    st_s: np.ndarray,
    size: np.ndarray,
) -> None:
    """Fill the flat hull stacks of one block of rows in place (see :func:`_hull_steps`)."""
    n, m = q.shape
    rows = np.arange(n)
    # Columns in increasing cost, transposed so that each pass reads contiguous memory.
    if shared:
        c0 = c[0]
        order0 = np.argsort(c0, kind="stable")
        qT = np.ascontiguousarray(q[:, order0].T)
        # Start: the cheapest model, ties to the better one then the lower index (as ``decide`` at lam = 0).
        tied = np.flatnonzero(c0 <= c0.min() + tol)
        start = tied[np.argmin(-q[:, tied], axis=1)] if len(tied) > 1 else np.full(n, tied[0])
    else:
        order = np.argsort(c, axis=1, kind="stable")
        qT = np.ascontiguousarray(np.take_along_axis(q, order, axis=1).T)
        cT = np.ascontiguousarray(np.take_along_axis(c, order, axis=1).T)
        orderT = np.ascontiguousarray(order.T)
        first = np.where(cT <= cT[0] + tol, -qT, np.inf).argmin(axis=0)
        start = orderT[first, rows]
    # The top of each row's stack, kept dense so that most checks read no stack memory.
    top_q = q[rows, start]
    top_c = c[rows, start]
    top_s = np.full(n, -np.inf)
    base = rows * m
    st_i[base], st_q[base], st_c[base], st_s[base] = start, top_q, top_c, -np.inf
    bar = top_q + 1e-12
    for j in range(m):
        qn = qT[j]
        # Only a model better than the current top can ever be chosen (a dearer, no better one never is).
        r = np.flatnonzero(qn > bar)
        if len(r) == 0:
            continue
        qn_r = qn[r]
        if shared:
            nr = order0[j]
            cn = c0[nr]
            cw = cn
        else:
            nr = orderT[j][r]
            cn = cT[j][r]
            cw = cn
        # Pop the top while the new model is reached at a lam no higher than the top itself (within the
        # relative tolerance that makes two step points a tie: the far end of a hull edge wins).
        w, qw = r, qn_r
        while True:
            s_new = np.maximum((cw - top_c[w]) / (qw - top_q[w]), 0.0)
            pop = top_s[w] >= s_new * (1 - 1e-12) - 1e-300
            if not pop.any():
                break
            w, qw = w[pop], qw[pop]
            if not shared:
                cw = cw[pop]
            size[w] -= 1
            f = w * m + size[w] - 1
            top_q[w], top_c[w], top_s[w] = st_q[f], st_c[f], st_s[f]
        s_new = np.maximum((cn - top_c[r]) / (qn_r - top_q[r]), 0.0)
        f = r * m + size[r]
        st_i[f], st_q[f], st_c[f], st_s[f] = nr, qn_r, cn, s_new
        top_q[r], top_c[r], top_s[r] = qn_r, cn, s_new
        size[r] += 1
        bar[r] = qn_r + 1e-12


class Router(BaseEstimator):
    """Base class of every routing strategy (see the module docstring for the contract).

    Subclasses implement ``_fit`` and :meth:`predict_quality`; optionally :meth:`predict_cost` (to predict
    per-prompt cost, e.g. from a predicted answer length) or :meth:`policy` (for non-argmax decisions).

    Class attributes:
        exportable: False for routers that cannot be deployed (the oracle; routers the runtime cannot run).
        not_exportable_because: When ``exportable`` is False, why, in one sentence (shown by ``routelab export``
            and the app when such a router is chosen).
        uses_outcomes_at_route_time: True for routers that need the recorded answers to decide (replay only).
        parameter_constraints: Per ``__init__`` parameter, the values it takes (:mod:`routers.params`;
            after scikit-learn's ``_parameter_constraints``). Checked by :meth:`fit` and by
            :func:`routers.registry.validate_params`; every registered router declares all its parameters.
    """

    exportable: bool = True
    not_exportable_because: ClassVar[str] = ""
    uses_outcomes_at_route_time: bool = False
    parameter_constraints: ClassVar[dict[str, Param]] = {}

    # ------------------------------------------------------------------ fitting
    def fit(self, train: OutcomeTable) -> Router:
        """Fit on the train part of an OutcomeTable; forgets any earlier fit; returns ``self``.

        All or nothing: when validation or ``_fit`` raises, the router is left unfitted (no attribute ending
        in ``_`` remains), so later use raises :class:`NotFittedError` rather than failing half-way.

        Raises:
            TypeError: ``train`` is not an OutcomeTable.
            routers.params.InvalidParameterError: a parameter outside its declared constraint.
        """
        if not isinstance(train, OutcomeTable):
            raise TypeError(f"{type(self).__name__}.fit expects an OutcomeTable, got {type(train).__name__}")
        self._forget_fit()
        self._validate_params()
        models = train.models
        # The default cost prediction: each model's mean cost per request on the train part.
        cost_per_model = np.asarray(train.cost.mean(axis=0), dtype=float)
        # ``_fit`` reads both, so they are set first; a failure below removes them and anything ``_fit`` set.
        self.models_, self.cost_per_model_ = models, cost_per_model
        try:
            self._fit(train)
        except BaseException:
            self._forget_fit()
            raise
        return self

    def _forget_fit(self) -> None:
        """Remove every fitted attribute (the names ending in ``_``)."""
        for attr in [a for a in vars(self) if a.endswith("_") and not a.startswith("__")]:
            delattr(self, attr)

    def _validate_params(self) -> None:
        """Check the parameters against :attr:`parameter_constraints` (replaces scikit-learn's own format).

        Raises:
            routers.params.InvalidParameterError: ``"router 'knn': parameter 'k' must be an int >= 1, got -5"``.
        """
        from routers.registry import name_of

        validate_constraints(
            f"router {name_of(type(self))!r}", self.parameter_constraints, self.get_params(deep=False)
        )

    def _fit(self, train: OutcomeTable) -> None:
        """Learn from ``train`` (``models_`` and ``cost_per_model_`` are already set). Default: nothing.

        Raising here is safe: :meth:`fit` then removes every fitted attribute.
        """

    def _check_fitted(self) -> None:
        if not hasattr(self, "models_"):
            raise NotFittedError(
                f"this {type(self).__name__} is not fitted yet; call .fit(train_table) before routing"
            )

    @property
    def is_fitted(self) -> bool:
        """Whether :meth:`fit` has been called."""
        return hasattr(self, "models_")

    # ------------------------------------------------------------------ prediction
    def predict_quality(self, queries: Queries) -> np.ndarray:
        """Predicted quality in [0, 1] per (query, model): shape (len(queries), len(models_))."""
        raise NotImplementedError(f"{type(self).__name__} must implement predict_quality")

    def predict_cost(self, queries: Queries) -> np.ndarray:
        """Predicted dollars per (query, model); default: each model's mean cost on the train part."""
        self._check_fitted()
        return np.broadcast_to(self.cost_per_model_, (len(queries), len(self.models_))).copy()

    def route_indices(self, queries: Queries, lam: float) -> np.ndarray:
        """Index (into ``models_``) of the chosen model per query at operating point ``lam``."""
        self._check_fitted()
        return decide(self.predict_quality(queries), self.predict_cost(queries), lam)

    def route(self, queries: Queries | Sequence[str] | str, lam: float) -> list[str]:
        """Chosen model name per query at operating point ``lam`` (dollars per request per +1.0 quality).

        Example:
            >>> router.route(["What is 2+2?"], lam=0.01)  # doctest: +SKIP
            ['gpt-4o-mini']
        """
        if not isinstance(queries, Queries):
            queries = Queries.of(queries)
        return [self.models_[i] for i in self.route_indices(queries, lam)]

    # ------------------------------------------------------------------ replay
    def policy(self, table: OutcomeTable, *, use_categories: bool = True) -> Policy:
        """Score a table's samples once and return the policy used to sweep operating points.

        Raises:
            SchemaError: if the table's models differ from those the router was fitted on.
        """
        self._check_fitted()
        table = self._align(table)
        queries = Queries.from_table(table, use_categories=use_categories)
        return ScorePolicy(
            self.models_, self.predict_quality(queries), self.predict_cost(queries), table.quality, table.cost
        )

    def _align(self, table: OutcomeTable) -> OutcomeTable:
        """The table with its columns in this router's model order."""
        if table.models == self.models_:
            return table
        missing = [m for m in self.models_ if m not in table.models]
        if missing:
            raise SchemaError(f"the table lacks model(s) {missing} that {type(self).__name__} was fitted on")
        return table.select(models=list(self.models_))

    # ------------------------------------------------------------------ description
    @classmethod
    def describe(cls) -> str:
        """The first line of the class docstring."""
        return (cls.__doc__ or "").strip().splitlines()[0] if cls.__doc__ else ""

    def spec(self) -> dict[str, Any]:
        """``{"name": registered name, "params": get_params()}``, JSON-serialisable."""
        from routers.registry import name_of

        return {"name": name_of(type(self)), "params": self.get_params(deep=False)}
