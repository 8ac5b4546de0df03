"""Declared parameter constraints of routers (after scikit-learn's ``_parameter_constraints``).

Every registered router declares, for each ``__init__`` parameter, what values it takes::

    @register_router("knn")
    class KNNRouter(EmbeddingRouter):
        parameter_constraints = {
            "encoder": encoder_name(),
            "k": integer(low=1),
            "temperature": real(low=0, closed="neither"),
            "use_category": boolean(),
        }

The same declaration is used by :meth:`routers.Router.fit` (a bad value is refused before anything is
fitted), by :func:`routers.registry.validate_params` (configs: ``k = -5`` is a one-line error naming the
router and the parameter), by ``routelab routers list`` (:meth:`Param.text`) and by the app, which builds a
widget per parameter from :meth:`Param.to_dict` (see :func:`routers.registry.param_specs`). A conformance
check (``routers.checks``) verifies that the declared keys are exactly the ``__init__`` parameters.

A constraint is deliberately small: a type, an optional range, optional options, and whether None is allowed.
Booleans are never numbers here (``k = true`` is refused), while an int is a valid float (``C = 1``).
"""

from __future__ import annotations

import math
import numbers
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from evals.exceptions import ConfigError

__all__ = [
    "InvalidParameterError",
    "Param",
    "boolean",
    "encoder_name",
    "integer",
    "json_list",
    "model_name",
    "options",
    "real",
    "seed",
    "text",
    "validate_constraints",
]

Kind = Literal["int", "float", "bool", "str", "list"]
Closed = Literal["both", "left", "right", "neither"]


class InvalidParameterError(ConfigError):
    """A router parameter outside its declared constraint (the message names the router and the parameter)."""


