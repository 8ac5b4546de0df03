"""Evaluation configs: the TOML layout of ``routelab eval``, parsed and checked field by field.

An :class:`ExperimentConfig` is read from a TOML file (see ``examples/mmlu_pro.toml``)::

    name = "mmlu-pro-routing"                  # optional: the MLflow parent run name

    [dataset]
    source = "mmlu-pro"                        # a registered source, or a path to a long-format outcome file
    test_source = "held-out.csv"               # optional: test from here, train/validation from source
    models = ["gpt-4o-2024-05-13", "..."]      # optional subset (and column order)
    max_samples = 4000                         # optional seeded subsample, for speed

    [split]                                    # by sample; routers are fitted on train. An outcome file
                                               # with a `split` column (train/validation/test) is split by it
    fractions = [0.6, 0.2, 0.2]                # train, validation (calibration), test (reported)
    seed = 0
    stratify = true                            # keep the category mix in every part

    [evaluation]
    n_points = 200                             # operating points per frontier
    margin = 0.005                             # non-inferiority margin (0.5 points)
    n_resamples = 1000                         # paired bootstrap resamples
    seed = 0

    [target]                                   # the operating point, chosen on validation
    kind = "parity"                            # quality_floor | parity | quality_ratio | budget | strong_share
    value = 0.005
    # or several, from one fit per router: [[targets]] tables (the first is the one the gates judge)
    # [[targets]]
    # kind = "quality_ratio"                   # at least 99% of the best single model's quality ...
    # value = 0.99
    # risk_control = "bootstrap"               # ... with 90% confidence (or "ltt": Learn-then-Test)
    # confidence = 0.9

    [gates]                                    # checked on the test split at the calibrated point
    router = "knn"                             # which router the gates judge (default: the first)
    max_quality_drop = 0.01                    # vs the best single model
    min_savings = 0.30                         # share of the best single model's cost saved

    [router_defaults]                          # applied to every router taking the parameter, unless set
    encoder = "minilm-static"
    text = "auto"                              # the routed text (routers.text_selection); default "full"

    [[routers]]                                # specs for routers.make_router
    name = "knn"
    params = { k = 20 }

Every field is checked for its type and range when the config is read, so a bad value is one line naming the
file, the section and the field (a :class:`~evals.exceptions.ConfigError`, exit status 2 from the CLI), never a
traceback halfway through a run and never exit status 1, which means "a gate failed". Router parameters are
checked against each router's declared constraints.
"""

from __future__ import annotations

import math
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from evals import stats
from evals.exceptions import ConfigError, WorkbenchError
from evals.workbench.calibration import Target
from evals.workbench.gates import GATE_CHECKS
from routers.registry import param_specs, validate_params

__all__ = ["MIN_RESAMPLES", "ExperimentConfig", "config_from_dict", "load_config"]

_SECTIONS = {"name", "dataset", "split", "evaluation", "target", "targets", "gates", "routers", "router_defaults"}

#: Keys of ``[router_defaults]``: each is given to every router that declares the parameter and does not set it.
# (``[routers]`` cannot hold them: TOML forbids a table and an array of tables ``[[routers]]`` with one name.)
ROUTER_DEFAULTS = ("encoder", "text")

#: Fewest bootstrap resamples accepted: below this a 95% interval's 2.5% and 97.5% quantiles are noise.
MIN_RESAMPLES = 10


