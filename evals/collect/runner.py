"""``collect``: ask every model once per sample, grade the answers, build an OutcomeTable.

Phase one of the workbench (DESIGN.md): the only phase that touches the network and the only one that
spends money. Every answer goes through the cached :class:`~evals.collect.client.ChatClient`, so a run that is
interrupted (Ctrl-C, a crash, SIGKILL) resumes where it stopped: answers already received come from the
cache, and only the rest are asked for. Exact-match grading happens as each answer arrives; judge graders run
after all answers are in (a pairwise judge needs the baseline's answer), through the same cached client.

Costs in the table are the cost of each answer (usage tokens x the price table) whether it came from the
cache or not; the *spend* reported is what this run paid: cache hits cost nothing.

Before the first call the run estimates its spend (:func:`~evals.collect.budget.estimate_spend`, cache hits
excluded) and hands it to ``on_estimate``; with ``max_spend_usd`` set, no paid call starts that could take the
run past the cap (:class:`~evals.collect.budget.SpendCap`), and what was received is kept.
"""

from __future__ import annotations

import asyncio
import math
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import httpx
import pandas as pd

from evals.collect.budget import SpendCap, SpendEstimate, estimate_spend, messages_for, reservation
from evals.collect.cache import ResponseCache, request_key
from evals.collect.client import ChatClient, ChatResult
from evals.collect.config import CollectConfig, ModelConfig
from evals.collect.tasks import load_samples
from evals.exceptions import ConfigError, ProviderError, SchemaError, UnknownComponentError, WorkbenchError
from evals.graders import Grade, GradeInput, Grader, get_grader
from evals.outcomes import DatasetCard, OutcomeTable
from evals.prices import Price, PriceTable

__all__ = ["CollectResult", "ModelSpend", "acollect", "collect", "resolve_prices"]


@dataclass
class ModelSpend:
    """What one model (or the judge) cost in this run."""

    model: str
    provider: str
    role: str = "candidate"
    calls: int = 0
    """Answers paid for in this run."""
    cache_hits: int = 0
    """Answers taken from the cache (free)."""
    input_tokens: float = 0.0
    """Prompt tokens of paid calls."""
    output_tokens: float = 0.0
    """Completion tokens of paid calls."""
    cost_usd: float = 0.0
    """Dollars of paid calls (never of cache hits)."""
    estimated_calls: int = 0
    """Paid calls whose provider sent no usage, so tokens were estimated as characters / 4."""
    failures: int = 0
    """Calls that failed after retries."""

    def add(self, result: ChatResult, cost: float, estimated: bool) -> None:
        """Account one answer."""
        if result.cached:
            self.cache_hits += 1
            return
        self.calls += 1
        self.input_tokens += 0.0 if math.isnan(result.input_tokens) else result.input_tokens
        self.output_tokens += 0.0 if math.isnan(result.output_tokens) else result.output_tokens
        self.cost_usd += cost
        self.estimated_calls += int(estimated)


