"""MMLU-Pro per-question outputs of 14 models (``mmlu-pro``), from TIGER-AI-Lab/MMLU-Pro's eval results.

Reads ``<data>/mmlu-pro-outputs``: ``questions.jsonl`` (through the ``datasets`` library, or the Hub's
``TIGER-Lab/MMLU-Pro`` test split when online), ``predictions_wide.csv`` (only for its ``NA`` coverage marks)
and ``responses/<model>.jsonl.gz`` (the raw output text of the 14 models that have it).

**Grading: one rule for every model.** The answer letter is re-extracted from each raw output:

1. primary: the first match of ``answer is \\(?([A-J])\\)?`` (the MMLU-Pro harness's own first pattern);
2. fallback: the first ``\\boxed{X}`` (optionally ``\\boxed{\\text{(X)}}``): the same final-answer statement
   written in LaTeX, which is how DeepSeek-Coder-V2 ends ~12% of its answers ("the answer is
   \\(\\boxed{H}\\)"). Without it, that model scores 54% instead of the 64% its source reports.

No further guessing: the harness's last resort (the last stand-alone capital A-J anywhere in the text, or a
random letter) also matches the pronoun "I" and the article "A", so it is not used. An output with no
extractable letter scores 0; the counts per model are in ``card.extra["no_letter"]``.

**Coverage.** ``predictions_wide.csv`` marks with ``NA`` the questions a model's run did not cover or asked in
an older wording (8 questions were edited after the May-2024 runs). Those pairs are dropped, then only
questions that all 14 models cover are kept (:meth:`OutcomeTable.complete`); the counts are in the card.

**Cost (estimated).** The source has no token counts, so (a fixed convention, to keep figures comparable):
input tokens = 1,500 (the 5-shot prefix) + characters of the question and its lettered options / 4;
output tokens = characters of the output / 4; priced with the default row of ``datasets/prices.csv``
(mid-2024 list prices). ``cost_estimated`` is True on every row.
"""

from __future__ import annotations

import gzip
import json
from dataclasses import replace
from pathlib import Path

import pandas as pd

from evals.exceptions import SchemaError
from evals.graders.extract import extract_letter  # the one multiple-choice letter rule lives in the graders
from evals.outcomes import DatasetCard, OutcomeTable
from evals.prices import PriceTable
from evals.sources.base import Source, source_registry
from evals.sources.hub import load_frame
from evals.sources.tokens import MMLU_PRO_FEWSHOT_TOKENS, estimate_tokens

__all__ = ["MODEL_NAMES", "build", "compare_with_source", "extract_letter", "format_prompt"]

#: Response file stem -> clean model name (as in the price table). Files not listed keep their stem.
MODEL_NAMES: dict[str, str] = {
    "gpt-4o-2024-05-13": "gpt-4o-2024-05-13",
    "gemini-1.5-pro-002": "gemini-1.5-pro-002",
    "gemini-1.5-flash-002": "gemini-1.5-flash-002",
    "DeepSeek-V2-Chat": "DeepSeek-V2-Chat",
    "DeepSeek-Coder-V2": "DeepSeek-Coder-V2",
    "jamba-1.5-large": "jamba-1.5-large",
    "Meta-Llama-3_1-70B-Instruct": "Llama-3.1-70B-Instruct",
    "Meta-Llama-3_1-8B-Instruct": "Llama-3.1-8B-Instruct",
    "Mixtral-8x7B-Instruct-v0.1": "Mixtral-8x7B-Instruct",
    "Mistral-7B-Instruct-v0.2": "Mistral-7B-Instruct-v0.2",
    "Phi-3-mini-4k-instruct": "Phi-3-mini",
    "Qwen1.5-72B-Chat": "Qwen1.5-72B-Chat",
    "Qwen1.5-7B-Chat": "Qwen1.5-7B-Chat",
    "c4ai-command-r-v01": "command-r-v01",
}

LETTERS = "ABCDEFGHIJ"
VERSION = "3"  # bump when the output of build() changes


