"""``[state]`` and ``[budget]`` of upstreams.toml: defaults, accepted values, and one-line errors naming the key."""

from __future__ import annotations

import pytest

from evals.exceptions import ConfigError
from routers.export.settings import budget, shared_state

WHERE = "upstreams.toml [x]"
MODELS = ("cheap", "mid", "big")


def test_state_defaults_to_in_process_and_reads_every_key():
    d = shared_state.parse({}, WHERE, MODELS)
    assert not d.shared and d.url == "" and d.timeout_ms == 50 and d.reconnect_s == 1.0
    s = shared_state.parse(
        {"url": "redis://127.0.0.1:6379/0", "password_env": "REDIS_PW", "namespace": "team:router-a",
         "timeout_ms": 20, "reconnect_s": 0.5},
        WHERE,
        MODELS,
    )
    assert s.shared and s.url == "redis://127.0.0.1:6379/0" and s.password_env == "REDIS_PW"
    assert (s.namespace, s.timeout_ms, s.reconnect_s) == ("team:router-a", 20.0, 0.5)
    assert shared_state.parse({"url": "unix:///run/redis.sock"}, WHERE, MODELS).shared


@pytest.mark.parametrize(
    "table, words",
    [
        ({"uri": "redis://x"}, ["unknown key(s) ['uri']", "keys are url"]),
        ({"url": "http://127.0.0.1:6379"}, ["url must start with redis://"]),
        ({"url": "redis://:hunter2@127.0.0.1:6379/0"}, ["must not contain a password", "password_env"]),
        ({"url": "redis:///0"}, ["names no host"]),
        ({"url": 6379}, ["url must be a string"]),
        ({"password_env": "not a name"}, ["password_env must be an environment variable name"]),
        ({"namespace": "has space"}, ["namespace must be"]),
        ({"timeout_ms": 0}, ["timeout_ms must be a number from 1 to 10000"]),
        ({"timeout_ms": True}, ["timeout_ms must be a number"]),
        ({"reconnect_s": -1}, ["reconnect_s must be a number"]),
    ],
)
def test_state_errors_name_the_section_and_key(table, words):
    with pytest.raises(ConfigError) as exc:
        shared_state.parse(table, WHERE, MODELS)
    message = str(exc.value)
    assert message.startswith(WHERE) and "\n" not in message
    assert all(w in message for w in words), message


def test_budget_defaults_off_and_reads_limits():
    assert not budget.parse({}, WHERE, MODELS).enabled
    b = budget.parse({"daily_usd": 10, "per_key_monthly_usd": 2.5, "on_exceeded": "reject", "name": "team-a"},
                     WHERE, MODELS)
    assert b.enabled and b.per_key and b.daily_usd == 10.0 and b.monthly_usd is None
    assert (b.per_key_monthly_usd, b.on_exceeded, b.name) == (2.5, "reject", "team-a")
    assert budget.parse({"monthly_usd": 0}, WHERE, MODELS).on_exceeded == "cheapest"


@pytest.mark.parametrize(
    "table, words",
    [
        ({"daily": 5}, ["unknown key(s) ['daily']", "daily_usd"]),
        ({"daily_usd": -1}, ["daily_usd must be a number of dollars >= 0"]),
        ({"monthly_usd": "100"}, ["monthly_usd must be a number"]),
        ({"daily_usd": float("nan")}, ["daily_usd must be a number"]),
        ({"daily_usd": 1, "on_exceeded": "block"}, ["on_exceeded must be one of cheapest, reject", "'block'"]),
        ({"daily_usd": 1, "name": "a b"}, ["name must be"]),
        ({"on_exceeded": "reject"}, ["no limit set", "daily_usd"]),
    ],
)
def test_budget_errors_name_the_section_and_key(table, words):
    with pytest.raises(ConfigError) as exc:
        budget.parse(table, WHERE, MODELS)
    message = str(exc.value)
    assert message.startswith(WHERE) and "\n" not in message
    assert all(w in message for w in words), message