@dataclass(frozen=True)
class Param:
    """The declared constraint of one router parameter.

    Attributes:
        kind: ``"int"``, ``"float"``, ``"bool"``, ``"str"`` or ``"list"`` (a JSON list, e.g. of dicts).
        low, high: Range of a number (None = unbounded on that side).
        closed: Which ends of the range are included: ``"both"``, ``"left"``, ``"right"`` or ``"neither"``.
        choices: Fixed options of a string (None = any string).
        nullable: Whether None is allowed (it then means "choose automatically", see the router's doc).
        role: What a string names, for widgets: ``"model"`` (a model of the table), ``"encoder"``, ``"path"``
            or ``""``.
        accepts: Extra rule for strings whose options are open-ended (encoders: registered names and
            ``hash-bow-<dim>``); returns whether the value is valid.
        suggested: Options to offer when ``choices`` is None (a callable, evaluated when described).
    """

    kind: Kind
    low: float | None = None
    high: float | None = None
    closed: Closed = "both"
    choices: tuple[str, ...] | None = None
    nullable: bool = False
    role: str = ""
    accepts: Callable[[str], bool] | None = field(default=None, compare=False, repr=False)
    suggested: Callable[[], Sequence[str]] | None = field(default=None, compare=False, repr=False)

    # ------------------------------------------------------------------ checking
    def problem(self, value: Any) -> str | None:
        """What is wrong with ``value`` (``"must be an int >= 1, got -5"``), or None when it is valid."""
        if value is None:
            return None if self.nullable else f"must be {self.text()}, got None"
        if not self._type_ok(value):
            return f"must be {self.text()}, got {type(value).__name__} {value!r}"
        if self.kind in ("int", "float") and not self._in_range(float(value)):
            return f"must be {self.text()}, got {value!r}"
        if self.kind == "str":
            if self.choices is not None and value not in self.choices:
                return f"must be {self.text()}, got {value!r}"
            if self.accepts is not None and not self.accepts(value):
                return f"must be {self.text()}, got {value!r}"
        return None

    def _type_ok(self, value: Any) -> bool:
        if self.kind == "bool":
            return isinstance(value, (bool, np.bool_))
        if isinstance(value, (bool, np.bool_)):
            return False  # True is an int in Python, never a number here
        if self.kind == "int":
            return isinstance(value, numbers.Integral)
        if self.kind == "float":
            return isinstance(value, numbers.Real)
        if self.kind == "str":
            return isinstance(value, str)
        return isinstance(value, (list, tuple))

    def _in_range(self, x: float) -> bool:
        if math.isnan(x):
            return False
        lo_ok = self.low is None or (x >= self.low if self.closed in ("both", "left") else x > self.low)
        hi_ok = self.high is None or (x <= self.high if self.closed in ("both", "right") else x < self.high)
        return lo_ok and hi_ok and math.isfinite(x)

    # ------------------------------------------------------------------ describing
    def text(self) -> str:
        """The constraint in words: ``an int >= 1``, ``a float in (0, 1]``, ``one of 'a', 'b' or None``."""
        article = {"int": "an int", "float": "a float", "bool": "a boolean", "str": "a string", "list": "a list"}
        if self.kind == "str" and self.choices is not None:
            base = "one of " + ", ".join(repr(c) for c in self.choices)
        elif self.kind == "str" and self.role == "encoder":
            base = "an encoder name (" + ", ".join(self.options()) + ", hash-bow-<dim>)"
        elif self.kind == "str" and self.role:
            base = f"a {self.role} name" if self.role != "path" else "a file path"
        else:
            base = article[self.kind] + self._range_text()
        return base + (" or None" if self.nullable else "")

    def _range_text(self) -> str:
        if self.low is None and self.high is None:
            return ""
        if self.high is None:
            return f" {'>=' if self.closed in ('both', 'left') else '>'} {_num(self.low)}"
        if self.low is None:
            return f" {'<=' if self.closed in ('both', 'right') else '<'} {_num(self.high)}"
        left = "[" if self.closed in ("both", "left") else "("
        right = "]" if self.closed in ("both", "right") else ")"
        return f" in {left}{_num(self.low)}, {_num(self.high)}{right}"

    def options(self) -> list[str]:
        """The options a widget should offer (fixed choices, or the suggested ones; [] when free-form)."""
        if self.choices is not None:
            return list(self.choices)
        return list(self.suggested()) if self.suggested is not None else []

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able description for widgets: ``kind, low, high, closed, options, nullable, role, text``."""
        return {
            "kind": self.kind,
            "low": self.low,
            "high": self.high,
            "closed": self.closed,
            "options": self.options(),
            "free_text": self.kind == "str" and self.choices is None,
            "nullable": self.nullable,
            "role": self.role,
            "text": self.text(),
        }


def _num(x: float | None) -> str:
    return f"{x:g}" if isinstance(x, float) else str(x)


# ---------------------------------------------------------------------------------------------- builders
def integer(*, low: int | None = None, high: int | None = None, nullable: bool = False) -> Param:
    """An int in ``[low, high]`` (either end optional)."""
    return Param("int", low=low, high=high, nullable=nullable)


def real(
    *, low: float | None = None, high: float | None = None, closed: Closed = "both", nullable: bool = False
) -> Param:
    """A finite float (an int is accepted) in the range ``low..high`` with ``closed`` ends."""
    return Param("float", low=low, high=high, closed=closed, nullable=nullable)


def boolean() -> Param:
    """True or False (not 0/1, not a string)."""
    return Param("bool")


def options(*choices: str, nullable: bool = False) -> Param:
    """One of a fixed set of strings."""
    return Param("str", choices=tuple(choices), nullable=nullable)


def text(*, role: str = "", nullable: bool = False) -> Param:
    """Any string; ``role`` says what it names (``"path"``...) for widgets and ``routers list``."""
    return Param("str", role=role, nullable=nullable)


def model_name(*, nullable: bool = True) -> Param:
    """A model name of the train table (checked against the table in ``fit``; None = chosen on train)."""
    return Param("str", role="model", nullable=nullable)


def seed() -> Param:
    """A random seed: an int >= 0."""
    return Param("int", low=0)


def json_list(*, nullable: bool = True) -> Param:
    """A JSON-able list (e.g. of ``{"name": ..., "params": ...}`` dicts); None = the router's default."""
    return Param("list", nullable=nullable)


_HASH_BOW = re.compile(r"hash-bow(-[1-9][0-9]*)?")


def _encoder_names() -> list[str]:
    from routers.embeddings import encoder_names

    return encoder_names()


def _is_encoder(name: str) -> bool:
    # The runtime's featurisation accepts ``hash-bow`` / ``hash-bow-<dim>`` besides registered encoders.
    return bool(_HASH_BOW.fullmatch(name)) or name in _encoder_names()


def encoder_name() -> Param:
    """A sentence encoder: a registered name (``minilm-static``, ``minilm``...) or ``hash-bow[-<dim>]``."""
    return Param("str", role="encoder", accepts=_is_encoder, suggested=_encoder_names)


# ---------------------------------------------------------------------------------------------- validation
def validate_constraints(owner: str, constraints: Mapping[str, Param], params: Mapping[str, Any]) -> None:
    """Check ``params`` against declared ``constraints``; parameters without a declaration are not checked.

    Args:
        owner: How to name the router in the message, e.g. ``"router 'knn'"``.
        constraints: The router's ``parameter_constraints``.
        params: Parameter values (all or some of them).

    Raises:
        InvalidParameterError: ``"router 'knn': parameter 'k' must be an int >= 1, got -5"`` for the first bad
            value (in declaration order).
    """
    for name, constraint in constraints.items():
        if name in params:
            problem = constraint.problem(params[name])
            if problem is not None:
                raise InvalidParameterError(f"{owner}: parameter {name!r} {problem}")
