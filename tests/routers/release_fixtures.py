"""Export folders written by earlier RouteLab releases, for the "earlier exports keep loading" tests.

Each release is one tarball, ``fixtures/exports-<version>.tar.gz`` (written by ``fixtures/make_release_exports.py``),
so the repository holds no loose copies of old ``runtime.py`` files. A test asks for :func:`release_dir`, which
extracts the tarball once per test session into a temporary folder (removed at exit); tests may alter what they
get there without touching the fixture.
"""

from __future__ import annotations

import atexit
import functools
import shutil
import tarfile
import tempfile
from pathlib import Path

FIXTURES = Path(__file__).parent / "fixtures"
_PREFIX, _SUFFIX = "exports-", ".tar.gz"


def released_versions() -> list[str]:
    """The releases with a fixture tarball, oldest first by name (``["0.1.0", ...]``)."""
    return sorted(p.name[len(_PREFIX) : -len(_SUFFIX)] for p in FIXTURES.glob(f"{_PREFIX}*{_SUFFIX}"))


@functools.cache
def release_dir(version: str) -> Path:
    """The extracted ``exports-<version>/`` folder: one export folder per router kind and ``expected.json``."""
    root = Path(tempfile.mkdtemp(prefix=f"routelab-{_PREFIX}{version}-"))
    atexit.register(shutil.rmtree, root, ignore_errors=True)
    with tarfile.open(FIXTURES / f"{_PREFIX}{version}{_SUFFIX}") as tar:
        tar.extractall(root, filter="data")  # "data": no absolute paths, links out of root or device files
    return root / f"{_PREFIX}{version}"
