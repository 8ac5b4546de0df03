"""A team's own outcomes: the documented long format (``datasets/FORMAT.md``) in CSV, JSONL or Parquet.

One row per (sample, model) with the columns of :data:`evals.outcomes.COLUMNS`. Required: ``sample_id``,
``model``, ``score`` and either ``cost_usd`` or both ``input_tokens`` and ``output_tokens`` (then the cost is
the price table's default price of the model, or of the row's ``provider`` when it is given and listed; such
costs are computed from real token counts, so they are *measured* unless the row says
``cost_estimated=true``). Anything that is wrong raises :class:`~evals.exceptions.SchemaError` naming
the file, the line and the column.
"""

from __future__ import annotations

import csv
import io
import json
import re
from pathlib import Path

import numpy as np
import pandas as pd

from evals.exceptions import DataNotFoundError, SchemaError, UnknownComponentError
from evals.outcomes import DatasetCard, OutcomeTable
from evals.prices import PriceTable

__all__ = ["SUFFIXES", "read_outcomes"]

#: File suffix -> format.
SUFFIXES = {".csv": "csv", ".jsonl": "jsonl", ".json": "jsonl", ".parquet": "parquet", ".pq": "parquet"}

# Columns people often write instead of the canonical ones; a hint, never a silent rename.
_MISNAMED = {
    "id": "sample_id",
    "question_id": "sample_id",
    "sample": "sample_id",
    "prompt_id": "sample_id",
    "model_name": "model",
    "llm": "model",
    "correct": "score",
    "accuracy": "score",
    "quality": "score",
    "cost": "cost_usd",
    "price": "cost_usd",
    "cost_dollars": "cost_usd",
    "usd": "cost_usd",
    "prompt_tokens": "input_tokens",
    "completion_tokens": "output_tokens",
    "latency": "latency_s",
    "output": "response",
    "answer": "response",
}


def read_outcomes(
    path: str | Path,
    *,
    prices: PriceTable | None = None,
    require_complete: bool = False,
) -> OutcomeTable:
    """Read an outcome file in the long format.

    Args:
        path: A ``.csv``, ``.jsonl`` (or ``.json`` lines) or ``.parquet`` file.
        prices: Price table for rows without ``cost_usd`` (default: ``datasets/prices.csv``).
        require_complete: Passed to :class:`OutcomeTable`; by default a partial table is accepted and
            samples missing some model are dropped with :meth:`OutcomeTable.complete` (counted in the card).

    Raises:
        DataNotFoundError: if the file does not exist.
        SchemaError: on unreadable text, a malformed line, a missing/misnamed column or a bad value,
            naming the file, the line and the column.
    """
    path = Path(path)
    if not path.is_file():
        raise DataNotFoundError(f"outcome file {str(path)!r} does not exist")
    kind = SUFFIXES.get(path.suffix.lower())
    if kind is None:
        raise SchemaError(
            f"{path}: unknown outcome file type {path.suffix!r}; use one of {', '.join(SUFFIXES)}"
        )
    if kind == "parquet":
        table = OutcomeTable.read_parquet(path)  # validates; keeps its card
        return table if require_complete else table.complete()
    text = _read_text(path)
    frame = _parse_csv(text, path) if kind == "csv" else _parse_jsonl(text, path)
    if len(frame) == 0:
        raise SchemaError(f"{path}: no data rows")
    _check_columns(frame, path)
    lines: list[int] = frame.attrs.get("lines", [])  # file line of each data row, for error messages
    frame = _fill_costs(frame, path, prices, lines)
    card = DatasetCard(
        name=path.stem,
        source=str(path),
        description=f"outcomes read from {path.name}",
        grading="as recorded in the file's 'grader' column",
        cost_note=(
            "estimated (cost_estimated column)"
            if _truthy(frame.get("cost_estimated")).any()
            else "as recorded in the file (cost_usd, or tokens x datasets/prices.csv)"
        ),
    )
    try:
        table = OutcomeTable(frame, card, origin=str(path), require_complete=require_complete)
    except SchemaError as exc:
        raise SchemaError(_with_line(str(exc), lines)) from None
    return table if require_complete else table.complete()


def _read_text(path: Path) -> str:
    data = path.read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise SchemaError(
            f"{path}: not UTF-8 text: byte 0x{data[exc.start]:02x} at byte offset {exc.start} (line {line}); "
            "re-save the file as UTF-8"
        ) from None


