"""Where data lives: the public-data folder, the repo's own ``datasets/`` folder, and the user cache.

The public-data folder is resolved in this order (DESIGN.md):

1. an explicit ``data_dir`` argument (the CLI's ``--data-dir``);
2. the ``ROUTELAB_DATA_DIR`` environment variable;
3. ``../shared/data`` beside the checkout (the team's mirror of the public sources);
4. the user cache (``$ROUTELAB_CACHE_DIR/data``, default ``~/.cache/routelab/data``), filled from the origin.
"""

from __future__ import annotations

import os
from pathlib import Path

from evals.exceptions import DataNotFoundError

__all__ = ["cache_dir", "data_dir", "repo_root", "repo_datasets_dir", "source_dir"]


def repo_root() -> Path:
    """The checkout this package was installed from (an editable install)."""
    return Path(__file__).resolve().parent.parent


def repo_datasets_dir() -> Path:
    """The repo's ``datasets/`` folder: manifests, the price table, small fixtures."""
    return repo_root() / "datasets"


def cache_dir() -> Path:
    """RouteLab's user cache (embeddings, imported tables, collection cache); created on demand."""
    root = os.environ.get("ROUTELAB_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "routelab"
    )
    path = Path(root)
    path.mkdir(parents=True, exist_ok=True)
    return path


def data_dir(explicit: str | os.PathLike[str] | None = None) -> Path:
    """Resolve the public-data folder.

    Args:
        explicit: A folder given on the command line; wins over everything else.

    Returns:
        The first existing folder in the resolution order of this module's docstring.

    Raises:
        DataNotFoundError: if an explicitly named folder (argument or environment) does not exist, or no
            candidate exists at all.
    """
    if explicit is not None:
        path = Path(explicit).expanduser()
        if not path.is_dir():
            raise DataNotFoundError(f"data folder {str(path)!r} (from --data-dir) does not exist")
        return path
    env = os.environ.get("ROUTELAB_DATA_DIR")
    if env:
        path = Path(env).expanduser()
        if not path.is_dir():
            raise DataNotFoundError(f"data folder {str(path)!r} (from ROUTELAB_DATA_DIR) does not exist")
        return path
    mirror = repo_root().parent / "shared" / "data"
    if mirror.is_dir():
        return mirror
    cached = cache_dir() / "data"
    if cached.is_dir():
        return cached
    raise DataNotFoundError(
        "no data folder found: pass --data-dir, set ROUTELAB_DATA_DIR, or place the public-data mirror at "
        f"{str(mirror)!r}"
    )


def source_dir(name: str, explicit: str | os.PathLike[str] | None = None) -> Path:
    """The folder of one public source (e.g. ``mmlu-pro-outputs``) inside the data folder.

    Raises:
        DataNotFoundError: naming the folder that was expected.
    """
    root = data_dir(explicit)
    path = root / name
    if not path.is_dir():
        raise DataNotFoundError(f"source folder {str(path)!r} does not exist in the data folder {str(root)!r}")
    return path