@dataclass
class ExperimentConfig:
    """A parsed evaluation config (see the module docstring for the TOML layout)."""

    source: str
    """Source name, or path to a long-format outcome file."""
    routers: list[dict[str, Any]]
    """Router specs ``{"name", "params", "label"?}``."""
    name: str = ""
    """Evaluation name (the MLflow parent run name)."""
    models: list[str] | None = None
    """Model subset (None = every model of the table)."""
    categories: list[str] | None = None
    """Category subset (None = all)."""
    max_samples: int | None = None
    """Seeded subsample of samples before splitting (None = all)."""
    fractions: tuple[float, float, float] = (0.6, 0.2, 0.2)
    """Train, validation, test shares."""
    split_seed: int = 0
    """Seed of the split (and subsample)."""
    stratify: bool = True
    """Split each category separately."""
    n_points: int = 200
    """Operating points per frontier."""
    margin: float = 0.005
    """Non-inferiority margin for parity and the paired test."""
    n_resamples: int = stats.DEFAULT_RESAMPLES
    """Bootstrap resamples."""
    seed: int = 0
    """Bootstrap seed."""
    target: Target = None  # type: ignore[assignment]  # filled in by __post_init__
    """Calibration target (the first of :attr:`targets`; the one the gates judge). Default: the first of
    ``targets``, else parity with margin 0.005."""
    targets: list[Target] = field(default_factory=list)
    """Every calibration target, each chosen on validation and measured on test from the same fit (default:
    ``[target]``)."""
    test_source: str | None = None
    """Source name or outcome file of the test split (train and validation then come from ``source``)."""
    router_defaults: dict[str, Any] = field(default_factory=dict)
    """``[router_defaults]`` as given (already applied to :attr:`routers`)."""
    gates: dict[str, Any] = field(default_factory=dict)
    """Gates (see :data:`evals.workbench.gates.GATES`) plus an optional ``router`` naming the judged router."""
    path: str = ""
    """The config file it was read from."""

    def __post_init__(self) -> None:
        # One source of truth for "the first target", whichever of the two fields was given.
        if self.target is None:
            self.target = self.targets[0] if self.targets else Target("parity", 0.005)
        self.targets = [self.target, *(t for t in self.targets if t != self.target)]

    def labels(self) -> list[str]:
        """A unique label per router spec (its ``label``, else its name, suffixed when repeated)."""
        out: list[str] = []
        for spec in self.routers:
            base = str(spec.get("label") or spec["name"])
            label, k = base, 2
            while label in out:
                label, k = f"{base}#{k}", k + 1
            out.append(label)
        return out


def _is_number(v: Any) -> bool:
    # bool is an int subclass in Python, but `margin = true` is a mistake, not the number 1.
    return isinstance(v, (int, float)) and not isinstance(v, bool)


class _Section:
    """One config section's values, read with type and range checks that fail as one line naming the field."""

    def __init__(self, raw: dict[str, Any], key: str | None, allowed: set[str], where: str) -> None:
        self.where, self.key = where, key
        sec = raw if key is None else (raw.get(key, {}) or {})
        if not isinstance(sec, dict):
            raise ConfigError(f"{where}: [{key}] must be a table, got {sec!r}")
        unknown = sorted(set(sec) - allowed)
        if unknown and key is not None:
            raise ConfigError(f"{where}: [{key}] has unknown key(s) {unknown}; valid: {', '.join(sorted(allowed))}")
        self.values = sec

    def name(self, key: str) -> str:
        """How the field is named in messages: ``[split] seed``, or ``name`` at top level."""
        return key if self.key is None else f"[{self.key}] {key}"

    def fail(self, key: str, expected: str) -> ConfigError:
        """The one-line error for a field whose value is not ``expected``."""
        return ConfigError(f"{self.where}: {self.name(key)} must be {expected}, got {self.values[key]!r}")

    def integer(self, key: str, default: int | None, *, minimum: int, why: str = "") -> int | None:
        """An integer >= ``minimum`` (``default`` when absent)."""
        if key not in self.values:
            return default
        v = self.values[key]
        if not isinstance(v, int) or isinstance(v, bool) or v < minimum:
            raise self.fail(key, f"an integer >= {minimum}{why}")
        return int(v)

    def number(self, key: str, default: float, *, low: float, high: float, why: str = "") -> float:
        """A finite number in [``low``, ``high``] (``default`` when absent)."""
        if key not in self.values:
            return default
        v = self.values[key]
        if not _is_number(v) or not math.isfinite(v) or not low <= v <= high:
            raise self.fail(key, f"a number in [{low:g}, {high:g}]{why}")
        return float(v)

    def boolean(self, key: str, default: bool) -> bool:
        """``true`` or ``false`` (``default`` when absent)."""
        if key not in self.values:
            return default
        if not isinstance(self.values[key], bool):
            raise self.fail(key, "true or false")
        return bool(self.values[key])

    def text(self, key: str, default: str | None) -> str | None:
        """A non-empty string (``default`` when absent)."""
        if key not in self.values:
            return default
        v = self.values[key]
        if not isinstance(v, str) or not v.strip():
            raise self.fail(key, "a non-empty string")
        return v

    def texts(self, key: str) -> list[str] | None:
        """A non-empty list of strings (None when absent)."""
        if key not in self.values:
            return None
        v = self.values[key]
        if not isinstance(v, list) or not v or not all(isinstance(x, str) and x for x in v):
            raise self.fail(key, 'a non-empty list of names, e.g. ["a", "b"]')
        return list(v)


