"""RouteLLM's GPT-4 vs Mixtral outcomes (lm-sys/RouteLLM @0b64fda): ``routellm-mmlu``, ``routellm-gsm8k``,
``routellm-mt-bench``.

Reads ``<data>/routellm-gpt4-mixtral`` (plus ``<data>/mmlu`` and ``<data>/gsm8k`` for gold answers, through
the ``datasets`` library, or the Hub's ``cais/mmlu`` / ``openai/gsm8k`` when online). Two models:
``gpt-4-1106-preview`` and ``Mixtral-8x7B-Instruct`` (``mistralai/Mixtral-8x7B-Instruct-v0.1``).

- **MMLU**: 57 ``mmlu_<subject>.csv`` files with per-model correctness (no response text);
  ``category`` = the subject; ``reference`` = the gold letter from MMLU joined on the question text
  ("" where the join fails or is ambiguous; counted in the card).
- **GSM8K**: correctness and full responses; ``reference`` = the ``#### <number>`` target of
  ``gsm8k/test.jsonl`` joined on the question.
- **MT-Bench**: GPT-4 single-answer judge scores 1-10 mapped to [0, 1] as ``(s - 1) / 9``; one sample per
  (question, turn) (``<id>-t1``, ``<id>-t2``); ``prompt`` is that turn's user message; the answer text is
  cut out of the judge prompt.

Prompts RouteLLM flagged as contaminated (near-duplicates of its router training data) are kept and marked in
an extra boolean column ``contaminated``.

**Cost (estimated).** The source has no usage counts: tokens = characters / 4 (:mod:`.tokens`) of the prompt
(for MT-Bench turn 2: turn-1 question + turn-1 answer + turn-2 question, the conversation sent) and of the
response; MMLU has no response text and RouteLLM scored a single answer letter, so its output is 1 token.
Priced with the default rows of ``datasets/prices.csv`` (gpt-4-1106-preview 10/30, Mixtral 0.6/0.6 USD
per 1M tokens).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd

from evals.exceptions import SchemaError
from evals.outcomes import DatasetCard, OutcomeTable
from evals.prices import PriceTable
from evals.sources.base import Source, source_registry
from evals.sources.hub import load_frame
from evals.sources.tokens import estimate_tokens

__all__ = ["MODEL_NAMES", "build_gsm8k", "build_mmlu", "build_mt_bench"]

#: Source column / judgment model name -> clean model name (as in the price table).
MODEL_NAMES = {
    "gpt-4-1106-preview": "gpt-4-1106-preview",
    "mistralai/Mixtral-8x7B-Instruct-v0.1": "Mixtral-8x7B-Instruct",
}
VERSION = "1"
ORIGIN = "https://github.com/lm-sys/RouteLLM @0b64fdafe049e596a3f5657c219329f24af24198 (routellm/evals/)"
LICENSE = "Apache-2.0 (RouteLLM); tasks: MMLU MIT, GSM8K MIT, MT-Bench Apache-2.0; outputs: provider terms"
_COST_NOTE = (
    "ESTIMATED: tokens = characters / 4 of prompt and response{extra}; list prices of "
    "datasets/prices.csv (gpt-4-1106-preview 10/30, Mixtral-8x7B-Instruct 0.6/0.6 USD per 1M tokens)."
)


def _contaminated(path: Path) -> set[str]:
    if not path.is_file():
        return set()
    out = set()
    for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if line.strip():
            try:
                out.add(json.loads(line)["eval_prompt"])
            except (json.JSONDecodeError, KeyError) as exc:
                raise SchemaError(f"{path}, line {i}: expected a record with 'eval_prompt' ({exc})") from None
    return out


def _price_rows(frame: pd.DataFrame, prices: PriceTable) -> pd.DataFrame:
    """Fill provider and cost_usd from token columns and each row's model."""
    frame["provider"] = frame["model"].map(lambda m: prices.price(m).provider)
    cost = np.zeros(len(frame))
    for model, idx in frame.groupby("model", sort=False).indices.items():
        cost[idx] = prices.cost(
            model, frame["input_tokens"].to_numpy()[idx], frame["output_tokens"].to_numpy()[idx]
        )
    frame["cost_usd"] = cost
    frame["cost_estimated"] = True
    return frame


