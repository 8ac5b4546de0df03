"""Synthetic decision logs for the production-loop tests, written with the real record classes.

:func:`simulate` plays a serving proxy over an OutcomeTable: each request draws a sample, a rollout arm (router or
control), the router's epsilon-greedy choice from a ``decide`` function (its predictions), and, for a shadow
sample, the reference model's answer and an exact grade from the table's recorded scores. So every number a
report computes from the log has a known truth in the table. Importable as ``production_logs`` from any test.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from evals.outcomes import OutcomeTable
from evals.production.log_reader import segment_name
from evals.production.propensity import explore, greedy_choice, propensity_of
from evals.production.records import (
    Candidate,
    DecisionRecord,
    GradeRecord,
    ShadowPair,
    prompt_hash,
    verdict_of,
)

T0 = 1_764_650_000.0  # 2025-12-02 04:33 UTC
#: ``decide(prompt, category) -> (predicted quality (m,), predicted cost (m,))``.
Decide = Callable[[str, str], tuple[np.ndarray, np.ndarray]]


@dataclass(frozen=True)
class Drift:
    """From ``start`` (Unix s) on, ``model``'s answers to ``category`` are wrong."""

    model: str
    category: str
    start: float


def oracle_decide(table: OutcomeTable, noise: float = 0.0, seed: int = 0) -> Decide:
    """Predictions from the table itself (true scores, optionally noised; costs = mean cost per model)."""
    q = table.quality
    cost = table.cost.mean(axis=0)
    index = {p: i for i, p in enumerate(table.prompts)}
    rng = np.random.default_rng(seed)
    jitter = rng.normal(0, noise, q.shape) if noise else np.zeros(q.shape)

    def decide(prompt: str, category: str) -> tuple[np.ndarray, np.ndarray]:
        i = index[prompt]
        return np.clip(q[i] + jitter[i], 0, 1), cost

    return decide


def simulate(table: OutcomeTable, decide: Decide, *, n: int, lam: float, share: float = 0.5,
             epsilon: float = 0.05, shadow_rate: float = 0.2, control: str = "big", reference: str = "big",
             seed: int = 0, spacing_s: float = 30.0, drift: Drift | None = None, store_text: bool = True,
             grade: bool = True) -> tuple[list, dict]:
    """``(records in write order, truth)`` of ``n`` simulated requests (see the module docstring).

    ``truth`` holds per arm the costs and scores the table gives the served answers (what the log should show).
    """
    rng = np.random.default_rng(seed)
    models = list(table.models)
    m = len(models)
    prompts, cats = list(table.prompts), [str(c) for c in table.categories]
    q_true, c_true = table.quality, table.cost
    resp = table.wide_text("response")
    records: list = []
    truth: dict[str, dict[str, list[float]]] = {"router": {"cost": [], "score": []},
                                                 "control": {"cost": [], "score": []}}
    for k in range(n):
        j = int(rng.integers(len(prompts)))
        t = T0 + k * spacing_s
        prompt, cat = prompts[j], cats[j]
        qhat, chat = decide(prompt, cat)
        arm = "router" if rng.random() < share else "control"
        if arm == "router":
            greedy = greedy_choice(qhat[None], chat[None], lam)
            chosen_idx, explored = explore(greedy, epsilon, rng.random(1), rng.random(1), n_models=m)
            c_idx = int(chosen_idx[0])
            prop = float(propensity_of([c_idx], qhat[None], chat[None], lam, epsilon)[0])
            explored_flag = bool(explored[0])
        else:
            c_idx, prop, explored_flag = models.index(control), 1.0, False
        chosen = models[c_idx]

        def score_of(model: str, when: float = t, j: int = j, cat: str = cat) -> float:
            if drift and model == drift.model and cat == drift.category and when >= drift.start:
                return 0.0
            return float(q_true[j, models.index(model)])

        cost = float(c_true[j, c_idx])
        truth[arm]["cost"].append(cost)
        truth[arm]["score"].append(score_of(chosen))
        shadow = bool(rng.random() < shadow_rate)
        rid = f"req-{seed}-{k}"
        records.append(DecisionRecord(
            request_id=rid, time=t, route="router", prompt_hash=prompt_hash(prompt), status=200, latency_s=0.05,
            category=cat, chosen=chosen,
            candidates=tuple(Candidate(mm, float(qhat[i]), float(chat[i])) for i, mm in enumerate(models)),
            propensity=prop, lam=lam, epsilon=epsilon if arm == "router" else 0.0, explored=explored_flag,
            answered_by=chosen, reason="routed", input_tokens=40, output_tokens=12, cost_usd=cost, arm=arm,
            shadow=shadow, prompt_text=prompt if store_text else None,
        ))
        if not shadow:
            continue
        answer, ref_answer = str(resp[j, c_idx]), str(resp[j, models.index(reference)])
        records.append(ShadowPair.build(
            request_id=rid, time=t + 1, route="router", answered_by=chosen, reference=reference,
            reference_status=200, reference_latency_s=0.2, category=cat, prompt_text=prompt, answer_text=answer,
            reference_text=ref_answer, answer_cost_usd=cost,
            reference_cost_usd=float(c_true[j, models.index(reference)]),
        ))
        if grade:
            a, r = score_of(chosen), score_of(reference)
            records.append(GradeRecord(request_id=rid, time=t + 2, grader="exact", verdict=verdict_of(a, r),
                                       answer_score=a, reference_score=r, answered_by=chosen, reference=reference,
                                       category=cat, online=True))
    return records, truth