def _parse_csv(text: str, path: Path) -> pd.DataFrame:
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = [c.strip() for c in next(reader, [])]
        if not any(header):
            raise SchemaError(f"{path}: empty file (no header line)")
        body, lines = [], []
        start = reader.line_num + 1
        for row in reader:
            if row and any(c.strip() for c in row):
                if len(row) != len(header):
                    raise SchemaError(
                        f"{path}, line {start}: malformed CSV row: {len(row)} fields, "
                        f"but the header has {len(header)}"
                    )
                body.append(row)
                lines.append(start)
            start = reader.line_num + 1
    except csv.Error as exc:
        raise SchemaError(f"{path}, line {reader.line_num}: malformed CSV ({exc})") from None
    frame = pd.DataFrame(body, columns=header, dtype=object)
    frame.attrs["lines"] = lines
    return frame


def _parse_jsonl(text: str, path: Path) -> pd.DataFrame:
    records, lines = [], []
    for i, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as exc:
            raise SchemaError(f"{path}, line {i}: malformed JSON ({exc.msg} at column {exc.colno})") from None
        if not isinstance(rec, dict):
            raise SchemaError(f"{path}, line {i}: expected a JSON object, got {type(rec).__name__}")
        records.append(rec)
        lines.append(i)
    frame = pd.DataFrame.from_records(records)
    frame.attrs["lines"] = lines
    return frame


def _check_columns(frame: pd.DataFrame, path: Path) -> None:
    cols = set(frame.columns)
    has_tokens = {"input_tokens", "output_tokens"} <= cols
    required = ["sample_id", "model", "score"] + ([] if has_tokens else ["cost_usd"])
    missing = [c for c in required if c not in cols]
    if not missing:
        return
    hints = [
        f"{c!r} (found {k!r}: rename it)"
        for c in missing
        for k, v in _MISNAMED.items()
        if v == c and k in cols
    ]
    detail = f"; did you mean {', '.join(hints)}" if hints else ""
    need_cost = (
        " (or input_tokens and output_tokens with a price-table model)" if "cost_usd" in missing else ""
    )
    raise SchemaError(
        f"{path}: missing required column(s) {missing}{need_cost}{detail}; "
        f"columns present: {', '.join(frame.columns)}"
    )


def _truthy(col: pd.Series | None) -> pd.Series:
    if col is None:
        return pd.Series([], dtype=bool)
    return col.astype(str).str.strip().str.lower().isin({"true", "1", "yes", "y", "t"})


def _fill_costs(frame: pd.DataFrame, path: Path, prices: PriceTable | None, lines: list[int]) -> pd.DataFrame:
    """Price rows that have token counts but no cost, from the price table."""
    f = frame.copy()
    if "cost_usd" not in f.columns:
        f["cost_usd"] = np.nan
    blank = f["cost_usd"].isna() | f["cost_usd"].astype(str).str.strip().eq("")
    if not blank.any():
        return f
    if not {"input_tokens", "output_tokens"} <= set(f.columns):
        i = int(np.flatnonzero(blank.to_numpy())[0])
        raise SchemaError(
            f"{path}, line {lines[i]}: column 'cost_usd' is empty and there are no token columns to price"
        )
    prices = prices or PriceTable.load()
    providers = f["provider"] if "provider" in f.columns else pd.Series([""] * len(f))
    for i in np.flatnonzero(blank.to_numpy()):
        model = str(f.at[i, "model"])
        prov = str(providers.iat[i] or "").strip() or None
        try:
            tin = float(f.at[i, "input_tokens"])
            tout = float(f.at[i, "output_tokens"])
        except (TypeError, ValueError):
            raise SchemaError(
                f"{path}, line {lines[i]}: columns 'input_tokens'/'output_tokens' must be numbers "
                "to price the row"
            ) from None
        try:
            if prov is not None and prov not in prices.providers(model):
                prov = None  # an unlisted provider is priced at the model's default list price
            f.at[i, "cost_usd"] = prices.cost(model, tin, tout, provider=prov)
        except UnknownComponentError as exc:
            raise SchemaError(f"{path}, line {lines[i]}, column 'model': {exc}") from None
    return f


def _with_line(message: str, lines: list[int]) -> str:
    """Rewrite OutcomeTable's 'row N in <file>' into 'line L (data row N) in <file>'."""

    def sub(m: re.Match[str]) -> str:
        i = int(m.group(1))
        return f"line {lines[i]} (data row {i})" if i < len(lines) else m.group(0)

    return re.sub(r"\brow (\d+)\b", sub, message, count=1)
