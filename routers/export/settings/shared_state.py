"""``[state]`` of ``upstreams.toml``: where the proxy keeps the state its replicas share.

Without a ``url`` (the default) every replica (and every ``--workers`` process) keeps its own breakers, adaptive
counts and counters in memory, as before. With ``url = "redis://HOST:PORT/DB"`` the replicas of one export
share circuit breakers, adaptive feedback, request and spend counters and budgets through that Redis; see
:mod:`routers.export.proxy.shared_state`.

Example::

    [state]
    url = "redis://127.0.0.1:6379/0"
    password_env = "ROUTELAB_REDIS_PASSWORD"   # optional; a password is never written in the file
    namespace = ""                             # "" = derived from the export (its replicas share it)
    timeout_ms = 50                            # the longest a request waits on Redis
    reconnect_s = 1.0                          # how often a replica retries while Redis is away
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from evals.exceptions import ConfigError

__all__ = ["SharedStateSettings", "parse"]

_KEYS = ("url", "password_env", "namespace", "timeout_ms", "reconnect_s")
_SCHEMES = ("redis", "rediss", "unix")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_NAMESPACE = re.compile(r"^[A-Za-z0-9_.:\-]{1,100}$")


@dataclass(frozen=True)
class SharedStateSettings:
    """Settings of ``[state]`` (defaults: in-process state, nothing shared)."""

    url: str = ""
    """``redis://``, ``rediss://`` or ``unix://`` URL of the shared Redis; "" = in-process state."""
    password_env: str = ""
    """Environment variable holding the Redis password ("" = none)."""
    namespace: str = ""
    """Prefix of every key; "" = ``routelab:<router name>:<arrays sha256[:12]>`` (replicas of one export)."""
    timeout_ms: float = 50.0
    """The longest a request waits on one Redis call before the replica goes on with its local state."""
    reconnect_s: float = 1.0
    """Seconds between reconnection attempts while Redis is unreachable."""

    @property
    def shared(self) -> bool:
        """Whether state is shared through Redis."""
        return bool(self.url)


def _number(where: str, key: str, value: Any, lo: float, hi: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not lo <= value <= hi:
        raise ConfigError(f"{where}: {key} must be a number from {lo:g} to {hi:g}, got {value!r}")
    return float(value)


def _string(where: str, key: str, value: Any) -> str:
    if not isinstance(value, str):
        raise ConfigError(f"{where}: {key} must be a string, got {value!r}")
    return value


def parse(table: Mapping[str, Any], where: str, models: Sequence[str]) -> SharedStateSettings:
    """Check and read the section (an empty table gives the defaults: in-process state)."""
    unknown = sorted(set(table) - set(_KEYS))
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown}; keys are {', '.join(_KEYS)}")
    d = SharedStateSettings()
    url = _string(where, "url", table.get("url", d.url)).strip()
    if url:
        parts = urlsplit(url)
        if parts.scheme not in _SCHEMES:
            raise ConfigError(f"{where}: url must start with redis://, rediss:// or unix://, got {url!r}")
        if parts.password:
            raise ConfigError(
                f"{where}: url must not contain a password; put it in the variable named by password_env"
            )
        if parts.scheme != "unix" and not parts.hostname:
            raise ConfigError(f"{where}: url names no host, got {url!r} (e.g. redis://127.0.0.1:6379/0)")
    password_env = _string(where, "password_env", table.get("password_env", d.password_env))
    if password_env and not _ENV_NAME.match(password_env):
        raise ConfigError(f"{where}: password_env must be an environment variable name, got {password_env!r}")
    namespace = _string(where, "namespace", table.get("namespace", d.namespace))
    if namespace and not _NAMESPACE.match(namespace):
        raise ConfigError(
            f"{where}: namespace must be 1-100 characters of letters, digits and _ . : -, got {namespace!r}"
        )
    return SharedStateSettings(
        url=url,
        password_env=password_env,
        namespace=namespace,
        timeout_ms=_number(where, "timeout_ms", table.get("timeout_ms", d.timeout_ms), 1, 10_000),
        reconnect_s=_number(where, "reconnect_s", table.get("reconnect_s", d.reconnect_s), 0.05, 3600),
    )
