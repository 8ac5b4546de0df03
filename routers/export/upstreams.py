"""Where an exported router's models are served: ``upstreams.toml`` (written at export, edited by the owner).

Example (what :func:`render_upstreams` writes)::

    [proxy]
    client_keys_env = "ROUTELAB_PROXY_KEYS"   # comma-separated bearer keys clients must present
    route_names = ["router"]                  # request model names that get routed
    fallback_order = ["big", "mid", "cheap"]  # tried in this order when the chosen model's upstream fails
    cooldown_s = 30.0                         # how long an upstream that failed is skipped
    request_deadline_s = 30.0                 # one request's attempts and fallbacks share this much time
    ...

    [upstreams."big"]
    base_url = "https://api.openai.com/v1"
    api_key_env = "OPENAI_API_KEY"            # the NAME of the variable, never the key
    model = "gpt-4o-2024-05-13"               # the name this upstream knows the model by
    timeout_s = 60.0
    retries = 1

Only names of environment variables are stored; keys are read from the environment when the proxy starts.

Trust model: whoever can edit this file decides where requests (prompts) and upstream keys are sent, so it
is checked like code: every key's type and range, no unknown keys, no upstream key variable equal to the
proxy's own client-key variable (that would send the client keys upstream), and plain ``http://`` only to
this machine unless the upstream says ``allow_insecure = true``.
"""

from __future__ import annotations

import ipaddress
import json
import math
import re
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from evals.exceptions import ConfigError
from routers.export.settings import SECTIONS, parse_sections

__all__ = [
    "PROXY_DEFAULTS",
    "ProxyConfig",
    "Upstream",
    "default_upstream",
    "is_loopback_url",
    "parse_upstreams",
    "read_upstreams",
    "render_upstreams",
]

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
    # Every provider of datasets/prices.csv needs an entry, else its models default to localhost.
    "anthropic": ("https://api.anthropic.com/v1", "ANTHROPIC_API_KEY"),  # OpenAI SDK compatibility endpoint
    "cohere": ("https://api.cohere.ai/compatibility/v1", "COHERE_API_KEY"),  # Compatibility API
    "ai21": ("https://api.ai21.com/studio/v1", "AI21_API_KEY"),
}
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_UPSTREAM_KEYS = ("base_url", "api_key_env", "model", "timeout_s", "retries", "allow_insecure")


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
    """Per-attempt connect and read timeout in seconds (also bounded by the request's deadline)."""
    retries: int = 1
    """Extra attempts after the first on a retryable failure (connect error, timeout, 408, 429, 5xx,
    a malformed or truncated answer)."""
    allow_insecure: bool = False
    """Allow a plain ``http://`` base URL to another machine (prompts and the key would travel unencrypted)."""

    @property
    def upstream_model(self) -> str:
        """The model name sent upstream."""
        return self.model or self.name


#: The ``[proxy]`` keys with a number value: (default, minimum, maximum, integer?, what it is).
PROXY_DEFAULTS: dict[str, tuple[float, float, float, bool, str]] = {
    "cooldown_s": (30.0, 0.0, 86_400.0, False, "seconds a failed upstream is skipped before it is retried"),
    "max_request_bytes": (8 * 1024 * 1024, 1024, 1 << 34, True, "larger request bodies are refused with 413"),
    "max_response_bytes": (
        16 * 1024 * 1024,
        1024,
        1 << 34,
        True,
        "a larger upstream answer is a failed attempt (never buffered whole)",
    ),
    "request_deadline_s": (
        30.0,
        0.1,
        3600.0,
        False,
        "attempts and fallbacks of one request share this time; then 504",
    ),
    "max_fallback_hops": (2, 0, 100, True, "models tried after the chosen one fails, at most"),
    "header_timeout_s": (10.0, 0.05, 600.0, False, "a client must send its request headers within this"),
    "body_timeout_s": (30.0, 0.05, 3600.0, False, "a client must send its request body within this (else 408)"),
    "keep_alive_s": (5.0, 0.05, 600.0, False, "idle client connections are closed after this"),
    "max_connections": (1000, 1, 1_000_000, True, "client connections past this get a 503"),
}


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
    """Kept for compatibility; unknown keys of the proxy section are now refused."""
    max_response_bytes: int = 16 * 1024 * 1024
    """Largest upstream answer (a non-streamed body, or a whole stream) accepted."""
    request_deadline_s: float = 30.0
    """Time one request's attempts and fallbacks share; when it runs out the client gets a 504."""
    max_fallback_hops: int = 2
    """Models tried after the chosen one, at most."""
    header_timeout_s: float = 10.0
    """A client connection that has not sent complete request headers within this is closed."""
    body_timeout_s: float = 30.0
    """A request body not received within this gets a 408."""
    keep_alive_s: float = 5.0
    """Idle keep-alive client connections are closed after this."""
    max_connections: int = 1000
    """Concurrent client connections; past it a new one gets a 503."""
    passthrough_upstream: str | None = None
    """Upstream (a model name) that gets requests for model names this proxy does not know, unchanged;
    None: such requests get 404 ``model_not_found``."""
    sections: Mapping[str, Any] = field(default_factory=lambda: parse_sections({}, "defaults", ()))
    """The optional sections (``log``, ``rollout``, ``exploration``, ``shadow``, ``state``, ``budget``): the
    settings object of each, see :mod:`routers.export.settings`; missing sections hold their defaults."""

    def section(self, name: str) -> Any:
        """The settings of optional section ``name`` (``config.section("log").dir``)."""
        return self.sections[name]


