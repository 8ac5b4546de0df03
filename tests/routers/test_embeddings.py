"""Encoders and the on-disk embedding cache (routers.embeddings, routers.encoders)."""

from __future__ import annotations

import hashlib
import subprocess
import sys
import textwrap
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

import routers.embeddings as E
from evals.exceptions import UnknownComponentError


class HashEncoder(E.Encoder):
    """A deterministic model-free encoder that counts how many texts it was asked to encode."""

    disk_cache = True

    def __init__(self, name: str = "test-hash", dim: int = 16) -> None:
        self.name = name
        self.dim = dim
        self.calls = 0
        self.texts_encoded = 0

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        self.calls += 1
        self.texts_encoded += len(texts)
        rows = []
        for t in texts:
            seed = int.from_bytes(hashlib.sha256(t.encode()).digest()[:8], "little")
            rows.append(np.random.default_rng(seed).normal(size=self.dim))
        return np.asarray(rows, dtype=np.float32) * 3.0  # not normalised: embed() must normalise


@pytest.fixture()
def tmp_cache(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("ROUTELAB_CACHE_DIR", str(tmp_path))
    E.clear_memory_cache()
    yield tmp_path
    E.clear_memory_cache()


def shards(root: Path, name: str = "test-hash") -> list[Path]:
    return sorted((root / "embeddings" / name).glob("shard-*.npz"))


# ---------------------------------------------------------------------------------------------- the cache


def test_embed_shape_order_and_normalisation(tmp_cache):
    enc = HashEncoder()
    texts = ["alpha", "beta", "alpha", "gamma"]
    x = E.embed(texts, enc)
    assert x.shape == (4, 16) and x.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(x, axis=1), 1.0, atol=1e-6)
    np.testing.assert_array_equal(x[0], x[2])
    assert not np.allclose(x[0], x[1])
    assert enc.texts_encoded == 3  # the duplicate is encoded once
    assert E.embed([], enc).shape == (0, 16)


def test_second_call_hits_the_cache(tmp_cache):
    enc = HashEncoder()
    first = E.embed(["a", "b", "c"], enc)
    assert enc.calls == 1
    again = E.embed(["c", "a"], enc)
    assert enc.calls == 1  # no new call to the model
    np.testing.assert_array_equal(again, first[[2, 0]])
    E.embed(["a", "d"], enc)
    assert enc.texts_encoded == 4  # only the miss "d" was encoded


@pytest.mark.slow
def test_cache_survives_a_new_process(tmp_cache):
    enc = HashEncoder()
    expected = E.embed(["persisted one", "persisted two"], enc)
    assert shards(tmp_cache)
    code = textwrap.dedent(
        """
        import sys, numpy as np
        import routers.embeddings as E

        class Refuse(E.Encoder):
            name, dim = "test-hash", 16
            def encode(self, texts):
                raise AssertionError("the model was called although the texts are cached")

        x = E.embed(["persisted one", "persisted two"], Refuse())
        np.save(sys.argv[1], x)
        """
    )
    out = tmp_cache / "out.npy"
    subprocess.run([sys.executable, "-c", code, str(out)], check=True, timeout=120,
                   env={**__import__("os").environ, "ROUTELAB_CACHE_DIR": str(tmp_cache)})
    np.testing.assert_array_equal(np.load(out), expected)


def test_corrupt_shard_is_ignored_and_recomputed(tmp_cache):
    enc = HashEncoder()
    expected = E.embed(["x", "y"], enc)
    (shard,) = shards(tmp_cache)
    shard.write_bytes(b"this is not an npz file")
    E.clear_memory_cache()  # as in a new process
    with pytest.warns(RuntimeWarning, match="corrupt embedding cache shard"):
        got = E.embed(["x", "y"], enc)
    np.testing.assert_array_equal(got, expected)
    assert enc.calls == 2  # recomputed
    assert not shard.exists()  # moved aside, so the warning is not repeated
    E.clear_memory_cache()
    E.embed(["x", "y"], enc)
    assert enc.calls == 2  # the recomputed vectors were cached again