def format_prompt(question: str, options: list[str]) -> str:
    """Question and its lettered options (``A. ...``): the text whose length the cost convention uses."""
    lines = [question.strip(), "", "Options:"]
    lines += [f"{LETTERS[i]}. {str(opt).strip()}" for i, opt in enumerate(options)]
    return "\n".join(lines)


def _read_responses(path: Path) -> pd.DataFrame:
    """question_id and output text of one model (the May-2024 runs call the text field ``response``)."""
    ids, texts = [], []
    try:
        with gzip.open(path, "rt", encoding="utf-8") as fh:
            for lineno, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    rec = json.loads(line)
                    ids.append(int(rec["question_id"]))
                except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
                    raise SchemaError(f"{path}, line {lineno}: not a response record ({exc})") from None
                text = rec.get("output", rec.get("response"))
                texts.append(text if isinstance(text, str) else "")
    except (OSError, EOFError, UnicodeDecodeError) as exc:
        raise SchemaError(f"{path}: unreadable gzip/JSONL file ({exc})") from None
    frame = pd.DataFrame({"question_id": ids, "response": texts})
    dup = frame.duplicated("question_id")
    if dup.any():  # keep the first answer, as the harness would have scored it
        frame = frame[~dup]
    return frame


def build(folder: Path) -> OutcomeTable:
    """Import ``mmlu-pro-outputs`` (see the module docstring for every rule)."""
    qpath, wpath = folder / "questions.jsonl", folder / "predictions_wide.csv"
    questions = load_frame([qpath], builder="json", hub_id="TIGER-Lab/MMLU-Pro", hub_split="test")
    missing = {"question_id", "category", "question", "options", "answer"} - set(questions.columns)
    if missing:
        raise SchemaError(f"{qpath}: missing column(s) {sorted(missing)}")
    questions["question_id"] = questions["question_id"].astype(int)
    questions["prompt"] = [
        format_prompt(q, list(o)) for q, o in zip(questions["question"], questions["options"], strict=False)
    ]
    questions = questions.set_index("question_id")

    wide = pd.read_csv(wpath, dtype=str, keep_default_na=False)
    wide["question_id"] = wide["question_id"].astype(int)
    prices = PriceTable.load()

    parts, extra_counts = [], {"no_letter": {}, "covered": {}, "accuracy_on_covered": {}, "responses": {}}
    for path in sorted((folder / "responses").glob("*.jsonl.gz")):
        stem = path.name[: -len(".jsonl.gz")]
        model = MODEL_NAMES.get(stem, stem)
        if stem not in wide.columns:
            raise SchemaError(f"{wpath}: no column {stem!r} for the responses in {path.name}")
        covered = set(wide.loc[wide[stem] != "NA", "question_id"])
        resp = _read_responses(path)
        extra_counts["responses"][model] = len(resp)
        resp = resp[resp["question_id"].isin(covered) & resp["question_id"].isin(questions.index)]
        q = questions.loc[resp["question_id"]]
        letters = resp["response"].map(extract_letter)
        score = (letters.to_numpy() == q["answer"].to_numpy()).astype(float)
        in_tok = MMLU_PRO_FEWSHOT_TOKENS + estimate_tokens(q["prompt"])
        out_tok = estimate_tokens(resp["response"])
        price = prices.price(model)
        parts.append(
            pd.DataFrame(
                {
                    "sample_id": resp["question_id"].astype(str).to_numpy(),
                    "task": "mmlu-pro",
                    "category": q["category"].to_numpy(),
                    "prompt": q["prompt"].to_numpy(),
                    "reference": q["answer"].to_numpy(),
                    "model": model,
                    "provider": price.provider,
                    "response": resp["response"].to_numpy(),
                    "extracted": letters.to_numpy(),
                    "score": score,
                    "cost_usd": price.cost(in_tok, out_tok),
                    "cost_estimated": True,
                    "input_tokens": in_tok,
                    "output_tokens": out_tok,
                    "grader": "mcq_letter",
                }
            )
        )
        extra_counts["covered"][model] = len(resp)
        extra_counts["accuracy_on_covered"][model] = round(float(score.mean()), 4)
        extra_counts["no_letter_on_covered"] = {
            **extra_counts.get("no_letter_on_covered", {}),
            model: int((letters == "").sum()),
        }
    if not parts:
        raise SchemaError(f"{folder / 'responses'}: no *.jsonl.gz response files")
    frame = pd.concat(parts, ignore_index=True)
    # Sample order: by question id, so wide views are stable whatever the file order.
    frame = frame.sort_values(["sample_id"], key=lambda s: s.astype(int), kind="stable").reset_index(
        drop=True
    )
    models = [
        MODEL_NAMES.get(p.name[: -len(".jsonl.gz")], p.name[: -len(".jsonl.gz")])
        for p in sorted((folder / "responses").glob("*.jsonl.gz"))
    ]
    card = DatasetCard(
        name="mmlu-pro",
        source="https://github.com/TIGER-AI-Lab/MMLU-Pro eval_results (commits f418b116, eeeb46ca); "
        "questions: Hugging Face TIGER-Lab/MMLU-Pro",
        license="Apache-2.0 (repository); MMLU-Pro questions MIT; outputs: the model providers' terms",
        description="MMLU-Pro test set: 10-option multiple choice, 14 categories, 5-shot chain-of-thought "
        f"answers of {len(models)} instruction-tuned/API models.",
        grading="Exact match of the answer letter re-extracted with one rule for every model: first "
        "'answer is \\(?([A-J])\\)?', else the first '\\boxed{X}'; no letter scores 0.",
        cost_note="ESTIMATED: input tokens = 1,500 (5-shot prefix) + question-and-options characters / 4; "
        "output tokens = response characters / 4; mid-2024 list prices of datasets/prices.csv.",
        extra={},
    )
    table = OutcomeTable(frame, card, origin=str(folder), require_complete=False).complete()
    no_letter = table.frame.groupby("model", sort=False)["extracted"].apply(lambda s: int((s == "").sum()))
    extra = {
        **table.card.extra,
        "questions_total": int(len(questions)),
        "questions_kept": table.n_samples,
        "covered_per_model": extra_counts["covered"],
        "responses_per_model": extra_counts["responses"],
        "accuracy_on_covered": extra_counts["accuracy_on_covered"],
        "no_letter_on_covered": extra_counts["no_letter_on_covered"],
        "no_letter": {m: int(no_letter[m]) for m in table.models},
        "extraction_rule": "first 'answer is \\(?([A-J])\\)?', else first '\\boxed{\\(?([A-J])'; "
        "else no letter (score 0)",
        "fewshot_input_tokens": MMLU_PRO_FEWSHOT_TOKENS,
        "chars_per_token": 4,
    }
    table.card = replace(table.card, extra=extra)
    return table


