"""RouterBench-shaped wide tables (``routerbench-mbpp`` and any table of the same shape).

A RouterBench-shaped table has one row per prompt and, per model ``<m>``:

- a column ``<m>`` with the score in [0, 1],
- ``<m>|total_cost``: the real dollar cost of that query for that model (measured: ``cost_estimated=False``),
- optionally ``<m>|model_response``: the response (a Python list literal of turns, as RouterBench stores it).

plus ``sample_id`` (else the row number), ``prompt`` (a list literal of message turns, read with
:func:`ast.literal_eval`; plain text is kept as is) and optionally ``eval_name`` (becomes ``task`` and
``category``). Models are the columns that have a ``|total_cost`` twin. Rows whose scores are all missing are
dropped; a (sample, model) with a missing score is dropped and then samples that lack a model
(:meth:`OutcomeTable.complete`); both counts go into the card.

``routerbench-mbpp`` is the MBPP split of RouterBench 0-shot (train + test CSVs re-saved by RouterDC), read
through ``datasets.load_dataset("csv", data_files=...)``. The full RouterBench lives on the Hugging Face Hub
(``withmartian/routerbench``) as pandas pickles, which ``datasets`` cannot read: :func:`load_routerbench_hub`
downloads one with ``huggingface_hub`` (online only; a pickle can run code, so it asks for ``trust=True``).
"""

from __future__ import annotations

import ast
import re
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd

from evals.exceptions import SchemaError
from evals.outcomes import DatasetCard, OutcomeTable
from evals.sources.base import Source, source_registry
from evals.sources.hub import load_frame

__all__ = ["build_mbpp", "load_routerbench_hub", "model_columns", "read_wide", "wide_to_outcomes"]

VERSION = "1"
COST, RESPONSE = "|total_cost", "|model_response"


def model_columns(columns: list[str]) -> list[str]:
    """Model names of a RouterBench-shaped table: columns that have a ``<m>|total_cost`` twin."""
    cols = set(columns)
    return [c for c in columns if "|" not in c and f"{c}{COST}" in cols]


def _turns_text(value: object) -> str:
    """A RouterBench list-literal cell as text (turns joined by blank lines); plain text is kept."""
    if not isinstance(value, str):
        return "" if value is None or (isinstance(value, float) and np.isnan(value)) else str(value)
    text = value.strip()
    if text.startswith("[") and text.endswith("]"):
        try:
            parsed = ast.literal_eval(text)
        except (ValueError, SyntaxError, MemoryError, RecursionError):
            return value
        if isinstance(parsed, (list, tuple)):
            return "\n\n".join(str(p) for p in parsed)
    return value


def wide_to_outcomes(
    wide: pd.DataFrame, *, card: DatasetCard, origin: str = "", first_line: int = 2
) -> OutcomeTable:
    """Turn a RouterBench-shaped wide frame into a (complete) OutcomeTable with measured costs.

    Args:
        wide: The wide frame (see the module docstring).
        card: Card of the result; drop counts are added to its ``extra``.
        origin: File name(s) for error messages.
        first_line: File line of the frame's first row (2 for a CSV with a header), for error messages.

    Raises:
        SchemaError: when there are no model columns, or a score/cost is not a number or out of range
            (naming file, line and column).
    """
    models = model_columns(list(wide.columns))
    if not models:
        raise SchemaError(
            f"{origin or 'wide table'}: no model columns: a RouterBench-shaped table needs, "
            "for each model <m>, "
            f"columns '<m>' (score) and '<m>{COST}'; columns present: {', '.join(map(str, wide.columns))}"
        )
    w = wide.reset_index(drop=True)
    scores = pd.DataFrame({m: pd.to_numeric(w[m], errors="coerce") for m in models})
    for m in models:  # a non-numeric score is an error, not a silent NaN
        bad = scores[m].isna() & w[m].notna() & w[m].astype(str).str.strip().ne("")
        if bad.any():
            i = int(np.flatnonzero(bad.to_numpy())[0])
            raise SchemaError(
                f"{origin}, line {i + first_line}, column {m!r}: {w[m].iat[i]!r} is not a number"
            )
    all_missing = scores.isna().all(axis=1).to_numpy()
    keep_rows = np.flatnonzero(~all_missing)
    sample_ids = (
        w["sample_id"].astype(str) if "sample_id" in w.columns else pd.Series([str(i) for i in range(len(w))])
    )
    prompts = w["prompt"].map(_turns_text) if "prompt" in w.columns else pd.Series([""] * len(w))
    eval_name = (
        w["eval_name"].fillna("").astype(str) if "eval_name" in w.columns else pd.Series([""] * len(w))
    )
    parts = []
    for m in models:
        score = scores[m].to_numpy()
        rows = keep_rows[~np.isnan(score[keep_rows])]
        cost_raw = w[f"{m}{COST}"]
        cost = pd.to_numeric(cost_raw, errors="coerce").to_numpy()
        bad = rows[np.isnan(cost[rows])]
        if len(bad):
            i = int(bad[0])
            raise SchemaError(
                f"{origin}, line {i + first_line}, column '{m}{COST}': {cost_raw.iat[i]!r} is not a "
                "cost in dollars (the score is present)"
            )
        resp_col = f"{m}{RESPONSE}"
        resp = w[resp_col].iloc[rows].map(_turns_text) if resp_col in w.columns else ""
        parts.append(
            pd.DataFrame(
                {
                    "sample_id": sample_ids.iloc[rows].to_numpy(),
                    "task": eval_name.iloc[rows].to_numpy(),
                    "category": eval_name.iloc[rows].to_numpy(),
                    "prompt": prompts.iloc[rows].to_numpy(),
                    "model": m,
                    "response": resp if isinstance(resp, str) else resp.to_numpy(),
                    "score": score[rows],
                    "cost_usd": cost[rows],
                    "cost_estimated": False,
                    "grader": "source",
                    "_line": rows + first_line,
                }
            )
        )
    frame = pd.concat(parts, ignore_index=True)
    try:
        table = OutcomeTable(frame.drop(columns="_line"), card, origin=origin, require_complete=False)
    except SchemaError as exc:  # translate the long-table row into the wide file's line
        msg = str(exc)
        m = re.match(r"row (\d+)", msg)
        if m:
            r = int(m.group(1))
            msg = f"line {frame['_line'].iat[r]} (model {frame['model'].iat[r]!r})" + msg[m.end() :]
        raise SchemaError(msg) from None
    n_pairs_missing = int(scores.iloc[keep_rows].isna().to_numpy().sum())
    table = table.complete()
    table.card = replace(
        table.card,
        extra={
            **table.card.extra,
            "all_nan_rows_dropped": int(all_missing.sum()),
            "missing_pairs_dropped": n_pairs_missing,
        },
    )
    return table


