"""A comparison's live progress: every step named, prompts embedded once per run, a stop keeps finished work."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from app import services
from routers.embeddings import Encoder, encoder_registry, register_encoder

ENCODER = "toy-counting"


class _CountingEncoder(Encoder):
    """A cheap encoder without a disk cache (like ``minilm-static``) that counts the texts it encodes."""

    name = ENCODER
    dim = 16
    disk_cache = False
    encoded: list[str] = []

    def encode(self, texts):  # noqa: ANN001, ANN201
        type(self).encoded.extend(texts)
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for i, t in enumerate(texts):
            out[i, hash(t) % self.dim] = 1.0
            out[i, len(t) % self.dim] += 1.0
        return out


@pytest.fixture(autouse=True, scope="module")
def _counting_encoder():  # noqa: ANN202
    """Registered for this module only, so that other tests see the shipped encoders alone."""
    register_encoder(ENCODER)(_CountingEncoder)
    yield
    encoder_registry._items.pop(ENCODER, None)


def _specs() -> list[dict]:
    return [
        {"name": "knn", "params": {"encoder": ENCODER, "k": 3}},
        {"name": "mf", "params": {"encoder": ENCODER, "dim": 4, "epochs": 20}},
        {"name": "category", "params": {}},
    ]


def test_progress_names_every_step_and_prompts_are_embedded_once_per_run(app_env: Path) -> None:
    source = services.current_source()
    seen: list[tuple[float, str]] = []
    _CountingEncoder.encoded.clear()
    settings = services.CompareSettings(split_seed=3)  # nothing evaluated (cached) by other tests
    result = services.run_compare(source, _specs(), settings, progress=lambda f, t: seen.append((f, t)))

    texts = [t for _, t in seen]
    assert texts[0].startswith("Loading the task set")
    for label, i in (("knn(encoder=toy-counting, k=3)", 1), ("category", 3)):
        head = f"{label} ({i}/3)"
        mine = [t for t in texts if t.startswith(head)]
        assert any("fitting on" in t for t in mine) and any("scoring validation" in t for t in mine), mine
        assert mine[-1] == f"{head}: done"
    assert any(f"embedding with {ENCODER}: " in t and " prompts" in t for t in texts), texts
    assert texts[-1] == "Done: 3 router(s) evaluated"
    fractions = [f for f, _ in seen]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0  # never backwards
    # knn and mf embed the same train / validation / test prompts: each distinct prompt is encoded once
    prompts = services.prepared_table(source, settings).prompts
    assert sorted(_CountingEncoder.encoded) == sorted(set(prompts))
    assert [r.label for r in result.routers] == [
        "knn(encoder=toy-counting, k=3)",
        "mf(dim=4, encoder=toy-counting, epochs=20)",
        "category",
    ]


class _Stop(Exception):
    """What Streamlit raises in the script thread when the user presses Stop."""


def test_a_stop_ends_the_run_and_keeps_finished_routers(app_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    source = services.current_source()
    settings = services.CompareSettings(split_seed=7)  # routers not evaluated by another test in this process

    def stop_at_mf(fraction: float, text: str) -> None:
        if text.startswith("mf("):
            raise _Stop

    with pytest.raises(_Stop):
        services.run_compare(source, _specs(), settings, progress=stop_at_mf)

    from routers.base import Router

    fitted: list[str] = []
    original = Router.fit
    monkeypatch.setattr(Router, "fit", lambda self, t: fitted.append(type(self).__name__) or original(self, t))
    result = services.run_compare(source, _specs(), settings, progress=lambda f, t: None)
    # knn finished before the stop and is not fitted again; mf and category are evaluated now
    assert "KNNRouter" not in fitted and len(fitted) == 2, fitted
    assert len(result.routers) == 3
