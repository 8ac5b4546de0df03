"""How much signal is there to route on? Prompt-only versus the cheaper models' answers, per model.

    nice -n 10 python bench/router_plateau.py --only mbpp --signal      # the plateau bench, then this analysis

An analysis, not a routing result: over ALL samples of the dataset, with 5 seeded folds (each sample's
prediction comes from a model fitted on the other folds), per model (cheapest first):

- ``prompt-only AUC``: how well a plain logistic regression (C = 1) on the question-only embedding plus the
  one-hot category ranks the model's right answers above its wrong ones (0.5 = no signal, 1 = perfect). This
  bounds what the plateau's baseline, and any router of that family, can read from the prompt.
- ``agreement AUC``: the same from the model's answer agreeing with each *cheaper* model's answer
  (:func:`evals.graders.extract.answer_agreement` on normalised final answers: letters, numbers, code, text):
  the cheap self-consistency a cascade pays for.
- ``both AUC``: the two feature sets together (what ``cascade-stacked`` combines).

AUCs are rank statistics, so they do not depend on calibration; the cross-validation keeps them honest.
"""

from __future__ import annotations

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score

from evals.graders.extract import answer_agreement, final_answer
from evals.outcomes import OutcomeTable
from routers.embeddings import embed

FOLDS = 5


def _oof_auc(x: np.ndarray, y: np.ndarray, seed: int = 0) -> float | None:
    """Out-of-fold AUC of a logistic regression of ``y`` (0/1) on ``x``; None when ``y`` is constant."""
    y = (np.asarray(y) >= 0.5).astype(int)
    if y.min() == y.max():
        return None
    fold = np.random.default_rng(seed).permutation(len(y)) % FOLDS
    p = np.zeros(len(y))
    for f in range(FOLDS):
        tr = fold != f
        if y[tr].min() == y[tr].max():
            p[~tr] = y[tr].mean()
            continue
        model = LogisticRegression(C=1.0, max_iter=2000).fit(x[tr], y[tr])
        p[~tr] = model.predict_proba(x[~tr])[:, 1]
    return float(roc_auc_score(y, p))


def _fmt(v: float | None) -> str:
    return "—" if v is None else f"{v:.3f}"


def signal_report(dataset: str, table: OutcomeTable, question: dict[str, str] | None, encoder: str) -> None:
    """Print the per-model signal table of one dataset (module docstring)."""
    texts = [question[str(s)] for s in table.sample_ids] if question else list(table.prompts)
    cats = sorted({str(c) for c in table.categories})
    onehot = np.array([[float(str(c) == k) for k in cats] for c in table.categories]).reshape(len(texts), -1)
    x_prompt = np.hstack([embed(texts, encoder).astype(np.float64), onehot])
    responses = table.wide_text("response")
    answers = [[final_answer(str(t)) for t in row] for row in responses]
    q, cost = table.quality, table.cost
    order = np.argsort(cost.mean(axis=0))
    kinds: dict[str, int] = {}
    for row in answers:
        for a in row:
            kinds[a.kind or "none"] = kinds.get(a.kind or "none", 0) + 1
    total = sum(kinds.values())
    print(f"\n### {dataset}: the signal available (5-fold out-of-fold AUCs over all {table.n_samples} samples)\n")
    print("Final answers by kind: " + ", ".join(f"{k} {v / total:.1%}" for k, v in sorted(kinds.items())))
    print(f"Oracle (some model right): {q.max(axis=1).mean():.3f}; best single model: {q.mean(axis=0).max():.3f}\n")
    print("| model (cheapest first) | accuracy | mean $ | prompt-only AUC | agreement AUC (cheaper) | both AUC |")
    print("|---|---|---|---|---|---|")
    for rank, j in enumerate(order):
        y = q[:, j]
        cheaper = order[:rank]
        auc_p = _oof_auc(x_prompt, y)
        auc_a = auc_b = None
        if len(cheaper):
            agree = np.array([[answer_agreement(answers[i][j], answers[i][k]) for k in cheaper] for i in range(len(y))])
            auc_a = _oof_auc(agree, y)
            auc_b = _oof_auc(np.hstack([x_prompt, agree]), y)
        print(
            f"| {table.models[j]} | {y.mean():.3f} | {cost[:, j].mean():.6f} | {_fmt(auc_p)} | {_fmt(auc_a)} | "
            f"{_fmt(auc_b)} |",
            flush=True,
        )
