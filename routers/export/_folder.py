"""The layout of an export folder, its checksums, and the one safe way to run its runtime module.

An export folder holds exactly these files (anything else makes :func:`verify_folder` refuse it):

===================  =========  ==========================================================================
file                 checked    what it is
===================  =========  ==========================================================================
``router.json``      manifest   spec, operating point, models, prices, card, encoder, sha256 of the others
``arrays.npz``       sha256     the fitted arrays (numpy ``.npz``, read with ``allow_pickle=False``)
``runtime.py``       sha256     a verbatim copy of ``routers/runtime.py``: the only code ever executed
``mlflow_model.py``  sha256     the MLflow "model from code" file (run by MLflow only, never by RouteLab)
``encoder.npz``      sha256     only with a bundled encoder: the ``minilm-static`` token vectors (``.npz``,
                                ``allow_pickle=False``)
``tokenizer.json``   sha256     only with a bundled encoder: its tokenizer (data, parsed by ``tokenizers``)
``upstreams.toml``   editable   where each model is served: the service owner edits it (data, parsed as TOML)
``README.md``        editable   for the service owner
===================  =========  ==========================================================================

A router on the ``minilm-static`` encoder bundles that encoder as data (``router.json`` declares it under
``bundled_encoder``, with ``max_tokens``), so the folder embeds prompts with numpy and the ``tokenizers``
package alone: no RouteLab, torch or sentence-transformers. The two encoder files are allowed only when the
manifest declares the bundled encoder (see :func:`checked_files`); without the declaration they are unexpected
files like any other.

Trust decision (documented in the README of every export): checksums recorded in ``router.json`` detect
accidental damage, but anyone who can edit the folder can also edit ``router.json``. So RouteLab executes the
folder's ``runtime.py`` only when it is *byte-identical to a runtime RouteLab shipped*: the installed
``routers/runtime.py``, or one of the released runtimes listed by sha256 in
:mod:`routers.export.released_runtimes` (so an export written by an earlier release keeps loading, with the
runtime it was measured with). Any other runtime is refused unless the caller passes
``trust_foreign_runtime=True`` after reviewing it. The verified bytes themselves are compiled and executed (no
second read, no ``__pycache__`` written or read), so the code that runs is the code that was checked.
"""

from __future__ import annotations

import hashlib
import importlib.util
import sys
import types
from pathlib import Path
from typing import Any

from evals.exceptions import WorkbenchError
from routers.runtime import STATIC_TOKENIZER_FILE, STATIC_VECTORS_FILE, sha256_file

__all__ = [
    "ARRAYS",
    "BUNDLED_ENCODERS",
    "BUNDLED_ENCODER_FILES",
    "CHECKED_FILES",
    "EDITABLE_FILES",
    "ENCODER_TOKENIZER",
    "ENCODER_VECTORS",
    "ExportError",
    "MANIFEST",
    "PYFUNC_CODE",
    "README",
    "RUNTIME",
    "SCHEMA_VERSION",
    "TamperedExportError",
    "UPSTREAMS",
    "bundled_encoder",
    "checked_files",
    "exec_runtime",
    "installed_runtime_source",
    "released_runtime_version",
    "sha256_bytes",
    "sha256_file",
]

SCHEMA_VERSION = 1
FORMAT = "routelab-export"
MANIFEST = "router.json"
ARRAYS = "arrays.npz"
RUNTIME = "runtime.py"
PYFUNC_CODE = "mlflow_model.py"
UPSTREAMS = "upstreams.toml"
README = "README.md"
#: Files whose sha256 is recorded in the manifest and must match on load.
CHECKED_FILES = (ARRAYS, RUNTIME, PYFUNC_CODE)
#: Files the service owner may edit after export (data only; never executed).
EDITABLE_FILES = (UPSTREAMS, README)
#: A bundled static encoder's token vectors and tokenizer (checked files, present only when declared).
ENCODER_VECTORS = STATIC_VECTORS_FILE
ENCODER_TOKENIZER = STATIC_TOKENIZER_FILE
BUNDLED_ENCODER_FILES = (ENCODER_VECTORS, ENCODER_TOKENIZER)
#: Encoders an export bundles as data (so the folder needs no RouteLab and no model to embed prompts).
BUNDLED_ENCODERS = ("minilm-static",)


