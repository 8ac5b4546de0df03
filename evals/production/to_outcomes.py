"""Graded shadow pairs -> an OutcomeTable (provenance ``production``), so a team refits on its own traffic.

Each graded :class:`~evals.production.records.ShadowPair` is a sample with two outcomes: the model that answered
(its grade's ``answer_score``) and the reference model (``reference_score``), each with its answer text, cost
and latency. The sample id is the prompt's hash (the decision's ``prompt_hash``), so a prompt seen several times,
answered by different models, becomes one sample with more models; the same model twice on one prompt keeps the
mean score.

Grades of one grader make one table (scores of different graders are not on one scale): by default the label
with the most grades. ``routelab eval`` keeps the samples every model answered, so by default the table holds
the reference and the answered model with the most graded pairs (the others are reported, ``models=`` picks), and
only the samples with an outcome of every kept model (the others are counted in ``left_out``).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from evals.exceptions import DataNotFoundError
from evals.outcomes import DatasetCard, OutcomeTable
from evals.production.log_reader import LogReadResult
from evals.production.records import GradeRecord, prompt_hash

__all__ = ["PROVENANCE", "ProductionOutcomes", "to_outcomes"]

#: The ``provenance`` a table built from a decision log carries in its card's ``extra``.
PROVENANCE = "production"


@dataclass
class ProductionOutcomes:
    """What :func:`to_outcomes` built, and what it left out."""

    table: OutcomeTable
    grader: str
    """The grader label whose grades made the table."""
    models: tuple[str, ...]
    """The models kept."""
    pairs_per_model: dict[str, int] = field(default_factory=dict)
    """Graded pairs per answered model (all of them, kept or not)."""
    left_out: Counter[str] = field(default_factory=Counter)
    """Pairs (or samples) not used, by why: ``other grader``, ``no pair for grade``, ``model not kept``,
    ``cost unknown``, ``sample without every model``."""

    def summary(self) -> str:
        """One line for people."""
        n = self.table.frame["sample_id"].nunique()
        head = (f"{n:,} sample(s) x {len(self.models)} model(s) ({', '.join(self.models)}) from {self.grader} "
                f"grades; provenance {PROVENANCE}")
        if self.left_out:
            head += "; left out " + ", ".join(f"{k} {v:,}" for k, v in sorted(self.left_out.items()))
        return head


def to_outcomes(read: LogReadResult, *, grader: str | None = None, models: Sequence[str] | None = None,
                origin: str = "") -> ProductionOutcomes:
    """Build the OutcomeTable of a log's graded shadow pairs (see the module docstring).

    Args:
        read: A read log (:func:`evals.production.log_reader.read_log`).
        grader: The grader label to use (default: the one with the most grades).
        models: Models to keep (default: the reference and the most-graded answered model).
        origin: Where the log is (for the card and messages).

    Raises:
        DataNotFoundError: when the log has no graded shadow pair (or none by ``grader`` / of ``models``).
    """
    if not read.grades:
        raise DataNotFoundError(f"decision log {origin or ''} has no graded shadow pairs: run `routelab logs grade` "
                                "first (or turn on [shadow] grade_online)".replace("  ", " "))
    labels = Counter(g.grader for g in read.grades)
    label = grader or labels.most_common(1)[0][0]
    if label not in labels:
        raise DataNotFoundError(f"no grades by {label!r} in the log (graders: {', '.join(sorted(labels))})")
    pairs = {p.request_id: p for p in read.shadow_pairs}
    decisions = {d.request_id: d for d in read.records}
    left: Counter[str] = Counter()
    grades: dict[str, GradeRecord] = {}
    for g in read.grades:
        if g.grader != label:
            left["other grader"] += 1
        elif g.request_id not in pairs:
            left["no pair for grade"] += 1
        elif g.request_id not in grades or g.time > grades[g.request_id].time:
            grades[g.request_id] = g
    per_model = Counter(g.answered_by for g in grades.values())
    keep = tuple(models) if models else _default_models(grades.values(), per_model)
    rows: list[dict[str, Any]] = []
    for rid, g in grades.items():
        pair, dec = pairs[rid], decisions.get(rid)
        if g.answered_by not in keep and g.reference not in keep:
            left["model not kept"] += 1
            continue
        answer_cost = _cost(pair.answer_cost_usd, dec.cost_usd if dec else None)
        reference_cost = _cost(pair.reference_cost_usd, None)
        if (g.answered_by in keep and answer_cost != answer_cost) or (g.reference in keep and reference_cost !=
                                                                        reference_cost):  # NaN: cost unknown
            left["cost unknown"] += 1
            continue
        sample = dec.prompt_hash if dec is not None else prompt_hash(pair.prompt_text or rid)
        common = dict(sample_id=sample, task=PROVENANCE, category=pair.category or "", prompt=pair.prompt_text or "",
                      reference=pair.expected or "", grader=label, request_id=rid)
        if g.answered_by in keep:
            rows.append(dict(common, model=g.answered_by, response=pair.answer_text or "", score=g.answer_score,
                             cost_usd=answer_cost,
                             input_tokens=_num(dec.input_tokens if dec else None),
                             output_tokens=_num(dec.output_tokens if dec else None),
                             latency_s=_num(dec.latency_s if dec else None)))
        if g.reference in keep and g.reference != g.answered_by:
            rows.append(dict(common, model=g.reference, response=pair.reference_text or "", score=g.reference_score,
                             cost_usd=reference_cost, latency_s=pair.reference_latency_s))
    if not rows:
        raise DataNotFoundError(f"no graded pair of the models {list(keep)} in the log (answered models: "
                                f"{dict(per_model)})")
    frame = _merge_repeats(pd.DataFrame(rows))
    card = DatasetCard(
        name="production", source=f"decision log {origin}".strip(),
        description="Live requests sampled for shadow grading: the served answer and the reference model's answer "
                    "to the same prompt.",
        grading=f"{label}: " + ("each answer's correctness against the expected answer" if label == "exact" else
                                "pairwise judge (both orders) against the reference answer; the reference scores "
                                "0.5 (a tie with itself)"),
        cost_note="usage reported by the upstream x the export's price table, as the proxy logged it",
        extra={"provenance": PROVENANCE, "grader": label, "graded_pairs": len(grades),
               "pairs_per_model": dict(per_model), "left_out": dict(left)},
    )
    partial = OutcomeTable(frame, card, origin=origin, require_complete=False)
    # Every reader of an outcome file expects each sample to have every model: keep the complete ones.
    complete = partial.frame.groupby("sample_id")["model"].transform("size").eq(len(set(frame["model"])))
    if not complete.any():
        raise DataNotFoundError(f"no prompt has graded answers of all of {sorted(set(frame['model']))}; keep fewer "
                                f"models (answered models: {dict(per_model)})")
    left["sample without every model"] += int(partial.frame.loc[~complete, "sample_id"].nunique())
    return ProductionOutcomes(partial.complete(), label, keep, dict(per_model), +left)


def _default_models(grades: Any, per_model: Counter[str]) -> tuple[str, ...]:
    refs = Counter(g.reference for g in grades)
    reference = refs.most_common(1)[0][0]
    others = [m for m, _ in per_model.most_common() if m != reference]
    return (reference, others[0]) if others else (reference,)


def _merge_repeats(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per (sample, model): the mean score and cost of repeats, the first text."""
    # A prompt sent twice with two category headers: the sample keeps its first (per-sample columns must agree).
    frame["category"] = frame.groupby("sample_id", sort=False)["category"].transform("first")
    if not frame.duplicated(["sample_id", "model"]).any():
        return frame
    agg = {c: "first" for c in frame.columns if c not in ("sample_id", "model")}
    agg.update(score="mean", cost_usd="mean")
    return frame.groupby(["sample_id", "model"], as_index=False, sort=False).agg(agg)


def _cost(primary: float | None, fallback: float | None) -> float:
    value = primary if primary is not None else fallback
    return float("nan") if value is None else float(value)


def _num(x: float | int | None) -> float:
    return float("nan") if x is None else float(x)