@dataclass
class CollectResult:
    """What a collection run produced."""

    table: OutcomeTable | None
    """The graded outcomes (complete samples only), or None if nothing could be graded."""
    spend: list[ModelSpend]
    """Per model (and judge): calls, cache hits, tokens, dollars of this run."""
    failures: list[tuple[str, str, str]] = field(default_factory=list)
    """``(sample_id, model, message)`` of calls that failed after retries (rerun to retry them)."""
    unparsable: int = 0
    """Judge verdicts that could not be parsed (those answers are left out, never guessed)."""
    no_answer: dict[str, int] = field(default_factory=dict)
    """Per model, answers where the exact-match grader found nothing to read (scored 0)."""
    n_expected: int = 0
    """(sample, model) pairs asked for."""
    estimate: SpendEstimate | None = None
    """The spend estimated before the run started."""
    max_spend_usd: float | None = None
    """The spend cap of the run (None: no cap)."""
    not_asked: int = 0
    """Answers and judge verdicts not asked for because the spend cap would have been passed."""

    @property
    def stopped_at_cap(self) -> bool:
        """True when the spend cap stopped the run before everything was asked."""
        return self.not_asked > 0

    @property
    def total_cost(self) -> float:
        """Dollars paid in this run."""
        return float(sum(s.cost_usd for s in self.spend))

    def format_spend(self) -> str:
        """A plain-text report of what this run spent and the quality per model (with n and 95% CI)."""
        quality: dict[str, tuple[int, float, float]] = {}
        if self.table is not None:
            for model, scores in self.table.frame.groupby("model", sort=False)["score"]:
                n, mean = len(scores), float(scores.mean())
                half = 1.96 * float(scores.std(ddof=1)) / math.sqrt(n) if n > 1 else float("nan")
                quality[model] = (n, mean, half)
        head = (f"{'model':<32} {'role':<9} {'calls':>6} {'cached':>6} {'in_tok':>10} {'out_tok':>10} "
                f"{'spent $':>10}  quality (n, 95% CI)")
        lines = [head, "-" * len(head)]
        for s in self.spend:
            q = quality.get(s.model) if s.role == "candidate" else None
            qtext = f"{q[1]:.3f} ± {q[2]:.3f} (n={q[0]})" if q else ""
            flag = " *" if s.estimated_calls else ""
            lines.append(
                f"{s.model:<32} {s.role:<9} {s.calls:>6} {s.cache_hits:>6} {s.input_tokens:>10.0f} "
                f"{s.output_tokens:>10.0f} {s.cost_usd:>10.4f}{flag}  {qtext}"
            )
        calls, hits = sum(s.calls for s in self.spend), sum(s.cache_hits for s in self.spend)
        lines.append("-" * len(head))
        lines.append(f"{'total':<32} {'':<9} {calls:>6} {hits:>6} {'':>10} {'':>10} {self.total_cost:>10.4f}")
        lines.append("spent = usage tokens x price of the calls made in this run; cache hits cost nothing.")
        if any(s.estimated_calls for s in self.spend):
            lines.append(
                "* some answers came without usage counts: their tokens are ESTIMATED as characters / 4."
            )
        if self.failures:
            lines.append(
                f"{len(self.failures)} call(s) failed after retries; rerun the same command to retry "
                "them (answers already received come from the cache)."
            )
        if self.unparsable:
            lines.append(
                f"{self.unparsable} judge verdict(s) could not be parsed; those answers are left out."
            )
        if self.stopped_at_cap:
            lines.append(
                f"STOPPED at the spend cap of ${self.max_spend_usd:.4f}: this run spent ${self.total_cost:.4f}; "
                f"{self.not_asked} answer(s)/verdict(s) were not asked. Everything received is cached: rerun "
                "with a higher --max-spend (or max_spend_usd) to continue without paying twice."
            )
        return "\n".join(lines)


def resolve_prices(config: CollectConfig) -> dict[str, Price]:
    """The price of every model of the config (and of the judge): config override, else the price table.

    Raises:
        ConfigError: for a model with no price anywhere (before any call is made).
    """
    table: PriceTable | None = None
    out: dict[str, Price] = {}
    models = list(config.models) + ([config.grader.judge] if config.grader.judge else [])
    for m in models:
        if m.input_per_1m is not None and m.output_per_1m is not None:
            out[m.name] = Price(
                m.name, m.provider, m.input_per_1m, m.output_per_1m, m.request_fee, source="config"
            )
            continue
        try:
            if table is None:
                table = PriceTable.load(config.prices)
            offers = table.providers(m.name)
            out[m.name] = table.price(m.name, m.provider if m.provider in offers else None)
        except (UnknownComponentError, FileNotFoundError) as exc:
            raise ConfigError(
                f"no price for model {m.name!r}: {exc}. Add input_per_1m and output_per_1m to its "
                "[[models]] entry, or a row to the price table"
            ) from None
    return out


class _CapReached(WorkbenchError):
    """Internal: a judge call was refused by the spend cap."""


