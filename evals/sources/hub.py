"""Reading source files through the Hugging Face ``datasets`` library.

Sources that also live on the Hugging Face Hub (RouterBench, MMLU-Pro questions, GSM8K, MMLU) are read with
:func:`datasets.load_dataset` in both modes, so there is one code path:

- **offline (default)**: ``load_dataset("json" | "csv", data_files=<mirror files>)`` reads the mirror;
- **online**: set ``ROUTELAB_HUB=1`` (and do not set ``HF_HUB_OFFLINE``) and the Hub dataset named by the
  source is downloaded instead, e.g. the full ``TIGER-Lab/MMLU-Pro`` test split.

Both return a :class:`pandas.DataFrame` with the same columns, which the importer then maps.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from evals.exceptions import SchemaError
from evals.paths import cache_dir

__all__ = ["hub_enabled", "load_frame"]


def hub_enabled() -> bool:
    """True when the user asked for Hub downloads (``ROUTELAB_HUB=1``) and the Hub is not switched off."""
    wanted = os.environ.get("ROUTELAB_HUB", "").strip().lower() in {"1", "true", "yes"}
    offline = os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in {"1", "true", "yes"}
    return wanted and not offline


def load_frame(
    files: Sequence[Path],
    *,
    builder: str,
    hub_id: str = "",
    hub_config: str | None = None,
    hub_split: str = "test",
) -> pd.DataFrame:
    """Load a table through ``datasets.load_dataset``: the Hub dataset when enabled, else the local files.

    Args:
        files: Local mirror files (read with the ``builder`` loader, ``"json"`` or ``"csv"``).
        builder: The ``datasets`` packaged loader for the local files.
        hub_id: Hub dataset id (``TIGER-Lab/MMLU-Pro``); empty when the source has none.
        hub_config: Hub configuration name, if the dataset has several.
        hub_split: Hub split to read.

    Raises:
        SchemaError: if the files cannot be parsed, naming them.
    """
    import datasets  # heavy import: only when a source is actually (re)built

    datasets.disable_progress_bars()
    hf_cache = str(cache_dir() / "hf-datasets")
    try:
        if hub_id and hub_enabled():
            ds = datasets.load_dataset(hub_id, hub_config, split=hub_split, cache_dir=hf_cache)
        else:
            ds = datasets.load_dataset(
                builder, data_files=[str(f) for f in files], split="train", cache_dir=hf_cache
            )
    except (ValueError, TypeError, datasets.exceptions.DatasetGenerationError) as exc:
        names = ", ".join(str(f) for f in files)
        cause = exc.__cause__ or exc
        raise SchemaError(f"could not read {names} as {builder}: {cause}") from None
    return ds.to_pandas()
