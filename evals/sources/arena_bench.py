"""``arena-bench-v1``: 300 hard Chatbot-Arena prompts, answers of 15 judged models, GPT-4 scores.

Reads ``<data>/arena-bench-v1`` (lmarena/arena-hard-auto @4a705dd, the early "arena-bench" data):
``question.jsonl``, ``model_answer/<model>.jsonl`` (FastChat answer format), ``reference_answer/gpt-4.jsonl``
and ``judgments_gpt4_single.jsonl`` (GPT-4 reference-guided single grading, 1-10).

- ``score`` = (s - 1) / 9 for the judge's score s in 1..10 (the raw score is kept in ``judge_score``).
- **Null scores** (39 judgments the original pipeline could not parse): the judge failed, not the model, so
  scoring them 0 would punish the model for the judge. Those (sample, model) pairs are dropped, then only
  samples that all 15 models have a score for are kept (:meth:`OutcomeTable.complete`); both counts are in the
  card (271 of 300 samples remain).
- Two answered models were never judged (vicuna-13b-v1.5, vicuna-7b-v1.5) and are not included.
- ``reference`` = GPT-4's reference answer (what the judge compared against).

**Cost (estimated).** No usage counts: input tokens = prompt characters / 4, output tokens = answer characters
/ 4 (:mod:`.tokens`), priced with the default rows of ``datasets/prices.csv`` (list prices of the time).
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd

from evals.exceptions import SchemaError
from evals.outcomes import DatasetCard, OutcomeTable
from evals.prices import PriceTable
from evals.sources.base import Source, source_registry
from evals.sources.tokens import estimate_tokens

__all__ = ["MODEL_NAMES", "build"]

VERSION = "1"
#: Judgment model name -> clean model name (as in the price table). Others keep their name.
MODEL_NAMES = {
    "mistralai/Mixtral-8x7B-Instruct-v0.1": "Mixtral-8x7B-Instruct",
    "mistralai/Mistral-7B-Instruct-v0.1": "Mistral-7B-Instruct-v0.1",
    "gpt-3.5-turbo": "gpt-3.5-turbo-0613",
}


def _jsonl(path: Path) -> list[dict]:
    out = []
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise SchemaError(f"{path}: not UTF-8 text (byte offset {exc.start})") from None
    for i, line in enumerate(text.splitlines(), 1):
        if line.strip():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise SchemaError(f"{path}, line {i}: malformed JSON ({exc.msg})") from None
    return out


def _answer_text(rec: dict, path: Path) -> str:
    try:
        return str(rec["choices"][0]["turns"][0])
    except (KeyError, IndexError, TypeError):
        raise SchemaError(
            f"{path}: answer to {rec.get('question_id')!r} has no choices[0].turns[0]"
        ) from None


def build(folder: Path) -> OutcomeTable:
    """Import arena-bench-v1 (see the module docstring for every rule)."""
    questions = {q["question_id"]: q["turns"][0] for q in _jsonl(folder / "question.jsonl")}
    reference = {
        r["question_id"]: _answer_text(r, folder / "reference_answer" / "gpt-4.jsonl")
        for r in _jsonl(folder / "reference_answer" / "gpt-4.jsonl")
    }
    jpath = folder / "judgments_gpt4_single.jsonl"
    judgments = _jsonl(jpath)
    answers: dict[str, dict[str, str]] = {}
    prices = PriceTable.load()
    rows, nulls = [], 0
    for i, j in enumerate(judgments, 1):
        source_model, qid, s = j.get("model"), j.get("question_id"), j.get("score")
        if qid not in questions:
            raise SchemaError(f"{jpath}, line {i}, column 'question_id': {qid!r} is not in question.jsonl")
        if s is None:
            nulls += 1
            continue
        try:
            s = float(s)
        except (TypeError, ValueError):
            raise SchemaError(f"{jpath}, line {i}, column 'score': {s!r} is not a number") from None
        if not 1 <= s <= 10:
            raise SchemaError(f"{jpath}, line {i}, column 'score': {s} is outside the judge's 1..10")
        stem = str(source_model).split("/")[-1]
        if stem not in answers:
            apath = folder / "model_answer" / f"{stem}.jsonl"
            if not apath.is_file():
                raise SchemaError(
                    f"{jpath}, line {i}, column 'model': no answer file {apath.name} for {source_model!r}"
                )
            answers[stem] = {a["question_id"]: _answer_text(a, apath) for a in _jsonl(apath)}
        if qid not in answers[stem]:
            raise SchemaError(f"{jpath}, line {i}: {source_model!r} has no answer to question {qid!r}")
        rows.append(
            {
                "sample_id": qid,
                "task": "arena-bench-v1",
                "category": "",
                "prompt": questions[qid],
                "reference": reference.get(qid, ""),
                "model": MODEL_NAMES.get(source_model, source_model),
                "response": answers[stem][qid],
                "score": (s - 1.0) / 9.0,
                "judge_score": s,
                "grader": "judge:gpt-4 (reference-guided single grading, 1-10 -> (s-1)/9)",
            }
        )
    frame = pd.DataFrame(rows)
    frame["input_tokens"] = estimate_tokens(frame["prompt"])
    frame["output_tokens"] = estimate_tokens(frame["response"])
    cost = np.zeros(len(frame))
    provider = np.empty(len(frame), dtype=object)
    for model, idx in frame.groupby("model", sort=False).indices.items():
        p = prices.price(model)
        cost[idx] = p.cost(frame["input_tokens"].to_numpy()[idx], frame["output_tokens"].to_numpy()[idx])
        provider[idx] = p.provider
    frame["cost_usd"], frame["provider"], frame["cost_estimated"] = cost, provider, True
    card = DatasetCard(
        name="arena-bench-v1",
        source="https://github.com/lmarena/arena-hard-auto @4a705dd6963f777aba2ae79259e3013934e6e012 "
        "data/arena-bench-v1 (removed from the repository later)",
        license="Apache-2.0 (repository); prompts from Chatbot Arena users; answers: provider terms",
        description="300 hard Chatbot-Arena prompts (code, math, reasoning, writing) answered by 15 models, "
        "graded by GPT-4 against a GPT-4 reference answer.",
        grading="GPT-4 reference-guided single-answer grading, score s in 1..10 mapped to (s - 1) / 9. "
        "Caveat: judge and reference are GPT-4, which favours GPT-4 answers.",
        cost_note="ESTIMATED: input tokens = prompt characters / 4, output tokens = answer characters / 4; "
        "list prices of datasets/prices.csv.",
    )
    table = OutcomeTable(frame, card, origin=str(jpath), require_complete=False).complete()
    table.card = replace(
        table.card,
        extra={
            **table.card.extra,
            "judgments": len(judgments),
            "null_scores_dropped": nulls,
            "samples_total": len(questions),
            "samples_kept": table.n_samples,
            "null_policy": "drop (sample, model) pairs with a null judge score, then keep samples all have",
        },
    )
    return table


source_registry.add(
    "arena-bench-v1",
    Source(
        name="arena-bench-v1",
        description="300 hard Chatbot-Arena prompts, 15 models, GPT-4 judge scores 1-10 (costs estimated)",
        folder="arena-bench-v1",
        license="Apache-2.0",
        build=build,
        files=(
            "question.jsonl",
            "judgments_gpt4_single.jsonl",
            "reference_answer/gpt-4.jsonl",
            "model_answer/*.jsonl",
        ),
        version=VERSION,
    ),
)
