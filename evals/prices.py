"""The price table: USD per 1M input/output tokens (plus any per-request fee) per model and provider.

The data lives in ``datasets/prices.csv`` (one row per (model, provider), each with its source and date).
Columns:

================ ======================================================================================
model            model name as used in OutcomeTables (``Llama-3.1-70B-Instruct``, ``gpt-4o-2024-05-13``)
provider         who sells it (``openai``, ``together``, ...)
input_per_1m     USD per 1M prompt tokens
output_per_1m    USD per 1M completion tokens
request_fee      USD per request on top of tokens (0 for most)
default          ``1`` on exactly one row per model: the list price importers use when no provider is named
p50_latency_s    typical seconds to a full answer (empty when unknown)
source           where the price comes from (URL or document)
date             when that price was valid (``YYYY-MM``)
================ ======================================================================================

Example:
    >>> prices = PriceTable.load()
    >>> prices.cost("gpt-4o-2024-05-13", input_tokens=1_000, output_tokens=500)
    0.0125
"""

from __future__ import annotations

import difflib
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from evals.exceptions import DataNotFoundError, SchemaError, UnknownComponentError
from evals.paths import repo_datasets_dir

__all__ = ["Price", "PriceTable", "default_prices_path"]

_REQUIRED = ("model", "provider", "input_per_1m", "output_per_1m", "request_fee", "source", "date")
_NUMERIC = ("input_per_1m", "output_per_1m", "request_fee")


def default_prices_path() -> Path:
    """``datasets/prices.csv`` of this checkout."""
    return repo_datasets_dir() / "prices.csv"


@dataclass(frozen=True)
class Price:
    """The price of one model at one provider."""

    model: str
    provider: str
    input_per_1m: float
    output_per_1m: float
    request_fee: float = 0.0
    p50_latency_s: float = float("nan")
    source: str = ""
    date: str = ""

    def cost(self, input_tokens: float, output_tokens: float) -> float:
        """Dollars for one request with these token counts."""
        return (
            input_tokens * self.input_per_1m + output_tokens * self.output_per_1m
        ) / 1e6 + self.request_fee


