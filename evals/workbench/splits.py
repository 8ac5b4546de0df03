"""How an evaluation's samples are split into train, validation and test: seeded, by column, or by file.

Three ways, in this order of precedence:

* ``[dataset] test_source``: test is that source (a registered name or an outcome file); train and
  validation are split from ``source`` by the train and validation shares of ``[split] fractions``. A sample
  id found in both is reported (a warning with the count and a few ids) and kept out of train and validation,
  so the test copy is the one measured and nothing is fitted on a test sample;
* a ``split`` column in the outcome file (values ``train``, ``validation``, ``test``; ``val``/``valid``/
  ``dev`` mean validation): each sample goes where its rows say. A sample whose rows disagree is put in the
  latest part named (test before validation before train), with a warning; when no sample is marked
  validation, validation is split from train by the shares of ``[split] fractions``;
* otherwise the seeded split of :meth:`OutcomeTable.split` (``fractions``, ``seed``, ``stratify``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from evals.exceptions import SchemaError
from evals.outcomes import OutcomeTable, Split

__all__ = ["SPLIT_COLUMN", "SPLIT_NAMES", "SplitPlan", "split_table"]

#: The outcome-file column that assigns each sample to a part.
SPLIT_COLUMN = "split"

#: Accepted values of the split column -> the part they name.
SPLIT_NAMES = {
    "train": "train",
    "validation": "validation",
    "val": "validation",
    "valid": "validation",
    "dev": "validation",
    "test": "test",
}

_ORDER = ("train", "validation", "test")
_EXAMPLES = 5


class SplitPlan:
    """A split and how it was made.

    Attributes:
        split: The three parts.
        origin: ``seeded``, ``column`` or ``test_source``.
        warnings: Things the reader must know (overlapping ids, samples whose rows disagree).
        incomplete_test_dropped: Samples of ``test_source`` left out because some model had no row for them.
    """

    def __init__(
        self, split: Split, origin: str, warnings: list[str] | None = None, incomplete_test_dropped: int = 0
    ) -> None:
        self.split, self.origin = split, origin
        self.warnings = list(warnings or [])
        self.incomplete_test_dropped = incomplete_test_dropped


def _examples(ids: Sequence[str]) -> str:
    shown = ", ".join(repr(str(i)) for i in list(ids)[:_EXAMPLES])
    return shown + (", ..." if len(ids) > _EXAMPLES else "")


def _two_way(
    table: OutcomeTable, fractions: Sequence[float], *, seed: int, stratify: bool, what: str
) -> tuple[OutcomeTable, OutcomeTable]:
    """Train and validation from ``table``, by the train and validation shares of ``fractions``."""
    f_train, f_val = float(fractions[0]), float(fractions[1])
    if f_val <= 0:
        raise SchemaError(
            f"{what} gives no validation samples and [split] fractions give validation a share of 0: "
            "mark validation samples or give validation a share"
        )
    share = f_train / (f_train + f_val)
    ids = table.sample_ids
    rng = np.random.default_rng(seed)
    groups = [np.arange(len(ids))]
    if stratify:
        cats = table.categories
        groups = [np.flatnonzero(cats == c) for c in pd.unique(cats)]
    train_idx: list[int] = []
    val_idx: list[int] = []
    for g in groups:
        perm = g[rng.permutation(len(g))]
        n_train = int(round(share * len(g)))
        train_idx.extend(perm[:n_train])
        val_idx.extend(perm[n_train:])
    if not train_idx or not val_idx:
        raise SchemaError(f"{what}: {table.n_samples} samples are too few to split into train and validation")
    return (
        table.select(sample_ids=ids[np.sort(np.asarray(train_idx, dtype=int))]),
        table.select(sample_ids=ids[np.sort(np.asarray(val_idx, dtype=int))]),
    )


def _by_column(
    table: OutcomeTable, fractions: Sequence[float], *, seed: int, stratify: bool
) -> SplitPlan | None:
    """The split the table's ``split`` column gives (None when there is no such column, or it is empty)."""
    frame = table.frame
    if SPLIT_COLUMN not in frame.columns:
        return None
    raw = frame[SPLIT_COLUMN].fillna("").astype(str).str.strip().str.lower()
    if not raw.ne("").any():
        return None
    part = raw.map(SPLIT_NAMES)
    bad = part.isna()
    if bad.any():
        i = int(np.flatnonzero(bad.to_numpy())[0])
        raise SchemaError(
            f"column {SPLIT_COLUMN!r} is {frame[SPLIT_COLUMN].iat[i]!r} for sample_id {frame['sample_id'].iat[i]!r}"
            f"{' in ' + table.origin if table.origin else ''}; valid: train, validation (val, dev), test"
        )
    rank = part.map({name: k for k, name in enumerate(_ORDER)})
    per_sample = pd.DataFrame({"sample_id": frame["sample_id"], "rank": rank}).groupby("sample_id", sort=False)
    lo, hi = per_sample["rank"].min(), per_sample["rank"].max()
    warnings = []
    mixed = list(hi.index[(hi != lo).to_numpy()])
    if mixed:
        warnings.append(
            f"{len(mixed)} sample id(s) are marked for more than one part in the {SPLIT_COLUMN!r} column "
            f"(e.g. {_examples(mixed)}): each is kept in the latest part named (test, then validation) and left "
            "out of the others"
        )
    parts = {name: list(hi.index[(hi == k).to_numpy()]) for k, name in enumerate(_ORDER)}
    what = f"the {SPLIT_COLUMN!r} column"
    if not parts["train"] or not parts["test"]:
        missing = [n for n in ("train", "test") if not parts[n]]
        raise SchemaError(f"{what} marks no {' and no '.join(missing)} samples; mark some as {missing[0]!r}")
    train = table.select(sample_ids=parts["train"])
    if parts["validation"]:
        validation = table.select(sample_ids=parts["validation"])
    else:
        train, validation = _two_way(train, fractions, seed=seed, stratify=stratify, what=what)
    return SplitPlan(Split(train, validation, table.select(sample_ids=parts["test"])), "column", warnings)


