"""Serving helpers: the replay server (an OpenAI-compatible server that answers from recorded outcomes)."""

from evals.serving.background import BackgroundServer
from evals.serving.replay import (
    CANNED_PREFIX,
    DEFAULT_FAULTS,
    DEFAULT_JUDGE_MODEL,
    DRIFT_PREFIX,
    FAULT_KINDS,
    UNKNOWN_PROMPT_MODES,
    ReplayServer,
    build_replay_app,
)
from evals.serving.wire import prompt_of

__all__ = [
    "CANNED_PREFIX",
    "DEFAULT_FAULTS",
    "DEFAULT_JUDGE_MODEL",
    "DRIFT_PREFIX",
    "FAULT_KINDS",
    "UNKNOWN_PROMPT_MODES",
    "BackgroundServer",
    "ReplayServer",
    "build_replay_app",
    "prompt_of",
]