def _cost(
    price: Price, model: ModelConfig, prompt: str, result: ChatResult
) -> tuple[float, float, float, bool]:
    """(cost, input tokens, output tokens, estimated): usage if the provider sent it, else characters / 4."""
    itok, otok, est = result.input_tokens, result.output_tokens, False
    if math.isnan(itok):
        itok, est = (len(prompt) + len(model.system)) / 4.0, True
    if math.isnan(otok):
        otok, est = len(result.text) / 4.0, True
    return price.cost(itok, otok), itok, otok, est


async def _pool(jobs: Iterable[Any], workers: int, work: Callable[[Any], Any]) -> None:
    """Run ``await work(job)`` over ``jobs`` with at most ``workers`` at once (a bounded worker pool)."""
    queue: asyncio.Queue[Any] = asyncio.Queue()
    for job in jobs:
        queue.put_nowait(job)

    async def worker() -> None:
        while True:
            try:
                job = queue.get_nowait()
            except asyncio.QueueEmpty:
                return
            await work(job)

    await asyncio.gather(*(worker() for _ in range(max(1, workers))))


async def acollect(
    config: CollectConfig,
    *,
    transport: httpx.AsyncBaseTransport | None = None,
    env: dict[str, str] | None = None,
    progress: bool = True,
    cache: ResponseCache | None = None,
    grader: Grader | None = None,
    on_estimate: Callable[[SpendEstimate], None] | None = None,
) -> CollectResult:
    """Collect and grade (async). See :func:`collect`."""
    from tqdm.auto import tqdm

    samples, origin, license_ = load_samples(config.tasks)
    prices = resolve_prices(config)
    grader = grader or get_grader(config.grader.name, **config.grader.params)
    judge_model = config.grader.judge
    if grader.needs_judge and judge_model is None:
        raise ConfigError(
            f"grader {grader.name!r} needs a judge: add judge = {{ name = ..., provider = ... }} "
            "to the [grader] table"
        )
    baseline = getattr(grader, "baseline", "") if grader.needs_baseline else ""
    if grader.needs_baseline and baseline not in {m.name for m in config.models}:
        raise ConfigError(
            f"grader {grader.name!r}: baseline {baseline!r} must be one of the collected models "
            f"({', '.join(m.name for m in config.models)})"
        )

    own_cache = cache is None
    cache = cache or ResponseCache(config.cache)  # refuses a damaged cache file before any call
    providers = dict(config.providers)
    prompts = samples["prompt"].tolist()
    estimate = estimate_spend(config, prompts, prices, cache)
    if on_estimate is not None:
        on_estimate(estimate)
    cap = SpendCap(config.max_spend_usd)
    client = ChatClient(providers, cache=cache, transport=transport, env=env)
    spend = {m.name: ModelSpend(m.name, m.provider) for m in config.models}
    if judge_model is not None:
        spend["judge:" + judge_model.name] = ModelSpend(judge_model.name, judge_model.provider, role="judge")
    answers: dict[tuple[int, str], tuple[ChatResult, float, float, float, bool]] = {}
    grades: dict[tuple[int, str], Grade] = {}
    failures: list[tuple[str, str, str]] = []
    references = samples["reference"].tolist()
    categories = samples["category"].tolist()
    sids = samples["sample_id"].tolist()

    bar = tqdm(
        total=len(samples) * len(config.models),
        desc="collect",
        unit="answer",
        file=sys.stderr,
        disable=not progress,
        dynamic_ncols=True,
    )

    async def admit(
        provider: str, model: ModelConfig, messages: list[dict[str, str]], params: dict
    ) -> float | None:
        """The reservation of a call the cap admits (0 for a cache hit), or None when the cap refuses it."""
        if request_key(providers[provider].base_url, model.wire_name, messages, params) in cache:
            return 0.0
        reserve = reservation(prices[model.name], model, sum(len(msg["content"]) for msg in messages))
        return reserve if await cap.admit(reserve) else None

    async def answer(job: tuple[int, ModelConfig]) -> None:
        i, m = job
        messages = messages_for(m, prompts[i])
        reserve = await admit(m.provider, m, messages, m.params)
        if reserve is None:
            bar.update(1)
            return
        paid = 0.0  # what this call cost this run (a cache hit is free), for the spend cap
        try:
            result = await client.chat(m.provider, m.wire_name, messages, m.params)
        except ProviderError as exc:
            failures.append((sids[i], m.name, str(exc)))
            spend[m.name].failures += 1
        else:
            cost, itok, otok, est = _cost(prices[m.name], m, prompts[i], result)
            spend[m.name].add(result, cost, est)
            paid = 0.0 if result.cached else cost
            answers[(i, m.name)] = (result, cost, itok, otok, est)
            if not grader.needs_judge:
                grades[(i, m.name)] = grader.grade(
                    GradeInput(prompts[i], result.text, references[i], categories[i])
                )
        finally:
            cap.settle(reserve, paid)
        bar.update(1)

    try:
        by_provider: dict[str, list[tuple[int, ModelConfig]]] = {}
        # Sample-major order: an interrupted run leaves whole samples answered by every model.
        for i in range(len(samples)):
            for m in config.models:
                by_provider.setdefault(m.provider, []).append((i, m))
        await asyncio.gather(
            *(_pool(jobs, providers[name].concurrency, answer) for name, jobs in by_provider.items())
        )
        bar.close()

        if grader.needs_judge:
            assert judge_model is not None
            jspend = spend["judge:" + judge_model.name]
            jbar = tqdm(
                total=len(answers), desc="judge", unit="verdict", file=sys.stderr, disable=not progress
            )

            async def judge_call(messages: list[dict[str, str]]) -> str:
                reserve = await admit(judge_model.provider, judge_model, messages, judge_model.params)
                if reserve is None:
                    raise _CapReached("spend cap")
                paid = 0.0
                try:
                    result = await client.chat(
                        judge_model.provider, judge_model.wire_name, messages, judge_model.params
                    )
                    prompt_text = "".join(msg["content"] for msg in messages)
                    cost, _, _, est = _cost(prices[judge_model.name], judge_model, prompt_text, result)
                    jspend.add(result, cost, est)
                    paid = 0.0 if result.cached else cost
                finally:
                    cap.settle(reserve, paid)
                return result.text

            async def judge_one(key: tuple[int, str]) -> None:
                i, model = key
                base = answers.get((i, baseline)) if baseline else None
                if baseline and base is None:
                    failures.append(
                        (sids[i], model, f"no answer of the baseline {baseline!r} to compare with")
                    )
                else:
                    item = GradeInput(
                        prompts[i],
                        answers[key][0].text,
                        references[i],
                        categories[i],
                        baseline=base[0].text if base else None,
                    )
                    try:
                        grades[key] = await grader.agrade(item, judge=judge_call)
                    except ProviderError as exc:
                        failures.append((sids[i], model, f"judge: {exc}"))
                        jspend.failures += 1
                    except _CapReached:
                        pass  # counted by the cap; the answer stays ungraded (asked again on a rerun)
                jbar.update(1)

            await _pool(list(answers), providers[judge_model.provider].concurrency, judge_one)
            jbar.close()
    finally:
        bar.close()
        await client.aclose()
        if own_cache:
            cache.close()

    result = _build(config, samples, origin, license_, grader, prices, answers, grades, failures, spend)
    result.estimate, result.max_spend_usd, result.not_asked = estimate, config.max_spend_usd, cap.refused
    return result