class PriceTable:
    """Model prices per provider, validated on construction.

    Args:
        frame: Rows with the columns of this module's docstring (``default`` and ``p50_latency_s`` optional:
            without ``default`` the first row of each model is its default).
        origin: Where the rows came from, for error messages.

    Raises:
        SchemaError: on a missing column, a non-numeric or negative price, or a duplicate (model, provider),
            naming the file, row and column.
    """

    def __init__(self, frame: pd.DataFrame, *, origin: str = "") -> None:
        self.origin = origin
        self._frame = _validate(frame, origin)
        self._by_key = {(r.model, r.provider): _price(r) for r in self._frame.itertuples(index=False)}
        self._default = {
            r.model: (r.model, r.provider) for r in self._frame.itertuples(index=False) if r.default
        }

    @classmethod
    def load(cls, path: str | os.PathLike[str] | None = None) -> PriceTable:
        """Read a price CSV (default: ``datasets/prices.csv``).

        Raises:
            DataNotFoundError: if the file does not exist.
            SchemaError: if it cannot be parsed or fails validation.
        """
        path = Path(path) if path is not None else default_prices_path()
        if not path.is_file():
            raise DataNotFoundError(f"price table {str(path)!r} does not exist")
        try:
            frame = pd.read_csv(
                path,
                dtype={"model": str, "provider": str, "source": str, "date": str},
                keep_default_na=False,
                na_values={"p50_latency_s": [""]},
                comment=None,
            )
        except UnicodeDecodeError as exc:
            raise SchemaError(f"{path}: not UTF-8 text (byte offset {exc.start})") from None
        except (pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
            raise SchemaError(f"{path}: malformed CSV ({str(exc).strip()})") from None
        return cls(frame, origin=str(path))

    @property
    def frame(self) -> pd.DataFrame:
        """A copy of the validated rows."""
        return self._frame.copy()

    @property
    def models(self) -> list[str]:
        """Sorted model names."""
        return sorted(self._default)

    def providers(self, model: str) -> list[str]:
        """Providers that sell ``model`` (file order)."""
        self._check_model(model)
        return [p for (m, p) in self._by_key if m == model]

    def offers(self, model: str) -> list[Price]:
        """Every provider's price for ``model`` (file order)."""
        return [self._by_key[(model, p)] for p in self.providers(model)]

    def price(self, model: str, provider: str | None = None) -> Price:
        """The price of ``model`` at ``provider`` (default: the model's default row).

        Raises:
            UnknownComponentError: for an unknown model (listing near matches) or a provider that does not
                sell it (listing those that do).
        """
        self._check_model(model)
        if provider is None:
            return self._by_key[self._default[model]]
        key = (model, provider)
        if key not in self._by_key:
            raise UnknownComponentError(
                f"provider {provider!r} does not sell {model!r} in the price table{_where(self.origin)}; "
                f"providers of it: {', '.join(self.providers(model))}"
            )
        return self._by_key[key]

    def cost(
        self,
        model: str,
        input_tokens: float | np.ndarray,
        output_tokens: float | np.ndarray,
        provider: str | None = None,
    ) -> float | np.ndarray:
        """Dollars for request(s) with these token counts (scalars or arrays)."""
        p = self.price(model, provider)
        out = (
            np.asarray(input_tokens, dtype=float) * p.input_per_1m
            + np.asarray(output_tokens, dtype=float) * p.output_per_1m
        ) / 1e6 + p.request_fee
        return float(out) if np.ndim(out) == 0 else out

    def __contains__(self, model: object) -> bool:
        return model in self._default

    def __len__(self) -> int:
        return len(self._frame)

    def __repr__(self) -> str:
        return f"PriceTable({len(self._default)} models, {len(self._frame)} offers)"

    def _check_model(self, model: str) -> None:
        if model in self._default:
            return
        near = difflib.get_close_matches(model, list(self._default), n=5, cutoff=0.5)
        lowered = [m for m in self._default if model.lower() in m.lower() or m.lower() in model.lower()]
        near = list(dict.fromkeys(near + lowered))[:5]
        hint = f"; did you mean {', '.join(near)}?" if near else f"; known models: {', '.join(self.models)}"
        raise UnknownComponentError(f"model {model!r} is not in the price table{_where(self.origin)}{hint}")


def _where(origin: str) -> str:
    return f" {origin}" if origin else ""


def _price(r) -> Price:  # noqa: ANN001 - a namedtuple row
    return Price(
        r.model,
        r.provider,
        float(r.input_per_1m),
        float(r.output_per_1m),
        float(r.request_fee),
        float(r.p50_latency_s),
        r.source,
        r.date,
    )


def _loc(i: int, origin: str) -> str:
    """A data row as the user sees it: the CSV line (header = line 1) of a file, else the frame row."""
    return f"line {i + 2} of {origin}" if origin else f"row {i}"


def _validate(frame: pd.DataFrame, origin: str) -> pd.DataFrame:
    where = f" in {origin}" if origin else ""
    missing = [c for c in _REQUIRED if c not in frame.columns]
    if missing:
        raise SchemaError(
            f"price table{where} lacks column(s) {missing}; "
            f"columns present: {', '.join(map(str, frame.columns))}"
        )
    if len(frame) == 0:
        raise SchemaError(f"price table{where} is empty")
    f = frame.reset_index(drop=True).copy()
    for col in ("model", "provider"):
        f[col] = f[col].fillna("").astype(str).str.strip()
        bad = f[col].eq("")
        if bad.any():
            raise SchemaError(f"{_loc(int(np.flatnonzero(bad)[0]), origin)}: column {col!r} is empty")
    for col in _NUMERIC:
        conv = pd.to_numeric(
            f[col].replace("", np.nan) if f[col].dtype == object else f[col], errors="coerce"
        )
        if col == "request_fee":
            conv = conv.fillna(0.0)
        bad = conv.isna() | (conv < 0)
        if bad.any():
            i = int(np.flatnonzero(bad.to_numpy())[0])
            raise SchemaError(
                f"{_loc(i, origin)}: column {col!r} is {str(f[col].iat[i])!r}; prices must be numbers >= 0"
            )
        f[col] = conv.astype(float)
    lat = pd.to_numeric(f["p50_latency_s"], errors="coerce") if "p50_latency_s" in f else np.nan
    f["p50_latency_s"] = lat
    dup = f.duplicated(["model", "provider"])
    if dup.any():
        i = int(np.flatnonzero(dup.to_numpy())[0])
        raise SchemaError(
            f"{_loc(i, origin)}: duplicate (model, provider) = ({f['model'].iat[i]!r}, "
            f"{f['provider'].iat[i]!r})"
        )
    if "default" in f.columns:
        f["default"] = f["default"].astype(str).str.strip().str.lower().isin({"1", "true", "yes"})
    else:
        f["default"] = ~f.duplicated("model")
    n_default = f.groupby("model", sort=False)["default"].sum()
    bad = n_default[n_default != 1]
    if len(bad):
        model = bad.index[0]
        raise SchemaError(
            f"model {model!r}{where}: column 'default' must be 1 on exactly one row per model "
            f"(found {int(bad.iloc[0])})"
        )
    return f
