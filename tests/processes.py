"""Stopping a server process a test started (the MLflow server, the LiteLLM proxy, the Streamlit app)."""

from __future__ import annotations

import subprocess

__all__ = ["stop_process"]


def stop_process(proc: subprocess.Popen, grace_s: float = 15.0) -> None:
    """Ask ``proc`` to stop (SIGTERM); kill it when it has not exited within ``grace_s`` seconds, and reap it."""
    proc.terminate()
    try:
        proc.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=5)