def read_wide(path: str | Path, *, name: str | None = None) -> OutcomeTable:
    """Read any RouterBench-shaped wide CSV into an OutcomeTable (measured costs)."""
    path = Path(path)
    wide = load_frame([path], builder="csv")
    card = DatasetCard(
        name=name or path.stem,
        source=str(path),
        grading="scores as recorded in the table",
        cost_note="MEASURED: per-query '<model>|total_cost' of the table",
    )
    return wide_to_outcomes(wide, card=card, origin=str(path))


def build_mbpp(folder: Path) -> OutcomeTable:
    """Import RouterBench's 0-shot MBPP split (train + test CSVs) from ``routerbench-mbpp``."""
    files = [folder / "mbpp_train.csv", folder / "mbpp_test.csv"]
    wide = load_frame(files, builder="csv")
    wide = wide.drop(columns=[c for c in wide.columns if c.startswith("Unnamed") or c == ""], errors="ignore")
    card = DatasetCard(
        name="routerbench-mbpp",
        source="https://github.com/shuhao02/RouterDC @0e63989c datasets/routerbench_zs/mbpp_{train,test}.csv "
        "(RouterBench 0-shot, Hugging Face withmartian/routerbench routerbench_0shot.pkl)",
        license="RouterBench MIT (code and dataset card); RouterDC repository has no license: research use, "
        "attribute RouterBench; responses subject to provider terms",
        description="MBPP (Python programming problems) from RouterBench 0-shot: 11 models' responses, "
        "test-based correctness and real per-query costs.",
        grading="Correctness computed by RouterBench by running the MBPP tests (0/1).",
        cost_note="MEASURED: RouterBench's per-query dollar cost (its token counts x its list prices).",
        extra={"files": [f.name for f in files]},
    )
    return wide_to_outcomes(wide, card=card, origin=", ".join(str(f) for f in files))


def load_routerbench_hub(filename: str = "routerbench_0shot.pkl", *, trust: bool = False) -> OutcomeTable:
    """Download the full RouterBench from the Hugging Face Hub (online) and read it as outcomes.

    Args:
        filename: ``routerbench_0shot.pkl`` or ``routerbench_5shot.pkl``.
        trust: Must be True: the Hub file is a pandas pickle, and unpickling can run code.

    Raises:
        SchemaError: without ``trust=True``.
    """
    if not trust:
        raise SchemaError("withmartian/routerbench is a pandas pickle; pass trust=True to unpickle it")
    from huggingface_hub import hf_hub_download

    path = hf_hub_download("withmartian/routerbench", filename, repo_type="dataset")
    wide = pd.read_pickle(path)  # noqa: S301 - explicitly trusted above
    card = DatasetCard(
        name="routerbench",
        source=f"https://huggingface.co/datasets/withmartian/routerbench {filename}",
        license="MIT",
        grading="as recorded by RouterBench",
        cost_note="MEASURED: RouterBench's per-query dollar cost",
    )
    return wide_to_outcomes(wide, card=card, origin=path, first_line=0)


source_registry.add(
    "routerbench-mbpp",
    Source(
        name="routerbench-mbpp",
        description="RouterBench 0-shot MBPP, 11 models, responses and real per-query costs (measured)",
        folder="routerbench-mbpp",
        license="MIT (RouterBench)",
        build=build_mbpp,
        files=("mbpp_train.csv", "mbpp_test.csv"),
        version=VERSION,
        hub_id="withmartian/routerbench",
        measured_cost=True,
    ),
)