def test_shard_with_wrong_dimension_is_treated_as_corrupt(tmp_cache):
    E.embed(["x"], HashEncoder(dim=16))
    E.clear_memory_cache()
    enc = HashEncoder(dim=8)  # same name, other dimension: the old vectors must not be served
    with pytest.warns(RuntimeWarning, match="dimension 16, expected 8"):
        x = E.embed(["x"], enc)
    assert x.shape == (1, 8) and enc.calls == 1


def test_many_small_shards_are_merged(tmp_cache, monkeypatch):
    monkeypatch.setattr(E, "MAX_SHARDS", 4)
    enc = HashEncoder()
    texts = [f"text {i}" for i in range(9)]
    expected = np.stack([E.embed([t], enc)[0] for t in texts])
    assert len(shards(tmp_cache)) <= 4
    E.clear_memory_cache()
    np.testing.assert_array_equal(E.embed(texts, enc), expected)
    assert enc.calls == 9


@pytest.mark.slow
def test_two_processes_writing_at_once(tmp_cache):
    code = textwrap.dedent(
        """
        import sys, hashlib, numpy as np
        import routers.embeddings as E
        E.MAX_SHARDS = 3  # force merges while the other process writes

        class H(E.Encoder):
            name, dim = "test-hash", 16
            def encode(self, texts):
                seeds = [int.from_bytes(hashlib.sha256(t.encode()).digest()[:8], "little") for t in texts]
                rows = [np.random.default_rng(s).normal(size=16) for s in seeds]
                return np.asarray(rows, dtype=np.float32)

        who = sys.argv[1]
        for i in range(12):
            E.embed([f"{who} {i}", f"shared {i}"], H())
        """
    )
    env = {**__import__("os").environ, "ROUTELAB_CACHE_DIR": str(tmp_cache)}
    procs = [subprocess.Popen([sys.executable, "-c", code, who], env=env) for who in ("p1", "p2")]
    assert [p.wait(timeout=120) for p in procs] == [0, 0]
    enc = HashEncoder()
    texts = [f"{w} {i}" for w in ("p1", "p2", "shared") for i in range(12)]
    x = E.embed(texts, enc)
    assert enc.calls == 0  # every text written by either process is readable
    np.testing.assert_allclose(np.linalg.norm(x, axis=1), 1.0, atol=1e-6)


def test_disk_cache_can_be_switched_off(tmp_cache):
    enc = HashEncoder()
    with E.disk_cache_disabled():
        a = E.embed(["p", "q"], enc)
        b = E.embed(["p", "q"], enc)
    assert enc.calls == 2 and not shards(tmp_cache)
    np.testing.assert_array_equal(a, b)
    E.embed(["p"], enc)  # back on after the block
    assert shards(tmp_cache)


def test_unknown_encoder_lists_valid_names():
    with pytest.raises(UnknownComponentError, match="minilm-static") as err:
        E.get_encoder("no-such-encoder")
    assert "no-such-encoder" in str(err.value) and "minilm" in str(err.value)
    with pytest.raises(UnknownComponentError):
        E.embed(["hi"], encoder="no-such-encoder")


def test_non_string_text_is_rejected(tmp_cache):
    with pytest.raises(TypeError, match="text 1 is int"):
        E.embed(["ok", 3], HashEncoder())  # type: ignore[list-item]


# ----------------------------------------------------------------------------------------- real encoders

SENTENCES = [
    "How do I reset my email password?",
    "I forgot the password of my mail account, how can I change it?",
    "What is the derivative of x squared?",
    "Differentiate the function f(x) = x^2 with respect to x.",
    "Which treaty ended the First World War?",
    "What peace agreement brought World War I to a close?",
]
PAIRS = [(0, 1), (2, 3), (4, 5)]


def assert_paraphrases_closest(x: np.ndarray) -> None:
    sim = x @ x.T
    np.fill_diagonal(sim, -np.inf)
    for a, b in PAIRS:
        assert sim[a].argmax() == b and sim[b].argmax() == a, np.round(sim, 3)


