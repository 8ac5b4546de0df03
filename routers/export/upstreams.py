"""Where an exported router's models are served: ``upstreams.toml`` (written at export, edited by the owner).

Example (what :func:`render_upstreams` writes)::

    [proxy]
    client_keys_env = "ROUTELAB_PROXY_KEYS"   # comma-separated bearer keys clients must present
    route_names = ["router"]                  # request model names that get routed
    fallback_order = ["big", "mid", "cheap"]  # tried in this order when the chosen model's upstream fails
    cooldown_s = 30.0                         # how long an upstream that failed is skipped

    [upstreams."big"]
    base_url = "https://api.openai.com/v1"
    api_key_env = "OPENAI_API_KEY"            # the NAME of the variable, never the key
    model = "gpt-4o-2024-05-13"               # the name this upstream knows the model by
    timeout_s = 60.0
    retries = 1

Only names of environment variables are stored; keys are read from the environment when the proxy starts.
"""

from __future__ import annotations

import json
import math
import re
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from evals.exceptions import ConfigError

__all__ = ["ProxyConfig", "Upstream", "default_upstream", "read_upstreams", "render_upstreams"]

#: OpenAI-compatible endpoints of common providers (used as defaults; the owner can edit the file).
KNOWN_PROVIDERS: dict[str, tuple[str, str]] = {
    "openai": ("https://api.openai.com/v1", "OPENAI_API_KEY"),
    "together": ("https://api.together.xyz/v1", "TOGETHER_API_KEY"),
    "groq": ("https://api.groq.com/openai/v1", "GROQ_API_KEY"),
    "openrouter": ("https://openrouter.ai/api/v1", "OPENROUTER_API_KEY"),
    "deepseek": ("https://api.deepseek.com/v1", "DEEPSEEK_API_KEY"),
    "mistral": ("https://api.mistral.ai/v1", "MISTRAL_API_KEY"),
    "fireworks": ("https://api.fireworks.ai/inference/v1", "FIREWORKS_API_KEY"),
    "google": ("https://generativelanguage.googleapis.com/v1beta/openai", "GEMINI_API_KEY"),
    "deepinfra": ("https://api.deepinfra.com/v1/openai", "DEEPINFRA_API_KEY"),
}
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


@dataclass(frozen=True)
class Upstream:
    """One model's OpenAI-compatible upstream."""

    name: str
    """The model name as the router knows it (a column of the outcome table)."""
    base_url: str
    """Base URL up to and including ``/v1`` (``/chat/completions`` is appended)."""
    api_key_env: str = ""
    """Name of the environment variable holding the key ("" = send no key)."""
    model: str = ""
    """Model name sent upstream (default: :attr:`name`)."""
    timeout_s: float = 60.0
    """Per-attempt timeout in seconds."""
    retries: int = 1
    """Extra attempts after the first on a retryable failure (connect error, timeout, 408, 429, 5xx)."""

    @property
    def upstream_model(self) -> str:
        """The model name sent upstream."""
        return self.model or self.name


@dataclass(frozen=True)
class ProxyConfig:
    """The proxy section plus every upstream."""

    upstreams: dict[str, Upstream]
    """Per router model name."""
    fallback_order: tuple[str, ...]
    """Model names tried, in order, after the chosen one fails (the chosen one is skipped)."""
    route_names: tuple[str, ...] = ("router",)
    """Request ``model`` values that are routed (anything else is passed through)."""
    client_keys_env: str = "ROUTELAB_PROXY_KEYS"
    """Environment variable with the comma-separated bearer keys clients must present."""
    cooldown_s: float = 30.0
    """Seconds an upstream is skipped after it failed every attempt (circuit breaker)."""
    max_request_bytes: int = 8 * 1024 * 1024
    """Largest request body accepted (bigger ones get HTTP 413 before anything is parsed or routed)."""
    extra: dict[str, Any] = field(default_factory=dict)
    """Unrecognised keys of the proxy section (kept, reported by the CLI)."""


def default_upstream(model: str, provider: str | None) -> dict[str, Any]:
    """A default upstream entry for a model sold by ``provider`` (a known provider's URL, else localhost)."""
    base, env = KNOWN_PROVIDERS.get(
        (provider or "").lower(), ("http://127.0.0.1:8000/v1", "ROUTELAB_UPSTREAM_KEY")
    )
    return {"base_url": base, "api_key_env": env, "model": model, "timeout_s": 60.0, "retries": 1}


