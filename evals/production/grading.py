"""Grade shadow pairs: the answer a client got against the reference model's answer to the same prompt.

A :class:`~evals.production.records.ShadowPair` becomes a :class:`~evals.production.records.GradeRecord` by one of
the existing graders, never a new rule:

- **exact match** when the pair carries the expected answer (``pair.expected``): each answer is graded by an
  exact-match grader of :mod:`evals.graders.exact` (``mcq_letter`` by default) and the verdict compares the two
  correctness scores; grader label ``exact``.
- **pairwise judge** otherwise: :class:`evals.graders.judge.JudgePairwise` with the reference as the baseline, both
  orders (so a judge that favours position A gives a tie, not a win); grader label ``judge:<model>``. An
  unparsable verdict gives no grade (counted, never guessed).

The proxy's online grading (``[shadow] grade_online``) calls :func:`agrade_pair` per pair; ``routelab logs grade``
calls :func:`grade_log`, which skips every pair already graded by the grader that would grade it now (online or in
an earlier run), so running it twice writes nothing new. Grades are appended to the log as whole ``grades-*``
segments (:func:`~evals.production.log_reader.write_segment`), in batches so an interrupted run keeps its work.

Example:
    >>> async with http_judge("http://127.0.0.1:8100/v1", "replay-judge") as judge:      # doctest: +SKIP
    ...     run = await grade_log("logs/", judge=judge, judge_model="replay-judge")
    >>> run.summary()                                                                       # doctest: +SKIP
    'graded 412 pair(s) (exact 0, judge 412): 301 win, 60 tie, 51 loss; ...'
"""

from __future__ import annotations

import asyncio
import os
import time
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

from evals.collect.client import ChatClient
from evals.collect.config import ProviderConfig
from evals.exceptions import ConfigError, ProviderError
from evals.graders._base import GradeInput, JudgeCall, get_grader
from evals.graders.judge import JudgePairwise
from evals.production.log_reader import read_log, write_segment
from evals.production.records import GradeRecord, ShadowPair, verdict_of

__all__ = [
    "EXACT_LABEL",
    "GradingRun",
    "agrade_pair",
    "grade_exact",
    "grade_log",
    "grader_label",
    "http_judge",
    "judge_label",
]

#: The grader label of exact-match grades.
EXACT_LABEL = "exact"
#: Grades are written in segments of at most this many records (an interrupted run keeps what it wrote).
BATCH = 200


def judge_label(judge_model: str) -> str:
    """The grader label of a pairwise judge's grades: ``judge:<model>``."""
    return f"judge:{judge_model}"


def grader_label(pair: ShadowPair, judge_model: str | None) -> str | None:
    """Which grader grades ``pair``: ``exact`` when it has an expected answer, else the judge (None without one)."""
    if pair.expected is not None:
        return EXACT_LABEL
    return judge_label(judge_model) if judge_model else None


def grade_exact(pair: ShadowPair, exact_grader: str = "mcq_letter", *, online: bool = False,
                now: float | None = None) -> GradeRecord | None:
    """Grade a pair with an exact-match grader against ``pair.expected``; None when it lacks the texts to grade.

    Raises:
        UnknownComponentError: for an ``exact_grader`` that is not registered.
        ConfigError: for a grader that needs a judge (not an exact-match one).
    """
    grader = get_grader(exact_grader)
    if grader.needs_judge:
        raise ConfigError(f"exact grader {exact_grader!r} needs a judge; pick an exact-match grader "
                          "(mcq_letter, number, text)")
    if pair.expected is None or pair.answer_text is None or pair.reference_text is None or (
        pair.reference_status != 200
    ):
        return None
    prompt = pair.prompt_text or ""
    mine = grader.grade(GradeInput(prompt, pair.answer_text, pair.expected, pair.category or ""))
    ref = grader.grade(GradeInput(prompt, pair.reference_text, pair.expected, pair.category or ""))
    a, r = float(mine.score or 0.0), float(ref.score or 0.0)
    detail = f"{exact_grader}: {mine.extracted or '-'}|{ref.extracted or '-'} vs {pair.expected[:40]}"
    return _record(pair, EXACT_LABEL, a, r, detail, online, now)


async def agrade_pair(pair: ShadowPair, *, judge: JudgeCall | None = None, judge_model: str | None = None,
                      exact_grader: str = "mcq_letter", online: bool = False,
                      now: float | None = None) -> GradeRecord | None:
    """Grade one pair: exact match when it has an expected answer, else the pairwise judge (both orders).

    Returns None when the pair cannot be graded (the reference failed, texts not stored, no judge for a pair
    without an expected answer) or the judge's verdict could not be parsed.

    Raises:
        ConfigError: when ``judge`` is given without ``judge_model`` (the grade must name its judge).
        ProviderError: when a judge call fails after its retries.
    """
    if judge is not None and not judge_model:
        raise ConfigError("grading with a judge needs its model name (judge_model) for the grade's label")
    if pair.expected is not None:
        return grade_exact(pair, exact_grader, online=online, now=now)
    if judge is None or not pair.gradable:
        return None
    assert judge_model is not None and pair.prompt_text is not None and pair.answer_text is not None
    item = GradeInput(pair.prompt_text, pair.answer_text, "", pair.category or "", baseline=pair.reference_text)
    grade = await JudgePairwise(baseline=pair.reference).agrade(item, judge=judge)
    if grade.score is None:
        return None
    # The reference against itself ties (0.5): the scale the offline judge_pairwise grader gives its baseline.
    return _record(pair, judge_label(judge_model), float(grade.score), 0.5, grade.extracted, online, now)


