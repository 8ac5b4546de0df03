"""Serving helpers: the replay server (an OpenAI-compatible server that answers from recorded outcomes)."""

from evals.serving.background import BackgroundServer
from evals.serving.replay import FAULT_KINDS, ReplayServer, build_replay_app, prompt_of

__all__ = ["FAULT_KINDS", "BackgroundServer", "ReplayServer", "build_replay_app", "prompt_of"]