def _bool_column(frame: pd.DataFrame, col: str, path: Path) -> np.ndarray:
    s = frame[col]
    if s.dtype == bool:
        return s.to_numpy(dtype=float)
    text = s.astype(str).str.strip().str.lower()
    ok = text.isin({"true", "false", "1", "0", "1.0", "0.0"})
    if not ok.all():
        i = int(np.flatnonzero(~ok.to_numpy())[0])
        raise SchemaError(f"{path}, line {i + 2}, column {col!r}: {s.iat[i]!r} is not true/false")
    return text.isin({"true", "1", "1.0"}).to_numpy(dtype=float)


# ---------------------------------------------------------------------------------------------------- MMLU
def _mmlu_gold(data_root: Path) -> dict[tuple[str, str], str]:
    """(subject, question text) -> gold letter, from the MMLU test set; ambiguous questions are left out."""
    path = data_root / "mmlu" / "mmlu_test.jsonl"
    if not path.is_file():
        return {}
    gold = load_frame([path], builder="json", hub_id="cais/mmlu", hub_config="all", hub_split="test")
    if "answer_index" in gold.columns:
        letters = gold["answer_index"].map(lambda i: "ABCD"[int(i)])
    else:  # the Hub's cais/mmlu has the index in 'answer'
        letters = gold["answer"].map(lambda i: "ABCD"[int(i)])
    keys = list(zip(gold["subject"], gold["question"].str.strip(), strict=False))
    out: dict[tuple[str, str], str] = {}
    clash: set[tuple[str, str]] = set()
    for k, letter in zip(keys, letters, strict=False):
        if k in out and out[k] != letter:
            clash.add(k)
        out[k] = letter
    for k in clash:
        del out[k]
    return out


def build_mmlu(folder: Path) -> OutcomeTable:
    """Import RouteLLM's MMLU correctness table (57 subject files)."""
    files = sorted((folder / "mmlu_responses").glob("mmlu_*.csv"))
    if not files:
        raise SchemaError(f"{folder / 'mmlu_responses'}: no mmlu_<subject>.csv files")
    gold = _mmlu_gold(folder.parent)
    flagged = _contaminated(folder / "mmlu_responses" / "contaminated_prompts.jsonl")
    parts = []
    for path in files:
        subject = path.stem[len("mmlu_") :]
        try:
            d = pd.read_csv(path)
        except (pd.errors.ParserError, UnicodeDecodeError) as exc:
            raise SchemaError(f"{path}: malformed CSV ({exc})") from None
        missing = [c for c in ["prompt", *MODEL_NAMES] if c not in d.columns]
        if missing:
            raise SchemaError(f"{path}: missing column(s) {missing}; columns present: {', '.join(d.columns)}")
        question = d["prompt"].str.split("\nA. ").str[0].str.strip()
        reference = [gold.get((subject, q), "") for q in question]
        for col, model in MODEL_NAMES.items():
            parts.append(
                pd.DataFrame(
                    {
                        "sample_id": [f"{subject}-{i}" for i in range(len(d))],
                        "task": "mmlu",
                        "category": subject,
                        "prompt": d["prompt"].to_numpy(),
                        "reference": reference,
                        "model": model,
                        "response": "",
                        "score": _bool_column(d, col, path),
                        "input_tokens": estimate_tokens(d["prompt"]),
                        "output_tokens": 1.0,
                        "grader": "source:exact_match",
                        "contaminated": d["prompt"].isin(flagged).to_numpy(),
                    }
                )
            )
    frame = _price_rows(pd.concat(parts, ignore_index=True), PriceTable.load())
    n_ref = int((frame.drop_duplicates("sample_id")["reference"] != "").sum())
    card = DatasetCard(
        name="routellm-mmlu",
        source=ORIGIN + " mmlu/responses",
        license=LICENSE,
        description="MMLU test (57 subjects, 4-option multiple choice): correctness of GPT-4-1106-preview "
        "and "
        "Mixtral-8x7B-Instruct as recorded by RouteLLM (no response text).",
        grading="Correctness as recorded by RouteLLM (exact match of the answer letter).",
        cost_note=_COST_NOTE.format(extra="; no response text, so output = 1 token (a single letter)"),
        extra={
            "subjects": len(files),
            "reference_joined": n_ref,
            "contaminated_flagged": int(frame.drop_duplicates("sample_id")["contaminated"].sum()),
        },
    )
    return OutcomeTable(frame, card, origin=str(folder / "mmlu_responses"))