@pytest.fixture(scope="module")
def minilm():
    return E.get_encoder("minilm")


@pytest.mark.slow
def test_minilm_shape_norm_and_determinism(minilm):
    assert E.get_encoder("minilm") is minilm  # one instance per process
    x = minilm.encode(SENTENCES)
    assert x.shape == (len(SENTENCES), 384) and x.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(x, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(minilm.encode(SENTENCES[:2]), x[:2], atol=1e-5)  # batch-independent
    assert_paraphrases_closest(x)


@pytest.mark.slow
def test_minilm_through_embed_uses_the_cache(tmp_cache, minilm, monkeypatch):
    calls = []
    real = minilm.encode
    monkeypatch.setattr(minilm, "encode", lambda texts: calls.append(len(texts)) or real(texts))
    a = E.embed(SENTENCES, "minilm")
    b = E.embed(SENTENCES[::-1], "minilm")
    assert calls == [len(SENTENCES)]
    np.testing.assert_array_equal(b, a[::-1])
    assert shards(tmp_cache, "minilm")


@pytest.fixture(scope="module")
def small_static():
    """A static encoder distilled on only the word pieces of SENTENCES (a few forward passes)."""
    from routers.encoders.minilm import minilm_path
    from routers.encoders.static import StaticEncoder, _tokenizer, distill

    tok = _tokenizer(minilm_path(), 512)
    ids = sorted({i for s in SENTENCES for i in tok.encode(s, add_special_tokens=False).ids})
    table = distill(token_ids=ids, pca_dims=None)
    return StaticEncoder(table["vectors"], minilm_path()), table, ids


def test_static_encoder_agrees_with_minilm_on_neighbours(small_static, minilm):
    enc, table, ids = small_static
    x = enc.encode(SENTENCES)
    assert x.shape == (len(SENTENCES), table["vectors"].shape[1]) and x.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(x, axis=1), 1.0, atol=1e-5)
    assert table["mask"][ids].all() and table["mask"].sum() == len(ids)
    assert_paraphrases_closest(x)
    # Same nearest neighbour as full MiniLM for every sentence.
    s_static, s_full = x @ x.T, minilm.encode(SENTENCES) @ minilm.encode(SENTENCES).T
    np.fill_diagonal(s_static, -np.inf)
    np.fill_diagonal(s_full, -np.inf)
    np.testing.assert_array_equal(s_static.argmax(1), s_full.argmax(1))


def test_static_encoder_through_embed_skips_the_disk_cache(small_static, tmp_cache):
    enc, _, _ = small_static
    np.testing.assert_allclose(E.embed(SENTENCES, enc), enc.encode(SENTENCES), atol=1e-6)
    assert not (tmp_cache / "embeddings").exists()  # cheaper to recompute than to read


def test_static_encoder_save_and_load_round_trip(small_static, tmp_path):
    from routers.encoders.static import StaticEncoder

    enc, _, _ = small_static
    again = StaticEncoder.load(enc.save(tmp_path / "enc"))
    np.testing.assert_array_equal(again.encode(SENTENCES), enc.encode(SENTENCES))
    (tmp_path / "enc" / "static_vectors.npz").unlink()
    with pytest.raises(FileNotFoundError, match="static_vectors.npz"):
        StaticEncoder.load(tmp_path / "enc")


def test_static_encoder_is_deterministic(small_static):
    from routers.encoders.minilm import minilm_path
    from routers.encoders.static import StaticEncoder, distill

    enc, table, ids = small_static
    np.testing.assert_array_equal(enc.encode(SENTENCES), enc.encode(SENTENCES))
    np.testing.assert_array_equal(enc.encode(SENTENCES[1:2])[0], enc.encode(SENTENCES)[1])  # single == batch
    again = StaticEncoder(distill(token_ids=ids, pca_dims=None)["vectors"], minilm_path())
    np.testing.assert_allclose(again.encode(SENTENCES), enc.encode(SENTENCES), atol=1e-5)
    assert np.all(enc.encode([""]) == 0)  # nothing to average: a zero vector, not NaN
