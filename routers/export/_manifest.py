"""Field-by-field checks of an export's ``router.json``: every malformed field is one line naming it.

:func:`check_manifest` runs before any checksum, array or code of the folder is read, so a ``files`` given as
a list, ``"lam": "x"`` or a shape that is not a list of sizes is refused up front (never a traceback later,
never a 500 per request).
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import numpy as np

from routers.export import _folder as F
from routers.export._folder import ExportError, TamperedExportError
from routers.export.measurement import Measurement

__all__ = ["check_manifest", "check_text_selections", "declared_arrays", "text_selection_modes"]

_SHA256 = re.compile(r"[0-9a-f]{64}")


def _fail(mpath: Path, field: str, expected: str, got: Any) -> TamperedExportError:
    shown = repr(got)
    if len(shown) > 80:
        shown = shown[:77] + "..."
    return TamperedExportError(f"{mpath}: field {field!r} must be {expected}, got {shown}; re-export the router")


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def check_manifest(manifest: Any, mpath: Path) -> dict[str, Any]:
    """Check the fields of a parsed ``router.json`` that loading and serving read; return it.

    Raises:
        ExportError: when it is not a RouteLab manifest of a supported schema.
        TamperedExportError: for a missing or malformed field (the message names it and what it must be).
    """
    if not isinstance(manifest, dict) or manifest.get("format") != F.FORMAT:
        raise ExportError(
            f"{mpath} is not a RouteLab export manifest (format {manifest.get('format')!r})"
            if isinstance(manifest, dict)
            else f"{mpath} is not a RouteLab export manifest"
        )
    version = manifest.get("schema_version")
    if version != F.SCHEMA_VERSION:
        raise ExportError(
            f"{mpath}: schema_version {version!r} is not supported by this RouteLab "
            f"(it reads {F.SCHEMA_VERSION}); re-export with this version"
        )
    for key in ("models", "operating_point", "state", "files", "prices"):
        if key not in manifest:
            raise TamperedExportError(f"{mpath} lacks the key {key!r}")
    models = manifest["models"]
    if (
        not isinstance(models, list)
        or not models
        or not all(isinstance(m, str) and m for m in models)
        or len(set(models)) != len(models)
    ):
        raise _fail(mpath, "models", "a non-empty list of distinct model names", models)
    point = manifest["operating_point"]
    if not isinstance(point, dict):
        raise _fail(mpath, "operating_point", "an object with 'lam'", point)
    lam = point.get("lam")
    if not _is_number(lam) or lam < 0:
        raise _fail(mpath, "operating_point.lam", "a finite number >= 0", lam)
    state = manifest["state"]
    if not isinstance(state, dict):
        raise _fail(mpath, "state", "an object (the router's state metadata)", state)
    if not isinstance(state.get("kind"), str):
        raise _fail(mpath, "state.kind", "a string", state.get("kind"))
    if state.get("models") is not None and state.get("models") != models:
        raise TamperedExportError(f"{mpath}: 'models' and 'state.models' disagree; re-export the router")
    check_text_selections(state, mpath)
    files = manifest["files"]
    if not isinstance(files, dict):
        raise _fail(mpath, "files", "an object {file name: sha256}", files)
    for name, digest in files.items():
        if not isinstance(digest, str) or not _SHA256.fullmatch(digest):
            raise _fail(mpath, f"files.{name}", "a sha256 (64 lowercase hex digits)", digest)
    prices = manifest["prices"]
    if not isinstance(prices, dict):
        raise _fail(mpath, "prices", "an object {model: price row}", prices)
    for m in models:
        row = prices.get(m)
        if not isinstance(row, dict):
            raise _fail(mpath, f"prices.{m}", "an object (provider and prices)", row)
        for k in ("input_per_1m", "output_per_1m", "request_fee", "mean_cost_per_request"):
            if row.get(k) is not None and (not _is_number(row[k]) or row[k] < 0):
                raise _fail(mpath, f"prices.{m}.{k}", "a finite number >= 0 or null", row[k])
        if row.get("provider") is not None and not isinstance(row["provider"], str):
            raise _fail(mpath, f"prices.{m}.provider", "a string", row["provider"])
    for key, kind in (("encoder", str), ("router", dict), ("dataset_card", dict), ("requirements", list)):
        if manifest.get(key) is not None and not isinstance(manifest[key], kind):
            raise _fail(mpath, key, f"{'a string' if kind is str else 'an object' if kind is dict else 'a list'}"
                        " or null", manifest[key])
    if "adaptive" in manifest and not isinstance(manifest["adaptive"], bool):
        raise _fail(mpath, "adaptive", "true or false", manifest["adaptive"])
    if manifest.get("measurement") is not None:
        try:
            Measurement.from_dict(manifest["measurement"])
        except ValueError as exc:
            raise TamperedExportError(f"{mpath}: field 'measurement': {exc}") from None
    F.bundled_encoder(manifest)  # raises for a malformed declaration
    declared_arrays(manifest, mpath)
    return manifest


def _states(state: dict[str, Any], field: str = "state") -> list[tuple[str, dict[str, Any]]]:
    """``(field name, state)`` of a state and, for a blend, each of its parts (recursively)."""
    out = [(field, state)]
    parts = state.get("parts")
    for i, part in enumerate(parts if isinstance(parts, list) else []):
        if isinstance(part, dict):
            out += _states(part, f"{field}.parts[{i}]")
    return out


def check_text_selections(state: dict[str, Any], mpath: Path) -> None:
    """Check the ``text_selection`` rule of a state and of each blend part that has one.

    The field is optional (an export of a router with ``text = "full"``, and every export written before text
    selection existed, has none), so the manifest's ``schema_version`` stays 1; the rule carries its own
    ``format``, which the runtime checks too (:func:`routers.runtime.check_text_selection`, the one home of the
    rule's fields).

    Raises:
        TamperedExportError: naming the malformed field (``state.text_selection.mode``, ...).
    """
    from routers.runtime import check_text_selection

    for field, sub in _states(state):
        if sub.get("text_selection") is None:
            continue
        try:
            check_text_selection(sub["text_selection"], f"{field}.text_selection")
        except ValueError as exc:
            raise TamperedExportError(f"{mpath}: field {exc}; re-export the router") from None


def text_selection_modes(state: dict[str, Any]) -> list[str]:
    """The text rules (``mode``) a checked state applies, once each in order of appearance (empty: none)."""
    modes: list[str] = []
    for _, sub in _states(state):
        rule = sub.get("text_selection")
        if isinstance(rule, dict) and rule.get("mode") not in modes:
            modes.append(str(rule.get("mode")))
    return modes


def declared_arrays(manifest: dict[str, Any], mpath: Path) -> dict[str, tuple[np.dtype, tuple[int, ...]]] | None:
    """The ``arrays`` declaration of ``router.json`` as ``{name: (dtype, shape)}``; None for an export written
    before arrays were declared.

    Raises:
        TamperedExportError: for a malformed declaration (names the array and field).
    """
    decl = manifest.get("arrays")
    if decl is None:
        return None
    if not isinstance(decl, dict):
        raise _fail(mpath, "arrays", "an object {array name: {dtype, shape}}", decl)
    out: dict[str, tuple[np.dtype, tuple[int, ...]]] = {}
    for name, spec in decl.items():
        if not isinstance(spec, dict):
            raise _fail(mpath, f"arrays.{name}", "an object {dtype, shape}", spec)
        shape = spec.get("shape")
        if not isinstance(shape, list) or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0
                                                  for s in shape):
            raise _fail(mpath, f"arrays.{name}.shape", "a list of sizes >= 0", shape)
        try:
            dtype = np.dtype(spec.get("dtype"))
        except (TypeError, ValueError):
            raise _fail(
                mpath, f"arrays.{name}.dtype", "a numpy dtype string such as '<f8'", spec.get("dtype")
            ) from None
        if dtype.hasobject or not isinstance(spec.get("dtype"), str):
            raise _fail(mpath, f"arrays.{name}.dtype", "a numeric, bool or string dtype", spec.get("dtype"))
        out[str(name)] = (dtype, tuple(shape))
    return out