source_registry.add(
    "mmlu-pro",
    Source(
        name="mmlu-pro",
        description="MMLU-Pro 10-option MCQ, 14 categories, 14 models with response text (costs estimated)",
        folder="mmlu-pro-outputs",
        license="Apache-2.0 / MIT (questions)",
        build=build,
        files=("questions.jsonl", "predictions_wide.csv", "responses/*.jsonl.gz"),
        version=VERSION,
        hub_id="TIGER-Lab/MMLU-Pro",
    ),
)


def compare_with_source(table: OutcomeTable, folder: Path) -> pd.DataFrame:
    """Per model: our accuracy on the questions it covers vs the one the source reports (``summary.json``).

    Returns:
        Columns ``model, ours, source, gap_points`` (gap = ours - source, in percentage points).
    """
    reported = json.loads((folder / "summary.json").read_text(encoding="utf-8"))["accuracy_on_covered"]
    ours = table.card.extra["accuracy_on_covered"]
    by_clean = {MODEL_NAMES.get(stem, stem): acc for stem, acc in reported.items()}
    rows = []
    for m in table.models:
        gap = round(100 * (ours[m] - by_clean[m]), 2)
        rows.append({"model": m, "ours": ours[m], "source": by_clean[m], "gap_points": gap})
    return pd.DataFrame(rows)
