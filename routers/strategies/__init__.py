"""Every routing strategy. Importing this package registers each one in :data:`routers.router_registry`.

One module per family of strategies; add a line below to register a new module (registering is enough to
appear in ``routelab routers list`` and in the conformance check run by the test suite).
"""

from routers.strategies import baselines  # noqa: F401  single model, random mix, oracle
from routers.strategies import rules  # noqa: F401  rules from a config file
from routers.strategies import category  # noqa: F401  per-category mean quality
from routers.strategies import classifier  # noqa: F401  per-model logistic regression on embeddings
from routers.strategies import knn  # noqa: F401  k nearest neighbours over embeddings
from routers.strategies import mf  # noqa: F401  matrix factorisation (RouteLLM MF, N models)
from routers.strategies import cost_aware  # noqa: F401  quality + output-length prediction (CARROT)
from routers.strategies import ensemble  # noqa: F401  weighted mean of several routers
# Cascade / provider choice / adaptive (another helper): add their imports below this line.
from routers.strategies import cascade  # noqa: F401  cheapest first, escalate on low confidence (FrugalGPT)
from routers.strategies import provider  # noqa: F401  cheapest provider within a latency bound, with failover
from routers.strategies import adaptive  # noqa: F401  per-category success with feedback: backs off, recovers
from routers.strategies import irt_blend  # noqa: F401  shrunk LR + item-response factors + category prior (blend)