class ExportError(WorkbenchError):
    """A router that cannot be exported, or an export folder that cannot be used."""


class TamperedExportError(ExportError):
    """An export folder whose content differs from what was exported (changed, added or missing files)."""


def sha256_bytes(data: bytes) -> str:
    """Hex sha256 of bytes."""
    return hashlib.sha256(data).hexdigest()


def bundled_encoder(manifest: dict[str, Any]) -> dict[str, Any] | None:
    """The manifest's ``bundled_encoder`` declaration, checked; None when the export bundles no encoder.

    Raises:
        TamperedExportError: for a declaration RouteLab does not write (another encoder, kind or file name).
    """
    decl = manifest.get("bundled_encoder")
    if decl is None:
        return None
    max_tokens = decl.get("max_tokens") if isinstance(decl, dict) else None
    if (
        not isinstance(decl, dict)
        or decl.get("kind") != "static"
        or decl.get("name") not in BUNDLED_ENCODERS
        or decl.get("vectors") != ENCODER_VECTORS
        or decl.get("tokenizer") != ENCODER_TOKENIZER
        or not isinstance(max_tokens, int)
        or isinstance(max_tokens, bool)
        or max_tokens < 1
    ):
        raise TamperedExportError(
            f"{MANIFEST} declares a bundled encoder RouteLab does not write ({str(decl)[:200]}); "
            "re-export the router"
        )
    return decl


def checked_files(manifest: dict[str, Any]) -> tuple[str, ...]:
    """The files whose sha256 ``manifest`` must record and match: :data:`CHECKED_FILES`, plus the bundled
    encoder's :data:`BUNDLED_ENCODER_FILES` when it declares one (see :func:`bundled_encoder`)."""
    return CHECKED_FILES + (BUNDLED_ENCODER_FILES if bundled_encoder(manifest) else ())


def installed_runtime_source() -> bytes:
    """The bytes of ``routers/runtime.py`` of this RouteLab installation (what an export ships)."""
    spec = importlib.util.find_spec("routers.runtime")
    if spec is None or spec.origin is None:  # pragma: no cover - a broken installation
        raise ExportError("routers.runtime is not installed; cannot export or verify a runtime")
    return Path(spec.origin).read_bytes()


def released_runtime_version(source: bytes) -> str | None:
    """Which RouteLab shipped this runtime source: ``"installed"`` for the installed ``routers/runtime.py``,
    the version recorded in :data:`~routers.export.released_runtimes.RELEASED_RUNTIMES` for an earlier one,
    None for a runtime RouteLab never shipped (a foreign one)."""
    from routers.export.released_runtimes import RELEASED_RUNTIMES

    if source == installed_runtime_source():
        return "installed"
    return RELEASED_RUNTIMES.get(sha256_bytes(source))


def exec_runtime(source: bytes, origin: Path) -> types.ModuleType:
    """Execute already-verified runtime source as a fresh module (never imported from the folder by name).

    The module is registered in ``sys.modules`` under a name derived from its hash (dataclasses and
    ``typing`` look modules up there), so two exports with the same runtime share one module object.
    """
    name = f"routelab_export_runtime_{sha256_bytes(source)[:16]}"
    existing = sys.modules.get(name)
    if existing is not None:
        return existing
    spec = importlib.util.spec_from_loader(name, loader=None, origin=str(origin))
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    module.__file__ = str(origin)
    sys.modules[name] = module
    try:
        exec(compile(source, str(origin), "exec"), module.__dict__)  # noqa: S102 - verified bytes only
    except BaseException:
        sys.modules.pop(name, None)
        raise
    return module
