"""Static token embeddings distilled locally from all-MiniLM-L6-v2: sub-millisecond prompt encoding.

The idea is model2vec's (Tulkens & van Dongen, *Model2Vec: distill a small fast model from any sentence
transformer*, MinishLab 2024): run every vocabulary token through the sentence transformer once, as the
one-token sentence ``[CLS] token [SEP]`` with the model's own mean pooling, and keep the output vector. A text
is then embedded as the normalised mean of its word pieces' vectors: one tokenizer call (the Rust
``tokenizers`` library) and a gather, with no neural network at run time.

Post-processing, as in model2vec: the token vectors are centred and rotated onto their principal axes (PCA,
which removes the direction every one-token sentence shares), and each token is weighted by
``sif_a / (sif_a + p(token))`` (smooth inverse frequency, Arora et al. 2017) where ``p`` follows Zipf's law
over the tokenizer's vocabulary order, so frequent pieces ("the", "##s") count less than rare ones.

The distilled table is cached in ``evals.paths.cache_dir() / "encoders"`` as one ``.npz`` named after the
model and the distillation settings; it is built on first use (about half a minute on two CPU cores) and
written atomically, so concurrent first uses at worst distil twice.

The encoding arithmetic is :func:`routers.runtime.static_embed` (numpy only): an exported router on this
encoder bundles the table and ``tokenizer.json`` as data and runs that same function, so the export embeds
prompts bit for bit as the workbench did, with numpy and ``tokenizers`` alone (see ``routers.export``).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
import uuid
import warnings
import zipfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from evals.exceptions import DataNotFoundError
from evals.paths import cache_dir
from routers.embeddings import Encoder, report_progress
from routers.runtime import StaticTokenIds, static_embed, static_tokenizer

__all__ = ["DISTILL_VERSION", "StaticEncoder", "distill"]

#: Bump when :func:`distill`'s output for the same settings changes (invalidates cached tables).
DISTILL_VERSION = 1

_SPECIAL = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")


def _tokenizer(model_dir: Path, max_tokens: int):
    """The model's tokenizer as the static encoder uses it (:func:`routers.runtime.static_tokenizer`)."""
    return static_tokenizer(Path(model_dir) / "tokenizer.json", max_tokens)


def _model_fingerprint(model_dir: Path) -> str:
    """A short hash of the model's identity: its config, tokenizer, and weight file size."""
    h = hashlib.sha256()
    for name in ("config.json", "tokenizer.json", "modules.json"):
        p = model_dir / name
        if p.exists():
            h.update(p.read_bytes())
    weights = model_dir / "model.safetensors"
    if weights.exists():
        h.update(str(weights.stat().st_size).encode())
    return h.hexdigest()[:12]


