"""The production loop's offline core: decision-log records, reading logs, propensities, off-policy estimates.

Part of the evals core (it never imports ``routers``, the workbench, the CLI or the app): the proxy writes
:class:`~evals.production.records.DecisionRecord` lines, and ``routelab logs ...`` and the app read them back with
:func:`~evals.production.log_reader.read_log` and estimate other policies with :mod:`evals.production.offpolicy`.
"""

from evals.production.log_reader import LogReadResult, read_log, segment_name
from evals.production.offpolicy import LoggedDecisions, OffPolicyEstimate, estimate, estimate_policy
from evals.production.propensity import explore, greedy_choice, propensity_matrix, propensity_of
from evals.production.records import SCHEMA_VERSION, Candidate, DecisionRecord, RecordError, cap_text, prompt_hash

__all__ = [
    "Candidate",
    "DecisionRecord",
    "LogReadResult",
    "LoggedDecisions",
    "OffPolicyEstimate",
    "RecordError",
    "SCHEMA_VERSION",
    "cap_text",
    "estimate",
    "estimate_policy",
    "explore",
    "greedy_choice",
    "prompt_hash",
    "propensity_matrix",
    "propensity_of",
    "read_log",
    "segment_name",
]
