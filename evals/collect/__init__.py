"""Collection: call each candidate model once per sample over an OpenAI-compatible API, cached and resumable.

- :mod:`.config`: the TOML config (providers, models, task set, grader, output); :func:`load_config`.
- :mod:`.cache`: :class:`ResponseCache`, answers by a hash of the normalised request (SQLite, WAL).
- :mod:`.client`: :class:`ChatClient`, async httpx with per-provider concurrency, retries and backoff.
- :mod:`.runner`: :func:`collect`, which writes a graded :class:`~evals.outcomes.OutcomeTable`.
- :mod:`.budget`: the spend estimate printed before a run, and the ``max_spend_usd`` cap.

Example:
    >>> from evals.collect import collect, load_config
    >>> result = collect(load_config("examples/collect_replay.toml"))   # doctest: +SKIP
    >>> print(result.format_spend())                                      # doctest: +SKIP
"""

from evals.collect.budget import SpendEstimate, estimate_spend
from evals.collect.cache import CacheError, ResponseCache, default_cache_path, request_key
from evals.collect.client import CallStats, ChatClient, ChatResult
from evals.collect.config import (
    CollectConfig,
    GraderConfig,
    ModelConfig,
    ProviderConfig,
    TaskConfig,
    load_config,
    parse_config,
)
from evals.collect.runner import CollectResult, ModelSpend, acollect, collect, resolve_prices

__all__ = [
    "CacheError",
    "CallStats",
    "ChatClient",
    "ChatResult",
    "CollectConfig",
    "CollectResult",
    "GraderConfig",
    "ModelConfig",
    "ModelSpend",
    "ProviderConfig",
    "ResponseCache",
    "SpendEstimate",
    "TaskConfig",
    "acollect",
    "collect",
    "default_cache_path",
    "estimate_spend",
    "load_config",
    "parse_config",
    "request_key",
    "resolve_prices",
]