def _q(value: Any) -> str:
    """A TOML value (strings via JSON escaping, which TOML basic strings accept)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_q(v) for v in value) + "]"
    return json.dumps(str(value), ensure_ascii=False)


def render_upstreams(
    models: Sequence[str],
    upstreams: Mapping[str, Mapping[str, Any]],
    fallback_order: Sequence[str],
    *,
    route_names: Sequence[str] = ("router",),
    client_keys_env: str = "ROUTELAB_PROXY_KEYS",
    cooldown_s: float = 30.0,
    max_request_bytes: int = 8 * 1024 * 1024,
) -> str:
    """The text of ``upstreams.toml`` (validated by parsing it back)."""
    lines = [
        "# Upstreams of this exported router: edit base_url / api_key_env / model to match your deployment.",
        "# Keys are never stored here: api_key_env is the NAME of an environment variable read at start-up.",
        "",
        "[proxy]",
        f"client_keys_env = {_q(client_keys_env)}  # comma-separated bearer keys accepted from clients",
        f"route_names = {_q(list(route_names))}  # request model names that are routed",
        f"fallback_order = {_q(list(fallback_order))}  # tried in order when the chosen upstream fails",
        f"cooldown_s = {_q(float(cooldown_s))}  # seconds a failed upstream is skipped before it is retried",
        f"max_request_bytes = {_q(int(max_request_bytes))}  # larger request bodies are refused with HTTP 413",
        "",
    ]
    for m in models:
        u = upstreams[m]
        lines.append(f"[upstreams.{_q(m)}]")
        for key in ("base_url", "api_key_env", "model", "timeout_s", "retries"):
            if key in u:
                lines.append(f"{key} = {_q(u[key])}")
        lines.append("")
    text = "\n".join(lines)
    parse_upstreams(text, models, origin="generated upstreams.toml")
    return text


def read_upstreams(path: Path, models: Sequence[str]) -> ProxyConfig:
    """Parse and validate an ``upstreams.toml`` for a router over ``models``.

    Raises:
        ConfigError: naming the file, the section and the key that is wrong.
    """
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path} does not exist; an export folder needs its upstreams.toml") from None
    return parse_upstreams(text, models, origin=str(path))


def parse_upstreams(text: str, models: Sequence[str], *, origin: str) -> ProxyConfig:
    """Parse the text of an ``upstreams.toml`` (see :func:`read_upstreams`)."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{origin}: not valid TOML ({exc})") from None
    proxy = dict(data.get("proxy", {}))
    ups = data.get("upstreams", {})
    if not isinstance(ups, dict):
        raise ConfigError(f"{origin}: [upstreams] must be a table of per-model tables")
    missing = [m for m in models if m not in ups]
    if missing:
        raise ConfigError(
            f'{origin}: no [upstreams."{missing[0]}"] section; every routed model needs one '
            f"(missing: {', '.join(missing)})"
        )
    out: dict[str, Upstream] = {}
    for name, u in ups.items():
        where = f"{origin} [upstreams.{_q(name)}]"
        if not isinstance(u, dict):
            raise ConfigError(f"{where}: must be a table")
        unknown = sorted(set(u) - {"base_url", "api_key_env", "model", "timeout_s", "retries"})
        if unknown:
            raise ConfigError(
                f"{where}: unknown key(s) {unknown}; keys are base_url, api_key_env, model, "
                "timeout_s, retries"
            )
        base = u.get("base_url")
        if not isinstance(base, str) or not re.match(r"^https?://", base):
            raise ConfigError(f"{where}: base_url must be an http(s) URL, got {base!r}")
        env = u.get("api_key_env", "")
        if env and (not isinstance(env, str) or not _ENV_NAME.match(env)):
            raise ConfigError(
                f"{where}: api_key_env must be the NAME of an environment variable, got a value "
                "that is not one (never put a key in this file)"
            )
        timeout = u.get("timeout_s", 60.0)
        if not isinstance(timeout, (int, float)) or not math.isfinite(timeout) or timeout <= 0:
            raise ConfigError(f"{where}: timeout_s must be a number > 0, got {timeout!r}")
        retries = u.get("retries", 1)
        if not isinstance(retries, int) or isinstance(retries, bool) or not 0 <= retries <= 10:
            raise ConfigError(f"{where}: retries must be an integer from 0 to 10, got {retries!r}")
        out[name] = Upstream(
            name, base.rstrip("/"), env, str(u.get("model", "") or name), float(timeout), retries
        )
    order = tuple(proxy.pop("fallback_order", list(models)))
    bad = [m for m in order if m not in out]
    if bad:
        raise ConfigError(f"{origin} [proxy]: fallback_order names {bad} without an [upstreams] section")
    names = proxy.pop("route_names", ["router"])
    if isinstance(names, str) or not all(isinstance(n, str) and n for n in names):
        raise ConfigError(f"{origin} [proxy]: route_names must be a list of model names, got {names!r}")
    clash = [n for n in names if n in out]
    if clash:
        raise ConfigError(f"{origin} [proxy]: route_names {clash} are also upstream model names; rename them")
    keys_env = proxy.pop("client_keys_env", "ROUTELAB_PROXY_KEYS")
    if not isinstance(keys_env, str) or not _ENV_NAME.match(keys_env):
        raise ConfigError(
            f"{origin} [proxy]: client_keys_env must be an environment variable name, got {keys_env!r}"
        )
    cooldown = proxy.pop("cooldown_s", 30.0)
    if not isinstance(cooldown, (int, float)) or cooldown < 0:
        raise ConfigError(f"{origin} [proxy]: cooldown_s must be a number >= 0, got {cooldown!r}")
    max_bytes = proxy.pop("max_request_bytes", 8 * 1024 * 1024)
    if not isinstance(max_bytes, int) or isinstance(max_bytes, bool) or max_bytes < 1024:
        raise ConfigError(
            f"{origin} [proxy]: max_request_bytes must be an integer >= 1024, got {max_bytes!r}"
        )
    return ProxyConfig(out, order, tuple(names), keys_env, float(cooldown), max_bytes, proxy)
