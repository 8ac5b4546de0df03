"""What a grader is: an answer in, a :class:`Grade` out; and the registry graders live in.

A grader turns one model answer into a score in [0, 1]. Exact-match graders are pure functions of the text
(:meth:`Grader.grade`); LLM judges need a model call, so the collection runner calls the async
:meth:`Grader.agrade` with a ``judge`` callable that goes through the same cached, retried client as every
other call (a judge's verdict is paid for once, like any answer).
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, ClassVar

from evals.exceptions import ConfigError
from evals.registry import Registry

__all__ = ["Grade", "GradeInput", "Grader", "JudgeCall", "get_grader", "grader_registry", "register_grader"]

#: ``await judge(messages) -> text``: one chat call to the judge model (cached and retried by the caller).
JudgeCall = Callable[[list[dict[str, str]]], Awaitable[str]]


@dataclass(frozen=True)
class GradeInput:
    """One answer to grade, with what a grader may need to judge it."""

    prompt: str
    """The user turn the model answered."""
    response: str
    """The model's answer text."""
    reference: str = ""
    """Gold answer (a letter, a number, a text) or a reference answer for a judge; "" when none."""
    category: str = ""
    """Category of the sample (informational)."""
    baseline: str | None = None
    """The answer to compare against, for pairwise judges (``None`` for other graders)."""


@dataclass(frozen=True)
class Grade:
    """The outcome of grading one answer."""

    score: float | None
    """Quality in [0, 1], or ``None`` when a judge's verdict could not be parsed (never guessed)."""
    extracted: str = ""
    """What the grader read from the answer or verdict (a letter, a number, a rating); "" when nothing."""
    note: str = ""
    """Why the score is what it is when that is not obvious (``no letter``, ``unparsable verdict``...)."""

    @property
    def parsed(self) -> bool:
        """False when the grader found nothing to read (no letter / number, or an unparsable verdict)."""
        return self.extracted != ""


class Grader:
    """Base class of graders. Subclasses set ``name`` and implement :meth:`grade` (or :meth:`agrade`).

    Constructor arguments are the grader's knobs; they are stored unchanged (as with routers) so that a grader
    can be rebuilt from ``(name, params)`` and its label recorded in the OutcomeTable's ``grader`` column.
    """

    name: ClassVar[str] = ""
    #: True when grading needs a model call (the runner then passes ``judge=`` to :meth:`agrade`).
    needs_judge: ClassVar[bool] = False
    #: True when grading needs another model's answer to the same prompt (``GradeInput.baseline``).
    needs_baseline: ClassVar[bool] = False

    def grade(self, item: GradeInput) -> Grade:
        """Grade one answer (exact-match graders)."""
        raise NotImplementedError(f"grader {self.name!r} needs a judge: call agrade(item, judge=...)")

    async def agrade(self, item: GradeInput, judge: JudgeCall | None = None) -> Grade:
        """Grade one answer, calling ``judge`` if this grader needs a model's verdict."""
        return self.grade(item)

    def params(self) -> dict[str, Any]:
        """The constructor arguments, read back from the attributes of the same names (as in scikit-learn)."""
        names = [n for n in inspect.signature(type(self).__init__).parameters if n != "self"]
        return {n: getattr(self, n) for n in names if hasattr(self, n)}

    def label(self) -> str:
        """What goes in the ``grader`` column (``mcq_letter``, ``judge_single:gpt-4o``...)."""
        return self.name

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.params().items())
        return f"{type(self).__name__}({args})"


#: Grader name -> grader class. ``get_grader(name, **params)`` builds one.
grader_registry: Registry[type[Grader]] = Registry("grader")


def register_grader(name: str) -> Callable[[type[Grader]], type[Grader]]:
    """Class decorator: register a :class:`Grader` subclass under ``name`` (also sets ``cls.name``)."""

    def decorator(cls: type[Grader]) -> type[Grader]:
        if not (isinstance(cls, type) and issubclass(cls, Grader)):
            raise TypeError(f"@register_grader({name!r}) expects a Grader subclass, got {cls!r}")
        if not cls.name:
            cls.name = name
        grader_registry.add(name, cls)
        return cls

    return decorator


def get_grader(name: str, **params: Any) -> Grader:
    """Build the grader registered as ``name`` with keyword ``params``.

    Raises:
        UnknownComponentError: for an unregistered name (the message lists the registered graders).
        ConfigError: for a parameter the grader does not take.
    """
    cls = grader_registry.get(name)
    try:
        grader = cls(**params)
    except TypeError as exc:
        raise ConfigError(f"grader {name!r}: bad parameter(s) {sorted(params)} ({exc})") from None
    return grader
