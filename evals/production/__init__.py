"""The production loop's offline core: decision-log records, reading logs, propensities, off-policy estimates.

Part of the evals core (it never imports ``routers``, the workbench, the CLI or the app): the proxy writes
:class:`~evals.production.records.DecisionRecord` lines (and shadow pairs and grades), and ``routelab logs ...``
and the app read them back with :func:`~evals.production.log_reader.read_log`, grade shadow pairs
(:mod:`evals.production.grading`) and estimate other policies with :mod:`evals.production.offpolicy`.
"""

from evals.production.log_reader import LogReadResult, read_log, segment_name, write_segment
from evals.production.offpolicy import LoggedDecisions, OffPolicyEstimate, estimate, estimate_policy
from evals.production.propensity import explore, greedy_choice, propensity_matrix, propensity_of
from evals.production.records import (
    SCHEMA_VERSION,
    Candidate,
    DecisionRecord,
    GradeRecord,
    RecordError,
    ShadowPair,
    cap_text,
    prompt_hash,
    record_from_json,
    verdict_of,
)

__all__ = [
    "Candidate",
    "DecisionRecord",
    "GradeRecord",
    "LogReadResult",
    "LoggedDecisions",
    "OffPolicyEstimate",
    "RecordError",
    "SCHEMA_VERSION",
    "ShadowPair",
    "cap_text",
    "estimate",
    "estimate_policy",
    "explore",
    "greedy_choice",
    "prompt_hash",
    "propensity_matrix",
    "propensity_of",
    "read_log",
    "record_from_json",
    "segment_name",
    "verdict_of",
    "write_segment",
]
