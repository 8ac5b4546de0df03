"""A disk cache of chat completions, so that no paid call is ever made twice.

Key: SHA-256 of the *normalised request*: the provider's base URL (scheme and host lower-cased, no trailing
slash), the model id, the messages and the request parameters, as canonical JSON (sorted keys, ``None``
parameters and ``stream`` dropped). The API key is not part of the key and is never stored: the same request
with another key is the same answer.

Storage: one SQLite file in WAL mode. Every answer is committed on its own as soon as it arrives, so killing
the process (even with SIGKILL) loses at most the answers still in flight; SQLite's journal guarantees a
commit is either fully there or not at all. ``synchronous=NORMAL`` in WAL mode survives a process crash (an
OS crash or power loss may lose the last commits, which would then simply be asked again).

A cache file that exists but is not a valid database (0 bytes, truncated, garbage, another program's SQLite
file) is refused with :class:`CacheError` before any request is made: silently starting a new cache in its place
would pay again for every answer it held.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from evals.exceptions import ConfigError
from evals.paths import cache_dir

__all__ = ["CacheError", "ResponseCache", "default_cache_path", "request_key"]

_SQLITE_MAGIC = b"SQLite format 3\x00"
_COLUMNS = ("key", "model", "created", "body")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS responses (
    key TEXT PRIMARY KEY,
    model TEXT NOT NULL,
    created REAL NOT NULL,
    body TEXT NOT NULL
)
"""


class CacheError(ConfigError):
    """The answer cache file exists but cannot be used; the message names the file and the way out."""

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(
            f"answer cache {str(path)!r} is not a valid cache database ({reason}); nothing was asked, so nothing "
            f"was paid. Move it aside (mv {path} {path}.bad) or pass --cache NEW.sqlite to start a new cache "
            "(a new cache asks every answer again)"
        )
        self.path = path


def _check_existing(path: Path) -> None:
    """Refuse an existing file that is not a cache, before SQLite would treat it as a new, empty database."""
    if not path.exists():
        return
    if not path.is_file():
        raise CacheError(path, "not a regular file")
    with path.open("rb") as fh:
        head = fh.read(len(_SQLITE_MAGIC))
    if not head:
        raise CacheError(path, "the file is empty (0 bytes)")
    if head != _SQLITE_MAGIC:
        raise CacheError(path, "not an SQLite file")


def default_cache_path() -> Path:
    """``evals.paths.cache_dir() / "collect.sqlite"``."""
    return cache_dir() / "collect.sqlite"


def _normal_url(url: str) -> str:
    parts = urlsplit(url.strip())
    return urlunsplit((parts.scheme.lower(), parts.netloc.lower(), parts.path.rstrip("/"), parts.query, ""))


def request_key(
    base_url: str, model: str, messages: Sequence[Mapping[str, Any]], params: Mapping[str, Any]
) -> str:
    """The cache key of one chat request (hex SHA-256 of its canonical JSON; see the module docstring)."""
    clean = {k: v for k, v in sorted(params.items()) if v is not None and k != "stream"}
    payload = {
        "base_url": _normal_url(base_url),
        "model": model,
        "messages": [{k: m[k] for k in sorted(m)} for m in messages],
        "params": clean,
    }
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


class ResponseCache:
    """Answers by request key, in one SQLite file (WAL); safe to share between threads of one process.

    Args:
        path: The SQLite file (created with its folder); default :func:`default_cache_path`.
    """

    def __init__(self, path: str | os.PathLike[str] | None = None) -> None:
        self.path = Path(path) if path is not None else default_cache_path()
        _check_existing(self.path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=30)
        try:
            # quick_check reads every page once: a truncated or damaged file fails here, not mid-run.
            verdict = self._db.execute("PRAGMA quick_check(1)").fetchone()[0]
            if verdict != "ok":
                raise CacheError(self.path, f"SQLite integrity check: {verdict}")
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute(_SCHEMA)
            columns = tuple(r[1] for r in self._db.execute("PRAGMA table_info(responses)"))
        except sqlite3.DatabaseError as exc:
            self._db.close()
            raise CacheError(self.path, f"SQLite says: {exc}") from None
        except CacheError:
            self._db.close()
            raise
        if columns != _COLUMNS:
            self._db.close()
            raise CacheError(self.path, f"its 'responses' table has columns {list(columns)}, not {list(_COLUMNS)}")

    def get(self, key: str) -> dict[str, Any] | None:
        """The stored answer of ``key``, or None."""
        with self._lock:
            row = self._db.execute("SELECT body FROM responses WHERE key = ?", (key,)).fetchone()
        return json.loads(row[0]) if row else None

    def put(self, key: str, model: str, body: Mapping[str, Any]) -> None:
        """Store one answer and commit it at once (the first answer of a key wins)."""
        text = json.dumps(body, ensure_ascii=False, separators=(",", ":"))
        with self._lock:
            self._db.execute(
                "INSERT OR IGNORE INTO responses (key, model, created, body) VALUES (?, ?, ?, ?)",
                (key, model, time.time(), text),
            )

    def __contains__(self, key: object) -> bool:
        with self._lock:
            return self._db.execute("SELECT 1 FROM responses WHERE key = ?", (key,)).fetchone() is not None

    def __len__(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM responses").fetchone()[0])

    def keys(self) -> set[str]:
        """Every stored key."""
        with self._lock:
            return {r[0] for r in self._db.execute("SELECT key FROM responses")}

    def close(self) -> None:
        """Close the database (a checkpoint folds the WAL back into the file)."""
        with self._lock:
            self._db.close()

    def __enter__(self) -> ResponseCache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
