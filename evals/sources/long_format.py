"""A team's own outcomes: the documented long format (``datasets/FORMAT.md``) in CSV, JSONL or Parquet.

One row per (sample, model) with the columns of :data:`evals.outcomes.COLUMNS`. Required: ``sample_id``,
``model``, ``score`` and either ``cost_usd`` or both ``input_tokens`` and ``output_tokens`` (then the cost is
the price table's default price of the model, or of the row's ``provider`` when it is given and listed; such
costs are computed from real token counts, so they are *measured* unless the row says
``cost_estimated=true``). Anything that is wrong raises :class:`~evals.exceptions.SchemaError` naming
the file, the line and the column.

This is the one outcome-file parser: the CLI, configs and the app's upload all read through
:func:`read_outcomes`, from a path or from an uploaded buffer. Memory is bounded: a file over ``max_bytes`` or
``max_rows`` is refused before it is parsed (for Parquet, from its metadata, including the size its
dictionary-encoded text would take once decoded, so a small file cannot expand to gigabytes).
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
from pathlib import Path
from typing import BinaryIO

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from evals.exceptions import DataNotFoundError, SchemaError, UnknownComponentError
from evals.outcomes import DatasetCard, OutcomeTable
from evals.prices import PriceTable

__all__ = ["CSV_FIELD_LIMIT", "DEFAULT_MAX_BYTES", "DEFAULT_MAX_ROWS", "SUFFIXES", "read_outcomes"]

#: File suffix -> format.
SUFFIXES = {
    ".csv": "csv",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "jsonl",
    ".parquet": "parquet",
    ".pq": "parquet",
}
#: Rows accepted by default (one row per sample x model).
DEFAULT_MAX_ROWS = 5_000_000
#: Bytes of data accepted by default: the raw size of a text file, the decoded size of a Parquet file.
DEFAULT_MAX_BYTES = 2 * 1024**3
#: Largest CSV field accepted (Python's csv module stops at 128 KB by default; a long prompt is normal).
CSV_FIELD_LIMIT = 64 * 1024**2

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
    source: str | os.PathLike[str] | bytes | bytearray | memoryview | BinaryIO,
    *,
    name: str | None = None,
    prices: PriceTable | None = None,
    require_complete: bool = False,
    max_rows: int | None = DEFAULT_MAX_ROWS,
    max_bytes: int | None = DEFAULT_MAX_BYTES,
) -> OutcomeTable:
    """Read an outcome file in the long format, from a path or from an uploaded buffer.

    Args:
        source: A path to a ``.csv``, ``.jsonl`` / ``.ndjson`` / ``.json`` (JSON lines, or one JSON array of
            objects) or ``.parquet`` file; or the file's content as bytes or a binary file-like object
            (e.g. Streamlit's ``UploadedFile``).
        name: The original file name, required with a buffer: its suffix picks the format and it names the
            file in error messages (default for a path: the path).
        prices: Price table for rows without ``cost_usd`` (default: ``datasets/prices.csv``).
        require_complete: Passed to :class:`OutcomeTable`; by default a partial table is accepted and
            samples missing some model are dropped with :meth:`OutcomeTable.complete` (counted in the card).
        max_rows: Refuse more data rows than this (None: no limit).
        max_bytes: Refuse more bytes than this: the size of a text file, the decoded size of a Parquet
            file's data read from its metadata before reading (None: no limit).

    Raises:
        DataNotFoundError: if the path does not exist.
        SchemaError: on an empty, oversized or unreadable file, a malformed line, a missing/misnamed column or
            a bad value, naming the file, the line and the column.
    """
    label, kind, path, data = _open(source, name, max_bytes)
    if kind == "parquet":
        arrow = _read_parquet(path if path is not None else pa.BufferReader(data), label, max_rows, max_bytes)
        table = OutcomeTable.from_arrow(arrow, name=Path(label).stem, origin=label)  # errors name the file
        return table if require_complete else table.complete()
    if data is None:
        data = path.read_bytes()
    text = _decode(data, label)
    if kind == "csv":
        frame = _parse_csv(text, label, max_rows)
    elif text.lstrip().startswith("["):
        frame = _parse_json_array(text, label, max_rows)
    else:
        frame = _parse_jsonl(text, label, max_rows)
    if len(frame) == 0:
        raise SchemaError(f"{label}: no data rows")
    _check_columns(frame, label)
    lines: list[int] = frame.attrs.get("lines", [])  # file line of each data row, for error messages
    frame = _fill_costs(frame, label, prices, lines)
    card = DatasetCard(
        name=Path(label).stem,
        source=label if path is not None else f"uploaded file {label}",
        description=f"outcomes read from {Path(label).name}",
        grading="as recorded in the file's 'grader' column",
        cost_note=(
            "estimated (cost_estimated column)"
            if _truthy(frame.get("cost_estimated")).any()
            else "as recorded in the file (cost_usd, or tokens x datasets/prices.csv)"
        ),
    )
    try:
        table = OutcomeTable(frame, card, origin=label, require_complete=require_complete)
    except SchemaError as exc:
        raise SchemaError(_with_line(str(exc), lines)) from None
    return table if require_complete else table.complete()


def _open(
    source: str | os.PathLike[str] | bytes | bytearray | memoryview | BinaryIO,
    name: str | None,
    max_bytes: int | None,
) -> tuple[str, str, Path | None, bytes | None]:
    """``(label, kind, path, data)``: a path to read later, or the bytes of a buffer (size-checked)."""
    path, data = None, None
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        label = name or str(path)
        if not path.is_file():
            raise DataNotFoundError(f"outcome file {str(path)!r} does not exist")
        size = path.stat().st_size
    else:
        if not name:
            raise SchemaError("an outcome file given as bytes or a buffer needs its file name (name=...)")
        label = name
        if isinstance(source, (bytes, bytearray, memoryview)):
            data = bytes(source)
        elif hasattr(source, "read"):
            if hasattr(source, "seek"):
                source.seek(0)  # an UploadedFile may have been read before
            data = source.read() if max_bytes is None else source.read(max_bytes + 1)
            if not isinstance(data, bytes):
                raise SchemaError(f"{label}: the buffer must be opened in binary mode (got {type(data).__name__})")
        else:
            raise SchemaError(f"{label}: cannot read outcomes from a {type(source).__name__}")
        size = len(data)
    suffix = Path(label).suffix.lower()
    kind = SUFFIXES.get(suffix)
    if kind is None:
        raise SchemaError(
            f"{label}: unknown outcome file type {suffix or '(no suffix)'!r}; use one of {', '.join(SUFFIXES)}"
        )
    if size == 0:
        raise SchemaError(f"{label}: empty file (0 bytes)")
    if max_bytes is not None and size > max_bytes and kind != "parquet":  # Parquet: decoded size, checked later
        raise SchemaError(f"{label}: {_mb(size)} is over the limit of {_mb(max_bytes)} (max_bytes)")
    return label, kind, path, data


def _mb(n: float) -> str:
    return f"{n / 1024**2:.1f} MB"


def _too_many_rows(label: str, n: int | None, max_rows: int) -> SchemaError:
    """The row-limit error; ``n`` is None when reading stopped at the first row past the limit."""
    count = f"{n:,} rows is over" if n is not None else "more rows than"
    return SchemaError(f"{label}: {count} the limit of {max_rows:,} rows (max_rows)")


def _read_parquet(
    source: Path | pa.BufferReader, label: str, max_rows: int | None, max_bytes: int | None
) -> pa.Table:
    """Read a Parquet file after checking, from its metadata, that its rows and decoded size are in bounds."""
    try:
        meta_file = pq.ParquetFile(source)
        meta, schema = meta_file.metadata, meta_file.schema_arrow
    except (pa.ArrowException, OSError) as exc:
        raise SchemaError(f"{label}: not a readable Parquet file ({_first_line(exc)})") from None
    if max_rows is not None and meta.num_rows > max_rows:
        raise _too_many_rows(label, meta.num_rows, max_rows)
    stored = sum(
        meta.row_group(g).column(c).total_uncompressed_size
        for g in range(meta.num_row_groups)
        for c in range(meta.num_columns)
    )
    if max_bytes is not None and stored > max_bytes:
        raise SchemaError(
            f"{label}: its data is {_mb(stored)} uncompressed, over the limit of {_mb(max_bytes)} (max_bytes)"
        )
    # Text is read dictionary-encoded (as stored), so a value repeated a million times is held once while
    # its decoded size is measured; only then is it decoded.
    text_columns = [f.name for f in schema if _is_text(f.type)]
    try:
        if isinstance(source, pa.BufferReader):
            source.seek(0)
        table = pq.ParquetFile(source, read_dictionary=text_columns).read()
    except (pa.ArrowException, OSError) as exc:
        raise SchemaError(f"{label}: not a readable Parquet file ({_first_line(exc)})") from None
    decoded = sum(_decoded_bytes(table.column(name)) for name in text_columns)
    decoded += sum(table.column(f.name).nbytes for f in schema if f.name not in text_columns)
    if max_bytes is not None and decoded > max_bytes:
        raise SchemaError(
            f"{label}: its data would take {_mb(decoded)} once decoded, over the limit of {_mb(max_bytes)} "
            "(max_bytes)"
        )
    for name in text_columns:  # decode (a column stored as an Arrow dictionary becomes plain text too)
        field = schema.field(name)
        plain = field.type.value_type if pa.types.is_dictionary(field.type) else field.type
        i = table.schema.get_field_index(name)
        table = table.set_column(i, field.with_type(plain), table.column(name).cast(plain))
    return table


def _is_text(kind: pa.DataType) -> bool:
    """String or binary data, plain or dictionary-encoded: the columns whose decoded size can explode."""
    if pa.types.is_dictionary(kind):
        kind = kind.value_type
    return any(
        check(kind)
        for check in (pa.types.is_string, pa.types.is_large_string, pa.types.is_binary, pa.types.is_large_binary)
    )


def _decoded_bytes(column: pa.ChunkedArray) -> int:
    """Bytes a dictionary-encoded text column takes once decoded, computed without decoding it."""
    total = 0
    for chunk in column.chunks:
        if not pa.types.is_dictionary(chunk.type):
            total += chunk.nbytes
            continue
        lengths = pc.binary_length(chunk.dictionary).fill_null(0)
        total += int(pc.sum(lengths.take(chunk.indices)).as_py() or 0) + 8 * len(chunk)
    return total


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _decode(data: bytes, label: str) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise SchemaError(
            f"{label}: not UTF-8 text: byte 0x{data[exc.start]:02x} at byte offset {exc.start} (line {line}); "
            "re-save the file as UTF-8"
        ) from None


def _parse_csv(text: str, label: str, max_rows: int | None) -> pd.DataFrame:
    # The limit is process-wide in the csv module; raising it never breaks another reader.
    csv.field_size_limit(max(csv.field_size_limit(), CSV_FIELD_LIMIT))
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = [c.strip() for c in next(reader, [])]
        if not any(header):
            raise SchemaError(f"{label}: empty file (no header line)")
        body, lines = [], []
        start = reader.line_num + 1
        for row in reader:
            if row and any(c.strip() for c in row):
                if len(row) != len(header):
                    raise SchemaError(
                        f"{label}, line {start}: malformed CSV row: {len(row)} fields, "
                        f"but the header has {len(header)}"
                    )
                body.append(row)
                lines.append(start)
                if max_rows is not None and len(body) > max_rows:
                    raise _too_many_rows(label, None, max_rows)
            start = reader.line_num + 1
    except csv.Error as exc:
        raise SchemaError(f"{label}, line {reader.line_num}: malformed CSV ({exc})") from None
    frame = pd.DataFrame(body, columns=header, dtype=object)
    frame.attrs["lines"] = lines
    return frame


def _parse_jsonl(text: str, label: str, max_rows: int | None) -> pd.DataFrame:
    records, lines = [], []
    for i, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as exc:
            raise SchemaError(f"{label}, line {i}: malformed JSON ({exc.msg} at column {exc.colno})") from None
        except RecursionError:
            raise SchemaError(f"{label}, line {i}: JSON nested too deeply") from None
        if not isinstance(rec, dict):
            raise SchemaError(f"{label}, line {i}: expected a JSON object, got {type(rec).__name__}")
        records.append(rec)
        lines.append(i)
        if max_rows is not None and len(records) > max_rows:
            raise _too_many_rows(label, None, max_rows)
    frame = pd.DataFrame.from_records(records)
    frame.attrs["lines"] = lines
    return frame


def _parse_json_array(text: str, label: str, max_rows: int | None) -> pd.DataFrame:
    """One JSON array of objects (what ``DataFrame.to_json(orient="records")`` writes), with line numbers."""
    decoder = json.JSONDecoder()
    records, lines = [], []
    pos = text.index("[") + 1
    n = len(text)

    def skip(p: int) -> int:
        while p < n and text[p] in " \t\r\n":
            p += 1
        return p

    def line_of(p: int) -> int:
        return text.count("\n", 0, p) + 1

    pos = skip(pos)
    if pos < n and text[pos] == "]":
        pos += 1
    else:
        while True:
            try:
                rec, end = decoder.raw_decode(text, pos)
            except json.JSONDecodeError as exc:
                raise SchemaError(
                    f"{label}, line {exc.lineno}: malformed JSON ({exc.msg} at column {exc.colno})"
                ) from None
            except RecursionError:
                raise SchemaError(f"{label}, line {line_of(pos)}: JSON nested too deeply") from None
            if not isinstance(rec, dict):
                raise SchemaError(f"{label}, line {line_of(pos)}: expected a JSON object, got {type(rec).__name__}")
            records.append(rec)
            lines.append(line_of(pos))
            if max_rows is not None and len(records) > max_rows:
                raise _too_many_rows(label, None, max_rows)
            pos = skip(end)
            if pos < n and text[pos] == ",":
                pos = skip(pos + 1)
                continue
            if pos < n and text[pos] == "]":
                pos += 1
                break
            raise SchemaError(f"{label}, line {line_of(pos)}: malformed JSON array (expected ',' or ']')")
    if skip(pos) != n:
        raise SchemaError(f"{label}, line {line_of(skip(pos))}: unexpected text after the JSON array")
    frame = pd.DataFrame.from_records(records)
    frame.attrs["lines"] = lines
    return frame


def _check_columns(frame: pd.DataFrame, label: str) -> None:
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
        f"{label}: missing required column(s) {missing}{need_cost}{detail}; "
        f"columns present: {', '.join(frame.columns)}"
    )


def _truthy(col: pd.Series | None) -> pd.Series:
    if col is None:
        return pd.Series([], dtype=bool)
    return col.astype(str).str.strip().str.lower().isin({"true", "1", "yes", "y", "t"})


def _fill_costs(frame: pd.DataFrame, label: str, prices: PriceTable | None, lines: list[int]) -> pd.DataFrame:
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
            f"{label}, line {lines[i]}: column 'cost_usd' is empty and there are no token columns to price"
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
                f"{label}, line {lines[i]}: columns 'input_tokens'/'output_tokens' must be numbers "
                "to price the row"
            ) from None
        try:
            if prov is not None and prov not in prices.providers(model):
                prov = None  # an unlisted provider is priced at the model's default list price
            f.at[i, "cost_usd"] = prices.cost(model, tin, tout, provider=prov)
        except UnknownComponentError as exc:
            raise SchemaError(f"{label}, line {lines[i]}, column 'model': {exc}") from None
    return f


def _with_line(message: str, lines: list[int]) -> str:
    """Rewrite OutcomeTable's 'row N in <file>' into 'line L (data row N) in <file>'."""

    def sub(m: re.Match[str]) -> str:
        i = int(m.group(1))
        return f"line {lines[i]} (data row {i})" if i < len(lines) else m.group(0)

    return re.sub(r"\brow (\d+)\b", sub, message, count=1)
