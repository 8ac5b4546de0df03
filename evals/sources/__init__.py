"""Importers of real outcome data, one small module per source, behind one API::

    from evals import sources
    table = sources.load("mmlu-pro")              # a registered source name ...
    mine = sources.load("logs/outcomes.csv")      # ... or a file in the long format (datasets/FORMAT.md)
    sources.list_sources()                        # [(name, one-line description), ...]

Sources: ``mmlu-pro`` (:mod:`.mmlu_pro`), ``routellm-mmlu``, ``routellm-gsm8k``, ``routellm-mt-bench``
(:mod:`.routellm`), ``routerbench-mbpp`` (:mod:`.routerbench`, plus a reader for any RouterBench-shaped wide
table), ``arena-bench-v1`` (:mod:`.arena_bench`). Imported tables are cached as Parquet (:mod:`.base`).
"""

from __future__ import annotations

import os
from pathlib import Path

from evals.outcomes import OutcomeTable
from evals.sources import arena_bench, mmlu_pro, routellm, routerbench  # noqa: F401 - they register sources
from evals.sources.base import Source, source_registry
from evals.sources.long_format import SUFFIXES, read_outcomes

__all__ = ["Source", "get_source", "list_sources", "load", "read_outcomes", "source_registry"]


def get_source(name: str) -> Source:
    """The registered :class:`Source` called ``name`` (UnknownComponentError lists the valid names)."""
    return source_registry.get(name)


def list_sources() -> list[tuple[str, str]]:
    """``(name, one-line description)`` of every registered source, sorted by name."""
    return [(name, src.description) for name, src in source_registry.items()]


def _looks_like_path(name: str) -> bool:
    return os.sep in name or "/" in name or Path(name).suffix.lower() in SUFFIXES or Path(name).exists()


def load(
    name_or_path: str | os.PathLike[str],
    *,
    data_dir: str | os.PathLike[str] | None = None,
    use_cache: bool = True,
) -> OutcomeTable:
    """Load a registered source by name, or an outcome file in the long format by path.

    Args:
        name_or_path: A source name (see :func:`list_sources`) or a ``.csv``/``.jsonl``/``.parquet`` path.
        data_dir: The public-data folder (default: resolved by :func:`evals.paths.data_dir`).
        use_cache: Read/write the Parquet cache of imported sources.

    Raises:
        UnknownComponentError: for a name that is neither a source nor a file (lists the source names).
        DataNotFoundError: when the data folder or a file does not exist.
        SchemaError: on malformed data, naming file, row and column.
    """
    text = os.fspath(name_or_path)
    if text in source_registry:
        return source_registry.get(text).load(data_dir, use_cache=use_cache)
    if isinstance(name_or_path, Path) or _looks_like_path(text):
        return read_outcomes(text)
    source_registry.get(text)  # raises UnknownComponentError listing the sources
    raise AssertionError("unreachable")  # pragma: no cover
