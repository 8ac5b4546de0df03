"""datasets/sources.toml: one entry per registered source, and its checksums match the mirror's files."""

from __future__ import annotations

import hashlib
import os
import tomllib

import pytest

from evals import sources
from evals.paths import repo_datasets_dir


@pytest.fixture(scope="module")
def manifest():
    with open(repo_datasets_dir() / "sources.toml", "rb") as fh:
        return tomllib.load(fh)["sources"]


def test_every_source_is_described(manifest):
    assert sorted(manifest) == [name for name, _ in sources.list_sources()]
    for name, entry in manifest.items():
        assert entry["origin"].startswith("https://github.com/"), name
        assert len(entry["commit"].split()[0]) == 40, name
        assert entry["license"] and entry["folder"] == sources.get_source(name).folder
        assert entry["importer"].startswith("evals.sources.")


def test_checksums_cover_and_match_the_files_each_importer_reads(manifest, shared_data):
    for name, entry in manifest.items():
        src = sources.get_source(name)
        folder = shared_data / src.folder
        read = {os.path.relpath(f, folder) for f in src.input_files(folder)}
        assert read == set(entry["files"]), name
        for rel, digest in entry["files"].items():
            assert hashlib.sha256((folder / rel).read_bytes()).hexdigest() == digest, f"{name}: {rel} changed"
