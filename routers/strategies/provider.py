"""Provider choice: the same model is sold by several providers at different prices and latencies.

Open-weight models (Llama, Mixtral, ...) are served by many inference providers; the answer is (to a first
approximation) the same, the bill and the wait are not. Routing services such as OpenRouter's provider routing
("sort by price", "max latency", fallbacks) pick, per request, the cheapest provider that meets a latency
bound and fail over to the next when it errors. This module does that, and lets the choice of *model* ride on
the shared operating point:

* **Arms.** In an OutcomeTable a column may be a plain model (``Llama-3.1-70B-Instruct``: its provider is the
  table's ``provider`` column) or a ``model@provider`` arm. :func:`expand_providers` turns a table of plain
  models into arms: one column per provider of each model in ``datasets/prices.csv``, same answers and
  scores, cost = that provider's price x the row's tokens, latency = its typical latency.
* **Quality is the model's.** Scores are pooled over the arms of one model, per category (shrunk toward the
  model's overall rate; the overall rate when the request has no category).
* **Cost is the arm's** (mean train cost per request: provider price x tokens).
* **Latency is a constraint, not a price.** An arm is *admissible* when its typical latency (the price table's
  ``p50_latency_s``, else the table's median ``latency_s``, else unknown = admissible) is within
  ``max_latency_s``. Inadmissible arms are never chosen (if no arm at all is admissible, the fastest is).
* **The knob** is the shared operating point ``lam``: ``argmax lam * quality(model) - cost(arm)`` over
  admissible arms. Among the arms of one model quality is equal, so the cheapest admissible provider wins at
  every ``lam``; across models ``lam`` trades quality for price as for every router, and cost never decreases
  as it grows. Tightening ``max_latency_s`` is how one buys speed: it removes slow (often cheaper) providers.
  With ``model`` set, only that model's arms compete (the knob then has nothing to trade).
* **Failover.** :meth:`ProviderRouter.failover_order` (and the pure :func:`choose_provider` for a proxy)
  orders a model's providers: admissible ones by price, then the others by latency; providers known to be
  down are skipped.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from evals.exceptions import ConfigError, DataNotFoundError, SchemaError
from evals.outcomes import OutcomeTable
from evals.prices import PriceTable
from routers import runtime
from routers.params import boolean, model_name, real, text
from routers.registry import register_router
from routers.strategies._common import RuntimeRouter, category_vocabulary, per_category_mean

__all__ = ["ProviderRouter", "choose_provider", "expand_providers", "join_arm", "split_arm"]

ARM_SEP = "@"


def split_arm(arm: str) -> tuple[str, str]:
    """``"model@provider" -> ("model", "provider")``; a plain model name gives ``(name, "")``."""
    model, sep, provider = str(arm).rpartition(ARM_SEP)
    return (model, provider) if sep and model else (str(arm), "")


def join_arm(model: str, provider: str) -> str:
    """``("model", "provider") -> "model@provider"`` (the plain model name when provider is "")."""
    return f"{model}{ARM_SEP}{provider}" if provider else model


def choose_provider(
    model: str,
    providers: Mapping[str, Mapping[str, float | None]],
    max_latency_s: float | None = None,
    down: Collection[str] = frozenset(),
) -> list[str]:
    """Order a model's providers for a request: the first is the one to call, the rest the failover order.

    Pure (standard library only) so that an exported proxy can copy it.

    Args:
        model: The model (used in error messages).
        providers: ``{provider: {"price": dollars (any unit, the same for all), "latency_s": typical seconds
            or None/NaN when unknown}}``.
        max_latency_s: Latency bound in seconds; None = no bound.
        down: Providers currently failing; they are left out.

    Returns:
        Providers within the bound (unknown latency counts as within) by price, then latency, then name;
        followed by those over the bound by latency, then price. Empty when every provider is down.

    Raises:
        ConfigError: when ``providers`` is empty or a price is missing or negative.

    Example:
        >>> offers = {"a": {"price": 1.0, "latency_s": 5}, "b": {"price": 0.5, "latency_s": 20},
        ...           "c": {"price": 0.8, "latency_s": 2}}
        >>> choose_provider("llama", offers, max_latency_s=10)
        ['c', 'a', 'b']
    """
    if not providers:
        raise ConfigError(f"no providers given for model {model!r}")
    within, over = [], []
    for name, offer in providers.items():
        price = offer.get("price")
        if price is None or not math.isfinite(float(price)) or float(price) < 0:
            raise ConfigError(f"provider {name!r} of {model!r} has price {price!r}; it must be a number >= 0")
        if name in down:
            continue
        lat = offer.get("latency_s")
        lat_f = float(lat) if lat is not None and math.isfinite(float(lat)) else math.nan
        known = not math.isnan(lat_f)
        if max_latency_s is None or not known or lat_f <= float(max_latency_s):
            # Unknown latency ranks after a known one at the same price.
            within.append((float(price), lat_f if known else math.inf, name))
        else:
            over.append((lat_f, float(price), name))
    return [n for *_, n in sorted(within)] + [n for *_, n in sorted(over)]


@register_router("provider")
class ProviderRouter(RuntimeRouter):
    """Cheapest provider of a model within a latency bound, with failover; the model choice rides on ``lam``.

    Source: provider routing of inference marketplaces (OpenRouter's "sort by price" / "max latency" /
    fallbacks); see the module docstring for arms, the knob and failover.

    Args:
        model: Route only to this model's providers (a plain model name); None lets ``lam`` choose the model.
        max_latency_s: Typical-latency bound in seconds for an arm to be chosen; None = no bound.
        failover: If True, :meth:`failover_order` lists every other provider after the chosen one; if False,
            only the chosen one.
        prices_path: Price CSV to read latencies from (default ``datasets/prices.csv``; missing = no
            latencies).
        smoothing: Pseudo-count shrinking per-category quality toward the model's overall quality.
    """

    parameter_constraints = {
        "model": model_name(),
        "max_latency_s": real(low=0, closed="neither", nullable=True),
        "failover": boolean(),
        "prices_path": text(role="path", nullable=True),
        "smoothing": real(low=0),
    }

    def __init__(
        self,
        *,
        model: str | None = None,
        max_latency_s: float | None = None,
        failover: bool = True,
        prices_path: str | None = None,
        smoothing: float = 5.0,
    ) -> None:
        self.model = model
        self.max_latency_s = max_latency_s
        self.failover = failover
        self.prices_path = prices_path
        self.smoothing = smoothing

    # ------------------------------------------------------------------ fitting
    def _fit(self, train: OutcomeTable) -> None:
        # Parameter ranges are checked by ``fit`` against ``parameter_constraints``.
        arms = [_arm_of(a, train) for a in self.models_]
        base = [m for m, _ in arms]
        if self.model is not None and self.model not in base:
            raise ConfigError(
                f"provider router model={self.model!r} is not in the table; models: {sorted(set(base))}"
            )
        latency = _arm_latencies(arms, train, self.prices_path)
        cost = np.asarray(self.cost_per_model_, dtype=float)
        # Quality is the model's: pool the scores of all its arms (per category, shrunk to the overall).
        vocab = category_vocabulary(train)
        cats = np.asarray([str(c) for c in train.categories], dtype=object)
        per_arm = per_category_mean(train.quality, cats, vocab, float(self.smoothing))
        pooled = per_arm.copy()
        for m in set(base):
            cols = [j for j, b in enumerate(base) if b == m]
            pooled[:, cols] = per_arm[:, cols].mean(axis=1, keepdims=True)
        allowed = np.array([self.model is None or b == self.model for b in base])
        bound = self.max_latency_s
        # Nothing within the bound: the fastest allowed arm(s) rather than nothing (runtime.provider_admissible).
        admissible = runtime.provider_admissible(allowed, latency, bound, np.zeros(len(arms), dtype=bool))
        # Inadmissible arms get quality 0 and a cost above every admissible arm: dominated at every lam, so
        # the runtime's argmax (and the export) never picks them. The runtime (kind "provider") recomputes
        # admissibility per decision: a proxy's live latencies (routers.export.proxy.telemetry) replace the
        # exported ones, so the arms stored here unmasked can come back.
        c_vec = np.where(admissible, cost, cost[admissible].max() * 2.0 + 1e-6)
        offers = {}
        for m in dict.fromkeys(base):
            offers[m] = {
                join_arm(m, p): {
                    "price": float(cost[j]),
                    "latency_s": None if np.isnan(latency[j]) else float(latency[j]),
                }
                for j, (b, p) in enumerate(arms)
                if b == m
            }
        self.arms_ = tuple(arms)
        self.arm_latency_s_ = latency
        self.admissible_ = admissible
        meta = self._base_meta(
            "provider",
            categories=vocab,
            cost={"kind": "constant"},
            providers={m: sorted(o) for m, o in offers.items()},
            provider={
                "max_latency_s": None if bound is None else float(bound),
                "latency_s": [None if np.isnan(t) else float(t) for t in latency],
                "allowed": [bool(a) for a in allowed],
                "cost": [float(c) for c in cost],
            },
        )
        self.offers_ = offers
        self.state_ = (meta, {"quality_table": pooled, "cost_per_model": c_vec})

    # ------------------------------------------------------------------ failover
    def failover_order(self, model: str, down: Collection[str] = frozenset()) -> list[str]:
        """The arms (``model@provider`` or column names) of ``model`` in the order to try them.

        Args:
            model: A plain model name (or an arm, whose model is used).
            down: Arms or provider names currently failing; left out.

        Raises:
            ConfigError: for a model that is not in the fitted table.
        """
        self._check_fitted()
        base = split_arm(model)[0] if model not in self.offers_ else model
        if base not in self.offers_:
            raise ConfigError(f"unknown model {model!r}; models: {', '.join(self.offers_)}")
        offers = self.offers_[base]
        down_arms = {a for a in offers if a in down or split_arm(a)[1] in down}
        order = choose_provider(base, offers, self.max_latency_s, down_arms)
        columns = [self.models_[[join_arm(*x) for x in self.arms_].index(a)] for a in order]
        return columns if self.failover else columns[:1]


def _arm_of(column: str, table: OutcomeTable) -> tuple[str, str]:
    """(model, provider) of a table column: from ``model@provider``, else the table's provider column."""
    model, provider = split_arm(column)
    if provider:
        return model, provider
    f = table.frame
    provs = f.loc[f["model"].eq(column), "provider"]
    provs = provs[provs.ne("")]
    return column, (str(provs.mode().iat[0]) if len(provs) else "")


