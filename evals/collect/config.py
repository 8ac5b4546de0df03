"""The collection config file (TOML): providers, models, task set, grader, output.

Example (``examples/collect_replay.toml``)::

    name = "mmlu-pro-3-models"          # card name of the output table
    output = "outcomes/mmlu-pro-3.parquet"   # relative paths are relative to this file
    # cache = "~/.cache/routelab/collect.sqlite"  (default: evals.paths.cache_dir() / "collect.sqlite")
    # prices = "datasets/prices.csv"              (default: the repo's price table)
    # max_spend_usd = 5.0               # stop before paying more than this in one run (or --max-spend)

    [tasks]
    source = "mmlu-pro"                 # a source name or outcome file for evals.sources.load ...
    # prompts = "my_prompts.jsonl"      # ... or a prompts file: prompt [, sample_id, reference, category]
    limit = 300                         # first N samples (optional)
    # categories = ["math", "law"]

    [grader]
    name = "mcq_letter"                 # any registered grader (evals.graders.grader_registry)
    params = {}
    # judge = { name = "gpt-4o", provider = "openai", params = { temperature = 0 } }   # for judge graders

    [providers.replay]
    base_url = "http://127.0.0.1:8765/v1"
    api_key_env = "REPLAY_API_KEY"      # the NAME of the env var holding the key ("" = no key)
    concurrency = 16                    # requests in flight to this provider
    timeout_s = 60
    retries = 5                         # extra attempts after the first

    [[models]]
    name = "gpt-4o-2024-05-13"          # name in the table (sent to the API unless api_model is set)
    provider = "replay"
    params = { temperature = 0.0, max_tokens = 1024 }
    # input_per_1m = 5.0                # prices override the price table (USD per 1M tokens)
    # output_per_1m = 15.0
    # expected_output_tokens = 300      # for the spend estimate printed before the run (default 300)

Keys are read from the environment variables named here and nowhere else; they are never written anywhere.
"""

from __future__ import annotations

import math
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from evals.exceptions import ConfigError, DataNotFoundError

__all__ = ["CollectConfig", "GraderConfig", "ModelConfig", "ProviderConfig", "TaskConfig", "load_config"]


@dataclass(frozen=True)
class ProviderConfig:
    """One OpenAI-compatible endpoint."""

    name: str
    """Name used by ``[[models]].provider``."""
    base_url: str
    """Base URL up to ``/v1`` (``https://api.openai.com/v1``); ``/chat/completions`` is appended."""
    api_key_env: str = ""
    """The NAME of the environment variable that holds the API key ("" for servers without keys)."""
    concurrency: int = 8
    """Maximum requests in flight to this provider."""
    timeout_s: float = 60.0
    """Seconds before one attempt is abandoned."""
    retries: int = 5
    """Extra attempts after the first, on 408/429/5xx, timeouts, broken connections and malformed bodies."""
    backoff_s: float = 0.5
    """Base of the exponential backoff: attempt k waits uniform(0, backoff_s * 2**k) (full jitter)."""
    max_backoff_s: float = 30.0
    """Cap of one backoff wait."""
    max_retry_after_s: float = 120.0
    """Cap on a server's ``Retry-After``; a longer demand fails the attempt sequence instead of stalling."""


@dataclass(frozen=True)
class ModelConfig:
    """One candidate model (or the judge)."""

    name: str
    """Name in the OutcomeTable and the price table."""
    provider: str
    """Key of a ``[providers.X]`` table."""
    api_model: str = ""
    """Model id sent to the API, when it differs from ``name``."""
    params: dict[str, Any] = field(default_factory=dict)
    """Request parameters (temperature, max_tokens, ...), sent as given."""
    system: str = ""
    """Optional system prompt put before each user turn."""
    input_per_1m: float | None = None
    """USD per 1M prompt tokens; overrides the price table."""
    output_per_1m: float | None = None
    """USD per 1M completion tokens; overrides the price table."""
    request_fee: float = 0.0
    """USD per request on top of tokens (with the two prices above)."""
    expected_output_tokens: float | None = None
    """Output tokens per answer assumed by the spend estimate (default 300, capped by ``max_tokens``)."""

    @property
    def wire_name(self) -> str:
        """The model id sent to the provider."""
        return self.api_model or self.name


@dataclass(frozen=True)
class TaskConfig:
    """Where the prompts come from."""

    source: str = ""
    """A source name or outcome file for :func:`evals.sources.load` (prompts, references, categories)."""
    prompts: str = ""
    """A JSONL/CSV file with ``prompt`` and optional ``sample_id, reference, category, task``."""
    limit: int | None = None
    """Keep the first N samples."""
    categories: tuple[str, ...] = ()
    """Keep only these categories."""


