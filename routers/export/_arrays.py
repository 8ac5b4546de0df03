"""Read an export's ``arrays.npz`` safely: sizes, dtypes and shapes checked before anything is decompressed.

An ``.npz`` is a zip archive of ``.npy`` files. :func:`inspect_arrays` reads only the zip's directory and the
first bytes of each member (the ``.npy`` header: dtype and shape) through a bounded stream, and checks them
against the ``arrays`` declaration of ``router.json`` and against a total size cap, so a zip bomb (a few MB
that inflate to GBs, checksum updated) or an edited shape is refused before memory is spent on it.
:func:`read_arrays` then reads the members with ``allow_pickle=False``.
"""

from __future__ import annotations

import math
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
from numpy.lib import format as npy_format

from routers.export._folder import TamperedExportError

__all__ = ["MAX_ARRAYS_BYTES", "inspect_arrays", "read_arrays"]

#: Cap on the decompressed size of all arrays of an export (a full-size kNN state is tens of MB).
MAX_ARRAYS_BYTES = 2 << 30
_MAX_HEADER_BYTES = 1 << 16  # .npy headers are a few hundred bytes; numpy itself refuses > 10,000 by default


def _header(zf: zipfile.ZipFile, info: zipfile.ZipInfo, path: Path) -> tuple[np.dtype, tuple[int, ...], int]:
    """(dtype, shape, header length) of one ``.npy`` member, reading at most its header's bytes."""
    with zf.open(info) as fh:
        try:
            version = npy_format.read_magic(fh)
            if version == (1, 0):
                shape, _, dtype = npy_format.read_array_header_1_0(fh, max_header_size=_MAX_HEADER_BYTES)
            elif version in ((2, 0), (3, 0)):
                shape, _, dtype = npy_format.read_array_header_2_0(fh, max_header_size=_MAX_HEADER_BYTES)
            else:  # pragma: no cover - read_magic accepts only the versions above today
                raise ValueError(f"unsupported .npy version {version}")
            offset = fh.tell()
        except (ValueError, EOFError, zipfile.BadZipFile, OSError) as exc:
            raise TamperedExportError(
                f"{path}: member {info.filename!r} is not a readable .npy array ({exc})"
            ) from None
    return np.dtype(dtype), tuple(int(s) for s in shape), offset


def inspect_arrays(
    path: Path,
    declared: dict[str, tuple[np.dtype, tuple[int, ...]]] | None,
    *,
    max_bytes: int = MAX_ARRAYS_BYTES,
) -> dict[str, tuple[np.dtype, tuple[int, ...]]]:
    """Check ``arrays.npz`` from its zip directory and ``.npy`` headers alone; return ``{name: (dtype, shape)}``.

    Args:
        path: The ``arrays.npz`` file.
        declared: ``router.json``'s ``arrays`` (:func:`routers.export._manifest.declared_arrays`); None for an
            export written before arrays were declared (then the headers and the size cap are checked).
        max_bytes: Cap on the total decompressed size.

    Raises:
        TamperedExportError: for a file that is not a zip archive, a member that is not a plain ``.npy`` array
            (an object array would need pickle), a member whose declared zip size disagrees with its header,
            an array missing from or not declared in ``router.json``, a dtype or shape other than declared, or
            arrays larger than ``max_bytes`` in all.
    """
    if not zipfile.is_zipfile(path):
        raise TamperedExportError(f"{path} is not a zip archive (an .npz file); re-export the router")
    found: dict[str, tuple[np.dtype, tuple[int, ...]]] = {}
    total = 0
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise TamperedExportError(f"{path} is not a readable zip archive ({exc})") from None
    with zf:
        for info in zf.infolist():
            name = info.filename
            if not name.endswith(".npy") or "/" in name or info.is_dir():
                raise TamperedExportError(f"{path}: member {name!r} is not a .npy array of an export")
            key = name[: -len(".npy")]
            if key in found:
                raise TamperedExportError(f"{path}: array {key!r} appears twice")
            total += info.file_size  # the size the zip directory declares, before decompressing anything
            if total > max_bytes:
                raise TamperedExportError(
                    f"{path}: its arrays would take more than {max_bytes / 2**20:.0f} MiB decompressed "
                    f"(array {key!r} declares {info.file_size} bytes); refusing to load it"
                )
            dtype, shape, offset = _header(zf, info, path)
            if dtype.hasobject:
                raise TamperedExportError(
                    f"{path}: array {key!r} holds a pickled object array (dtype object); refusing to load it"
                )
            nbytes = math.prod(shape) * dtype.itemsize
            if info.file_size != offset + nbytes:
                raise TamperedExportError(
                    f"{path}: array {key!r} declares {info.file_size} bytes in the zip directory but its header "
                    f"says {dtype.str} {shape} ({offset + nbytes} bytes); refusing to load it"
                )
            if declared is not None:
                if key not in declared:
                    raise TamperedExportError(f"{path}: array {key!r} is not declared in router.json 'arrays'")
                want_dtype, want_shape = declared[key]
                if dtype != want_dtype or shape != want_shape:
                    raise TamperedExportError(
                        f"{path}: array {key!r} is {dtype.str} {list(shape)}, router.json declares "
                        f"{want_dtype.str} {list(want_shape)}; refusing to load it"
                    )
            found[key] = (dtype, shape)
    if declared is not None:
        missing = sorted(set(declared) - set(found))
        if missing:
            raise TamperedExportError(f"{path} lacks the array(s) {missing} that router.json declares")
    return found


def read_arrays(path: Path) -> dict[str, np.ndarray]:
    """Read ``arrays.npz`` with ``allow_pickle=False`` (call :func:`inspect_arrays` first: it bounds the size).

    Raises:
        TamperedExportError: for a file that is not a zip archive, an object array, or a damaged member.
    """
    if not zipfile.is_zipfile(path):
        raise TamperedExportError(f"{path} is not a zip archive (an .npz file); re-export the router")
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except ValueError as exc:
        raise TamperedExportError(f"{path} holds a pickled object array; refusing to load it ({exc})") from None
    except (OSError, EOFError, zipfile.BadZipFile) as exc:
        raise TamperedExportError(f"{path} is not a readable .npz file ({exc})") from None


def shapes_of(arrays: dict[str, Any]) -> dict[str, tuple[int, ...]]:
    """``{name: shape}`` of loaded arrays."""
    return {k: tuple(np.shape(v)) for k, v in arrays.items()}
