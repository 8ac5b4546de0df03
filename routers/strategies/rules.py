"""Rules: the hand-written router many teams start with (prompt length, keywords, regexes, category).

A config file (TOML) lists rules; the first that matches a request decides::

    default_model = "gpt-4o"          # optional: requests no rule matches go here (else: segment "default")

    [[rules]]
    name = "short chit-chat"
    max_chars = 200
    model = "gpt-4o-mini"             # pinned: always this model, whatever the operating point

    [[rules]]
    name = "maths"
    regex = "\\\\b(prove|integral|derivative)\\\\b"
    categories = ["math"]
    segment = "hard"                  # a segment: the knob trades cost and quality within it

Conditions (all must hold): ``min_chars``, ``max_chars``, ``keywords`` (any; case-insensitive substring),
``regex`` (case-insensitive search), ``categories`` (the request's category is one of them).
Actions (one per rule): ``model`` pins the model, or ``segment`` names a group of requests.
"""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path
from typing import Any

import numpy as np

from evals.exceptions import ConfigError, DataNotFoundError
from evals.outcomes import OutcomeTable
from routers.base import Policy, Queries, ScorePolicy
from routers.params import json_list, model_name, real, text
from routers.registry import register_router
from routers.runtime import match_rules
from routers.strategies._common import PinnedPolicy, RuntimeRouter, per_category_mean

__all__ = ["RulesRouter", "load_rules"]

_CONDITIONS = {
    "min_chars": (int,),
    "max_chars": (int,),
    "keywords": (list,),
    "regex": (str,),
    "categories": (list,),
}
_KEYS = set(_CONDITIONS) | {"name", "model", "segment"}


def load_rules(
    config: str | None, rules: list[dict[str, Any]] | None, default_model: str | None
) -> tuple[list[dict[str, Any]], str | None]:
    """Read and validate rules from a TOML file or an inline list; returns (rules, default_model).

    Raises:
        ConfigError: on both or a malformed rule (names the rule and the key).
        DataNotFoundError: when the config file does not exist.
    """
    if config is not None and rules is not None:
        raise ConfigError("give the rules either as a config file (config=) or inline (rules=), not both")
    where = "rules="
    if config is not None:
        path = Path(config)
        if not path.is_file():
            raise DataNotFoundError(f"rules config {str(path)!r} does not exist")
        try:
            data = tomllib.loads(path.read_text())
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: not valid TOML ({exc})") from None
        unknown = set(data) - {"rules", "default_model"}
        if unknown:
            raise ConfigError(
                f"{path}: unknown top-level key(s) {sorted(unknown)}; expected 'rules', 'default_model'"
            )
        rules = data.get("rules", [])
        default_model = data.get("default_model", default_model)
        where = str(path)
    out = []
    for i, rule in enumerate(rules or []):
        label = f"{where} rule {i + 1}" + (
            f" ({rule.get('name')!r})" if isinstance(rule, dict) and rule.get("name") else ""
        )
        if not isinstance(rule, dict):
            raise ConfigError(f"{label}: a rule must be a table/dict, got {type(rule).__name__}")
        bad = set(rule) - _KEYS
        if bad:
            raise ConfigError(
                f"{label}: unknown key(s) {sorted(bad)}; valid keys: {', '.join(sorted(_KEYS))}"
            )
        if ("model" in rule) == ("segment" in rule):
            raise ConfigError(f"{label}: needs exactly one action, 'model' (pin) or 'segment'")
        for key, types in _CONDITIONS.items():
            if key in rule and not isinstance(rule[key], types):
                raise ConfigError(f"{label}: {key!r} must be {types[0].__name__}, got {rule[key]!r}")
        if "regex" in rule:
            try:
                re.compile(rule["regex"])
            except re.error as exc:
                raise ConfigError(f"{label}: bad regex {rule['regex']!r} ({exc})") from None
        out.append({k: (list(map(str, v)) if isinstance(v, list) else v) for k, v in rule.items()})
    json.dumps(out)  # the rules travel in an exported router's JSON state
    return out, default_model


@register_router("rules")
class RulesRouter(RuntimeRouter):
    """First matching rule (prompt length, keywords, regex, category) decides; from a TOML file.

    Source: the hand-written routing rules many teams start with (e.g. LiteLLM / gateway routing configs).

    A rule either *pins* a model (that request always goes there: the knob does not move it), or puts the
    request in a named *segment*. For a segment the router estimates, on the train table, each model's mean
    quality over the train prompts the same rules put in that segment (smoothed towards the global mean), and
    the operating point trades cost against that quality as for any scoring router: ``lam = 0`` sends the
    segment to the cheapest model, a large ``lam`` to the model best on that segment. Requests no rule matches
    go to ``default_model`` (pinned) or, when it is None, to the segment ``"default"``.

    Args:
        config: Path to a TOML rules file (read in ``fit``).
        rules: The same rules inline, as a JSON-able list of dicts.
        default_model: Model for requests no rule matches (None: the ``"default"`` segment).
        smoothing: Pseudo-count of the global mean in each segment's quality estimate.
    """

    parameter_constraints = {
        "config": text(role="path", nullable=True),
        "rules": json_list(),
        "default_model": model_name(),
        "smoothing": real(low=0),
    }

    def __init__(
        self,
        *,
        config: str | None = None,
        rules: list[dict[str, Any]] | None = None,
        default_model: str | None = None,
        smoothing: float = 2.0,
    ):
        self.config = config
        self.rules = rules
        self.default_model = default_model
        self.smoothing = smoothing

    def _fit(self, train: OutcomeTable) -> None:
        rules, default_model = load_rules(self.config, self.rules, self.default_model)
        models = list(self.models_)
        for i, r in enumerate(rules):
            if "model" in r and r["model"] not in models:
                raise ConfigError(
                    f"rule {i + 1} pins model {r['model']!r}, which is not in the train table: {models}"
                )
        if default_model is not None and default_model not in models:
            raise ConfigError(f"default_model {default_model!r} is not in the train table: {models}")
        actions = [*rules, {"model": default_model} if default_model is not None else {"segment": "default"}]
        segments = sorted({a["segment"] for a in actions if "segment" in a}) or ["default"]
        segment_of_rule = np.array([segments.index(a["segment"]) if "segment" in a else 0 for a in actions])
        pinned = np.array([models.index(a["model"]) if "model" in a else -1 for a in actions])
        matched = match_rules(train.prompts, [str(c) for c in train.categories], rules)
        seg = np.array([segments[segment_of_rule[j]] if pinned[j] < 0 else "" for j in matched], dtype=object)
        table = per_category_mean(train.quality, seg, segments, float(self.smoothing))[:-1]
        meta = self._base_meta("rules", rules=rules, segments=segments, cost={"kind": "constant"})
        arrays = {
            "segment_of_rule": segment_of_rule,
            "segment_quality": table,
            "pinned_model": pinned,
            "cost_per_model": self.cost_per_model_,
        }
        self.state_ = (meta, arrays)

    def policy(self, table: OutcomeTable, *, use_categories: bool = True) -> Policy:
        """Scoring policy over the segments, with pinned requests fixed."""
        self._check_fitted()
        table = self._align(table)
        queries = Queries.from_table(table, use_categories=use_categories)
        inner = ScorePolicy(
            self.models_, self.predict_quality(queries), self.predict_cost(queries), table.quality, table.cost
        )
        rules = self.state_[0]["rules"]
        pinned = self.state_[1]["pinned_model"][match_rules(list(queries.prompts), queries.categories, rules)]
        return PinnedPolicy(inner, pinned)