@dataclass(frozen=True)
class GraderConfig:
    """How answers are scored."""

    name: str = "mcq_letter"
    """Registered grader name (``evals.graders.grader_registry``)."""
    params: dict[str, Any] = field(default_factory=dict)
    """Grader keyword parameters."""
    judge: ModelConfig | None = None
    """The judge model, for judge graders."""


@dataclass(frozen=True)
class CollectConfig:
    """A parsed, validated collection config."""

    providers: dict[str, ProviderConfig]
    models: tuple[ModelConfig, ...]
    tasks: TaskConfig
    grader: GraderConfig
    output: Path
    cache: Path | None = None
    prices: Path | None = None
    name: str = "collected"
    origin: str = ""
    max_spend_usd: float | None = None
    """Stop before this run pays more than this many dollars (None: no cap)."""

    def model(self, name: str) -> ModelConfig:
        """The model called ``name``."""
        for m in self.models:
            if m.name == name:
                return m
        raise ConfigError(f"no model {name!r} in {self.origin or 'the config'}")


_TOP = {"name", "output", "cache", "prices", "max_spend_usd", "tasks", "grader", "providers", "models"}
_PROVIDER = {f for f in ProviderConfig.__dataclass_fields__ if f != "name"}
_MODEL = set(ModelConfig.__dataclass_fields__)
_TASKS = set(TaskConfig.__dataclass_fields__)
_GRADER = {"name", "params", "judge"}


def _check_keys(table: dict[str, Any], allowed: set[str], where: str) -> None:
    unknown = sorted(set(table) - allowed)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown}; valid keys: {', '.join(sorted(allowed))}")


def _num(value: Any, where: str, *, minimum: float = 0.0, integer: bool = False) -> Any:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or value < minimum or (integer and int(value) != value):
        kind = "an integer" if integer else "a number"
        raise ConfigError(f"{where} must be {kind} >= {minimum:g}, got {value!r}")
    return int(value) if integer else float(value)


def _path(value: Any, where: str, base: Path) -> Path:
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{where} must be a non-empty path string, got {value!r}")
    p = Path(os.path.expanduser(value))
    return p if p.is_absolute() else base / p


def _model(raw: Any, where: str, providers: dict[str, ProviderConfig]) -> ModelConfig:
    if not isinstance(raw, dict):
        raise ConfigError(f"{where} must be a table, got {type(raw).__name__}")
    _check_keys(raw, _MODEL, where)
    for key in ("name", "provider"):
        if not isinstance(raw.get(key), str) or not raw.get(key):
            raise ConfigError(f"{where}: {key!r} is required (a non-empty string)")
    if raw["provider"] not in providers:
        raise ConfigError(
            f"{where}: provider {raw['provider']!r} is not defined; defined providers: "
            f"{', '.join(sorted(providers)) or '(none)'}"
        )
    params = raw.get("params", {})
    if not isinstance(params, dict):
        raise ConfigError(f"{where}.params must be a table, got {params!r}")
    prices = {
        k: _num(raw[k], f"{where}.{k}") for k in ("input_per_1m", "output_per_1m", "request_fee") if k in raw
    }
    if ("input_per_1m" in prices) != ("output_per_1m" in prices):
        raise ConfigError(f"{where}: give both input_per_1m and output_per_1m, or neither")
    if "expected_output_tokens" in raw:
        prices["expected_output_tokens"] = _num(raw["expected_output_tokens"], f"{where}.expected_output_tokens")
    return ModelConfig(
        name=raw["name"],
        provider=raw["provider"],
        api_model=str(raw.get("api_model", "")),
        params=dict(params),
        system=str(raw.get("system", "")),
        **prices,
    )


def load_config(path: str | os.PathLike[str]) -> CollectConfig:
    """Read and validate a collection config (TOML).

    Raises:
        DataNotFoundError: if the file does not exist.
        ConfigError: naming the table and key that is wrong and what would be valid.
    """
    path = Path(path)
    if not path.is_file():
        raise DataNotFoundError(f"config file {str(path)!r} does not exist")
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML ({exc})") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text (byte offset {exc.start})") from None
    return parse_config(raw, base=path.parent, origin=str(path))


