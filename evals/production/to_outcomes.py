"""Graded shadow pairs, or client feedback, -> an OutcomeTable (provenance ``production``), so a team refits on its
own traffic.

Each graded :class:`~evals.production.records.ShadowPair` is a sample with two outcomes: the model that answered
(its grade's ``answer_score``) and the reference model (``reference_score``), each with its answer text, cost
and latency. Each :class:`~evals.production.records.FeedbackRecord` whose ``request_id`` names a decision that
stored its prompt (``[log] store_text = true``) is one outcome: the model that answered that request, scored by
the client (``score``), with the decision's answer text, cost, tokens and latency. The sample id is the prompt's
hash (the decision's ``prompt_hash``), so a prompt seen several times, answered by different models, becomes one
sample with more models; the same model twice on one prompt keeps the mean score.

**One grader's scale per table.** Scores of different graders are not on one scale: an exact grade is correctness,
a pairwise judge's is a preference against the reference answer (the reference scores 0.5), and feedback is
whatever the client's own grading says. So a table holds the scores of one grader label: a grade's ``grader``
(``exact``, ``judge:<model>``) or ``feedback`` (:data:`FEEDBACK_GRADER`) for client feedback; by default the label
with the most scores (grades first on a tie), ``grader=`` picks. Scores of the other labels are counted in
``left_out`` (``other grader``; feedback as ``feedback: another grader``), never mixed in, and the summary says how
many samples came from feedback. Feedback that cannot become an outcome is counted in ``left_out`` whatever the
label: ``feedback without request id``, ``feedback without its decision``, ``feedback on a decision without
stored prompt`` (the log did not store texts), ``feedback for another model than answered``, ``feedback
superseded by a later one`` (per request the latest counts).

``routelab eval`` keeps the samples every model answered, so by default the table holds, from grades, the
reference and the answered model with the most graded pairs; from feedback, the model with the most feedback and
the model sharing the most prompts with it (the others are reported, ``models=`` picks); and only the samples
with an outcome of every kept model (the others are counted in ``left_out``).
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
from evals.production.records import DecisionRecord, FeedbackRecord, GradeRecord, prompt_hash

__all__ = ["FEEDBACK_GRADER", "PROVENANCE", "ProductionOutcomes", "to_outcomes"]

#: The ``provenance`` a table built from a decision log carries in its card's ``extra``.
PROVENANCE = "production"
#: The grader label of outcomes scored by client feedback (``POST /v1/feedback``).
FEEDBACK_GRADER = "feedback"


@dataclass
class ProductionOutcomes:
    """What :func:`to_outcomes` built, and what it left out."""

    table: OutcomeTable
    grader: str
    """The grader label whose scores made the table (:data:`FEEDBACK_GRADER` for client feedback)."""
    models: tuple[str, ...]
    """The models kept."""
    pairs_per_model: dict[str, int] = field(default_factory=dict)
    """Scored answers per answered model (graded pairs, or feedback; all of them, kept or not)."""
    left_out: Counter[str] = field(default_factory=Counter)
    """Pairs, feedback (or samples) not used, by why: ``other grader``, ``no pair for grade``, ``model not kept``,
    ``cost unknown``, ``sample without every model``, and the feedback reasons of the module docstring."""
    samples_from_feedback: int = 0
    """Samples of the table whose scores came from client feedback."""

    def summary(self) -> str:
        """One line for people."""
        n = self.table.frame["sample_id"].nunique()
        head = (f"{n:,} sample(s) x {len(self.models)} model(s) ({', '.join(self.models)}) from {self.grader} "
                f"{'scores' if self.grader == FEEDBACK_GRADER else 'grades'}; provenance {PROVENANCE}; "
                f"{self.samples_from_feedback:,} sample(s) from feedback")
        if self.left_out:
            head += "; left out " + ", ".join(f"{k} {v:,}" for k, v in sorted(self.left_out.items()))
        return head


def to_outcomes(read: LogReadResult, *, grader: str | None = None, models: Sequence[str] | None = None,
                origin: str = "") -> ProductionOutcomes:
    """Build the OutcomeTable of a log's graded shadow pairs or client feedback (see the module docstring).

    Args:
        read: A read log (:func:`evals.production.log_reader.read_log`).
        grader: The grader label to use: a grade's (``exact``, ``judge:<model>``) or ``feedback`` (default: the
            label with the most scores).
        models: Models to keep (default: see the module docstring).
        origin: Where the log is (for the card and messages).

    Raises:
        DataNotFoundError: when the log has no graded shadow pair and no usable feedback (or none by ``grader`` /
            of ``models``).
    """
    joined, left = _joined_feedback(read)
    labels = Counter(g.grader for g in read.grades)
    if joined:
        labels[FEEDBACK_GRADER] += len(joined)
    if not labels:
        why = f" (feedback not usable: {dict(left)})" if left else ""
        raise DataNotFoundError(f"decision log {origin or ''} has no graded shadow pairs and no usable feedback{why}: "
                                "run `routelab logs grade` first (or turn on [shadow] grade_online), or post "
                                "feedback with the answer's request_id to a proxy logging with [log] store_text = "
                                "true".replace("  ", " "))
    label = grader or labels.most_common(1)[0][0]
    if label not in labels:
        raise DataNotFoundError(f"no grades by {label!r} in the log (graders: {', '.join(sorted(labels))}"
                                + ("" if joined or not read.feedback else f"; feedback not usable: {dict(left)}")
                                + ")")
    if label == FEEDBACK_GRADER:
        left["other grader"] += len(read.grades)
        return _from_feedback(joined, models, origin, left)
    if joined:
        left["feedback: another grader"] += len(joined)
    return _from_grades(read, label, models, origin, left)


def _from_grades(read: LogReadResult, label: str, models: Sequence[str] | None, origin: str,
                 left: Counter[str]) -> ProductionOutcomes:
    pairs = {p.request_id: p for p in read.shadow_pairs}
    decisions = {d.request_id: d for d in read.records}
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
    card = DatasetCard(
        name="production", source=f"decision log {origin}".strip(),
        description="Live requests sampled for shadow grading: the served answer and the reference model's answer "
                    "to the same prompt.",
        grading=f"{label}: " + ("each answer's correctness against the expected answer" if label == "exact" else
                                "pairwise judge (both orders) against the reference answer; the reference scores "
                                "0.5 (a tie with itself)"),
        cost_note="usage reported by the upstream x the export's price table, as the proxy logged it",
        extra={"provenance": PROVENANCE, "grader": label, "graded_pairs": len(grades),
               "pairs_per_model": dict(per_model), "left_out": dict(left), "samples_from_feedback": 0},
    )
    table = _complete_table(pd.DataFrame(rows), card, origin, dict(per_model), left)
    return ProductionOutcomes(table, label, keep, dict(per_model), +left)


def _joined_feedback(read: LogReadResult) -> tuple[dict[str, tuple[FeedbackRecord, DecisionRecord]], Counter[str]]:
    """Per request id, its latest feedback with its decision (stored prompt, same model); why the rest is not."""
    decisions = {d.request_id: d for d in read.records}
    left: Counter[str] = Counter()
    joined: dict[str, tuple[FeedbackRecord, DecisionRecord]] = {}
    for f in read.feedback:
        dec = decisions.get(f.request_id) if f.request_id is not None else None
        if f.request_id is None:
            left["feedback without request id"] += 1
        elif dec is None:
            left["feedback without its decision"] += 1
        elif dec.prompt_text is None:
            left["feedback on a decision without stored prompt"] += 1
        elif dec.answered_by != f.model:
            left["feedback for another model than answered"] += 1
        else:
            if f.request_id in joined:
                left["feedback superseded by a later one"] += 1
                if joined[f.request_id][0].time > f.time:
                    continue
            joined[f.request_id] = (f, dec)
    return joined, left


def _from_feedback(joined: dict[str, tuple[FeedbackRecord, DecisionRecord]], models: Sequence[str] | None,
                   origin: str, left: Counter[str]) -> ProductionOutcomes:
    per_model = Counter(dec.answered_by for _, dec in joined.values())
    keep = tuple(models) if models else _default_feedback_models(joined.values(), per_model)
    rows: list[dict[str, Any]] = []
    for rid, (f, dec) in joined.items():
        if dec.answered_by not in keep:
            left["model not kept"] += 1
            continue
        if dec.cost_usd is None:
            left["cost unknown"] += 1
            continue
        rows.append(dict(sample_id=dec.prompt_hash, task=PROVENANCE, category=dec.category or f.category or "",
                         prompt=dec.prompt_text or "", reference="", grader=FEEDBACK_GRADER, request_id=rid,
                         model=dec.answered_by, response=dec.answer_text or "", score=float(f.score),
                         cost_usd=float(dec.cost_usd), input_tokens=_num(dec.input_tokens),
                         output_tokens=_num(dec.output_tokens), latency_s=_num(dec.latency_s)))
    if not rows:
        raise DataNotFoundError(f"no usable feedback on the models {list(keep)} in the log (feedback per answered "
                                f"model: {dict(per_model)}; left out: {dict(left)})")
    card = DatasetCard(
        name="production", source=f"decision log {origin}".strip(),
        description="Live requests a client scored through POST /v1/feedback (naming the answer's request id), "
                    "with the prompt and answer the decision log stored.",
        grading=f"{FEEDBACK_GRADER}: the client's own score of each answer in [0, 1] (1 = success), as posted",
        cost_note="usage reported by the upstream x the export's price table, as the proxy logged it",
        extra={"provenance": PROVENANCE, "grader": FEEDBACK_GRADER, "feedback_used": len(rows),
               "pairs_per_model": dict(per_model), "left_out": dict(left)},
    )
    table = _complete_table(pd.DataFrame(rows), card, origin, dict(per_model), left)
    n = int(table.frame["sample_id"].nunique())
    table.card.extra["samples_from_feedback"] = n
    return ProductionOutcomes(table, FEEDBACK_GRADER, keep, dict(per_model), +left, samples_from_feedback=n)


def _complete_table(frame: pd.DataFrame, card: DatasetCard, origin: str, per_model: dict[str, int],
                    left: Counter[str]) -> OutcomeTable:
    """The table of the samples with an outcome of every model in ``frame`` (the others counted in ``left``)."""
    frame = _merge_repeats(frame)
    partial = OutcomeTable(frame, card, origin=origin, require_complete=False)
    # Every reader of an outcome file expects each sample to have every model: keep the complete ones.
    complete = partial.frame.groupby("sample_id")["model"].transform("size").eq(len(set(frame["model"])))
    if not complete.any():
        raise DataNotFoundError(f"no prompt has scored answers of all of {sorted(set(frame['model']))}; keep fewer "
                                f"models (answered models: {per_model})")
    left["sample without every model"] += int(partial.frame.loc[~complete, "sample_id"].nunique())
    return partial.complete()


def _default_models(grades: Any, per_model: Counter[str]) -> tuple[str, ...]:
    refs = Counter(g.reference for g in grades)
    reference = refs.most_common(1)[0][0]
    others = [m for m, _ in per_model.most_common() if m != reference]
    return (reference, others[0]) if others else (reference,)


def _default_feedback_models(joined: Any, per_model: Counter[str]) -> tuple[str, ...]:
    """The model with the most feedback, and the one sharing the most scored prompts with it (if any does)."""
    first = per_model.most_common(1)[0][0]
    prompts: dict[str, set[str]] = {}
    for _, dec in joined:
        prompts.setdefault(dec.answered_by, set()).add(dec.prompt_hash)
    shared = Counter({m: len(ps & prompts[first]) for m, ps in prompts.items() if m != first})
    partner = [m for m, n in shared.most_common() if n > 0]
    return (first, partner[0]) if partner else (first,)


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
