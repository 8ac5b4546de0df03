"""Export loading refuses, up front and in one line, what would fail later (issue 13 item 7).

Each case edits an export the way an attacker or an accident would, *with router.json's checksum updated*, so
the checksum check passes and the later checks are what refuse it.
"""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import numpy as np
import pytest

from routers import make_router
from routers.export import ExportError, TamperedExportError, export_router, load_exported
from routers.export import _folder as F
from routers.export._arrays import inspect_arrays

sys.path.insert(0, str(Path(__file__).parent))
from export_helpers import PRICES, small_table  # noqa: E402
from release_fixtures import release_dir  # noqa: E402

RELEASE_0_1_0 = release_dir("0.1.0")


@pytest.fixture(scope="module")
def category_folder(tmp_path_factory):
    router = make_router("category").fit(small_table(8))
    return export_router(router, tmp_path_factory.mktemp("exp") / "category", lam=0.05, prices=PRICES)


@pytest.fixture()
def folder(category_folder, tmp_path):
    return Path(shutil.copytree(category_folder, tmp_path / "copy"))


def _manifest(folder: Path) -> dict:
    return json.loads((folder / F.MANIFEST).read_text())


def _write_manifest(folder: Path, manifest: dict) -> None:
    (folder / F.MANIFEST).write_text(json.dumps(manifest))


def _replace_arrays(folder: Path, data: bytes, *, declare: dict | None = None) -> None:
    """Put ``data`` as arrays.npz and update its checksum (and, if given, the arrays declaration)."""
    (folder / F.ARRAYS).write_bytes(data)
    manifest = _manifest(folder)
    manifest["files"][F.ARRAYS] = F.sha256_bytes(data)
    if declare is not None:
        manifest["arrays"] = declare
    _write_manifest(folder, manifest)