def distill(
    model_dir: Path | None = None,
    *,
    token_ids: Sequence[int] | None = None,
    pca_dims: int | None = 256,
    sif_a: float | None = 1e-3,
    batch_size: int = 256,
    threads: int = 1,
    progress: bool = False,
) -> dict[str, np.ndarray]:
    """Distil static token vectors from the sentence-transformer at ``model_dir``.

    Args:
        model_dir: A sentence-transformers BERT-style model folder; default the shipped all-MiniLM-L6-v2.
        token_ids: Only distil these vocabulary ids (tests use a subset); others get a zero vector and so are
            ignored when encoding. Default: the whole vocabulary.
        pca_dims: Keep this many principal axes (None keeps all, still centred and rotated).
        sif_a: Smooth-inverse-frequency constant; None disables the weighting.
        batch_size: Tokens per forward pass (small batches keep memory low).
        threads: Torch intra-op threads during distillation (restored afterwards); one is fastest on a
            busy machine, where two threads wait on each other.
        progress: Show a tqdm bar.

    Returns:
        ``{"vectors": (vocab, d) float32, "mask": (vocab,) bool}`` where ``mask`` marks distilled ids.
    """
    import torch
    from transformers import AutoModel

    from routers.encoders.minilm import minilm_path

    model_dir = Path(model_dir) if model_dir is not None else minilm_path()
    tok = _tokenizer(model_dir, 512)
    vocab = tok.get_vocab()
    vocab_size = max(vocab.values()) + 1
    cls_id, sep_id = vocab["[CLS]"], vocab["[SEP]"]
    special = {vocab[s] for s in _SPECIAL if s in vocab}
    ids = np.arange(vocab_size) if token_ids is None else np.unique(np.asarray(token_ids, dtype=np.int64))
    ids = np.array([i for i in ids.tolist() if i not in special], dtype=np.int64)

    old_threads = torch.get_num_threads()
    torch.set_num_threads(max(1, min(threads, old_threads)))
    try:
        model = AutoModel.from_pretrained(str(model_dir), local_files_only=True).eval()
        raw = np.zeros((len(ids), model.config.hidden_size), dtype=np.float32)
        starts = range(0, len(ids), batch_size)
        if progress:
            from tqdm.auto import tqdm

            starts = tqdm(starts, desc="distilling static embeddings", unit="batch")
        with torch.inference_mode():
            for s in starts:
                chunk = torch.as_tensor(ids[s : s + batch_size])
                n = len(chunk)
                input_ids = torch.stack([torch.full((n,), cls_id), chunk, torch.full((n,), sep_id)], dim=1)
                out = model(
                    input_ids=input_ids,
                    attention_mask=torch.ones_like(input_ids),
                    token_type_ids=torch.zeros_like(input_ids),
                ).last_hidden_state
                # The sentence-transformers pooling of this model: the mean over all positions.
                raw[s : s + n] = out.mean(dim=1).float().numpy()
                report_progress("distilling minilm-static", s + n, len(ids))
    finally:
        torch.set_num_threads(old_threads)

    # PCA: centre and rotate (optionally truncate); fitted on the distilled tokens themselves.
    centred = raw - raw.mean(axis=0, keepdims=True)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    k = vt.shape[0] if pca_dims is None else min(int(pca_dims), vt.shape[0])
    reduced = (centred @ vt[:k].T).astype(np.float32)

    if sif_a is not None:
        # Zipf's law over the vocabulary order as the frequency estimate (model2vec's): p(rank) ~ 1/rank.
        ranks = ids.astype(np.float64) + 1.0
        p = 1.0 / ranks
        p /= p.sum()
        reduced *= (sif_a / (sif_a + p)).astype(np.float32)[:, None]

    vectors = np.zeros((vocab_size, k), dtype=np.float32)
    vectors[ids] = reduced
    mask = np.zeros(vocab_size, dtype=bool)
    mask[ids] = True
    return {"vectors": vectors, "mask": mask}


