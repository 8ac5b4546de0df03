"""An exported RouteLab router as a LiteLLM custom routing strategy: it picks the deployment of every request.

LiteLLM's ``Router`` hands each pick to a custom strategy (``Router.register_plugin(strategy)``; the older
``Router.set_custom_routing_strategy(strategy)`` on LiteLLM releases without it). This adapter answers those picks
with the export's decision for the request's last user message, exactly as ``ExportedRouter.route()`` and the
RouteLab proxy decide, and returns the deployment serving the chosen model.

A deployment serves a model when, in this order: its ``model_info.routelab_model`` names it; its
``litellm_params.model`` is the model's name, with or without a provider prefix (``openai/<model>``); its
``model_name`` is the model's name. Every model of the export must have a deployment in the routed group
(checked on the first request, one error listing what is missing).

Requests for the routed model group (default ``"routelab"``) are routed by the export; a request for any other
group gets that group's first deployment (a custom strategy picks every deployment of the Router).

The request's category (for routers that use one, such as ``category``) is read from, in order, the request's
``metadata["routelab_category"]`` (``router.completion(..., metadata={"routelab_category": "math"})``) and the
``x-routelab-category`` header a LiteLLM proxy passes on; without one the router decides for an unknown category,
as the RouteLab proxy does.

Example::

    import litellm
    from routers.integrations.litellm import use_exported_router

    router = litellm.Router(model_list=[
        {"model_name": "routelab", "litellm_params": {"model": "openai/gpt-4o-2024-05-13", "api_key": "..."}},
        {"model_name": "routelab", "litellm_params": {"model": "together_ai/Meta-Llama-3.1-8B-Instruct"},
         "model_info": {"routelab_model": "Meta-Llama-3_1-8B-Instruct"}},
    ])
    use_exported_router(router, "exports/knn-mmlu")
    router.completion(model="routelab", messages=[{"role": "user", "content": "What is 2 + 2?"}])
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Mapping, Sequence
from typing import Any

from evals.serving.wire import prompt_of
from routers.export import ExportedRouter, ExportError, load_exported

try:
    from litellm.types.router import CustomRoutingStrategyBase
except ImportError as exc:  # an optional extra: say how to get it
    raise ImportError(
        'the LiteLLM adapter needs litellm: pip install -e ".[litellm]" (or pip install litellm)'
    ) from exc

__all__ = [
    "CATEGORY_HEADER",
    "CATEGORY_METADATA_KEY",
    "MODEL_INFO_KEY",
    "RouteLabRoutingStrategy",
    "category_of",
    "export_decision",
    "litellm_model_serves",
    "use_exported_router",
]

#: Metadata key of a LiteLLM request carrying its category.
CATEGORY_METADATA_KEY = "routelab_category"
#: HTTP header carrying the category (the RouteLab proxy reads the same one).
CATEGORY_HEADER = "x-routelab-category"
#: ``model_info`` key naming the export model a deployment serves, where its ``litellm_params.model`` differs.
MODEL_INFO_KEY = "routelab_model"


class RouteLabRoutingStrategy(CustomRoutingStrategyBase):
    """The LiteLLM custom routing strategy of one exported router (see the module docstring).

    Args:
        router: The ``litellm.Router`` whose deployments it picks from.
        exported: The export (a folder path, or an :class:`~routers.export.ExportedRouter`).
        model_group: The ``model_name`` clients ask for to be routed by the export.
    """

    def __init__(
        self, router: Any, exported: ExportedRouter | str | os.PathLike[str], *, model_group: str = "routelab"
    ):
        self.router = router
        self.exported = exported if isinstance(exported, ExportedRouter) else load_exported(exported)
        self.model_group = model_group
        self._lock = threading.Lock()
        self._by_model: dict[str, dict[str, Any]] | None = None
        self._indexed_ids: tuple[Any, ...] | None = None

    # ------------------------------------------------------------------------------------------ decisions
    def choose_model(self, messages: Any, request_kwargs: Mapping[str, Any] | None = None) -> str:
        """The export's model for a chat request (its last user message and category).

        Raises:
            ValueError: for a request without a user message (nothing to route on).
        """
        return export_decision(self.exported, messages, request_kwargs, model_group=self.model_group)

    def deployment_for(
        self, model: str, messages: Any = None, request_kwargs: Mapping[str, Any] | None = None
    ) -> dict[str, Any]:
        """The deployment LiteLLM should call for a request to ``model`` (a model group name)."""
        if model != self.model_group:
            group = [d for d in _deployments(self.router) if d.get("model_name") == model]
            if not group:
                raise ValueError(f"no LiteLLM deployment has model_name {model!r}")
            return group[0]
        return self.deployment_of_model(self.choose_model(messages, request_kwargs))

    def deployment_of_model(self, name: str) -> dict[str, Any]:
        """The deployment serving the export's model ``name`` (its index is rebuilt when the model list changes)."""
        deployments = _deployments(self.router)
        ids = tuple((d.get("model_info") or {}).get("id") for d in deployments)
        with self._lock:
            if self._by_model is None or ids != self._indexed_ids:
                self._by_model = _index(deployments, self.model_group, self.exported.models)
                self._indexed_ids = ids
            return self._by_model[name]

    # ------------------------------------------------------------------------------- LiteLLM's two hooks
    async def async_get_available_deployment(
        self,
        model: str,
        messages: list[dict[str, str]] | None = None,
        input: str | list[object] | None = None,  # LiteLLM's parameter name
        specific_deployment: bool | None = False,
        request_kwargs: dict[str, object] | None = None,
    ) -> dict[str, Any]:
        """LiteLLM's async pick: the deployment of the export's decision (a model from ``router.json``); in a
        worker thread when the export routes slowly (a transformer encoder), so LiteLLM's event loop is not held."""
        if self.exported.routes_slowly:
            return await asyncio.to_thread(self._pick, model, messages, specific_deployment, request_kwargs)
        return self._pick(model, messages, specific_deployment, request_kwargs)

    def get_available_deployment(
        self,
        model: str,
        messages: list[dict[str, str]] | None = None,
        input: str | list[object] | None = None,  # LiteLLM's parameter name
        specific_deployment: bool | None = False,
        request_kwargs: dict[str, object] | None = None,
    ) -> dict[str, Any]:
        """LiteLLM's sync pick (``router.completion``); same decision as the async one."""
        return self._pick(model, messages, specific_deployment, request_kwargs)

    def _pick(self, model: str, messages: Any, specific: bool | None, request_kwargs: Any) -> dict[str, Any]:
        if specific:  # the caller named one deployment by its litellm_params.model: LiteLLM's own rule
            for d in _deployments(self.router):
                if (d.get("litellm_params") or {}).get("model") == model:
                    return d
        return self.deployment_for(model, messages, request_kwargs)