def _npz(arrays: dict[str, np.ndarray]) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def _arrays(folder: Path) -> dict[str, np.ndarray]:
    with np.load(folder / F.ARRAYS, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def _declaration(arrays: dict[str, np.ndarray]) -> dict:
    return {k: {"dtype": v.dtype.str, "shape": list(v.shape)} for k, v in arrays.items()}


def _one_line(exc: pytest.ExceptionInfo) -> str:
    msg = str(exc.value)
    assert "\n" not in msg and "Traceback" not in msg
    return msg


# ------------------------------------------------------------------------------------------------ arrays.npz
def _write_bomb(path: Path, name: str, n_bytes: int, others: dict[str, np.ndarray] | None = None) -> None:
    """A deflated .npy of ``n_bytes`` zeros (a few MB on disk, ``n_bytes`` once decompressed), beside ``others``."""
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        header, {"descr": "<f8", "fortran_order": False, "shape": (n_bytes // 8,)}
    )
    block = bytes(1 << 24)
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
        with zf.open(f"{name}.npy", "w", force_zip64=True) as fh:
            fh.write(header.getvalue())
            left = n_bytes
            while left > 0:
                fh.write(block[: min(left, len(block))])
                left -= len(block)
        for key, value in (others or {}).items():
            with zf.open(f"{key}.npy", "w") as fh:
                np.lib.format.write_array(fh, value, allow_pickle=False)


@pytest.mark.slow
def test_zip_bomb_with_checksum_updated_is_refused_with_bounded_rss(folder, tmp_path):
    bomb = tmp_path / "bomb.npz"
    others = {k: v for k, v in _arrays(folder).items() if k != "quality_table"}
    _write_bomb(bomb, "quality_table", 1 << 29, others)  # 512 MiB decompressed
    assert bomb.stat().st_size < 4 << 20
    _replace_arrays(folder, bomb.read_bytes())
    # In a fresh process, so its peak RSS is this load's alone.
    # Peak RSS from /proc (VmHWM starts afresh at exec; ru_maxrss would carry the forking pytest's peak over).
    code = textwrap.dedent(
        f"""
        import pathlib, re, resource
        from routers.export import TamperedExportError, load_exported
        try:
            load_exported({str(folder)!r})
        except TamperedExportError as exc:
            print("refused:", exc)
        status = pathlib.Path("/proc/self/status")
        hwm = re.search(r"VmHWM:\\s+(\\d+) kB", status.read_text()) if status.exists() else None
        kb = int(hwm.group(1)) if hwm else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        print("maxrss_mb", kb / 1024)
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=True)
    assert "refused:" in out.stdout and "'quality_table'" in out.stdout and "router.json declares" in out.stdout
    rss_mb = float(out.stdout.split("maxrss_mb")[1])
    assert rss_mb < 400, out.stdout  # importing RouteLab takes ~200 MB; decompressing would add 512 MiB


def test_zip_bomb_with_its_declaration_also_updated_is_refused_before_decompressing(folder, tmp_path):
    bomb = tmp_path / "bomb.npz"
    _write_bomb(bomb, "quality_table", 1 << 28, {k: v for k, v in _arrays(folder).items() if k != "quality_table"})
    n = (1 << 28) // 8
    declare = {**_manifest(folder)["arrays"], "quality_table": {"dtype": "<f8", "shape": [n]}}
    _replace_arrays(folder, bomb.read_bytes(), declare=declare)
    # The state (4 category rows x 3 models) says what shape it must have: refused from the .npy header alone.
    with pytest.raises(TamperedExportError, match=f"'quality_table' has shape \\({n},\\), expected \\(4, 3\\)") as e:
        load_exported(folder)
    _one_line(e)


def test_arrays_over_the_size_cap_are_refused_from_the_zip_directory(tmp_path):
    bomb = tmp_path / "bomb.npz"
    _write_bomb(bomb, "x", 1 << 26)
    with pytest.raises(TamperedExportError, match="MiB decompressed"):
        inspect_arrays(bomb, None, max_bytes=1 << 20)


def test_a_zip_size_that_disagrees_with_the_npy_header_is_refused(tmp_path):
    path = tmp_path / "arrays.npz"
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "<f8", "fortran_order": False, "shape": (1000,)})
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("x.npy", header.getvalue() + bytes(80))  # the header promises 8,000 bytes of data
    with pytest.raises(TamperedExportError, match="header says <f8 \\(1000,\\)"):
        inspect_arrays(path, None)


def test_shape_edit_is_refused_at_load(folder):
    arrays = _arrays(folder)
    arrays["quality_table"] = arrays["quality_table"][:, :2]  # one model column dropped
    # Checksum updated, declaration not: the declared shape refuses it.
    _replace_arrays(folder, _npz(arrays))
    with pytest.raises(TamperedExportError, match="'quality_table' is <f8 \\[4, 2\\], router.json declares") as e:
        load_exported(folder)
    _one_line(e)
    # Declaration updated too: the state's own shapes (3 models) refuse it.
    _replace_arrays(folder, _npz(arrays), declare=_declaration(arrays))
    with pytest.raises(TamperedExportError, match="'quality_table' has shape \\(4, 2\\), expected \\(4, 3\\)") as e:
        load_exported(folder)
    _one_line(e)


def test_missing_array_is_refused_at_load(folder):
    arrays = _arrays(folder)
    del arrays["quality_table"]
    _replace_arrays(folder, _npz(arrays))
    with pytest.raises(TamperedExportError, match="lacks the array\\(s\\) \\['quality_table'\\]"):
        load_exported(folder)
    _replace_arrays(folder, _npz(arrays), declare=_declaration(arrays))
    with pytest.raises(TamperedExportError, match="array 'quality_table' is missing") as e:
        load_exported(folder)
    _one_line(e)


def test_shape_edit_in_an_export_of_an_earlier_release_is_refused_at_load(tmp_path):
    # 0.1.0 exports declare no arrays and their runtime has no shape check: the probe decision at load refuses it.
    folder = Path(shutil.copytree(RELEASE_0_1_0 / "category", tmp_path / "old"))
    arrays = _arrays(folder)
    arrays["quality_table"] = arrays["quality_table"][:2]  # categories' rows dropped: fails on unknown ones
    _replace_arrays(folder, _npz(arrays))
    with pytest.raises(TamperedExportError, match="fails on a probe request at load") as e:
        load_exported(folder)
    _one_line(e)


def test_not_a_zip_is_reported_as_such(folder):
    _replace_arrays(folder, b"this is not a zip archive at all\n" * 10)
    with pytest.raises(TamperedExportError, match="is not a zip archive") as e:
        load_exported(folder)
    assert "pickle" not in _one_line(e)


def test_an_object_array_is_refused_without_unpickling(folder):
    buf = io.BytesIO()
    np.savez(buf, quality_table=np.array([{}], dtype=object), allow_pickle=True)
    _replace_arrays(folder, buf.getvalue())
    with pytest.raises(TamperedExportError, match="pickled object array"):
        load_exported(folder)


# ------------------------------------------------------------------------------------------------ router.json
@pytest.mark.parametrize(
    ("edit", "field"),
    [
        (lambda m: m.update(files=list(m["files"])), "'files' must be an object"),
        (lambda m: m["operating_point"].update(lam="x"), "'operating_point.lam' must be a finite number"),
        (lambda m: m["operating_point"].update(lam=-1), "'operating_point.lam' must be a finite number"),
        (lambda m: m.update(models="cheap"), "'models' must be a non-empty list"),
        (lambda m: m.update(state=[]), "'state' must be an object"),
        (lambda m: m["prices"]["big"].update(input_per_1m="cheap"), "'prices.big.input_per_1m'"),
        (lambda m: m.update(arrays={"quality_table": {"dtype": "<f8", "shape": "4x3"}}), "'arrays.quality_table"),
        (lambda m: m.update(arrays={"quality_table": {"dtype": "|O", "shape": [4, 3]}}), "'arrays.quality_table"),
        (lambda m: m.update(measurement={"quality_ci95": "wide"}), "'measurement'"),
        (lambda m: m.update(adaptive="yes"), "'adaptive' must be true or false"),
    ],
    ids=["files-as-list", "lam-string", "lam-negative", "models-string", "state-list", "price-string",
         "shape-string", "dtype-object", "measurement-interval", "adaptive-string"],
)
def test_malformed_router_json_field_is_one_line_naming_it(folder, edit, field):
    manifest = _manifest(folder)
    edit(manifest)
    _write_manifest(folder, manifest)
    with pytest.raises(ExportError, match=field.replace("(", "\\(").replace("[", "\\[")) as e:
        load_exported(folder)
    _one_line(e)


def test_an_intact_export_still_loads_and_decides(category_folder):
    exported = load_exported(category_folder)
    assert exported.route(["x", "y", "z"], categories=["easy", "medium", "hard"]) == ["cheap", "mid", "big"]