# ---------------------------------------------------------------------------------------------------- GSM8K
def build_gsm8k(folder: Path) -> OutcomeTable:
    """Import RouteLLM's GSM8K table (correctness and responses; gold answers joined from GSM8K)."""
    path = folder / "gsm8k" / "gsm8k_responses.csv"
    try:
        d = pd.read_csv(path)
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise SchemaError(f"{path}: malformed CSV ({exc})") from None
    need = ["prompt", *MODEL_NAMES, *(f"{c}_response" for c in MODEL_NAMES)]
    missing = [c for c in need if c not in d.columns]
    if missing:
        raise SchemaError(f"{path}: missing column(s) {missing}; columns present: {', '.join(d.columns)}")
    gpath = folder.parent / "gsm8k" / "test.jsonl"
    gold = load_frame([gpath], builder="json", hub_id="openai/gsm8k", hub_config="main", hub_split="test")
    final = gold["answer"].str.split("####").str[-1].str.strip()
    target = dict(zip(gold["question"].str.strip(), final, strict=True))
    reference = d["prompt"].str.strip().map(lambda q: target.get(q, ""))
    flagged = _contaminated(folder / "gsm8k" / "contaminated_prompts.jsonl")
    parts = []
    for col, model in MODEL_NAMES.items():
        resp = d[f"{col}_response"].fillna("").astype(str)
        parts.append(
            pd.DataFrame(
                {
                    "sample_id": [f"gsm8k-{i}" for i in range(len(d))],
                    "task": "gsm8k",
                    "category": "math",
                    "prompt": d["prompt"].to_numpy(),
                    "reference": reference.to_numpy(),
                    "model": model,
                    "response": resp.to_numpy(),
                    "score": _bool_column(d, col, path),
                    "input_tokens": estimate_tokens(d["prompt"]),
                    "output_tokens": estimate_tokens(resp),
                    "grader": "source:exact_match",
                    "contaminated": d["prompt"].isin(flagged).to_numpy(),
                }
            )
        )
    frame = _price_rows(pd.concat(parts, ignore_index=True), PriceTable.load())
    card = DatasetCard(
        name="routellm-gsm8k",
        source=ORIGIN + " gsm8k/",
        license=LICENSE,
        description="GSM8K test (1,319 grade-school math word problems): responses and correctness of "
        "GPT-4-1106-preview and Mixtral-8x7B-Instruct as recorded by RouteLLM.",
        grading="Correctness as recorded by RouteLLM (final number matches the '#### N' target).",
        cost_note=_COST_NOTE.format(
            extra=" (the prompt is the question alone: RouteLLM's template is unknown)"
        ),
        extra={
            "reference_joined": int((reference != "").sum()),
            "contaminated_flagged": int(d["prompt"].isin(flagged).sum()),
        },
    )
    return OutcomeTable(frame, card, origin=str(path))


# ------------------------------------------------------------------------------------------------ MT-Bench
_SINGLE = re.compile(r"\[The Start of Assistant's Answer\]\n(.*?)\n\[The End of Assistant's Answer\]", re.S)
_MULTI = re.compile(
    r"### Assistant A:\n(.*?)(?=\n\n### User:|\n\n<\|The End of Assistant A's Conversation)", re.S
)


def _answers(user_prompt: str, turn: int) -> tuple[str, str]:
    """(turn-1 answer, this turn's answer) cut out of a FastChat judge prompt."""
    if turn == 1:
        m = _SINGLE.search(user_prompt)
        return (m.group(1).strip() if m else ""), (m.group(1).strip() if m else "")
    found = _MULTI.findall(user_prompt)
    first = found[0].strip() if found else ""
    return first, (found[1].strip() if len(found) > 1 else "")