def _build(
    config: CollectConfig,
    samples: pd.DataFrame,
    origin: str,
    license_: str,
    grader: Grader,
    prices: dict[str, Price],
    answers: dict,
    grades: dict[tuple[int, str], Grade],
    failures: list[tuple[str, str, str]],
    spend: dict[str, ModelSpend],
) -> CollectResult:
    rows, unparsable, no_answer = [], 0, {m.name: 0 for m in config.models}
    label = grader.label() + (
        f":{config.grader.judge.name}" if config.grader.judge and grader.needs_judge else ""
    )
    for m in config.models:
        for i in range(len(samples)):
            got = answers.get((i, m.name))
            grade = grades.get((i, m.name))
            if got is None or grade is None:
                continue
            if grade.score is None:
                unparsable += 1
                continue
            if not grade.parsed:
                no_answer[m.name] += 1
            result, cost, itok, otok, est = got
            s = samples.iloc[i]
            rows.append(
                {
                    "sample_id": s["sample_id"],
                    "task": s["task"],
                    "category": s["category"],
                    "prompt": s["prompt"],
                    "reference": s["reference"],
                    "model": m.name,
                    "provider": m.provider,
                    "response": result.text,
                    "score": grade.score,
                    "cost_usd": cost,
                    "cost_estimated": est,
                    "input_tokens": itok,
                    "output_tokens": otok,
                    "latency_s": result.latency_s,
                    "grader": label,
                    "extracted": grade.extracted,
                    "finish_reason": result.finish_reason,
                }
            )
    n_expected = len(samples) * len(config.models)
    spent = list(spend.values())
    if not rows:
        return CollectResult(None, spent, failures, unparsable, no_answer, n_expected)
    measured = not any(r["cost_estimated"] for r in rows)
    card = DatasetCard(
        name=config.name,
        source=f"collected by routelab collect ({config.origin or 'config'}) from task set {origin}; "
        + "; ".join(f"{p.name}={p.base_url}" for p in config.providers.values()),
        license=license_,
        description=f"{len(samples)} prompts answered by {len(config.models)} models: "
        + ", ".join(m.name for m in config.models),
        grading=f"{label}: {(type(grader).__doc__ or '').strip().splitlines()[0]}",
        cost_note=(
            "MEASURED: provider-reported usage tokens x prices per 1M tokens ("
            + ", ".join(
                f"{k}: {p.input_per_1m:g}/{p.output_per_1m:g} from {p.source or 'price table'}"
                for k, p in prices.items()
            )
            + ")"
        )
        + (
            "" if measured else "; rows with cost_estimated=True had no usage counts: tokens = characters / 4"
        ),
        extra={
            "models": {
                m.name: {"provider": m.provider, "api_model": m.wire_name, "params": m.params}
                for m in config.models
            },
            "grader": {"name": grader.name, "params": grader.params()},
            "failed_calls": len(failures),
            "unparsable_verdicts": unparsable,
            "no_answer": no_answer,
            "pairs_expected": n_expected,
        },
    )
    table: OutcomeTable | None = OutcomeTable(
        pd.DataFrame(rows), card, origin=config.origin, require_complete=False
    )
    if len(rows) < n_expected:
        try:  # keep whole samples only, so the wide views have no holes
            table = table.complete()
        except SchemaError:  # no sample has an answer from every model
            table = None
    return CollectResult(table, spent, failures, unparsable, no_answer, n_expected)