def _load_prices(path: str | None) -> PriceTable | None:
    try:
        return PriceTable.load(path)
    except DataNotFoundError:
        if path is not None:
            raise
        return None


def _arm_latencies(
    arms: Sequence[tuple[str, str]], train: OutcomeTable, prices_path: str | None
) -> np.ndarray:
    """Typical latency per arm: the price table's p50, else the train table's median, else NaN (unknown)."""
    prices = _load_prices(prices_path)
    lat = np.asarray(train.wide("latency_s"), dtype=float)
    measured = np.full(len(arms), np.nan)
    for j in range(len(arms)):  # the median of the known latencies of each arm (none known: NaN)
        known = lat[:, j][np.isfinite(lat[:, j])]
        if len(known):
            measured[j] = float(np.median(known))
    out = np.full(len(arms), np.nan)
    for j, (model, provider) in enumerate(arms):
        listed = math.nan
        if prices is not None and model in prices and provider in prices.providers(model):
            listed = prices.price(model, provider).p50_latency_s
        out[j] = listed if np.isfinite(listed) else measured[j]
    return out


def expand_providers(table: OutcomeTable, prices: PriceTable | None = None) -> OutcomeTable:
    """One ``model@provider`` column per provider of each model in the price table (same answers and scores).

    Cost of an arm's row = that provider's price for the row's ``input_tokens`` / ``output_tokens`` (when the
    tokens are unknown: the recorded cost scaled by the providers' blended price ratio); ``latency_s`` = the
    provider's typical latency when the price table lists one, else the recorded latency. Models the price
    table does not list keep one column under their plain name. ``cost_estimated`` is carried over.

    Raises:
        SchemaError: if the table already has ``model@provider`` columns.
    """
    prices = prices or PriceTable.load()
    f = table.frame
    if any(split_arm(m)[1] for m in table.models):
        raise SchemaError(
            "expand_providers expects plain model columns; this table already has model@provider arms"
        )
    parts, order = [], []
    for model in table.models:
        rows = f[f["model"].eq(model)]
        if model not in prices:
            parts.append(rows)
            order.append(model)
            continue
        recorded = str(rows["provider"].mode().iat[0]) if rows["provider"].ne("").any() else None
        ref = prices.price(model, recorded if recorded in prices.providers(model) else None)
        for offer in prices.offers(model):
            part = rows.copy()
            tin, tout = part["input_tokens"].to_numpy(float), part["output_tokens"].to_numpy(float)
            known = np.isfinite(tin) & np.isfinite(tout)
            priced = (
                np.nan_to_num(tin) * offer.input_per_1m + np.nan_to_num(tout) * offer.output_per_1m
            ) / 1e6
            ratio = _blended(offer) / _blended(ref) if _blended(ref) > 0 else 1.0
            part["cost_usd"] = np.where(
                known, priced + offer.request_fee, part["cost_usd"].to_numpy(float) * ratio
            )
            if np.isfinite(offer.p50_latency_s):
                part["latency_s"] = offer.p50_latency_s
            part["provider"] = offer.provider
            part["model"] = join_arm(model, offer.provider)
            parts.append(part)
            order.append(join_arm(model, offer.provider))
    out = OutcomeTable(pd.concat(parts, ignore_index=True), table.card, origin=table.origin)
    return out.select(models=order)


def _blended(p: Any) -> float:
    """A price's dollars per 1M tokens at a 3:1 input:output mix (only used to scale costs without tokens)."""
    return 0.75 * p.input_per_1m + 0.25 * p.output_per_1m
