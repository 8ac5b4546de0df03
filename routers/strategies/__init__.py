"""Every routing strategy. Importing this package registers each one in :data:`routers.router_registry`.

One module per family of strategies; add a line below to register a new module (registering is enough to
appear in ``routelab routers list`` and in the conformance check run by the test suite).
"""

# Cascade / provider choice / adaptive (another helper): add their imports below this line.
from routers.strategies import (
    adaptive,  # noqa: F401  per-category success with feedback: backs off, recovers
    baselines,  # noqa: F401  single model, random mix, oracle
    cascade,  # noqa: F401  cheapest first, escalate on low confidence (FrugalGPT)
    cascade_stacked,  # noqa: F401  the cascade with a prompt router's predictions stacked in
    category,  # noqa: F401  per-category mean quality
    classifier,  # noqa: F401  per-model logistic regression on embeddings
    cost_aware,  # noqa: F401  quality + output-length prediction (CARROT)
    ensemble,  # noqa: F401  weighted mean of several routers
    irt_blend,  # noqa: F401  shrunk LR + item-response factors + category prior (blend)
    knn,  # noqa: F401  k nearest neighbours over embeddings
    mf,  # noqa: F401  matrix factorisation (RouteLLM MF, N models)
    provider,  # noqa: F401  cheapest provider within a latency bound, with failover
    rules,  # noqa: F401  rules from a config file
    stacked,  # noqa: F401  calibrated stack of an embedding router and the category prior
)
