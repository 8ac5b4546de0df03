"""The runtimes RouteLab releases have shipped in export folders, by sha256 of ``runtime.py``.

An export folder runs its own ``runtime.py`` (see :mod:`routers.export._folder`). RouteLab trusts it when its
bytes are the installed ``routers/runtime.py`` *or* one listed here, so changing the runtime does not make every
earlier export "foreign". Every runtime that ships must be listed: ``tests/routers/test_export_releases.py``
fails while the installed ``routers/runtime.py`` is missing from this table, and loads the folders each release
wrote (``tests/routers/fixtures/exports-<version>/``) to prove they still decide as recorded.

When ``routers/runtime.py`` changes: add its sha256 (``sha256sum routers/runtime.py``) with the version that
will ship it; when a version is released, freeze its folders with
``tests/routers/fixtures/make_release_exports.py`` (before the next runtime change).
"""

from __future__ import annotations

__all__ = ["RELEASED_RUNTIMES"]

#: sha256 of a shipped ``runtime.py`` -> the RouteLab version (and change) that shipped it.
RELEASED_RUNTIMES: dict[str, str] = {
    "89f10a24bde5638f6927fc2292e410a744fe64de305759fd5e06df47100fc5e4": "0.1.0",
    # issue 12: the kind table, one decision rule, check_state_arrays (ships with the next release)
    "bd024a6806a4891557fd56f3a2eaa225e65e9b1c18e6ff8d215eef0b11259582": "0.1.0+kind-table",
    # issue 17: text selection (state "text_selection") applied by the runtime, the provider kind
    # (ships with the next release; replace this hash with the final runtime.py's before releasing)
    "cefa9dc80e9f214e1893c932e3d1ed5925d5ececf44938ba934850e3498668ef": "0.1.0+text-selection",
}