def export_decision(
    exported: ExportedRouter, messages: Any, request_kwargs: Mapping[str, Any] | None, *, model_group: str
) -> str:
    """The export's model for a chat request: its last user message and category (:func:`category_of`).

    The one decision of every LiteLLM integration (the Router's custom strategy and the proxy's routing plugin).

    Raises:
        ValueError: for a request without a user message (nothing to route on).
    """
    prompt = prompt_of(messages)
    if prompt is None:
        raise ValueError(f"RouteLab cannot route a request to {model_group!r} without a user message in 'messages'")
    category = category_of(request_kwargs)
    return exported.route([prompt], categories=None if category is None else [category])[0]


def litellm_model_serves(litellm_model: str, name: str) -> bool:
    """Whether a deployment's ``litellm_params.model`` is the export model ``name``, with or without a provider
    prefix (``openai/<name>``)."""
    return litellm_model == name or litellm_model.split("/", 1)[-1] == name


def category_of(request_kwargs: Mapping[str, Any] | None) -> str | None:
    """The request's category: ``metadata["routelab_category"]``, else the ``x-routelab-category`` header."""
    if not request_kwargs:
        return None
    for bucket in ("metadata", "litellm_metadata"):
        meta = request_kwargs.get(bucket)
        if isinstance(meta, Mapping):
            value = meta.get(CATEGORY_METADATA_KEY)
            if isinstance(value, str) and value:
                return value
            headers = meta.get("headers")
            if isinstance(headers, Mapping):
                found = _header(headers)
                if found:
                    return found
    server_request = request_kwargs.get("proxy_server_request")
    if isinstance(server_request, Mapping) and isinstance(server_request.get("headers"), Mapping):
        return _header(server_request["headers"])
    return None


def _header(headers: Mapping[str, Any]) -> str | None:
    for key, value in headers.items():
        if str(key).lower() == CATEGORY_HEADER and isinstance(value, str) and value:
            return value
    return None


def _deployments(router: Any) -> list[dict[str, Any]]:
    """The Router's live model list (``registry().all()`` on current LiteLLM, ``model_list`` before)."""
    registry = getattr(router, "registry", None)
    if callable(registry):
        view = registry()
        if callable(getattr(view, "all", None)):
            return view.all()
    return router.model_list


def _serves(deployment: Mapping[str, Any], name: str) -> int:
    """How directly a deployment serves the export model ``name``: 3 (model_info), 2, 1 (by name) or 0."""
    if (deployment.get("model_info") or {}).get(MODEL_INFO_KEY) == name:
        return 3
    litellm_model = str((deployment.get("litellm_params") or {}).get("model") or "")
    if litellm_model_serves(litellm_model, name):
        return 2
    return 1 if deployment.get("model_name") == name else 0


def _index(deployments: Sequence[Mapping[str, Any]], group: str, models: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Export model -> its deployment (in the routed group first; else one named after the model)."""
    in_group = [d for d in deployments if d.get("model_name") == group]
    out: dict[str, dict[str, Any]] = {}
    for name in models:
        for pool in (in_group, deployments):
            ranked = sorted(((_serves(d, name), i) for i, d in enumerate(pool)), key=lambda t: (-t[0], t[1]))
            if ranked and ranked[0][0] > 0:
                out[name] = pool[ranked[0][1]]  # the Router's own dict: LiteLLM matches it by model_info.id
                break
    missing = [m for m in models if m not in out]
    if missing:
        raise ExportError(
            f"the LiteLLM Router has no deployment for {len(missing)} model(s) of the export: {', '.join(missing)}; "
            f"add one per model to model_name {group!r} (litellm_params.model '<provider>/<model>', or "
            f"model_info.{MODEL_INFO_KEY} = '<model>')"
        )
    return out


def use_exported_router(
    router: Any, exported: ExportedRouter | str | os.PathLike[str], *, model_group: str = "routelab"
) -> RouteLabRoutingStrategy:
    """Make a ``litellm.Router`` pick deployments with an exported RouteLab router; returns the strategy.

    Checks at once that every model of the export has a deployment (a one-line
    :class:`~routers.export.ExportError` naming the missing ones).
    """
    strategy = RouteLabRoutingStrategy(router, exported, model_group=model_group)
    for name in strategy.exported.models:
        strategy.deployment_of_model(name)
    register = getattr(router, "register_plugin", None)
    if callable(register):
        register(strategy)
    else:  # LiteLLM releases before register_plugin
        router.set_custom_routing_strategy(strategy)
    return strategy
