"""What a data source is, the registry of sources, and the Parquet cache of imported tables.

A :class:`Source` names a folder of the public-data mirror (``evals.paths.source_dir``) and a ``build``
function that turns the files there into an :class:`~evals.outcomes.OutcomeTable`. Importing is slow (gzip,
JSON, regexes); replay is not, so every imported table is cached as Parquet under
``evals.paths.cache_dir() / "tables"``, keyed by

- the source name,
- a fingerprint of the input files it read (relative path, size, mtime) and of the price table,
- the importer's ``version`` (bump it whenever the importer's output changes),
- whether the Hugging Face Hub was used instead of the mirror (``ROUTELAB_HUB=1``).

Any change to the mirror, the price table or the importer therefore makes a new cache entry; stale entries of
the same source are deleted when a new one is written.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from evals.exceptions import DataNotFoundError
from evals.outcomes import OutcomeTable
from evals.paths import cache_dir, source_dir
from evals.prices import default_prices_path
from evals.registry import Registry
from evals.sources.hub import hub_enabled

__all__ = ["Source", "fingerprint", "source_registry", "table_cache_dir"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Source:
    """One importable public source.

    Attributes:
        name: Registry name (``mmlu-pro``).
        description: One line for ``routelab datasets list``.
        folder: Folder name inside the data folder (``mmlu-pro-outputs``).
        license: License as stated by the origin.
        build: ``build(folder: Path) -> OutcomeTable``; reads only ``files(folder)``.
        files: Glob patterns (relative to the folder) of every file ``build`` reads; they make the cache key.
        version: Importer version; bump when the output changes so caches are rebuilt.
        hub_id: The Hugging Face Hub dataset of the same data, if any.
        measured_cost: True when the source's costs are real per-query costs.
    """

    name: str
    description: str
    folder: str
    license: str
    build: Callable[[Path], OutcomeTable]
    files: Sequence[str]
    version: str = "1"
    hub_id: str = ""
    measured_cost: bool = False
    extra_inputs: Sequence[Path] = field(default_factory=tuple)

    def input_files(self, folder: Path) -> list[Path]:
        """The files ``build`` reads, sorted (raises if a pattern matches nothing)."""
        found: list[Path] = []
        for pattern in self.files:
            hits = sorted(folder.glob(pattern))
            if not hits:
                raise DataNotFoundError(
                    f"source {self.name!r}: no file matches {pattern!r} in {str(folder)!r}"
                )
            found.extend(hits)
        return found

    def load(self, data_dir: str | os.PathLike[str] | None = None, *, use_cache: bool = True) -> OutcomeTable:
        """Import this source from the data folder, through the Parquet cache."""
        folder = source_dir(self.folder, data_dir)
        inputs = self.input_files(folder)
        key = fingerprint(
            inputs,
            root=folder,
            # a Hub download (ROUTELAB_HUB=1) is a different input than the mirror: its own cache entry
            salt=f"{self.name}:{self.version}:hub={int(bool(self.hub_id) and hub_enabled())}",
            extra=[default_prices_path(), *self.extra_inputs],
        )
        path = table_cache_dir() / f"{self.name}-{key}.parquet"
        if use_cache and path.is_file():
            try:
                return OutcomeTable.read_parquet(path)
            except Exception as exc:  # noqa: BLE001 - a damaged cache file is rebuilt, never fatal
                log.warning("ignoring unreadable cache file %s (%s)", path, exc)
        table = self.build(folder)
        if use_cache:
            for old in table_cache_dir().glob(f"{self.name}-*.parquet"):
                if old != path and old.name[len(self.name) + 1 :].count("-") == 0:
                    old.unlink(missing_ok=True)
            table.to_parquet(path)
        return table


def table_cache_dir() -> Path:
    """``cache_dir()/tables``: where imported tables are cached (created on demand)."""
    path = cache_dir() / "tables"
    path.mkdir(parents=True, exist_ok=True)
    return path


def fingerprint(
    files: Sequence[Path], *, root: Path | None = None, salt: str = "", extra: Sequence[Path] = ()
) -> str:
    """A short hash of file names, sizes and modification times (not contents: that would be slow).

    Args:
        files: Input files; their path relative to ``root`` (or their name) is part of the key.
        root: Folder the relative paths are taken from.
        salt: Anything else that must change the key (source name, importer version).
        extra: Further files (the price table) keyed by absolute path; a missing one counts as absent.
    """
    h = hashlib.sha256(salt.encode())
    for f in files:
        st = f.stat()
        rel = Path(os.path.relpath(f, root)) if root is not None else Path(f.name)
        h.update(f"{rel.as_posix()}|{st.st_size}|{st.st_mtime_ns}\n".encode())
    for f in extra:
        st = f.stat() if f.is_file() else None
        h.update(f"{f}|{st.st_size if st else -1}|{st.st_mtime_ns if st else -1}\n".encode())
    return h.hexdigest()[:16]


#: The registry of public sources (filled by the importer modules of this package).
source_registry: Registry[Source] = Registry("source")