def is_loopback_url(url: str) -> bool:
    """Whether ``url``'s host is this machine (``localhost`` or a loopback address)."""
    host = (urlsplit(url).hostname or "").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


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
        "# Whoever edits this file decides where prompts and keys go: keep it as protected as code.",
        "",
        "[proxy]",
        f"client_keys_env = {_q(client_keys_env)}  # comma-separated bearer keys accepted from clients",
        f"route_names = {_q(list(route_names))}  # request model names that are routed",
        f"fallback_order = {_q(list(fallback_order))}  # tried in order when the chosen upstream fails",
        f"cooldown_s = {_q(float(cooldown_s))}  # seconds a failed upstream is skipped before it is retried",
        f"max_request_bytes = {_q(int(max_request_bytes))}  # larger request bodies are refused with HTTP 413",
    ]
    for key, (default, _lo, _hi, _int, what) in PROXY_DEFAULTS.items():
        if key not in ("cooldown_s", "max_request_bytes"):
            lines.append(f"{key} = {_q(default)}  # {what}")
    lines += [
        '# passthrough_upstream = "<model>"  # unknown model names go to this upstream (unset: 404)',
        "",
    ]
    for m in models:
        u = upstreams[m]
        lines.append(f"[upstreams.{_q(m)}]")
        for key in _UPSTREAM_KEYS:
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
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot be read as UTF-8 text ({type(exc).__name__})") from None
    return parse_upstreams(text, models, origin=str(path))


def _number(where: str, key: str, value: Any, lo: float, hi: float, integer: bool) -> float | int:
    """``value`` checked to be a number (an integer if asked) in [lo, hi]; else a one-line ConfigError."""
    kind = "an integer" if integer else "a number"
    ok_type = isinstance(value, int) if integer else isinstance(value, (int, float))
    if isinstance(value, bool) or not ok_type or not math.isfinite(value) or not lo <= value <= hi:
        raise ConfigError(f"{where}: {key} must be {kind} from {lo:g} to {hi:g}, got {value!r}")
    return int(value) if integer else float(value)


def _upstream(where: str, name: str, u: Any, client_keys_env: str) -> Upstream:
    if not isinstance(u, dict):
        raise ConfigError(f"{where}: must be a table")
    unknown = sorted(set(u) - set(_UPSTREAM_KEYS))
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown}; keys are {', '.join(_UPSTREAM_KEYS)}")
    base = u.get("base_url")
    if not isinstance(base, str) or not re.match(r"^https?://[^/\s]+", base) or any(c.isspace() for c in base):
        raise ConfigError(f"{where}: base_url must be an http(s) URL, got {base!r}")
    parts = urlsplit(base)
    if parts.username or parts.password:
        raise ConfigError(f"{where}: base_url must not contain credentials; put the key in api_key_env's variable")
    insecure = u.get("allow_insecure", False)
    if not isinstance(insecure, bool):
        raise ConfigError(f"{where}: allow_insecure must be true or false, got {insecure!r}")
    if parts.scheme == "http" and not is_loopback_url(base) and not insecure:
        raise ConfigError(
            f"{where}: base_url {base!r} is plain http to another machine (prompts and the key would travel "
            "unencrypted); use https, or set allow_insecure = true if the network is trusted"
        )
    env = u.get("api_key_env", "")
    if not isinstance(env, str) or (env and not _ENV_NAME.match(env)):
        raise ConfigError(
            f"{where}: api_key_env must be the NAME of an environment variable, got a value "
            "that is not one (never put a key in this file)"
        )
    if env and env == client_keys_env:
        raise ConfigError(
            f"{where}: api_key_env is {env}, the variable holding this proxy's own client keys "
            "(client_keys_env); that would send the client keys upstream. Name the upstream key's variable"
        )
    model = u.get("model", "")
    if not isinstance(model, str):
        raise ConfigError(f"{where}: model must be a string (the name the upstream knows), got {model!r}")
    timeout = _number(where, "timeout_s", u.get("timeout_s", 60.0), 0.001, 3600.0, False)
    retries = _number(where, "retries", u.get("retries", 1), 0, 10, True)
    return Upstream(name, base.rstrip("/"), env, model or name, float(timeout), int(retries), insecure)


