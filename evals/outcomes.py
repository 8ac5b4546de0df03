"""The OutcomeTable: one row per (sample, model), the currency of every RouteLab phase.

Collection writes it, importers produce it, routers are fitted on it and replayed over its wide views.

Long form (one row per sample x model), validated on construction:

============== ======= ==============================================================================
column         type    meaning
============== ======= ==============================================================================
sample_id      str     identifies the prompt; the same prompt/category/reference on every row of it
task           str     task set the sample belongs to (``mmlu-pro``, ``gsm8k``, ...)
category       str     subject / category ("" when unknown)
prompt         str     the text sent to the model (the user turn)
reference      str     gold answer or reference text ("" when none)
model          str     candidate model name
provider       str     who served it ("" when unknown)
response       str     the model's answer text ("" when the source has none)
score          float   quality in [0, 1] (1 = correct / best)
cost_usd       float   dollars for this call, >= 0
cost_estimated bool    True when the cost is estimated from text lengths rather than measured usage
input_tokens   float   prompt tokens (NaN when unknown)
output_tokens  float   completion tokens (NaN when unknown)
latency_s      float   seconds to the full answer (NaN when unknown)
grader         str     how ``score`` was produced (``mcq_letter``, ``judge:gpt-4``, ``source``...)
============== ======= ==============================================================================

Replay works on *wide* views: arrays of shape (n_samples, n_models), rows in sample order, columns in
model order (:attr:`OutcomeTable.models`).
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from evals.exceptions import DataNotFoundError, SchemaError

__all__ = ["COLUMNS", "DatasetCard", "OutcomeTable", "Split"]

#: Column name -> kind ("str", "float", "bool"), in canonical order.
COLUMNS: dict[str, str] = {
    "sample_id": "str",
    "task": "str",
    "category": "str",
    "prompt": "str",
    "reference": "str",
    "model": "str",
    "provider": "str",
    "response": "str",
    "score": "float",
    "cost_usd": "float",
    "cost_estimated": "bool",
    "input_tokens": "float",
    "output_tokens": "float",
    "latency_s": "float",
    "grader": "str",
}
REQUIRED = ("sample_id", "model", "score", "cost_usd")
_PER_SAMPLE = ("task", "category", "prompt", "reference")
_CARD_KEY = b"routelab.card"


@dataclass(frozen=True)
class DatasetCard:
    """What travels with an OutcomeTable: where it came from and how it was graded and priced."""

    name: str = "unnamed"
    """Short name (a source name such as ``mmlu-pro`` or a file stem)."""
    source: str = ""
    """Origin: repository/URL and commit, or the file it was read from."""
    license: str = ""
    """License of the underlying data as stated by its origin."""
    description: str = ""
    """One paragraph on what the task is."""
    grading: str = ""
    """How scores were produced (rule or judge), in words."""
    cost_note: str = ""
    """How costs were obtained; says 'estimated' and the convention when they are not measured."""
    extra: dict[str, Any] = field(default_factory=dict)
    """Anything else worth keeping (counts of unparsable answers, dropped rows, ...). JSON-serialisable."""

    def to_json(self) -> str:
        """Serialise to a JSON string."""
        return json.dumps(asdict(self), sort_keys=True, default=str)

    @classmethod
    def from_json(cls, text: str) -> DatasetCard:
        """Parse a card written by :meth:`to_json` (unknown keys go into ``extra``)."""
        data = json.loads(text)
        known = {k: data.pop(k) for k in list(data) if k in cls.__dataclass_fields__}
        extra = dict(known.pop("extra", {}) or {})
        extra.update(data)
        return cls(**known, extra=extra)


class Split(NamedTuple):
    """Three disjoint parts of one OutcomeTable, split by sample."""

    train: OutcomeTable
    validation: OutcomeTable
    test: OutcomeTable


def _where(origin: str) -> str:
    return f" in {origin}" if origin else ""


class OutcomeTable:
    """A validated long table of per-(sample, model) outcomes, with wide numpy views for replay.

    Args:
        frame: Long-form rows. Required columns: ``sample_id, model, score, cost_usd``; the others of
            :data:`COLUMNS` are filled with defaults when absent ("" for text, NaN for numbers, and
            ``cost_estimated=False``). Extra columns are kept.
        card: The dataset card; defaults to an unnamed one.
        origin: Where the rows came from (a file path), used in error messages.
        require_complete: If True (default), every sample must have a row for every model, so that the wide
            views have no holes. Use :meth:`complete` on partial data first.

    Raises:
        SchemaError: naming the origin, the (first) offending row and the column.

    Example:
        >>> t = OutcomeTable(pd.DataFrame({"sample_id": ["a", "a"], "model": ["big", "small"],
        ...                                "score": [1.0, 0.0], "cost_usd": [0.01, 0.001]}))
        >>> t.models, t.quality.tolist()
        (('big', 'small'), [[1.0, 0.0]])
    """

    def __init__(
        self,
        frame: pd.DataFrame,
        card: DatasetCard | None = None,
        *,
        origin: str = "",
        require_complete: bool = True,
    ) -> None:
        self.card = card or DatasetCard()
        self.origin = origin
        self._frame = _normalise(frame, origin)
        self._validate(require_complete)
        self._wide_cache: dict[str, np.ndarray] = {}
        self._model_order: tuple[str, ...] | None = None

    # ------------------------------------------------------------------ construction helpers
    @classmethod
    def from_records(
        cls, records: Iterable[dict[str, Any]], card: DatasetCard | None = None, **kw: Any
    ) -> OutcomeTable:
        """Build from an iterable of row dicts."""
        return cls(pd.DataFrame.from_records(list(records)), card, **kw)

    def _validate(self, require_complete: bool) -> None:
        f, where = self._frame, _where(self.origin)
        if len(f) == 0:
            raise SchemaError(f"outcome table{where} is empty: no rows")
        for col in ("sample_id", "model"):
            bad = f[col].eq("")
            if bad.any():
                raise SchemaError(f"row {_row(f, bad)}{where}: column {col!r} is empty")
        score = f["score"].to_numpy()
        bad = ~np.isfinite(score) | (score < 0) | (score > 1)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise SchemaError(f"row {i}{where}: column 'score' is {float(score[i])!r}, outside [0, 1]")
        cost = f["cost_usd"].to_numpy()
        bad = ~np.isfinite(cost) | (cost < 0)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise SchemaError(f"row {i}{where}: column 'cost_usd' is {float(cost[i])!r}; costs must be finite and >= 0")
        for col in ("input_tokens", "output_tokens", "latency_s"):
            v = f[col].to_numpy()
            bad = np.isfinite(v) & (v < 0)
            if bad.any():
                i = int(np.flatnonzero(bad)[0])
                raise SchemaError(f"row {i}{where}: column {col!r} is {float(v[i])!r}; it must be >= 0")
        dup = f.duplicated(["sample_id", "model"])
        if dup.any():
            i = int(np.flatnonzero(dup.to_numpy())[0])
            raise SchemaError(
                f"row {i}{where}: duplicate (sample_id, model) = ({f['sample_id'].iat[i]!r}, {f['model'].iat[i]!r})"
            )
        # Per-sample columns must agree across the rows of one sample.
        for col in _PER_SAMPLE:
            n_distinct = f.groupby("sample_id", sort=False)[col].nunique()
            if (n_distinct > 1).any():
                sid = n_distinct.index[(n_distinct > 1).to_numpy()][0]
                i = int(np.flatnonzero(f["sample_id"].eq(sid).to_numpy())[1])
                raise SchemaError(f"row {i}{where}: column {col!r} differs between rows of sample_id {sid!r}")
        if require_complete:
            n_models = f["model"].nunique()
            per_sample = f.groupby("sample_id", sort=False)["model"].size()
            short = per_sample[per_sample < n_models]
            if len(short):
                sid = short.index[0]
                have = set(f.loc[f["sample_id"].eq(sid), "model"])
                missing = sorted(set(f["model"].unique()) - have)
                raise SchemaError(
                    f"sample_id {sid!r}{where} has no row for model(s) {missing[:5]} ({len(short)} incomplete "
                    "samples in all); drop them with OutcomeTable.complete() or pass require_complete=False"
                )

    # ------------------------------------------------------------------ basic properties
    @property
    def frame(self) -> pd.DataFrame:
        """A copy of the long table (canonical columns first)."""
        return self._frame.copy()

    @property
    def models(self) -> tuple[str, ...]:
        """Model names in column order of the wide views (order of first appearance unless selected)."""
        if self._model_order is not None:
            return self._model_order
        return tuple(pd.unique(self._frame["model"]))

    @property
    def sample_ids(self) -> np.ndarray:
        """Sample ids in row order of the wide views (order of first appearance)."""
        return pd.unique(self._frame["sample_id"]).astype(object)

    @property
    def n_samples(self) -> int:
        """Number of distinct samples."""
        return int(self._frame["sample_id"].nunique())

    @property
    def n_models(self) -> int:
        """Number of distinct models."""
        return int(self._frame["model"].nunique())

    def __len__(self) -> int:
        return len(self._frame)

    def __repr__(self) -> str:
        return f"OutcomeTable({self.card.name!r}, {self.n_samples} samples x {self.n_models} models)"

    # ------------------------------------------------------------------ per-sample views
    def _first_rows(self) -> pd.DataFrame:
        if "_first" not in self._wide_cache:
            first = self._frame.drop_duplicates("sample_id", keep="first")
            self._wide_cache["_first"] = first  # type: ignore[assignment]
        return self._wide_cache["_first"]  # type: ignore[return-value]

    @property
    def samples(self) -> pd.DataFrame:
        """One row per sample: ``sample_id, task, category, prompt, reference`` (wide-view row order)."""
        return self._first_rows()[["sample_id", *_PER_SAMPLE]].reset_index(drop=True)

    @property
    def prompts(self) -> list[str]:
        """Prompt text per sample, in wide-view row order."""
        return self._first_rows()["prompt"].tolist()

    @property
    def categories(self) -> np.ndarray:
        """Category per sample, in wide-view row order (object array; "" when unknown)."""
        return self._first_rows()["category"].to_numpy(dtype=object)

    @property
    def cost_estimated(self) -> bool:
        """True if any cost in the table is an estimate rather than a measurement."""
        return bool(self._frame["cost_estimated"].any())

    # ------------------------------------------------------------------ wide views
    def wide(self, column: str = "score", *, fill: float | None = None) -> np.ndarray:
        """A read-only (n_samples, n_models) array of a numeric column.

        Args:
            column: Any numeric column (``score``, ``cost_usd``, ``latency_s``, ``output_tokens``...).
            fill: Value for missing (sample, model) pairs; by default they are NaN.
        """
        key = f"{column}:{fill}"
        if key not in self._wide_cache:
            f = self._frame
            if column not in f.columns:
                raise SchemaError(f"outcome table has no column {column!r}")
            rows = pd.Index(self.sample_ids).get_indexer(f["sample_id"])
            cols = pd.Index(self.models).get_indexer(f["model"])
            out = np.full((self.n_samples, self.n_models), np.nan if fill is None else fill, dtype=float)
            out[rows, cols] = f[column].to_numpy(dtype=float)
            out.setflags(write=False)
            self._wide_cache[key] = out
        return self._wide_cache[key]

    def wide_text(self, column: str = "response") -> np.ndarray:
        """A (n_samples, n_models) object array of a text column ("" where missing)."""
        f = self._frame
        if column not in f.columns:
            raise SchemaError(f"outcome table has no column {column!r}")
        rows = pd.Index(self.sample_ids).get_indexer(f["sample_id"])
        cols = pd.Index(self.models).get_indexer(f["model"])
        out = np.full((self.n_samples, self.n_models), "", dtype=object)
        out[rows, cols] = f[column].to_numpy(dtype=object)
        return out

    @property
    def quality(self) -> np.ndarray:
        """Scores, shape (n_samples, n_models)."""
        return self.wide("score")

    @property
    def cost(self) -> np.ndarray:
        """Dollar cost per call, shape (n_samples, n_models)."""
        return self.wide("cost_usd")

    def model_summary(self) -> pd.DataFrame:
        """Per model: samples, mean quality, mean cost per 1k requests ($), and whether cost is estimated."""
        g = self._frame.groupby("model", sort=False)
        out = pd.DataFrame(
            {
                "samples": g.size(),
                "quality": g["score"].mean(),
                "cost_per_1k": g["cost_usd"].mean() * 1000.0,
                "cost_estimated": g["cost_estimated"].any(),
            }
        )
        out.index.name = "model"
        return out.reset_index()

    # ------------------------------------------------------------------ selection and splitting
    def select(
        self,
        models: Sequence[str] | None = None,
        categories: Sequence[str] | None = None,
        sample_ids: Iterable[Any] | None = None,
    ) -> OutcomeTable:
        """A new table restricted to some models, categories and/or samples (model order as given).

        Raises:
            SchemaError: on a model or category that is not in the table (the message lists those that are).
        """
        f = self._frame
        mask = np.ones(len(f), dtype=bool)
        if models is not None:
            unknown = [m for m in models if m not in set(self.models)]
            if unknown:
                raise SchemaError(f"unknown model(s) {unknown}; this table has: {', '.join(self.models)}")
            mask &= f["model"].isin(models).to_numpy()
        if categories is not None:
            have = set(f["category"].unique())
            unknown = [c for c in categories if c not in have]
            if unknown:
                raise SchemaError(f"unknown category(ies) {unknown}; this table has: {', '.join(sorted(have))}")
            mask &= f["category"].isin(categories).to_numpy()
        if sample_ids is not None:
            mask &= f["sample_id"].isin(list(sample_ids)).to_numpy()
        sub = f[mask]
        if len(sub) == 0:
            raise SchemaError("selection leaves no rows")
        order = tuple(models) if models is not None else self.models
        return self._with_frame(sub, model_order=tuple(m for m in order if m in set(sub["model"])))

    def complete(self) -> OutcomeTable:
        """Drop samples that lack a row for some model (records how many in ``card.extra``)."""
        f = self._frame
        n_models = f["model"].nunique()
        counts = f.groupby("sample_id", sort=False)["model"].transform("size")
        keep = counts.to_numpy() == n_models
        dropped = int(f.loc[~keep, "sample_id"].nunique())
        card = replace(self.card, extra={**self.card.extra, "incomplete_samples_dropped": dropped})
        out = OutcomeTable(f[keep], card, origin=self.origin)
        if self._model_order is not None:  # keep a selected model order
            out._model_order = tuple(m for m in self._model_order if m in set(out._frame["model"]))
        return out

    def _with_frame(self, frame: pd.DataFrame, model_order: tuple[str, ...] | None = None) -> OutcomeTable:
        """A table over a subset of this one's (already validated) rows, skipping re-validation."""
        new = OutcomeTable.__new__(OutcomeTable)
        new.card, new.origin = self.card, self.origin
        new._frame = frame.reset_index(drop=True)
        new._wide_cache = {}
        new._model_order = model_order if model_order is not None else self._model_order
        return new

    def split(
        self,
        fractions: Sequence[float] = (0.6, 0.2, 0.2),
        *,
        random_state: int = 0,
        stratify: bool = False,
    ) -> Split:
        """Split by sample into train / validation / test; no sample is in two parts.

        Args:
            fractions: Shares of samples for train, validation and test (three positive numbers summing to 1).
            random_state: Seed; the same seed always gives the same split of the same table.
            stratify: If True, split each category separately so parts keep the category mix.
            (``validation`` is where routers calibrate their operating point; never tune on ``test``.)

        Returns:
            A :class:`Split` of three non-empty OutcomeTables.

        Raises:
            SchemaError: on bad fractions, or a table too small to give every part a sample.
        """
        fr = np.asarray(fractions, dtype=float)
        if fr.shape != (3,) or (fr <= 0).any() or abs(fr.sum() - 1) > 1e-9:
            raise SchemaError(f"split fractions must be 3 positive numbers summing to 1, got {list(fractions)}")
        ids = self.sample_ids
        rng = np.random.default_rng(random_state)
        groups = [np.arange(len(ids))]
        if stratify:
            cats = self.categories
            groups = [np.flatnonzero(cats == c) for c in pd.unique(cats)]
        parts: list[list[int]] = [[], [], []]
        for g in groups:
            perm = g[rng.permutation(len(g))]
            n_train = int(round(fr[0] * len(g)))
            n_val = int(round(fr[1] * len(g)))
            parts[0].extend(perm[:n_train])
            parts[1].extend(perm[n_train : n_train + n_val])
            parts[2].extend(perm[n_train + n_val :])
        if not all(parts):
            raise SchemaError(f"a {self.n_samples}-sample table is too small to split as {list(fractions)}")
        tables = []
        for idx in parts:
            chosen = ids[np.sort(np.asarray(idx, dtype=int))]
            tables.append(self._with_frame(self._frame[self._frame["sample_id"].isin(chosen)]))
        return Split(*tables)

    # ------------------------------------------------------------------ persistence
    def to_parquet(self, path: str | os.PathLike[str]) -> Path:
        """Write the table and its card to one Parquet file, atomically (a crash leaves no half file)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        table = pa.Table.from_pandas(self._frame, preserve_index=False)
        meta = dict(table.schema.metadata or {})
        meta[_CARD_KEY] = self.card.to_json().encode()
        table = table.replace_schema_metadata(meta)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        os.close(fd)
        try:
            pq.write_table(table, tmp)
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        return path

    @classmethod
    def read_parquet(cls, path: str | os.PathLike[str]) -> OutcomeTable:
        """Read a table written by :meth:`to_parquet` (or any Parquet file in the long format)."""
        path = Path(path)
        if not path.is_file():
            raise DataNotFoundError(f"outcome file {str(path)!r} does not exist")
        try:
            table = pq.read_table(path)
        except (pa.ArrowInvalid, OSError) as exc:
            raise SchemaError(f"{path}: not a readable Parquet file ({exc})") from None
        return cls.from_arrow(table, name=path.stem, origin=str(path))

    @classmethod
    def from_arrow(cls, table: pa.Table, *, name: str, origin: str) -> OutcomeTable:
        """A validated table from Arrow data, with the card stored by :meth:`to_parquet` when there is one.

        Args:
            table: The rows in the long format (schema metadata may hold the card).
            name: Card name when the data carries no card (usually the file stem).
            origin: Where the data came from, for the card and error messages.
        """
        raw = (table.schema.metadata or {}).get(_CARD_KEY)
        card = DatasetCard.from_json(raw.decode()) if raw else DatasetCard(name=name, source=origin)
        return cls(table.to_pandas(), card, origin=origin)


def _row(frame: pd.DataFrame, mask: pd.Series) -> int:
    return int(np.flatnonzero(mask.to_numpy())[0])


def _normalise(frame: pd.DataFrame, origin: str) -> pd.DataFrame:
    """Check required columns and coerce every canonical column to its kind, naming the bad cell."""
    if not isinstance(frame, pd.DataFrame):
        raise SchemaError(f"expected a pandas DataFrame{_where(origin)}, got {type(frame).__name__}")
    missing = [c for c in REQUIRED if c not in frame.columns]
    if missing:
        have = ", ".join(map(str, frame.columns)) or "(none)"
        raise SchemaError(f"missing required column(s) {missing}{_where(origin)}; columns present: {have}")
    f = frame.reset_index(drop=True).copy()
    for col, kind in COLUMNS.items():
        if col not in f.columns:
            f[col] = {"str": "", "float": np.nan, "bool": False}[kind]
            continue
        if kind == "str":
            s = f[col]
            if isinstance(s.dtype, pd.StringDtype):  # already text (e.g. from Parquet): no costly re-cast
                f[col] = s.fillna("") if s.isna().any() else s
            elif s.dtype != object or s.isna().any():
                f[col] = s.where(s.notna(), "").astype(str)
            else:
                f[col] = s.map(_as_str)
        elif kind == "float":
            if pd.api.types.is_numeric_dtype(f[col].dtype) and not pd.api.types.is_bool_dtype(f[col].dtype):
                conv = f[col]  # already numbers: skip the (slow) text checks below
                bad = pd.Series(False, index=f.index)
            else:
                conv = pd.to_numeric(f[col], errors="coerce")
                suspect = conv.isna() & f[col].notna()
                bad = suspect & f[col].astype(str).str.strip().ne("") if suspect.any() else suspect
            if bad.any():
                i = _row(f, bad)
                raise SchemaError(f"row {i}{_where(origin)}: column {col!r} is {f[col].iat[i]!r}, not a number")
            if col in REQUIRED and conv.isna().any():
                i = _row(f, conv.isna())
                raise SchemaError(f"row {i}{_where(origin)}: column {col!r} is empty")
            f[col] = conv.astype(float)
        else:
            if f[col].dtype != bool:  # a bool column needs no cell-by-cell parsing
                f[col] = _as_bool_column(f[col], col, origin)
    extra = [c for c in f.columns if c not in COLUMNS]
    return f[[*COLUMNS, *extra]]


def _as_str(value: Any) -> str:
    return value if isinstance(value, str) else str(value)


def _as_bool_column(values: pd.Series, col: str, origin: str) -> pd.Series:
    """Parse a column of booleans (true/false, 1/0, yes/no; empty = false), naming the first bad row."""
    conv = _as_bool_cell(col, origin)
    out = np.empty(len(values), dtype=bool)
    for i, value in enumerate(values.tolist()):
        try:
            out[i] = conv(value)
        except SchemaError as exc:
            raise SchemaError(f"row {i}{_where(origin)}: {exc}") from None
    return pd.Series(out, index=values.index)


def _as_bool_cell(col: str, origin: str):  # noqa: ANN202 - small closure
    truthy = {"true", "1", "yes", "y", "t"}
    falsy = {"false", "0", "no", "n", "f", "", "nan", "none"}

    def conv(value: Any) -> bool:
        if isinstance(value, (bool, np.bool_)):
            return bool(value)
        text = str(value).strip().lower()
        if text in truthy:
            return True
        if text in falsy:
            return False
        raise SchemaError(f"column {col!r} is {value!r}, not a boolean (true/false)")

    return conv
