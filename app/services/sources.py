"""Which task set the session uses, loading it once per process, and validating uploads.

Uploads go through the one outcome-file parser, :func:`evals.sources.long_format.read_outcomes` (the rules of
``datasets/FORMAT.md``, the same as the CLI and configs), straight from the uploaded bytes; only a valid table
is kept (as Parquet in the user cache).
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
from pathlib import Path
from typing import Any

import pandas as pd
import streamlit as st

from evals.exceptions import DataNotFoundError, SchemaError, WorkbenchError
from evals.outcomes import OutcomeTable
from evals.paths import cache_dir

__all__ = [
    "DEFAULT_SOURCE_ENV",
    "MAX_UPLOAD_MB",
    "OUTCOME_SUFFIXES",
    "available_sources",
    "current_source",
    "current_table",
    "default_source",
    "is_file_source",
    "load_prices",
    "load_table",
    "parse_outcome_file",
    "save_table",
    "save_upload",
    "set_source",
    "source_label",
    "stamp",
]

DEFAULT_SOURCE_ENV = "ROUTELAB_APP_DEFAULT_SOURCE"
#: Largest accepted upload. Kept equal to ``server.maxUploadSize`` in ``app/.streamlit/config.toml``;
#: checked here too so that the limit holds under AppTest and behind other front ends.
MAX_UPLOAD_MB = 50
#: File types the app accepts (``.ndjson`` is read as JSON Lines, like ``.jsonl``).
OUTCOME_SUFFIXES = (".parquet", ".csv", ".jsonl", ".ndjson", ".json")
_SOURCE_KEY = "routelab_source"


def default_source() -> str:
    """The task set the app opens on: ``$ROUTELAB_APP_DEFAULT_SOURCE`` or ``mmlu-pro``."""
    return os.environ.get(DEFAULT_SOURCE_ENV) or "mmlu-pro"


def available_sources() -> list[str]:
    """Names of the built-in task sets (the default first), from :func:`evals.sources.list_sources`."""
    names: list[str] = []
    try:
        from evals import sources

        # list_sources() gives (name, description) pairs; accept bare names too.
        names = [str(n[0] if isinstance(n, tuple | list) else n) for n in sources.list_sources()]
    except (ImportError, AttributeError, WorkbenchError):
        names = []
    default = default_source()
    return [default, *[n for n in names if n != default]]


def current_source() -> str:
    """The task set chosen in this session (the default until the user picks another)."""
    return st.session_state.get(_SOURCE_KEY) or default_source()


def set_source(source: str) -> None:
    """Switch this session to another task set (a source name or a path to an outcome file)."""
    st.session_state[_SOURCE_KEY] = source


def is_file_source(source: str) -> bool:
    """Whether ``source`` names an outcome file (by its suffix) rather than a built-in task set."""
    return Path(source).suffix.lower() in OUTCOME_SUFFIXES


def source_label(source: str) -> str:
    """A short display name: the source name, or a file's stem."""
    return f"{Path(source).stem} (file)" if is_file_source(source) else source


def stamp(source: str) -> float:
    """A cache key part that changes when a file source changes on disk."""
    try:
        return Path(source).stat().st_mtime if is_file_source(source) else 0.0
    except OSError:
        return 0.0


def load_table(source: str) -> OutcomeTable:
    """Load a task set's OutcomeTable once per process (cached; treat the result as read-only).

    Args:
        source: A built-in source name (``mmlu-pro``) or a path to a long-format file (Parquet, CSV, JSONL).

    Raises:
        WorkbenchError: DataNotFoundError / SchemaError / UnknownComponentError with the library's message.
    """
    return _load_table_cached(source, stamp(source))


@st.cache_resource(max_entries=6, show_spinner="Loading outcomes...")
def _load_table_cached(source: str, file_stamp: float) -> OutcomeTable:
    if is_file_source(source):
        path = Path(source)
        if not path.is_file():
            raise DataNotFoundError(f"outcome file {source!r} does not exist")
        from evals.sources.long_format import read_outcomes

        return read_outcomes(path)
    from evals import sources

    return sources.load(source)


def current_table() -> OutcomeTable:
    """The OutcomeTable of this session's task set."""
    return load_table(current_source())


@st.cache_resource(show_spinner=False)
def load_prices() -> Any:
    """The repo's price table (:class:`evals.prices.PriceTable`), or None when it cannot be read."""
    try:
        from evals.prices import PriceTable

        return PriceTable.load()
    except WorkbenchError:
        return None


# ---------------------------------------------------------------------------------------------- uploads
def parse_outcome_file(name: str, data: bytes) -> OutcomeTable:
    """Parse and validate an uploaded long-format outcome file (nothing is kept on disk).

    The rules are ``datasets/FORMAT.md``'s, applied by the one parser the CLI and configs use
    (:func:`evals.sources.long_format.read_outcomes`): incomplete samples are dropped (and counted), token
    counts without ``cost_usd`` are priced, errors name the line and the column.

    Args:
        name: The upload's file name; its extension picks the format (``.parquet``, ``.csv``,
            ``.jsonl``/``.ndjson``/``.json`` lines).
        data: The file's bytes.

    Raises:
        SchemaError: naming the file, and the line and column at fault when the content is wrong.
    """
    suffix = Path(name).suffix.lower()
    if len(data) > MAX_UPLOAD_MB * 1024 * 1024:
        raise SchemaError(f"{name}: {len(data) / 2**20:.1f} MB is over the {MAX_UPLOAD_MB} MB upload limit")
    if not data:
        raise SchemaError(f"{name}: the file is empty")
    if suffix not in OUTCOME_SUFFIXES:
        raise SchemaError(
            f"{name}: unsupported file type {suffix or '(none)'!r}; use one of {', '.join(OUTCOME_SUFFIXES)}"
        )
    from evals.sources.long_format import read_outcomes

    table = read_outcomes(data, name=name, max_bytes=MAX_UPLOAD_MB * 1024 * 1024)
    card = dataclasses.replace(table.card, name=Path(name).stem, source=f"uploaded file {name}")
    if table.cost_estimated and not card.cost_note:
        card = dataclasses.replace(card, cost_note="some costs are flagged cost_estimated in the file")
    table.card = card
    return table


def _safe_stem(text: str, fallback: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in text)[:60] or fallback


def save_upload(table: OutcomeTable, data: bytes, name: str) -> Path:
    """Write an already validated upload to the user cache (content-addressed) and return its path."""
    digest = hashlib.sha256(data).hexdigest()[:16]
    folder = cache_dir() / "uploads"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{_safe_stem(Path(name).stem, 'upload')}-{digest}.parquet"
    if not path.exists():
        table.to_parquet(path)
    return path


def save_table(table: OutcomeTable) -> Path:
    """Write a derived table (e.g. with hand tags applied) to the user cache, named by its content."""
    digest = hashlib.sha256(pd.util.hash_pandas_object(table.frame, index=False).to_numpy().tobytes()).hexdigest()
    folder = cache_dir() / "uploads"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{_safe_stem(table.card.name, 'table')}-{digest[:16]}.parquet"
    if not path.exists():
        table.to_parquet(path)
    return path