def _fractions(sec: _Section) -> tuple[float, float, float]:
    default = (0.6, 0.2, 0.2)
    if "fractions" not in sec.values:
        return default
    v = sec.values["fractions"]
    ok = (
        isinstance(v, list)
        and len(v) == 3
        and all(_is_number(x) and math.isfinite(x) and 0 <= x <= 1 for x in v)
        and v[0] > 0
        and v[2] > 0
        and abs(sum(v) - 1.0) <= 1e-6
    )
    if not ok:
        raise sec.fail(
            "fractions", "3 numbers in [0, 1] summing to 1 (train, validation, test; train and test > 0)"
        )
    return (float(v[0]), float(v[1]), float(v[2]))


def _router_defaults(raw: dict[str, Any], where: str) -> dict[str, Any]:
    sec = _Section(raw, "router_defaults", set(ROUTER_DEFAULTS), where)
    return {key: sec.text(key, None) for key in ROUTER_DEFAULTS if key in sec.values}


def _with_defaults(name: str, params: dict[str, Any], defaults: dict[str, Any]) -> dict[str, Any]:
    """``params`` plus each default the router declares and ``params`` does not set."""
    if not defaults:
        return params
    try:
        declared = {p["name"] for p in param_specs(name)}
    except (KeyError, WorkbenchError):
        return params  # an unknown router: validate_params names it
    return {**{k: v for k, v in defaults.items() if k in declared and k not in params}, **params}


def _router_specs(raw: dict[str, Any], where: str, defaults: dict[str, Any]) -> list[dict[str, Any]]:
    routers = raw.get("routers")
    if isinstance(routers, dict):
        raise ConfigError(
            f"{where}: [routers] must be [[routers]] entries; defaults for every router go in [router_defaults]"
        )
    if not isinstance(routers, list) or not routers:
        raise ConfigError(f"{where}: needs at least one [[routers]] entry with a 'name'")
    specs = []
    for i, spec in enumerate(routers):
        entry = f"[[routers]] entry {i + 1}"
        if not isinstance(spec, dict) or "name" not in spec:
            raise ConfigError(f"{where}: {entry} needs a 'name'")
        extra = sorted(set(spec) - {"name", "params", "label"})
        if extra:
            raise ConfigError(f"{where}: {entry} has unknown key(s) {extra}; valid: name, params, label")
        name, params = spec["name"], spec.get("params", {})
        if not isinstance(name, str) or not name:
            raise ConfigError(f"{where}: {entry} name must be a router name (a string), got {name!r}")
        entry = f"{entry} ({name})"
        if not isinstance(params, dict):
            raise ConfigError(
                f"{where}: {entry} params must be a table like params = {{ k = 5 }}, got {params!r}"
            )
        if "label" in spec and (not isinstance(spec["label"], str) or not spec["label"]):
            raise ConfigError(f"{where}: {entry} label must be a non-empty string, got {spec['label']!r}")
        params = _with_defaults(name, dict(params), defaults)
        out = {"name": name, "params": params, **({"label": spec["label"]} if "label" in spec else {})}
        _check_router(out, f"{where}: {entry}")
        specs.append(out)
    return specs


def _check_router(spec: dict[str, Any], where: str) -> None:
    """Refuse an unknown router, an unknown parameter, or a value outside the router's declared constraints."""
    try:
        validate_params(spec["name"], spec["params"])
    except WorkbenchError as exc:
        raise type(exc)(f"{where}: {_message(exc)}") from None


def _message(exc: Exception) -> str:
    # KeyError subclasses (UnknownComponentError) repr their message in str(); show the text itself.
    return str(exc.args[0]) if exc.args else str(exc)


def _relative(source: str, base_dir: Path | None) -> str:
    """A source path relative to the config's folder when it exists there (a source name stays as it is)."""
    if base_dir is not None and not Path(source).is_absolute() and (base_dir / source).exists():
        return str(base_dir / source)
    return source