def build_mt_bench(folder: Path) -> OutcomeTable:
    """Import RouteLLM's MT-Bench GPT-4 judgments (80 questions x 2 turns x 2 models)."""
    qpath, jpath = folder / "mt_bench" / "question.jsonl", folder / "mt_bench" / "judgements.jsonl"
    questions = {}
    for i, line in enumerate(qpath.read_text(encoding="utf-8").splitlines(), 1):
        if line.strip():
            try:
                q = json.loads(line)
                questions[int(q["question_id"])] = q
            except (json.JSONDecodeError, KeyError, ValueError) as exc:
                raise SchemaError(f"{qpath}, line {i}: not a question record ({exc})") from None
    flagged = _contaminated(folder / "mt_bench" / "contaminated_prompts.jsonl")
    rows = []
    for i, line in enumerate(jpath.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            j = json.loads(line)
            qid, turn, score, model = int(j["question_id"]), int(j["turn"]), j["score"], j["model"]
        except (json.JSONDecodeError, KeyError, ValueError, TypeError) as exc:
            raise SchemaError(f"{jpath}, line {i}: not a judgment record ({exc})") from None
        if qid not in questions:
            raise SchemaError(f"{jpath}, line {i}, column 'question_id': {qid} is not in {qpath.name}")
        if model not in MODEL_NAMES:
            raise SchemaError(f"{jpath}, line {i}, column 'model': unknown model {model!r}")
        if score is None or not 1 <= float(score) <= 10:
            raise SchemaError(f"{jpath}, line {i}, column 'score': {score!r} is not a judge score in 1..10")
        q = questions[qid]
        first, answer = _answers(j.get("user_prompt", ""), turn)
        sent = q["turns"][0] if turn == 1 else "\n\n".join([q["turns"][0], first, q["turns"][1]])
        rows.append(
            {
                "sample_id": f"{qid}-t{turn}",
                "task": "mt-bench",
                "category": q.get("category", ""),
                "prompt": q["turns"][turn - 1],
                "reference": "",
                "model": MODEL_NAMES[model],
                "response": answer,
                "score": (float(score) - 1.0) / 9.0,
                "judge_score": float(score),
                "input_tokens": estimate_tokens(sent),
                "output_tokens": estimate_tokens(answer),
                "grader": "judge:gpt-4 (single answer, 1-10 -> (s-1)/9)",
                "turn": turn,
                "contaminated": q["turns"][0] in flagged,
            }
        )
    frame = _price_rows(pd.DataFrame(rows), PriceTable.load())
    frame = frame.sort_values(
        ["sample_id"], key=lambda s: s.map(lambda x: (int(x.split("-t")[0]), x)), kind="stable"
    ).reset_index(drop=True)
    card = DatasetCard(
        name="routellm-mt-bench",
        source=ORIGIN + " mt_bench/",
        license=LICENSE,
        description="MT-Bench (80 two-turn questions, 8 categories): GPT-4-judged answers of "
        "GPT-4-1106-preview "
        "and Mixtral-8x7B-Instruct; one sample per (question, turn).",
        grading="GPT-4 single-answer grading, score s in 1..10 mapped to (s - 1) / 9.",
        cost_note=_COST_NOTE.format(extra=" (turn 2 input = turn-1 question + answer + turn-2 question)"),
        extra={"judge": "gpt-4", "score_map": "(s-1)/9"},
    )
    return OutcomeTable(frame, card, origin=str(jpath))


for _name, _build, _files, _desc in [
    (
        "routellm-mmlu",
        build_mmlu,
        ("mmlu_responses/*.csv", "mmlu_responses/contaminated_prompts.jsonl", "../mmlu/mmlu_test.jsonl"),
        "MMLU 57 subjects, GPT-4-1106 vs Mixtral correctness from RouteLLM (no text; costs estimated)",
    ),
    (
        "routellm-gsm8k",
        build_gsm8k,
        ("gsm8k/*", "../gsm8k/test.jsonl"),
        "GSM8K test, GPT-4-1106 vs Mixtral responses and correctness from RouteLLM (costs estimated)",
    ),
    (
        "routellm-mt-bench",
        build_mt_bench,
        ("mt_bench/*",),
        "MT-Bench 80 questions x 2 turns, GPT-4 judge scores of GPT-4-1106 vs Mixtral (costs estimated)",
    ),
]:
    source_registry.add(
        _name,
        Source(
            name=_name,
            description=_desc,
            folder="routellm-gpt4-mixtral",
            license="Apache-2.0",
            build=_build,
            files=_files,
            version=VERSION,
            hub_id={"routellm-mmlu": "cais/mmlu", "routellm-gsm8k": "openai/gsm8k"}.get(_name, ""),
        ),
    )