def parse_upstreams(text: str, models: Sequence[str], *, origin: str) -> ProxyConfig:
    """Parse the text of an ``upstreams.toml`` (see :func:`read_upstreams`)."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{origin}: not valid TOML ({exc})") from None
    extra_sections = sorted(set(data) - {"proxy", "upstreams", *SECTIONS})
    if extra_sections:
        known = ", ".join(f"[{n}]" for n in ("proxy", "upstreams", *SECTIONS))
        raise ConfigError(f"{origin}: unknown section(s) {extra_sections}; sections are {known}")
    if not isinstance(data.get("proxy", {}), dict):
        raise ConfigError(f"{origin}: [proxy] must be a table")
    proxy = dict(data.get("proxy", {}))
    where = f"{origin} [proxy]"
    keys_env = proxy.pop("client_keys_env", "ROUTELAB_PROXY_KEYS")
    if not isinstance(keys_env, str) or not _ENV_NAME.match(keys_env):
        raise ConfigError(f"{where}: client_keys_env must be an environment variable name, got {keys_env!r}")
    ups = data.get("upstreams", {})
    if not isinstance(ups, dict):
        raise ConfigError(f"{origin}: [upstreams] must be a table of per-model tables")
    missing = [m for m in models if m not in ups]
    if missing:
        raise ConfigError(
            f'{origin}: no [upstreams."{missing[0]}"] section; every routed model needs one '
            f"(missing: {', '.join(missing)})"
        )
    out = {name: _upstream(f"{origin} [upstreams.{_q(name)}]", name, u, keys_env) for name, u in ups.items()}
    order = proxy.pop("fallback_order", list(models))
    if isinstance(order, str) or not isinstance(order, list) or not all(isinstance(m, str) for m in order):
        raise ConfigError(f"{where}: fallback_order must be a list of model names, got {order!r}")
    bad = [m for m in order if m not in out]
    if bad:
        raise ConfigError(f"{where}: fallback_order names {bad} without an [upstreams] section")
    if len(set(order)) != len(order):
        raise ConfigError(f"{where}: fallback_order names a model twice: {order}")
    names = proxy.pop("route_names", ["router"])
    if isinstance(names, str) or not isinstance(names, list) or not all(isinstance(n, str) and n for n in names):
        raise ConfigError(f"{where}: route_names must be a list of model names, got {names!r}")
    clash = [n for n in names if n in out]
    if clash:
        raise ConfigError(f"{where}: route_names {clash} are also upstream model names; rename them")
    passthrough = proxy.pop("passthrough_upstream", None)
    if passthrough is not None and (not isinstance(passthrough, str) or passthrough not in out):
        raise ConfigError(
            f"{where}: passthrough_upstream must name one of the upstreams ({', '.join(out)}), got {passthrough!r}"
        )
    numbers = {
        key: _number(where, key, proxy.pop(key, default), lo, hi, integer)
        for key, (default, lo, hi, integer, _what) in PROXY_DEFAULTS.items()
    }
    if proxy:
        known = ["client_keys_env", "route_names", "fallback_order", "passthrough_upstream", *PROXY_DEFAULTS]
        raise ConfigError(f"{where}: unknown key(s) {sorted(proxy)}; keys are {', '.join(known)}")
    return ProxyConfig(
        upstreams=out,
        fallback_order=tuple(order),
        route_names=tuple(names),
        client_keys_env=keys_env,
        passthrough_upstream=passthrough,
        sections=parse_sections(data, origin, list(out)),
        **numbers,  # type: ignore[arg-type]
    )