def _targets(raw: dict[str, Any], where: str) -> list[Target]:
    """``[target]`` (one) or ``[[targets]]`` (several, evaluated from one fit); default: parity 0.005."""
    if "target" in raw and "targets" in raw:
        raise ConfigError(f"{where}: give either [target] or [[targets]], not both")
    try:
        if "targets" not in raw:
            return [Target.from_config(raw.get("target"))]
        many = raw["targets"]
        if not isinstance(many, list) or not many:
            raise ConfigError(f"[[targets]] must be one or more tables (kind = ..., value = ...), got {many!r}")
        targets = [Target.from_config(t, where=f"[[targets]] entry {i + 1}") for i, t in enumerate(many)]
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    seen = [t.describe() for t in targets]
    repeated = sorted({d for d in seen if seen.count(d) > 1})
    if repeated:
        raise ConfigError(f"{where}: [[targets]] repeats {repeated}; give each target once")
    return targets


def load_config(path: str | Path) -> ExperimentConfig:
    """Read and validate an evaluation config (TOML).

    Raises:
        ConfigError: naming the file and the bad section/key.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {str(path)!r} does not exist")
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: not valid TOML ({exc})") from None
    return config_from_dict(raw, where=str(path), base_dir=path.parent)


def config_from_dict(
    raw: dict[str, Any], *, where: str = "config", base_dir: Path | None = None
) -> ExperimentConfig:
    """Build an :class:`ExperimentConfig` from a parsed dict (the TOML layout), checking every field.

    Raises:
        ConfigError: one line naming ``where``, the section and the field, and what it must be.
        UnknownComponentError: for an unregistered router name.
    """
    unknown = sorted(set(raw) - _SECTIONS)
    if unknown:
        raise ConfigError(f"{where}: unknown top-level key(s) {unknown}; valid: {', '.join(sorted(_SECTIONS))}")
    top = _Section(raw, None, _SECTIONS, where)
    ds = _Section(raw, "dataset", {"source", "test_source", "models", "categories", "max_samples"}, where)
    if "source" not in ds.values:
        raise ConfigError(f"{where}: [dataset] needs 'source' (a source name or a path to an outcome file)")
    source = _relative(str(ds.text("source", None)), base_dir)
    test_source = ds.text("test_source", None)
    if test_source is not None:
        test_source = _relative(test_source, base_dir)
    sp = _Section(raw, "split", {"fractions", "seed", "stratify"}, where)
    ev = _Section(raw, "evaluation", {"n_points", "margin", "n_resamples", "seed"}, where)
    gates = _Section(raw, "gates", set(GATE_CHECKS) | {"router"}, where)
    defaults = _router_defaults(raw, where)
    specs = _router_specs(raw, where, defaults)
    targets = _targets(raw, where)
    checked_gates: dict[str, Any] = {}
    for key in gates.values:
        if key == "router":
            checked_gates[key] = gates.text(key, None)
        else:
            checked_gates[key] = GATE_CHECKS[key].read_limit(gates)
    cfg = ExperimentConfig(
        source=source,
        routers=specs,
        name=top.text("name", "") or "",
        models=ds.texts("models"),
        categories=ds.texts("categories"),
        max_samples=ds.integer("max_samples", None, minimum=1),
        fractions=_fractions(sp),
        split_seed=int(sp.integer("seed", 0, minimum=0) or 0),
        stratify=sp.boolean("stratify", True),
        n_points=int(ev.integer("n_points", 200, minimum=2) or 200),
        margin=ev.number("margin", 0.005, low=0.0, high=1.0, why=" (quality points, 0.005 = 0.5 points)"),
        n_resamples=int(
            ev.integer(
                "n_resamples",
                stats.DEFAULT_RESAMPLES,
                minimum=MIN_RESAMPLES,
                why=" (fewer resamples give no usable 95% interval)",
            )
            or stats.DEFAULT_RESAMPLES
        ),
        seed=int(ev.integer("seed", 0, minimum=0) or 0),
        target=targets[0],
        targets=targets,
        test_source=test_source,
        router_defaults=defaults,
        gates=checked_gates,
        path=where,
    )
    if "router" in checked_gates and checked_gates["router"] not in cfg.labels():
        raise ConfigError(
            f"{where}: [gates] router {checked_gates['router']!r} is not one of the routers: "
            f"{', '.join(cfg.labels())}"
        )
    return cfg
