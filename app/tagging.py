"""Hand tags for production prompts: a prompt -> category mapping saved as JSONL, one tag per line.

The Tag traffic page writes a line the moment a tag is made (append + flush + fsync), so a closed browser
tab loses nothing; reopening the same file resumes where the tagger stopped. Re-tagging a prompt appends a
new line: the last line for a prompt wins.

File format (UTF-8 JSON Lines)::

    {"prompt": "What is 2+2?", "category": "simple", "tagged_at": "2026-11-30T18:59:01Z", "source": "log.csv"}

``prompt`` and ``category`` are required; other keys are informational. It is a ``prompt -> category``
mapping: read it with :func:`read_tags` (a dict), and put it into an OutcomeTable's ``category`` column with
:func:`apply_tags`; the routers that use categories then learn from the hand tags (``category``,
``classifier`` and ``cost-aware`` with ``use_category``, and ``rules`` with a ``categories`` rule).
"""

from __future__ import annotations

import io
import json
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd

from evals.exceptions import SchemaError

__all__ = ["DEFAULT_LABELS", "TagStore", "apply_tags", "read_prompt_log", "read_tags"]

#: The default difficulty labels offered by the page.
DEFAULT_LABELS: tuple[str, ...] = ("simple", "medium", "hard")

_PROMPT_COLUMNS = ("prompt", "question", "input", "text", "query", "user")


def read_tags(path: str | os.PathLike[str]) -> dict[str, str]:
    """Read a tag file into ``{prompt: category}`` (the last tag of a prompt wins).

    Raises:
        SchemaError: on a line that is not a JSON object with string ``prompt`` and ``category``, naming
            the file and line number. A truncated last line (a crash mid-write) is skipped, not an error.
    """
    path = Path(path)
    tags: dict[str, str] = {}
    if not path.is_file():
        return tags
    lines = path.read_text(encoding="utf-8").splitlines()
    for i, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            if i == len(lines):  # only the very last line may be half-written
                continue
            raise SchemaError(f"{path}:{i}: not a JSON object") from None
        if (
            not isinstance(rec, dict)
            or not isinstance(rec.get("prompt"), str)
            or not isinstance(rec.get("category"), str)
        ):
            raise SchemaError(f"{path}:{i}: a tag line needs string fields 'prompt' and 'category'")
        tags[rec["prompt"]] = rec["category"]
    return tags


class TagStore:
    """An append-only, crash-safe tag file (see the module docstring for its format).

    Args:
        path: The JSONL file; created (with its folder) on the first tag.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.tags: dict[str, str] = read_tags(self.path)

    def add(self, prompt: str, category: str, **extra: str) -> None:
        """Record one tag durably before returning (append, flush, fsync)."""
        if not isinstance(prompt, str) or not prompt:
            raise SchemaError("a tag needs a non-empty prompt")
        if not isinstance(category, str) or not category.strip():
            raise SchemaError("a tag needs a non-empty category")
        rec = {
            "prompt": prompt,
            "category": category.strip(),
            "tagged_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            **extra,
        }
        self.path.parent.mkdir(parents=True, exist_ok=True)
        line = json.dumps(rec, ensure_ascii=False) + "\n"
        # One write of a whole line in append mode, then fsync: a crash leaves at most a partial last line,
        # which read_tags skips.
        with open(self.path, "a", encoding="utf-8") as fh:
            fh.write(line)
            fh.flush()
            os.fsync(fh.fileno())
        self.tags[prompt] = rec["category"]

    def __len__(self) -> int:
        return len(self.tags)

    def counts(self) -> dict[str, int]:
        """Number of tagged prompts per category."""
        out: dict[str, int] = {}
        for c in self.tags.values():
            out[c] = out.get(c, 0) + 1
        return out


def read_prompt_log(name: str, data: bytes, column: str | None = None) -> pd.DataFrame:
    """Parse an uploaded prompt log (CSV, JSONL or JSON) into a frame with a ``prompt`` column.

    Args:
        name: The file name (its extension picks the parser).
        data: The raw bytes.
        column: The prompt column; by default the first of ``prompt, question, input, text, query, user``.

    Returns:
        The log's rows, de-duplicated by prompt, empty prompts dropped, with the prompt column renamed to
        ``prompt``.

    Raises:
        SchemaError: naming the file and what is wrong (unreadable, no prompt column, no prompts).
    """
    suffix = Path(name).suffix.lower()
    try:
        if suffix == ".csv":
            frame = pd.read_csv(io.BytesIO(data), dtype=str, keep_default_na=False)
        elif suffix in (".jsonl", ".ndjson"):
            frame = pd.read_json(io.BytesIO(data), lines=True, dtype=False)
        elif suffix == ".json":
            frame = pd.read_json(io.BytesIO(data), dtype=False)
        else:
            raise SchemaError(f"{name}: unsupported prompt-log type {suffix or '(none)'!r}; use .csv or .jsonl")
    except SchemaError:
        raise
    except (ValueError, UnicodeDecodeError, pd.errors.ParserError) as exc:
        raise SchemaError(f"{name}: could not be parsed as {suffix[1:].upper()} ({str(exc).splitlines()[0]})") from None
    if column is None:
        column = next((c for c in _PROMPT_COLUMNS if c in frame.columns), None)
        if column is None:
            raise SchemaError(
                f"{name}: no prompt column; expected one of {', '.join(_PROMPT_COLUMNS)}, found "
                f"{', '.join(map(str, frame.columns)) or 'no columns'}"
            )
    elif column not in frame.columns:
        raise SchemaError(f"{name}: no column {column!r}; found {', '.join(map(str, frame.columns))}")
    frame = frame.rename(columns={column: "prompt"})
    frame["prompt"] = frame["prompt"].map(lambda v: "" if v is None or (isinstance(v, float) and v != v) else str(v))
    frame = frame[frame["prompt"].str.strip().ne("")].drop_duplicates("prompt").reset_index(drop=True)
    if frame.empty:
        raise SchemaError(f"{name}: column {column!r} has no non-empty prompts")
    return frame


def apply_tags(table: Any, tags: dict[str, str], *, keep_untagged: bool = True) -> Any:
    """A copy of an OutcomeTable whose ``category`` is the hand tag of each tagged prompt.

    Args:
        table: An :class:`~evals.outcomes.OutcomeTable`.
        tags: ``{prompt: category}`` (from :func:`read_tags`).
        keep_untagged: Keep the table's own category for untagged prompts (else they get "").

    Returns:
        The new table; its card's ``extra["tagged_samples"]`` says how many samples got a tag.

    Raises:
        SchemaError: if no prompt of the table is tagged.
    """
    from dataclasses import replace

    from evals.outcomes import OutcomeTable

    frame = table.frame
    mapped = frame["prompt"].map(tags)
    hit = mapped.notna()
    n_tagged = int(frame.loc[hit, "sample_id"].nunique())
    if n_tagged == 0:
        raise SchemaError(f"none of the {len(tags)} tagged prompts is a prompt of task set {table.card.name!r}")
    frame["category"] = mapped.where(hit, frame["category"] if keep_untagged else "").astype(str)
    card = replace(table.card, name=f"{table.card.name}-tagged", extra={**table.card.extra, "tagged_samples": n_tagged})
    return OutcomeTable(frame, card, origin=table.origin)
