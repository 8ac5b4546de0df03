"""The gates of an evaluation (CI fails the build on them), as a table from name to check.

Each gate reads its limit from the config's ``[gates]`` table (type- and range-checked when the config is
read) and checks one router of an :class:`~evals.workbench.results.EvaluationResult`, all on the test split
at the operating point chosen on validation unless it says otherwise. A new gate is one new row of
:data:`GATE_CHECKS`.

Two different criteria, often confused (the report and ``routelab eval`` explain both next to the gates):

* the gates ``max_quality_drop`` / ``min_savings`` compare *point estimates* with limits;
* **non-inferior** is a *statistical* test: the lower end of the 95% paired interval of the quality difference
  (router minus best single model) is above ``-margin``. A router can pass a generous quality-drop gate and
  still not be shown non-inferior (its interval is too wide, or the margin is tighter than the gate); the
  ``require_non_inferior`` gate makes that test a gate.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from evals.exceptions import ConfigError, GateFailed
from evals.report import NON_INFERIOR_EXPLAINED  # one wording, shared with the report and the CLI

if TYPE_CHECKING:  # the results module imports the config, which imports this table: types only here
    from evals.workbench.results import EvaluationResult, RouterResult

__all__ = ["GATES", "GATE_CHECKS", "NON_INFERIOR_EXPLAINED", "Gate", "check_gates"]

_EPS = 1e-12


@dataclass(frozen=True)
class Gate:
    """One gate: what it checks, how its limit is read from ``[gates]``, and the check itself."""

    description: str
    """What it checks (for docs, ``--help`` and error messages)."""
    read_limit: Callable[[Any], Any]
    """Reads and checks the limit from the config's ``[gates]`` section (raises ConfigError naming the field)."""
    check: Callable[[EvaluationResult, RouterResult, Any], tuple[bool, str]]
    """``(result, router, limit) -> (passed, one-line measurement vs limit)``."""


def _fraction(name: str, low: float = -1.0) -> Callable[[Any], float]:
    def read(gates: Any) -> float:
        return gates.number(name, 0.0, low=low, high=1.0, why=" (a fraction: 0.5 = 50%)")

    return read


def _pct(x: float | None) -> str:
    return "n/a" if x is None or not math.isfinite(x) else f"{x:.1%}"


def _check_quality_drop(result: EvaluationResult, r: RouterResult, limit: float) -> tuple[bool, str]:
    drop = result.best_single["quality"] - r.at_calibrated["quality"].value
    msg = f"quality drop vs {result.best_single['name']} is {drop:.4f} (limit {limit:.4f})"
    return drop <= limit + _EPS, msg


def _check_savings(result: EvaluationResult, r: RouterResult, limit: float) -> tuple[bool, str]:
    s = r.at_calibrated["savings"].value
    ok = s is not None and s >= limit - _EPS
    return ok, f"savings at the point chosen on validation are {_pct(s)} (minimum {limit:.1%})"


def _check_savings_at_parity(result: EvaluationResult, r: RouterResult, limit: float) -> tuple[bool, str]:
    s = None if r.parity is None else r.parity.savings
    ok = s is not None and s >= limit - _EPS
    shown = "never reached" if s is None else _pct(s)
    return ok, f"savings at parity read off the test frontier are {shown} (minimum {limit:.1%})"


def _check_aiq(result: EvaluationResult, r: RouterResult, limit: float) -> tuple[bool, str]:
    return r.aiq >= limit - _EPS, f"AIQ is {r.aiq:.4f} (minimum {limit:.4f})"


def _check_non_inferior(result: EvaluationResult, r: RouterResult, required: bool) -> tuple[bool, str]:
    ni = r.non_inferiority
    low = "n/a" if ni.low is None else f"{ni.low:+.4f}"
    msg = f"quality difference CI lower bound is {low} (must be above {-ni.margin:+.4f}; p = {ni.p_value:.3g})"
    return ni.non_inferior or not required, msg


def _read_bool(name: str) -> Callable[[Any], bool]:
    def read(gates: Any) -> bool:
        return gates.boolean(name, False)

    return read


#: Gate name -> its definition (all on the test split, at the calibrated operating point unless noted).
GATE_CHECKS: dict[str, Gate] = {
    "max_quality_drop": Gate(
        "best single model's quality minus the router's is at most this",
        _fraction("max_quality_drop"),
        _check_quality_drop,
    ),
    "min_savings": Gate(
        "share of the best single model's cost saved is at least this", _fraction("min_savings"), _check_savings
    ),
    "min_savings_at_parity": Gate(
        "savings at parity (cheapest test point within the margin) is at least this",
        _fraction("min_savings_at_parity"),
        _check_savings_at_parity,
    ),
    "min_aiq": Gate(
        "AIQ of the router's frontier is at least this", _fraction("min_aiq", low=0.0), _check_aiq
    ),
    "require_non_inferior": Gate(
        "the paired non-inferiority test passes (CI lower bound of the quality difference above -margin)",
        _read_bool("require_non_inferior"),
        _check_non_inferior,
    ),
}

#: Gate name -> what it checks.
GATES: dict[str, str] = {name: gate.description for name, gate in GATE_CHECKS.items()}


def check_gates(result: EvaluationResult) -> list[str]:
    """Check the config's gates; returns the lines describing passed gates.

    Raises:
        GateFailed: naming every failed gate with the measured value and the threshold.
    """
    gates = dict(result.config.gates)
    label = gates.pop("router", None) or result.routers[0].label
    if not gates:
        return []
    r = result.router(label)
    checks: list[tuple[str, bool, str]] = []
    for name, limit in gates.items():
        gate = GATE_CHECKS.get(name)
        if gate is None:  # rejected when the config is read; a hand-built config can still get here
            raise ConfigError(f"unknown gate {name!r}; valid: {', '.join(GATE_CHECKS)}")
        ok, msg = gate.check(result, r, limit)
        checks.append((name, ok, msg))
    failed = [f"{name}: {msg}" for name, ok, msg in checks if not ok]
    if failed:
        raise GateFailed(f"router {label!r} on {result.dataset} (n_test={result.n_test}): " + "; ".join(failed))
    return [f"{name}: {msg} - passed" for name, _, msg in checks]
