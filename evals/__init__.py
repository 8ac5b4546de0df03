"""RouteLab's evaluation side: outcome tables, data sources, collection, grading, replay, metrics, tracking.

Public names are re-exported here; modules hold one idea each (``outcomes``, ``paths``, ``registry``...).
"""

from evals.exceptions import (
    ConfigError,
    DataNotFoundError,
    GateFailed,
    NotFittedError,
    ProviderError,
    ProviderTimeout,
    SchemaError,
    UnknownComponentError,
    WorkbenchError,
)
from evals.outcomes import COLUMNS, DatasetCard, OutcomeTable, Split

__all__ = [
    "COLUMNS",
    "ConfigError",
    "DataNotFoundError",
    "DatasetCard",
    "GateFailed",
    "NotFittedError",
    "OutcomeTable",
    "ProviderError",
    "ProviderTimeout",
    "SchemaError",
    "Split",
    "UnknownComponentError",
    "WorkbenchError",
]