class StaticEncoder(Encoder):
    """A text is the normalised mean of its word pieces' distilled vectors (see the module docstring).

    Args:
        vectors: (vocab, d) float32 token vectors (all-zero rows are ignored tokens).
        model_dir: A folder holding the ``tokenizer.json`` that produces the ids (the model's, or a saved
            encoder's).
        max_tokens: Word pieces read per text (MiniLM itself reads 256).
        name: Registry name.
    """

    disk_cache = False  # encoding is cheaper than reading a cache
    normalised = True  # encode() returns routers.runtime.static_embed's rows; embed() must not renormalise

    def __init__(
        self, vectors: np.ndarray, model_dir: Path, *, max_tokens: int = 512, name: str = "minilm-static"
    ) -> None:
        self.vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        self.model_dir = Path(model_dir)
        self.max_tokens = max_tokens
        self.name = name
        self.dim = int(self.vectors.shape[1])
        self._tok = _tokenizer(self.model_dir, max_tokens)
        self._token_ids = StaticTokenIds(self._tok)  # the export's fast, exact tokenisation path

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """Encode texts: tokenise (no special tokens), sum the token vectors, L2-normalise.

        An empty text (no word pieces) gives a zero vector. The arithmetic is
        :func:`routers.runtime.static_embed`, the very function an exported router runs on its bundled copy
        of this encoder, so the two agree bit for bit.
        """
        return static_embed(self._token_ids(texts), self.vectors)

    # -- a standalone copy of the encoder (numpy + tokenizers only, no torch, no model); export folders bundle
    # the same data under their own names (encoder.npz, tokenizer.json), declared in their router.json
    def save(self, folder: str | os.PathLike[str]) -> Path:
        """Write ``static_encoder.json``, ``static_vectors.npz`` and ``tokenizer.json`` into ``folder``."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        _atomic_savez(folder / "static_vectors.npz", vectors=self.vectors)
        shutil.copyfile(self.model_dir / "tokenizer.json", folder / "tokenizer.json")
        manifest = {"name": self.name, "dim": self.dim, "max_tokens": self.max_tokens, "format": 1}
        (folder / "static_encoder.json").write_text(json.dumps(manifest, indent=2) + "\n")
        return folder

    @classmethod
    def load(cls, folder: str | os.PathLike[str]) -> StaticEncoder:
        """Read an encoder written by :meth:`save`.

        Raises:
            DataNotFoundError: if a file is missing.
        """
        folder = Path(folder)
        for name in ("static_encoder.json", "static_vectors.npz", "tokenizer.json"):
            if not (folder / name).is_file():
                raise DataNotFoundError(f"{str(folder / name)!r} is missing: not a saved static encoder")
        manifest = json.loads((folder / "static_encoder.json").read_text())
        with np.load(folder / "static_vectors.npz", allow_pickle=False) as data:
            vectors = np.asarray(data["vectors"], dtype=np.float32)
        return cls(vectors, folder, max_tokens=int(manifest["max_tokens"]), name=str(manifest["name"]))

    # -- the distilled table in the cache
    @staticmethod
    def cache_path(model_dir: Path, settings: dict) -> Path:
        """Where the table for a model and distillation settings is cached."""
        key = json.dumps({"v": DISTILL_VERSION, **settings}, sort_keys=True)
        digest = hashlib.sha256(key.encode()).hexdigest()[:10]
        return cache_dir() / "encoders" / f"minilm-static-{_model_fingerprint(model_dir)}-{digest}.npz"

    @classmethod
    def load_or_distill(cls, model_dir: Path | None = None, *, pca_dims: int | None = 256,
                        sif_a: float | None = 1e-3, progress: bool = True) -> StaticEncoder:
        """Load the cached distilled table, distilling (and caching) it first if needed.

        A cached file that cannot be read is ignored with a warning and distilled again.
        """
        from routers.encoders.minilm import minilm_path

        model_dir = Path(model_dir) if model_dir is not None else minilm_path()
        settings = {"pca_dims": pca_dims, "sif_a": sif_a}
        path = cls.cache_path(model_dir, settings)
        vectors = None
        if path.exists():
            try:
                with np.load(path, allow_pickle=False) as data:
                    vectors = np.asarray(data["vectors"], dtype=np.float32)
                if vectors.ndim != 2 or not np.isfinite(vectors).all():
                    raise ValueError(f"vectors of shape {vectors.shape} with non-finite values or wrong rank")
            except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:
                warnings.warn(
                    f"ignoring unreadable static-embedding table {str(path)!r} ({exc}); distilling again",
                    RuntimeWarning,
                    stacklevel=2,
                )
                vectors = None
        if vectors is None:
            t0 = time.perf_counter()
            table = distill(model_dir, pca_dims=pca_dims, sif_a=sif_a, progress=progress)
            vectors = table["vectors"]
            _atomic_savez(path, vectors=vectors, seconds=np.float64(time.perf_counter() - t0))
        return cls(vectors, model_dir)


def _atomic_savez(path: Path, **arrays: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".tmp-{uuid.uuid4().hex[:8]}-{path.name}")
    with open(tmp, "wb") as fh:
        np.savez(fh, **arrays)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
