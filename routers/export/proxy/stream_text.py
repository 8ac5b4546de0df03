"""The text of a streamed answer, gathered while the proxy relays it, for the features that keep answer texts.

A non-streamed answer's text is read from its JSON body (:func:`evals.serving.wire.answer_text`). A stream's is
the concatenation of its events' ``choices[0].delta.content``; :class:`StreamText` gathers it from the bytes the
proxy relays, so ``[log] store_text`` logs the answer of a stream too. It is built only when a feature wants the
text (:func:`text_cap_wanted`), so a plain proxy parses nothing.

Only ``data: {...}`` lines are read (SSE comments, ``[DONE]``, blank lines and anything malformed are skipped
without a word: the stream is the client's, not ours to fail), lines split across two reads are joined, and
gathering stops once ``cap`` characters are held (the log keeps at most its text cap anyway).
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from evals.serving.wire import delta_text

if TYPE_CHECKING:
    from routers.export.proxy.state import ProxyState

__all__ = ["SHADOW_TEXT_CAP", "StreamText", "text_cap_wanted"]

#: Characters of a streamed answer kept for a feature that re-uses the answer (shadow grading).
SHADOW_TEXT_CAP = 64 * 1024
#: Longest partial line held between reads (a line longer than this without a newline is not an SSE event we read).
_MAX_PENDING = 1 << 20


def text_cap_wanted(st: ProxyState) -> int:
    """Characters of a streamed answer the attached features want (0: none, gather nothing).

    The decision log with ``store_text`` wants one more than its text cap (so a longer answer is flagged as cut);
    shadow grading (``st.wants_request_messages``) wants up to :data:`SHADOW_TEXT_CAP`.
    """
    cap = 0
    writer = getattr(st, "decision_log", None)
    settings = getattr(writer, "settings", None)
    if settings is not None and getattr(settings, "store_text", False):
        cap = int(settings.text_cap) + 1
    if st.wants_request_messages:
        cap = max(cap, SHADOW_TEXT_CAP)
    return cap


class StreamText:
    """Gathers ``choices[0].delta.content`` of relayed SSE bytes (see the module docstring).

    Args:
        cap: Characters to keep at most (>= 1).
    """

    __slots__ = ("cap", "done", "_parts", "_size", "_pending", "_seen")

    def __init__(self, cap: int) -> None:
        if cap < 1:
            raise ValueError(f"stream text cap must be >= 1 character, got {cap}")
        self.cap = cap
        self._parts: list[str] = []
        self._size = 0
        self._pending = b""
        self._seen = False
        self.done = False
        """Whether the stream's ``data: [DONE]`` line was read (with :attr:`full` False: the whole answer is held)."""

    @property
    def full(self) -> bool:
        """Whether ``cap`` characters are held (further bytes are not read)."""
        return self._size >= self.cap

    def feed(self, chunk: bytes) -> None:
        """Read the complete lines of ``chunk`` (with what was left of the previous one); never raises."""
        if self.full:
            return
        data = self._pending + chunk if self._pending else chunk
        cut = data.rfind(b"\n")
        if cut < 0:
            self._pending = data if len(data) <= _MAX_PENDING else b""
            return
        self._pending = data[cut + 1 :] if len(data) - cut - 1 <= _MAX_PENDING else b""
        for line in data[:cut].split(b"\n"):
            self._line(line)
            if self.full:
                return

    def text(self) -> str | None:
        """The gathered text (at most ``cap`` characters), reading a last line left without its newline; None
        when no event carried content."""
        if self._pending and not self.full:
            self._line(self._pending)
            self._pending = b""
        if not self._seen:
            return None
        return "".join(self._parts)[: self.cap]

    def complete_text(self) -> str | None:
        """The whole answer's text when the stream ended with ``[DONE]`` and nothing was cut, else None."""
        text = self.text()
        return text if self.done and not self.full else None

    def _line(self, line: bytes) -> None:
        line = line.strip()
        if not line.startswith(b"data:"):
            return
        payload = line[5:].lstrip()
        if not payload.startswith(b"{"):
            self.done |= payload == b"[DONE]"
            return  # [DONE], or not an event object
        try:
            piece = delta_text(json.loads(payload))
        except (ValueError, RecursionError):  # malformed JSON (UnicodeDecodeError included): skip the line
            return
        if piece is not None:
            self._seen = True
            self._parts.append(piece)
            self._size += len(piece)