def _record(pair: ShadowPair, label: str, answer: float, reference: float, detail: str, online: bool,
            now: float | None) -> GradeRecord:
    return GradeRecord(request_id=pair.request_id, time=time.time() if now is None else now, grader=label,
                       verdict=verdict_of(answer, reference), answer_score=answer, reference_score=reference,
                       answered_by=pair.answered_by, reference=pair.reference, category=pair.category,
                       online=online, detail=detail)


@dataclass
class GradingRun:
    """What one :func:`grade_log` run did."""

    graded: list[GradeRecord] = field(default_factory=list)
    """The grades written by this run."""
    skipped: Counter[str] = field(default_factory=Counter)
    """Pairs not graded, by why: ``already graded``, ``reference failed``, ``texts not stored``,
    ``needs a judge``, ``unparsable verdict``, ``judge error``."""
    segments: list[Path] = field(default_factory=list)
    """The segments written."""
    errors: list[str] = field(default_factory=list)
    """Up to 10 judge errors, as ``request_id: message``."""

    def summary(self) -> str:
        """One line: how many pairs were graded by which grader, the verdicts, and what was skipped and why."""
        by = Counter(g.grader.split(":")[0] for g in self.graded)
        verdicts = Counter(g.verdict for g in self.graded)
        line = (f"graded {len(self.graded):,} pair(s) (exact {by['exact']:,}, judge {by['judge']:,}): "
                f"{verdicts['win']:,} win, {verdicts['tie']:,} tie, {verdicts['loss']:,} loss")
        if self.skipped:
            line += "; skipped " + ", ".join(f"{why} {n:,}" for why, n in sorted(self.skipped.items()))
        return line


async def grade_log(log_dir: str | os.PathLike[str], *, judge: JudgeCall | None = None,
                    judge_model: str | None = None, exact_grader: str = "mcq_letter", concurrency: int = 8,
                    now: float | None = None) -> GradingRun:
    """Grade every shadow pair of a log not yet graded by the grader that would grade it; write the grades.

    Idempotent: a pair that already has a grade with the same label (``exact`` or ``judge:<model>``), online or
    from an earlier run, is skipped. Grades go into new ``grades-*`` segments of ``log_dir``.

    Raises:
        DataNotFoundError: when ``log_dir`` is not a directory.
        ConfigError: for a judge without a model name, or a bad exact grader.
    """
    if concurrency < 1:
        raise ConfigError(f"grading concurrency must be >= 1, got {concurrency}")
    if judge is not None and not judge_model:
        raise ConfigError("grading with a judge needs its model name (--judge-model)")
    get_grader(exact_grader)  # an unknown name fails before any judge call is paid for
    read = read_log(log_dir)
    done = {g.key for g in read.grades}
    run = GradingRun()
    todo: list[ShadowPair] = []
    seen: set[tuple[str, str]] = set()
    for pair in read.shadow_pairs:
        label = grader_label(pair, judge_model if judge is not None else None)
        why = _why_not(pair, label)
        if why is None and label is not None and ((pair.request_id, label) in done or (pair.request_id, label) in seen):
            why = "already graded"
        if why is not None:
            run.skipped[why] += 1
            continue
        seen.add((pair.request_id, str(label)))
        todo.append(pair)
    slots = asyncio.Semaphore(concurrency)
    pending: list[GradeRecord] = []

    async def one(pair: ShadowPair) -> None:
        async with slots:
            try:
                grade = await agrade_pair(pair, judge=judge, judge_model=judge_model, exact_grader=exact_grader,
                                          now=now)
            except ProviderError as exc:
                run.skipped["judge error"] += 1
                if len(run.errors) < 10:
                    run.errors.append(f"{pair.request_id}: {exc}")
                return
        if grade is None:
            run.skipped["unparsable verdict"] += 1
            return
        pending.append(grade)
        if len(pending) >= BATCH:
            _flush(log_dir, pending, run, now)

    await asyncio.gather(*(one(p) for p in todo))
    _flush(log_dir, pending, run, now)
    return run


def _why_not(pair: ShadowPair, label: str | None) -> str | None:
    """Why a pair cannot be graded now (None when it can)."""
    if pair.reference_status != 200 or pair.reference_text is None:
        return "reference failed"
    if pair.answer_text is None or (label != EXACT_LABEL and pair.prompt_text is None):
        return "texts not stored"
    if label is None:
        return "needs a judge"
    return None


def _flush(log_dir: str | os.PathLike[str], pending: list[GradeRecord], run: GradingRun, now: float | None) -> None:
    batch, pending[:] = list(pending), []
    path = write_segment(log_dir, batch, prefix="grades", now=now)
    if path is not None:
        run.segments.append(path)
        run.graded.extend(batch)


@asynccontextmanager
async def http_judge(base_url: str, model: str, *, api_key_env: str = "", timeout_s: float = 60.0,
                     concurrency: int = 8) -> AsyncIterator[JudgeCall]:
    """A :data:`~evals.graders._base.JudgeCall` that asks ``model`` at an OpenAI-compatible ``base_url``.

    Goes through the collection's :class:`~evals.collect.client.ChatClient` (retries, backoff, key redaction);
    ``api_key_env`` names the environment variable holding the key ("" for keyless servers such as the replay
    server). Temperature 0, so a verdict is as repeatable as the judge allows.

    Raises:
        ConfigError: when ``api_key_env`` names a variable that is not set.
    """
    provider = ProviderConfig(name="judge", base_url=base_url.rstrip("/"), api_key_env=api_key_env,
                              concurrency=concurrency, timeout_s=timeout_s, retries=3)
    async with ChatClient({"judge": provider}) as client:

        async def judge(messages: list[dict[str, str]]) -> str:
            result = await client.chat("judge", model, messages, {"temperature": 0})
            return result.text

        yield judge
