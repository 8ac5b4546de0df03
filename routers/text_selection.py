"""Which text of a request a router reads: one documented rule, learned at fit time, replayed exactly at serving.

Production prompts carry system prompts, few-shot blocks and templates that are the same for every request.
An embedding of the whole prompt is then mostly the template (a static encoder averages every token; MiniLM
reads only its first 256 word pieces, often all template), and the part that tells requests apart (the
question) is diluted or cut off. The rule, ``text = ...``:

- ``"full"``: the text as given (for a chat: the last user message, the rule of
  ``evals.serving.wire.prompt_of``, which the proxy routes on); nothing is learned, nothing is cut. The
  default of every router, so that existing routers and exports are unchanged (``[router_defaults] text =
  "auto"`` in an eval config turns selection on for every embedding router).
- ``"last_user"``: for a chat, the last user message; a single string is one user message, kept whole. Cut
  to the encoder's window keeping head and tail (below).
- ``"question"``: the part that varies across the training prompts. :meth:`TextSelector.fit` learns, from the
  train prompts (their last user message, for chats), a shared prefix and suffix (cut back to a line break,
  or else a space, so that no word is split) and the recurring lines (lines found in more than
  ``line_share`` of the train prompts, e.g. the lines of a fixed 5-shot block); :meth:`TextSelector.select`
  strips exactly these from the request, then keeps head and tail.
- ``"auto"``: ``"question"``, falling back to ``"last_user"`` for a request where stripping leaves no text
  (a request that is all template must still be routed on something).

Head and tail: when a selected text is longer than ``max_chars`` (the caller's estimate of its encoder's
window in characters), its first and last ``max_chars // 2`` characters are kept, joined by a line break, so
that both the instructions at the top and the question at the bottom are represented.

Learning happens here; applying is :func:`routers.runtime.select_text`, the one copy of the rule, which the
workbench's routers, an export folder (its own ``runtime.py``) and the proxy all run. The learned state is
JSON-able (:meth:`TextSelector.to_state`, the ``text_selection`` spec the runtime checks and applies): an
embedding router stores it in its state, so an export carries it and a proxy strips exactly what the workbench
stripped::

    sel = TextSelector.fit(train_prompts, "auto", max_chars=2000)
    sel.select(prompt)                                  # the text to embed
    sel.select([{"role": "system", "content": "..."}, {"role": "user", "content": "..."}])
    TextSelector.from_state(json.loads(json.dumps(sel.to_state()))).select(prompt) == sel.select(prompt)
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Union

from evals.serving.wire import prompt_of
from routers import runtime
from routers.runtime import TEXT_MODES, head_and_tail

__all__ = ["TEXT_MODES", "Prompt", "TextSelector", "head_and_tail"]

#: A request: a prompt string, or an OpenAI-style chat (a list of ``{"role", "content"}`` messages).
Prompt = Union[str, Sequence[Mapping[str, Any]]]

STATE_FORMAT = runtime.TEXT_SELECTION_FORMAT


def _base_text(prompt: Prompt) -> str:
    """A string as is; a chat's last user message (``prompt_of``; ``""`` without one)."""
    if isinstance(prompt, str):
        return prompt
    if isinstance(prompt, Sequence):
        return prompt_of(list(prompt)) or ""
    raise TypeError(f"a prompt must be a string or a list of chat messages, got {type(prompt).__name__}")


def _cut_prefix(prefix: str) -> str:
    """The common prefix cut back to just after its last line break (else its last space): no split words."""
    for sep in ("\n", " "):
        at = prefix.rfind(sep)
        if at >= 0:
            return prefix[: at + 1]
    return ""


def _cut_suffix(suffix: str) -> str:
    """The common suffix cut forward to its first line break (else its first space)."""
    for sep in ("\n", " "):
        at = suffix.find(sep)
        if at >= 0:
            return suffix[at:]
    return ""


def _common_prefix(texts: Sequence[str]) -> str:
    lo, hi = min(texts), max(texts)  # the common prefix of all texts is that of the extremes in sort order
    n = 0
    while n < min(len(lo), len(hi)) and lo[n] == hi[n]:
        n += 1
    return lo[:n]


def _common_suffix(texts: Sequence[str]) -> str:
    return _common_prefix([t[::-1] for t in texts])[::-1]