def parse_config(raw: dict[str, Any], *, base: Path = Path("."), origin: str = "") -> CollectConfig:
    """Validate an already-parsed config mapping (see :func:`load_config`)."""
    where = origin or "config"
    _check_keys(raw, _TOP, where)
    providers: dict[str, ProviderConfig] = {}
    raw_providers = raw.get("providers")
    if not isinstance(raw_providers, dict) or not raw_providers:
        raise ConfigError(f"{where}: at least one [providers.NAME] table is required")
    for name, p in raw_providers.items():
        w = f"{where}: [providers.{name}]"
        if not isinstance(p, dict):
            raise ConfigError(f"{w} must be a table")
        _check_keys(p, _PROVIDER, w)
        url = p.get("base_url")
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            raise ConfigError(f"{w}: base_url must be an http(s) URL, got {url!r}")
        env = p.get("api_key_env", "")
        if not isinstance(env, str) or (env and not env.replace("_", "").isalnum()):
            raise ConfigError(
                f"{w}: api_key_env must be the NAME of an environment variable (e.g. "
                f"OPENAI_API_KEY), not the key itself"
            )
        providers[name] = ProviderConfig(
            name=name,
            base_url=url.rstrip("/"),
            api_key_env=env,
            concurrency=_num(p.get("concurrency", 8), f"{w}.concurrency", minimum=1, integer=True),
            timeout_s=_num(p.get("timeout_s", 60.0), f"{w}.timeout_s", minimum=0.001),
            retries=_num(p.get("retries", 5), f"{w}.retries", integer=True),
            backoff_s=_num(p.get("backoff_s", 0.5), f"{w}.backoff_s"),
            max_backoff_s=_num(p.get("max_backoff_s", 30.0), f"{w}.max_backoff_s"),
            max_retry_after_s=_num(p.get("max_retry_after_s", 120.0), f"{w}.max_retry_after_s"),
        )
    raw_models = raw.get("models")
    if not isinstance(raw_models, list) or not raw_models:
        raise ConfigError(f"{where}: at least one [[models]] entry is required")
    models = tuple(_model(m, f"{where}: [[models]] #{i + 1}", providers) for i, m in enumerate(raw_models))
    names = [m.name for m in models]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ConfigError(f"{where}: model name(s) {dup} appear more than once in [[models]]")

    t = raw.get("tasks")
    if not isinstance(t, dict):
        raise ConfigError(f"{where}: a [tasks] table with 'source' or 'prompts' is required")
    _check_keys(t, _TASKS, f"{where}: [tasks]")
    if bool(t.get("source")) == bool(t.get("prompts")):
        raise ConfigError(
            f"{where}: [tasks] needs exactly one of 'source' (a source name or outcome file) "
            "or 'prompts' (a prompts file)"
        )
    source = str(t.get("source", ""))
    if source and (source.endswith((".parquet", ".csv", ".jsonl")) or "/" in source):
        source = str(_path(source, f"{where}: [tasks].source", base))
    cats = t.get("categories", [])
    if not isinstance(cats, list) or not all(isinstance(c, str) for c in cats):
        raise ConfigError(f"{where}: [tasks].categories must be a list of strings")
    tasks = TaskConfig(
        source=source,
        prompts=str(_path(t["prompts"], f"{where}: [tasks].prompts", base)) if t.get("prompts") else "",
        limit=_num(t["limit"], f"{where}: [tasks].limit", minimum=1, integer=True) if "limit" in t else None,
        categories=tuple(cats),
    )

    g = raw.get("grader", {"name": "mcq_letter"})
    if not isinstance(g, dict):
        raise ConfigError(f"{where}: [grader] must be a table")
    _check_keys(g, _GRADER, f"{where}: [grader]")
    if not isinstance(g.get("params", {}), dict):
        raise ConfigError(f"{where}: [grader].params must be a table")
    judge = _model(g["judge"], f"{where}: [grader].judge", providers) if "judge" in g else None
    grader = GraderConfig(
        name=str(g.get("name", "mcq_letter")), params=dict(g.get("params", {})), judge=judge
    )

    if "output" not in raw:
        raise ConfigError(f"{where}: 'output' (the Parquet file to write) is required")
    return CollectConfig(
        providers=providers,
        models=models,
        tasks=tasks,
        grader=grader,
        output=_path(raw["output"], f"{where}: output", base),
        cache=_path(raw["cache"], f"{where}: cache", base) if "cache" in raw else None,
        prices=_path(raw["prices"], f"{where}: prices", base) if "prices" in raw else None,
        name=str(raw.get("name", Path(origin).stem if origin else "collected")),
        origin=origin,
        max_spend_usd=_num(raw["max_spend_usd"], f"{where}: max_spend_usd") if "max_spend_usd" in raw else None,
    )
