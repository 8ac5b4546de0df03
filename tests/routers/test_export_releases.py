"""Exports written by earlier releases keep loading and deciding as they did (issue 12: released runtimes).

``tests/routers/fixtures/exports-<version>.tar.gz`` holds folders written by that release (see
``make_release_exports.py`` there) and the decisions they made when written (``expected.json``); tests read
them extracted by ``release_fixtures.release_dir``.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest

from routers.export import TamperedExportError, load_exported
from routers.export import _folder as F
from routers.export.released_runtimes import RELEASED_RUNTIMES

sys.path.insert(0, str(Path(__file__).parent))
from release_fixtures import release_dir, released_versions  # noqa: E402

RELEASES = [release_dir(v) for v in released_versions()]
FOLDERS = [(rel, name) for rel in RELEASES for name in sorted(json.loads((rel / "expected.json").read_text()))
           if (rel / name).is_dir()]


def test_there_is_a_release_fixture_for_every_folder_kind():
    assert RELEASES and {name for _, name in FOLDERS} >= {"category", "rules", "classifier"}


def test_the_installed_runtime_is_listed_as_released():
    # A runtime.py change must add its sha256 to routers/export/released_runtimes.py, so the exports it writes
    # keep loading after the next change.
    assert F.sha256_bytes(F.installed_runtime_source()) in RELEASED_RUNTIMES


@pytest.mark.parametrize(("release", "name"), FOLDERS, ids=[f"{r.name}/{n}" for r, n in FOLDERS])
def test_an_export_of_an_earlier_release_loads_and_decides_as_recorded(release, name):
    expected = json.loads((release / "expected.json").read_text())
    prompts, cats = expected["prompts"], [c or "" for c in expected["categories"]]
    runtime_sha = F.sha256_file(release / name / F.RUNTIME)
    assert runtime_sha in RELEASED_RUNTIMES  # its runtime is a released one (maybe not the installed one)

    exported = load_exported(release / name)  # no trust_foreign_runtime needed

    want = expected[name]
    assert exported.route(prompts, categories=cats) == want["at_exported_point"]
    assert exported.route(prompts) == want["without_categories"]
    for lam, models in want["by_lam"].items():
        assert exported.route(prompts, lam=float(lam), categories=cats) == models, lam
    # It runs the runtime it was written with, not the installed one.
    assert exported.runtime.__name__ == f"routelab_export_runtime_{runtime_sha[:16]}"


def test_a_runtime_that_no_release_shipped_is_still_refused(tmp_path):
    release, name = FOLDERS[0]
    folder = shutil.copytree(release / name, tmp_path / name)
    src = (folder / F.RUNTIME).read_bytes() + b"\n# edited\n"
    (folder / F.RUNTIME).write_bytes(src)
    manifest = json.loads((folder / F.MANIFEST).read_text())
    manifest["files"][F.RUNTIME] = F.sha256_bytes(src)
    (folder / F.MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(TamperedExportError, match="differs from the runtime shipped"):
        load_exported(folder)
