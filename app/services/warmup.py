"""Start the one slow first-time step early: building the fast encoder the default routers use.

The first use of ``minilm-static`` distils its token table from MiniLM (about a minute on an idle 2-core
machine, longer on a busy one; cached afterwards in ``ROUTELAB_CACHE_DIR``). The app starts that in a
background thread as soon as it is opened, so a first comparison seldom waits for it; a run that needs the
encoder while the thread is still working waits for it (showing its progress) instead of distilling a second
time. Set ``ROUTELAB_APP_WARMUP=0`` to turn it off (the tests do).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from typing import Any

__all__ = ["WARMUP_ENV", "start_encoder_warmup", "wait_for_warmup"]

WARMUP_ENV = "ROUTELAB_APP_WARMUP"
#: The encoder the app's embedding routers use by default (:data:`app.services.specs.APP_PARAM_DEFAULTS`).
WARM_ENCODER = "minilm-static"

_lock = threading.Lock()
_thread: threading.Thread | None = None
_progress: list[tuple[str, int, int]] = []
_error: list[BaseException] = []


def _build(name: str) -> None:
    from routers.embeddings import get_encoder, progress_listener

    def note(step: str, done: int, total: int) -> None:
        _progress[:] = [(step, done, total)]

    try:
        with progress_listener(note):
            get_encoder(name)
    except BaseException as exc:  # noqa: BLE001 - kept, so the run that needs the encoder reports it
        _error[:] = [exc]


def start_encoder_warmup(name: str = WARM_ENCODER) -> bool:
    """Build ``name`` in a background thread, once per process (no-op when ``ROUTELAB_APP_WARMUP=0``).

    Returns:
        Whether a warm-up thread was started by this call.
    """
    global _thread
    if os.environ.get(WARMUP_ENV, "1").strip() in ("0", "false", "no"):
        return False
    with _lock:
        if _thread is not None:
            return False
        _thread = threading.Thread(target=_build, args=(name,), name="routelab-encoder-warmup", daemon=True)
        _thread.start()
        return True


def wait_for_warmup(report: Callable[[str, int, int], Any] | None = None, poll_s: float = 0.5) -> None:
    """If the warm-up is still running, wait for it, passing its progress to ``report(step, done, total)``.

    ``report`` may raise (a Stop request): the wait ends and the warm-up carries on in the background. A
    failed warm-up is not raised here; the run builds the encoder itself and reports the error then.
    """
    thread = _thread
    while thread is not None and thread.is_alive():
        if report is not None and _progress:
            report(*_progress[0])
        thread.join(poll_s)