def collect(
    config: CollectConfig,
    *,
    transport: httpx.AsyncBaseTransport | None = None,
    env: dict[str, str] | None = None,
    progress: bool = True,
    write: bool = True,
    on_estimate: Callable[[SpendEstimate], None] | None = None,
) -> CollectResult:
    """Ask every model of ``config`` once per sample, grade, and (if ``write``) save to ``config.output``.

    Args:
        config: A parsed config (:func:`evals.collect.load_config`).
        transport: An httpx transport replacing the network (tests).
        env: Where API keys are read from (default ``os.environ``).
        progress: Show progress bars on stderr.
        write: Write the table (Parquet + card) to ``config.output`` (also when the spend cap stopped the
            run: the complete samples received so far).
        on_estimate: Called with the :class:`~evals.collect.budget.SpendEstimate` before the first call
            (``routelab collect`` prints it).

    Raises:
        CacheError: when the cache file exists but is not a valid cache (nothing is asked).

    Returns:
        A :class:`CollectResult`; its ``format_spend()`` is what ``routelab collect`` prints.
    """
    coro = acollect(config, transport=transport, env=env, progress=progress, on_estimate=on_estimate)
    try:
        asyncio.get_running_loop()
    except RuntimeError:  # the usual case: no loop in this thread
        result = asyncio.run(coro)
    else:
        # Called from inside a running loop (Jupyter): asyncio.run would refuse, so run on a worker thread.
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(max_workers=1) as pool:
            result = pool.submit(asyncio.run, coro).result()
    if write and result.table is not None:
        result.table.to_parquet(config.output)
    return result
