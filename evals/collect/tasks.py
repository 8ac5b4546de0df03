"""Loading the prompts to collect answers for: from a source (or outcome file), or from a prompts file."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from evals.collect.config import TaskConfig
from evals.exceptions import DataNotFoundError, SchemaError

__all__ = ["load_samples"]

_COLUMNS = ("sample_id", "task", "category", "prompt", "reference")


def _read_prompts_file(path: Path) -> pd.DataFrame:
    if not path.is_file():
        raise DataNotFoundError(f"prompts file {str(path)!r} does not exist")
    try:
        if path.suffix.lower() == ".csv":
            frame = pd.read_csv(path, dtype=str, keep_default_na=False)
        elif path.suffix.lower() in (".jsonl", ".json"):
            frame = pd.read_json(path, lines=path.suffix.lower() == ".jsonl", dtype=False)
        else:
            raise SchemaError(f"prompts file {str(path)!r}: use .jsonl or .csv (got {path.suffix!r})")
    except ValueError as exc:
        if isinstance(exc, SchemaError):
            raise
        raise SchemaError(f"prompts file {str(path)!r} cannot be parsed ({exc})") from None
    if "prompt" not in frame.columns:
        raise SchemaError(
            f"prompts file {str(path)!r} has no 'prompt' column; columns: {', '.join(frame.columns)}"
        )
    frame = frame.copy()
    if "sample_id" not in frame.columns:
        frame["sample_id"] = [str(i) for i in range(len(frame))]
    if "task" not in frame.columns:
        frame["task"] = path.stem
    for col in _COLUMNS:
        if col not in frame.columns:
            frame[col] = ""
        frame[col] = frame[col].where(frame[col].notna(), "").astype(str)
    empty = frame["prompt"].str.strip().eq("")
    if empty.any():
        raise SchemaError(
            f"prompts file {str(path)!r}, row {int(empty.to_numpy().nonzero()[0][0])}: empty prompt"
        )
    dup = frame["sample_id"].duplicated()
    if dup.any():
        i = int(dup.to_numpy().nonzero()[0][0])
        raise SchemaError(
            f"prompts file {str(path)!r}, row {i}: duplicate sample_id {frame['sample_id'].iat[i]!r}"
        )
    return frame[list(_COLUMNS)]


def load_samples(tasks: TaskConfig) -> tuple[pd.DataFrame, str, str]:
    """The samples to collect: one row each with ``sample_id, task, category, prompt, reference``.

    Returns:
        ``(samples, origin, license)``: the frame, where it came from, the source's license ("" if unknown).
    """
    if tasks.source:
        from evals import sources  # the data helper's importers; heavy imports stay out of module import

        table = sources.load(tasks.source)
        frame, origin, license_ = table.samples, f"{tasks.source} ({table.card.source})", table.card.license
    else:
        frame, origin, license_ = _read_prompts_file(Path(tasks.prompts)), tasks.prompts, ""
    if tasks.categories:
        have = set(frame["category"])
        unknown = [c for c in tasks.categories if c not in have]
        if unknown:
            raise SchemaError(
                f"[tasks].categories {unknown} are not in {origin}; categories: {', '.join(sorted(have))}"
            )
        frame = frame[frame["category"].isin(tasks.categories)]
    if tasks.limit is not None:
        frame = frame.iloc[: tasks.limit]
    return frame.reset_index(drop=True), origin, license_
