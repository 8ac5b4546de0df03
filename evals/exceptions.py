"""Every error RouteLab raises on purpose, in one hierarchy.

Catch at the level you need::

    WorkbenchError                    base of everything below
    ├── SchemaError (ValueError)      bad data: names the file, row and column
    ├── DataNotFoundError (FileNotFoundError)
    │                                 a data folder, source or file that does not exist
    ├── ConfigError (ValueError)      a broken config file or bad parameter
    ├── UnknownComponentError (KeyError)
    │                                 a router / grader / source name not registered; lists the valid names
    ├── NotFittedError (ValueError, AttributeError)
    │                                 a router used before ``fit``
    ├── GateFailed                    an evaluation gate did not pass (``routelab eval`` exits non-zero)
    └── ProviderError                 a model provider failed after retries
        └── ProviderTimeout           ... because it did not answer in time

The CLI prints the message of any ``WorkbenchError`` without a traceback, so messages must say what
is wrong, where, and what would be valid.
"""

from __future__ import annotations

__all__ = [
    "ConfigError",
    "DataNotFoundError",
    "GateFailed",
    "NotFittedError",
    "ProviderError",
    "ProviderTimeout",
    "SchemaError",
    "UnknownComponentError",
    "WorkbenchError",
]


class WorkbenchError(Exception):
    """Base class of every deliberate RouteLab error."""


class SchemaError(WorkbenchError, ValueError):
    """Data that does not match the expected schema (names file, row and column)."""


class DataNotFoundError(WorkbenchError, FileNotFoundError):
    """A data folder, source or file that does not exist."""


class ConfigError(WorkbenchError, ValueError):
    """A configuration file or parameter that cannot be used."""


class UnknownComponentError(WorkbenchError, KeyError):
    """A component name that is not registered; the message lists the registered names."""

    def __str__(self) -> str:  # KeyError would otherwise quote the message
        return str(self.args[0]) if self.args else ""


class NotFittedError(WorkbenchError, ValueError, AttributeError):
    """A router (or other estimator) used before ``fit``."""


class GateFailed(WorkbenchError):
    """An evaluation gate was not met."""


class ProviderError(WorkbenchError):
    """A model provider returned an error that retries did not cure."""


class ProviderTimeout(ProviderError):
    """A model provider did not answer in time."""
