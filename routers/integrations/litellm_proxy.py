"""An exported RouteLab router inside the LiteLLM proxy (``litellm --config config.yaml``): a LiteLLM routing plugin.

The LiteLLM proxy loads routing plugins from its config by dotted path (``router_settings.plugins``, LiteLLM's
documented extension point for routing on the proxy, from v1.94; tested with 1.106.12 and 1.108.7). Each plugin
receives the request's candidate deployments (their ``litellm_params.model``) and narrows them; LiteLLM then calls a
deployment that is left. This plugin leaves only the deployment(s) serving the export's decision for the request's
last user message (several deployments of one model all stay, and LiteLLM balances between them): the decision of
:func:`routers.integrations.litellm.export_decision`, shared with the ``litellm.Router`` adapter, which is
``ExportedRouter.route()``'s and the RouteLab proxy's.

config.yaml, with the export folder in ``ROUTELAB_EXPORT`` (and the routed group in ``ROUTELAB_MODEL_GROUP``,
default ``routelab``)::

    model_list:
      - model_name: routelab
        litellm_params: {model: openai/gpt-4o-2024-05-13, api_key: os.environ/OPENAI_API_KEY}
      - model_name: routelab
        litellm_params: {model: together_ai/Llama-3.1-8B-Instruct, api_key: os.environ/TOGETHER_API_KEY}
    router_settings:
      plugins: ["routers.integrations.litellm_proxy.routelab_plugin"]

A deployment serves an export model when its ``litellm_params.model`` is the model's name, with or without a
provider prefix; where LiteLLM's name differs, build the plugin yourself in a module next to config.yaml and name
it there (``plugins: ["my_routing.plugin"]``)::

    from routers.integrations.litellm_proxy import RouteLabRoutingPlugin

    plugin = RouteLabRoutingPlugin(
        "exports/knn", models={"Meta-Llama-3_1-8B-Instruct": "together_ai/Meta-Llama-3.1-8B-Instruct"}
    )

Requests for other model groups pass through untouched. The category (for routers that use one) comes from the
``x-routelab-category`` header, as with the RouteLab proxy, or the request's ``metadata.routelab_category``. The
decision is written to the request's routing signals (``signals["routelab"]``) for LiteLLM's logging.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Mapping
from typing import Any

from routers.export import ExportedRouter, ExportError, load_exported
from routers.integrations.litellm import category_of, export_decision, litellm_model_serves

try:
    from litellm.types.router import RoutingContext
except ImportError as exc:  # an optional extra: say how to get it
    raise ImportError(
        'the LiteLLM proxy plugin needs litellm with routing plugins (1.94 or later): pip install -e ".[litellm]"'
    ) from exc

__all__ = ["EXPORT_ENV", "MODEL_GROUP_ENV", "SIGNAL_KEY", "RouteLabRoutingPlugin", "plugin_from_env"]

#: Environment variable naming the export folder of the default plugin (``routelab_plugin``).
EXPORT_ENV = "ROUTELAB_EXPORT"
#: Environment variable naming the model group the default plugin routes (default ``routelab``).
MODEL_GROUP_ENV = "ROUTELAB_MODEL_GROUP"
#: Key of the decision in the routing context's ``signals``.
SIGNAL_KEY = "routelab"


class RouteLabRoutingPlugin:
    """A LiteLLM routing plugin (``async run(context)``) deciding with one exported router.

    Args:
        exported: The export (a folder path, or an :class:`~routers.export.ExportedRouter`).
        model_group: The ``model_name`` clients ask for to be routed by the export.
        models: Export model -> the ``litellm_params.model`` of its deployment, for models whose LiteLLM name is
            not the export's name (with or without a provider prefix); the others are matched by name.
    """

    def __init__(
        self,
        exported: ExportedRouter | str | os.PathLike[str],
        *,
        model_group: str = "routelab",
        models: Mapping[str, str] | None = None,
    ):
        self.exported = exported if isinstance(exported, ExportedRouter) else load_exported(exported)
        self.model_group = model_group
        self.models = dict(models or {})
        unknown = sorted(set(self.models) - set(self.exported.models))
        if unknown:
            raise ExportError(
                f"RouteLabRoutingPlugin(models=...) names {len(unknown)} model(s) the export does not have: "
                f"{', '.join(unknown)} (the export's models: {', '.join(self.exported.models)})"
            )
        # candidate list -> {export model: the candidates serving it}; the proxy's model list rarely changes
        self._served: dict[tuple[str, ...], dict[str, list[str]]] = {}

    def candidates_for(self, name: str, candidates: list[str]) -> list[str]:
        """The candidate deployments (``litellm_params.model``) serving the export model ``name``.

        Raises:
            ExportError: when some model of the export has no candidate (all of them named, once per model list).
        """
        key = tuple(candidates)
        served = self._served.get(key)
        if served is None:
            served = {m: [c for c in candidates if self._serves(c, m)] for m in self.exported.models}
            missing = [m for m, found in served.items() if not found]
            if missing:
                raise ExportError(
                    f"the LiteLLM proxy has no deployment in {self.model_group!r} for {len(missing)} model(s) of the "
                    f"export: {', '.join(missing)} (deployments: {', '.join(candidates) or 'none'}); add one per "
                    "model with litellm_params.model '<provider>/<model>', or map them with "
                    "RouteLabRoutingPlugin(models={...})"
                )
            self._served[key] = served
        return list(served[name])

    def _serves(self, litellm_model: str, name: str) -> bool:
        mapped = self.models.get(name)
        return litellm_model == mapped if mapped is not None else litellm_model_serves(litellm_model, name)

    async def run(self, context: RoutingContext) -> RoutingContext:
        """LiteLLM's plugin hook: keep only the deployments of the export's decision (other groups untouched)."""
        group = context.metadata.get("model_group")
        if isinstance(group, str) and group != self.model_group:
            return context
        request = {"metadata": context.metadata}
        messages = context.structured_messages or context.raw_messages
        if self.exported.routes_slowly:  # a transformer encoder: keep LiteLLM's event loop free meanwhile
            chosen = await asyncio.to_thread(
                export_decision, self.exported, messages, request, model_group=self.model_group
            )
        else:
            chosen = export_decision(self.exported, messages, request, model_group=self.model_group)
        context.candidate_models = self.candidates_for(chosen, list(context.candidate_models))
        context.signals[SIGNAL_KEY] = {"model": chosen, "category": category_of(request)}
        return context


def plugin_from_env(environ: Mapping[str, str] | None = None) -> RouteLabRoutingPlugin:
    """The plugin of the export named by ``ROUTELAB_EXPORT`` (group: ``ROUTELAB_MODEL_GROUP``, default ``routelab``).

    Raises:
        ExportError: when ``ROUTELAB_EXPORT`` is unset or empty, or the export does not load.
    """
    env = os.environ if environ is None else environ
    folder = (env.get(EXPORT_ENV) or "").strip()
    if not folder:
        raise ExportError(
            f"{EXPORT_ENV} is not set: set it to the export folder the LiteLLM proxy's RouteLab plugin routes with "
            f"(routers.integrations.litellm_proxy.routelab_plugin)"
        )
    group = (env.get(MODEL_GROUP_ENV) or "").strip() or "routelab"
    return RouteLabRoutingPlugin(folder, model_group=group)


_default: RouteLabRoutingPlugin | None = None


def __getattr__(name: str) -> Any:
    # ``routelab_plugin`` is built when the proxy resolves it from its config (not at import), so that importing
    # this module needs no environment and a missing export fails the proxy's start with the message above.
    global _default
    if name == "routelab_plugin":
        if _default is None:
            _default = plugin_from_env()
        return _default
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
