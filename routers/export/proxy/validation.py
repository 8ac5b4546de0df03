"""Checks on what clients send, before anything is routed or forwarded (each failure names the field).

* :func:`parse_json_body`: the body as a JSON object, refusing nesting deeper than :data:`MAX_JSON_DEPTH`
  *before* ``json.loads`` recurses into it (a 100k-deep body would otherwise exhaust the stack).
* :func:`check_chat_request`: the chat-completions fields the proxy relies on, with every content-part shape
  the OpenAI API accepts (text, image_url, input_audio, file, refusal; tool calls and null content on assistant
  turns; tool results). Unknown fields are left alone (the upstream judges them).
"""

from __future__ import annotations

import json
import re
from typing import Any

from routers.export.proxy.errors import ClientRequestError

__all__ = ["MAX_JSON_DEPTH", "check_chat_request", "parse_json_body"]

#: Deepest nesting of objects and arrays accepted in a request body (real requests, JSON schemas of tools
#: included, stay far below; Python's decoder recurses once per level).
MAX_JSON_DEPTH = 64

_STRINGS = re.compile(rb'"(?:[^"\\]|\\.)*"', re.S)
_BRACKETS = re.compile(rb"[\[\]{}]")

#: Content-part types accepted per role (OpenAI's chat-completions API) and the field each must carry.
_PART_FIELD = {"text": "text", "image_url": "image_url", "input_audio": "input_audio", "file": "file",
               "refusal": "refusal"}
_PARTS_BY_ROLE = {
    "user": ("text", "image_url", "input_audio", "file"),
    "system": ("text",),
    "developer": ("text",),
    "assistant": ("text", "refusal"),
    "tool": ("text",),
    "function": ("text",),
}


def _too_deep(raw: bytes, limit: int) -> bool:
    """Whether the JSON text nests objects/arrays deeper than ``limit`` (cheap: C-level counts first)."""
    if raw.count(b"{") + raw.count(b"[") <= limit:  # the common case: cannot be deeper than its brackets
        return False
    depth = 0
    # Brackets inside strings do not nest; strip the strings, then walk the structural brackets only.
    for b in _BRACKETS.findall(_STRINGS.sub(b"", raw)):
        if b in (b"{", b"["):
            depth += 1
            if depth > limit:
                return True
        else:
            depth -= 1
    return False


def parse_json_body(raw: bytes, what: str = "request body") -> dict[str, Any]:
    """``raw`` decoded as a JSON object.

    Raises:
        ClientRequestError: not JSON, not an object, or nested deeper than :data:`MAX_JSON_DEPTH`.
    """
    if _too_deep(raw, MAX_JSON_DEPTH):
        raise ClientRequestError(f"{what} nests objects/arrays deeper than {MAX_JSON_DEPTH} levels")
    try:
        body = json.loads(raw)
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
        raise ClientRequestError(f"{what} is not valid JSON ({str(exc)[:120]})") from None
    if not isinstance(body, dict):
        raise ClientRequestError(f"{what} must be a JSON object, got {type(body).__name__}")
    return body


def _type_name(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def _check_part(part: Any, role: str, where: str) -> None:
    if not isinstance(part, dict):
        raise ClientRequestError(f"{where} must be an object with a 'type', got {_type_name(part)}", where)
    kind = part.get("type")
    allowed = _PARTS_BY_ROLE.get(role, ("text",))
    if kind not in allowed:
        raise ClientRequestError(
            f"{where}.type must be one of {', '.join(allowed)} for a {role} message, got {kind!r}", f"{where}.type"
        )
    field = _PART_FIELD[kind]
    value = part.get(field)
    if kind in ("text", "refusal"):
        if not isinstance(value, str):
            raise ClientRequestError(f"{where}.{field} must be a string, got {_type_name(value)}", f"{where}.{field}")
    elif kind == "image_url":
        if not isinstance(value, dict) or not isinstance(value.get("url"), str):
            raise ClientRequestError(f"{where}.image_url must be an object with a string 'url'", f"{where}.image_url")
    elif kind == "input_audio":
        if not isinstance(value, dict) or not isinstance(value.get("data"), str) or not isinstance(
            value.get("format"), str
        ):
            raise ClientRequestError(
                f"{where}.input_audio must be an object with string 'data' and 'format'", f"{where}.input_audio"
            )
    elif not isinstance(value, dict):  # file
        raise ClientRequestError(f"{where}.file must be an object", f"{where}.file")


def _check_message(msg: Any, where: str) -> None:
    if not isinstance(msg, dict):
        raise ClientRequestError(f"{where} must be an object with 'role' and 'content', got {_type_name(msg)}", where)
    role = msg.get("role")
    if role not in _PARTS_BY_ROLE:
        raise ClientRequestError(
            f"{where}.role must be one of {', '.join(_PARTS_BY_ROLE)}, got {role!r}", f"{where}.role"
        )
    content = msg.get("content")
    if isinstance(content, list):
        for j, part in enumerate(content):
            _check_part(part, role, f"{where}.content[{j}]")
    elif content is None:
        # OpenAI allows no content on an assistant turn that calls tools (or refuses); nowhere else.
        if role != "assistant" or not (msg.get("tool_calls") or msg.get("function_call") or msg.get("refusal")):
            raise ClientRequestError(f"{where}.content is required for a {role} message", f"{where}.content")
    elif not isinstance(content, str):
        raise ClientRequestError(
            f"{where}.content must be a string or a list of content parts, got {_type_name(content)}",
            f"{where}.content",
        )
    if role == "assistant" and msg.get("tool_calls") is not None:
        calls = msg["tool_calls"]
        if not isinstance(calls, list) or not all(isinstance(c, dict) for c in calls):
            raise ClientRequestError(f"{where}.tool_calls must be a list of objects", f"{where}.tool_calls")
    if role == "tool" and not isinstance(msg.get("tool_call_id"), str):
        raise ClientRequestError(f"{where}.tool_call_id (a string) is required for a tool message",
                                 f"{where}.tool_call_id")


def check_chat_request(body: dict[str, Any]) -> tuple[str, bool]:
    """Check a chat-completions request; return its (model name, whether it streams).

    Raises:
        ClientRequestError: naming the first field that is wrong (e.g. ``messages[2].content[0].text``).
    """
    name = body.get("model")
    if not isinstance(name, str) or not name:
        raise ClientRequestError("'model' (a string) is required", "model")
    stream = body.get("stream", False)
    if stream is None:
        stream = False
    elif not isinstance(stream, bool):
        raise ClientRequestError(f"'stream' must be true or false, got {stream!r}", "stream")
    options = body.get("stream_options")
    if options is not None and not isinstance(options, dict):
        raise ClientRequestError("'stream_options' must be an object", "stream_options")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise ClientRequestError("'messages' must be a non-empty list of messages", "messages")
    for i, msg in enumerate(messages):
        _check_message(msg, f"messages[{i}]")
    return name, stream