def write_log(folder, records, per_segment: int = 500) -> None:
    """Write records into rotated ``decisions-*`` segments of ``folder``, in order."""
    folder.mkdir(parents=True, exist_ok=True)
    for s in range(0, len(records), per_segment):
        chunk = records[s:s + per_segment]
        (folder / segment_name(T0 + s, s // per_segment)).write_text(
            "".join(r.to_json() + "\n" for r in chunk), encoding="utf-8")


def measured_export(table: OutcomeTable, folder, *, lam: float = 0.05):
    """``(export folder, its measurement)``: a knn export of ``table`` measured on the whole table against ``big``
    (the block ``routelab export`` writes), in ``folder / "export"``."""
    from evals.formatting import POINT_VALIDATION_CHOSEN
    from evals.stats import resample_counts
    from routers import make_router
    from routers.export import export_router
    from routers.export.measurement import measure_point

    prices = {"cheap": {"provider": "together", "input_per_1m": 0.1, "output_per_1m": 0.2, "request_fee": 0.0},
              "mid": {"provider": "together", "input_per_1m": 0.5, "output_per_1m": 1.0, "request_fee": 0.0},
              "big": {"provider": "openai", "input_per_1m": 5.0, "output_per_1m": 15.0, "request_fee": 0.0}}
    router = make_router({"name": "knn", "params": {"encoder": "hash-bow-256", "k": 3}}).fit(table)
    models = list(table.models)
    choice = np.array([models.index(m) for m in router.route(table.prompts, lam)])
    rows, big = np.arange(table.n_samples), models.index("big")
    measurement = measure_point(
        table.cost[rows, choice], table.quality[rows, choice], ref_cost=table.cost[:, big],
        ref_score=table.quality[:, big], W=resample_counts(table.n_samples, 500, 0), point=POINT_VALIDATION_CHOSEN,
        choice=choice, models=models, reference_model="big", lam=lam, dataset="small")
    return export_router(router, folder / "export", lam=lam, prices=prices, measurement=measurement), measurement


def served_export(table: OutcomeTable, folder, *, lam: float = 0.05, n: int = 1500, **sim) -> dict:
    """:func:`measured_export` and a log of ``n`` requests it served (``sim`` goes to :func:`simulate`).

    Returns ``{"folder", "log", "truth", "measurement", "decide"}``.
    """
    from routers.export.loader import load_exported

    export, measurement = measured_export(table, folder, lam=lam)
    exported = load_exported(export)
    cache: dict = {}

    def decide(prompt: str, category: str) -> tuple[np.ndarray, np.ndarray]:
        # The export's own predictions, once per prompt (they never change: the router is not adaptive).
        if (prompt, category) not in cache:
            cache[prompt, category] = exported.predictions(prompt, category)[1:]
        return cache[prompt, category]

    records, truth = simulate(table, decide, n=n, lam=lam, **sim)
    write_log(folder / "log", records)
    return {"folder": export, "log": folder / "log", "truth": truth, "measurement": measurement, "decide": decide}
