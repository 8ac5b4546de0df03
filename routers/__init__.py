"""RouteLab's routers: one contract (:class:`Router`), a registry, and the strategies.

Importing this package registers every strategy module listed in ``_STRATEGY_MODULES``.
"""

from routers.base import Policy, Queries, Router, ScorePolicy, decide
from routers.registry import make_router, name_of, register_router, router_registry

__all__ = [
    "Policy",
    "Queries",
    "Router",
    "ScorePolicy",
    "decide",
    "make_router",
    "name_of",
    "register_router",
    "router_registry",
]

# Registers every strategy (kept last: strategies import the contract above).
import routers.strategies  # noqa: E402,F401