@dataclass(frozen=True)
class TextSelector:
    """A learned text-selection rule (see the module docstring); build it with :meth:`fit`.

    Attributes:
        mode: One of :data:`TEXT_MODES`.
        prefix: Shared prefix stripped from every request that starts with it (``question``/``auto``).
        suffix: Shared suffix stripped from every request that ends with it.
        recurring_lines: Lines (compared without surrounding spaces) removed wherever they occur.
        max_chars: Window in characters; longer selected texts keep head and tail (not in ``full``).
    """

    mode: str = "full"
    prefix: str = ""
    suffix: str = ""
    recurring_lines: tuple[str, ...] = ()
    max_chars: int | None = None

    def __post_init__(self) -> None:
        if self.mode not in TEXT_MODES:
            raise ValueError(f"text must be one of {', '.join(map(repr, TEXT_MODES))}, got {self.mode!r}")
        if self.max_chars is not None and (
            not isinstance(self.max_chars, int) or isinstance(self.max_chars, bool) or self.max_chars < 2
        ):
            raise ValueError(f"max_chars must be an int >= 2 or None, got {self.max_chars!r}")

    # ------------------------------------------------------------------ learning
    @classmethod
    def fit(
        cls,
        prompts: Iterable[Prompt],
        mode: str = "auto",
        *,
        line_share: float = 0.5,
        max_chars: int | None = None,
    ) -> TextSelector:
        """Learn the template of the train prompts (for ``question``/``auto``; other modes learn nothing).

        Args:
            prompts: The train prompts (strings or chats; a chat contributes its last user message).
            mode: One of :data:`TEXT_MODES`.
            line_share: A line is template when it occurs in more than this share of the train prompts
                (counted once per prompt; blank lines never count).
            max_chars: The encoder's window in characters (None: no cut).

        A template needs at least two distinct train texts; with fewer nothing is stripped. The shared prefix
        and suffix are kept only when no train text is made of them alone.
        """
        if not 0.0 <= float(line_share) < 1.0:
            raise ValueError(f"line_share must be in [0, 1), got {line_share!r}")
        if mode not in ("question", "auto"):
            return cls(mode=mode, max_chars=max_chars)
        texts = [_base_text(p) for p in prompts]
        if len(set(texts)) < 2:
            return cls(mode=mode, max_chars=max_chars)
        prefix = _cut_prefix(_common_prefix(texts))
        suffix = _cut_suffix(_common_suffix(texts))
        # Never learn a template that is a whole train text (nothing would be left to route on).
        if any(len(t) <= len(prefix) + len(suffix) for t in texts):
            prefix = suffix = ""
        counts: Counter[str] = Counter()
        for t in texts:
            counts.update(
                {line.strip() for line in runtime.strip_ends(t, prefix, suffix).splitlines() if line.strip()}
            )
        threshold = float(line_share) * len(texts)
        lines = tuple(sorted(line for line, k in counts.items() if k > threshold))
        return cls(mode=mode, prefix=prefix, suffix=suffix, recurring_lines=lines, max_chars=max_chars)

    # ------------------------------------------------------------------ applying
    def select(self, prompt: Prompt) -> str:
        """The text to embed for one request (a string or a chat): :func:`routers.runtime.select_text`."""
        return self.select_many([prompt])[0]

    def select_many(self, prompts: Iterable[Prompt]) -> list[str]:
        """:meth:`select` of each prompt, in order."""
        return runtime.select_text([_base_text(p) for p in prompts], self.to_state())

    def strip_template(self, text: str) -> str:
        """``text`` without the learned prefix, suffix and recurring lines (surrounding blank space trimmed)."""
        return runtime.strip_template(text, self.prefix, self.suffix, self.recurring_lines)

    @property
    def changes_text(self) -> bool:
        """Whether this rule can give a text other than the ``full`` one (exports then need the rule)."""
        return self.mode != "full"

    # ------------------------------------------------------------------ state
    def to_state(self) -> dict[str, Any]:
        """A JSON-able dict from which :meth:`from_state` rebuilds an identical selector."""
        return {
            "format": STATE_FORMAT,
            "mode": self.mode,
            "prefix": self.prefix,
            "suffix": self.suffix,
            "recurring_lines": list(self.recurring_lines),
            "max_chars": self.max_chars,
        }

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> TextSelector:
        """Rebuild from :meth:`to_state` (a clear error for another format or a missing field)."""
        if not isinstance(state, Mapping) or state.get("format") != STATE_FORMAT:
            got = state.get("format") if isinstance(state, Mapping) else state
            raise ValueError(f"text selection state has format {got!r}, expected {STATE_FORMAT}")
        try:
            return cls(
                mode=str(state["mode"]),
                prefix=str(state["prefix"]),
                suffix=str(state["suffix"]),
                recurring_lines=tuple(str(s) for s in state["recurring_lines"]),
                max_chars=None if state["max_chars"] is None else int(state["max_chars"]),
            )
        except KeyError as exc:
            raise ValueError(f"text selection state lacks the field {exc.args[0]!r}") from None