def _with_test(
    table: OutcomeTable,
    test: OutcomeTable,
    fractions: Sequence[float],
    *,
    seed: int,
    stratify: bool,
    test_source: str,
) -> SplitPlan:
    """Test from ``test``; train and validation split from ``table`` without the ids ``test`` holds."""
    missing = [m for m in table.models if m not in set(test.models)]
    if missing:
        raise SchemaError(
            f"test_source {test_source!r} has no rows for model(s) {missing}; it has: {', '.join(test.models)}"
        )
    test = test.select(models=list(table.models))
    warnings = []
    test_ids = set(test.sample_ids.tolist())
    shared = [i for i in table.sample_ids.tolist() if i in test_ids]
    if shared:
        if len(shared) == table.n_samples:
            raise SchemaError(f"every sample id of the source also occurs in test_source {test_source!r}")
        warnings.append(
            f"{len(shared)} sample id(s) occur in both the source and test_source {test_source!r} "
            f"(e.g. {_examples(shared)}): the test copy is kept and they are left out of train and validation"
        )
        table = table.select(sample_ids=[i for i in table.sample_ids.tolist() if i not in test_ids])
    train, validation = _two_way(table, fractions, seed=seed, stratify=stratify, what="the source")
    return SplitPlan(Split(train, validation, test), "test_source", warnings)


def split_table(
    table: OutcomeTable,
    fractions: Sequence[float],
    *,
    seed: int,
    stratify: bool,
    test: OutcomeTable | None = None,
    test_source: str = "",
) -> SplitPlan:
    """Split ``table`` by the rule of the module docstring.

    Args:
        table: The (selected, completed) outcome table.
        fractions: ``[split] fractions`` (train, validation, test).
        seed, stratify: ``[split] seed`` and ``stratify``.
        test: The test table read from ``[dataset] test_source`` (None: none given).
        test_source: How the test source is named in messages.

    Raises:
        SchemaError: naming the bad value, or the part left empty.
    """
    if test is not None:
        return _with_test(table, test, fractions, seed=seed, stratify=stratify, test_source=test_source)
    by_column = _by_column(table, fractions, seed=seed, stratify=stratify)
    if by_column is not None:
        return by_column
    return SplitPlan(table.split(fractions, random_state=seed, stratify=stratify), "seeded")
