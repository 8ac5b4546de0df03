"""The OpenAI chat-completions wire format as the replay server and the proxy both read it (one home)."""

from __future__ import annotations

import json
import time
from typing import Any

__all__ = [
    "DONE_EVENT", "answer_text", "chunk_event", "completion_of", "delta_text", "error_body", "prompt_of", "usage_of",
]


def prompt_of(messages: Any) -> str | None:
    """Text of the last user message of an OpenAI chat request (string content, or the text parts of a content list)."""
    if not isinstance(messages, list):
        return None
    for msg in reversed(messages):
        if isinstance(msg, dict) and msg.get("role") == "user":
            content = msg.get("content")
            if isinstance(content, str):
                return content
            if isinstance(content, list):
                return "".join(
                    p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text"
                )
            return None
    return None


def answer_text(completion: Any) -> str | None:
    """The first choice's message text of a decoded chat completion, or None when it has none."""
    try:
        text = completion["choices"][0]["message"]["content"]
    except (KeyError, IndexError, TypeError):
        return None
    return text if isinstance(text, str) else None


def delta_text(chunk: Any) -> str | None:
    """``choices[0].delta.content`` of a decoded stream chunk when it is a string, else None."""
    try:
        text = chunk["choices"][0]["delta"]["content"]
    except (KeyError, IndexError, TypeError):
        return None
    return text if isinstance(text, str) else None


def error_body(message: str, type_: str, code: str | None = None, param: str | None = None) -> bytes:
    """An OpenAI-shaped error body: ``{"error": {"message", "type", "param", "code"}}`` as JSON bytes."""
    return json.dumps({"error": {"message": message, "type": type_, "param": param, "code": code}}).encode()


def usage_of(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    """The ``usage`` object of a completion."""
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def completion_of(cid: str, model: str, content: str, usage: dict[str, Any] | None) -> dict[str, Any]:
    """A non-streamed ``chat.completion`` object with one assistant choice (``usage`` left out when None)."""
    out: dict[str, Any] = {
        "id": cid,
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
    }
    if usage is not None:
        out["usage"] = usage
    return out


def chunk_event(
    cid: str, model: str, delta: dict[str, Any] | None, finish: str | None = None, usage: Any = None
) -> bytes:
    """One SSE event (``data: {...}\\n\\n``) of a ``chat.completion.chunk``.

    With ``usage`` the chunk is the final usage chunk (``choices`` empty), as OpenAI sends it when the request
    asked for ``stream_options: {"include_usage": true}``.
    """
    chunk: dict[str, Any] = {
        "id": cid,
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": model,
        "choices": [] if usage is not None else [{"index": 0, "delta": delta or {}, "finish_reason": finish}],
    }
    if usage is not None:
        chunk["usage"] = usage
    return b"data: " + json.dumps(chunk).encode() + b"\n\n"


#: The event that ends an OpenAI stream.
DONE_EVENT = b"data: [DONE]\n\n"
