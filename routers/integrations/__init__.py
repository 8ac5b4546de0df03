"""Adapters that run an exported RouteLab router inside other gateways.

* :mod:`routers.integrations.litellm`: a LiteLLM custom routing strategy for ``litellm.Router``
  (``pip install -e ".[litellm]"``).
* :mod:`routers.integrations.litellm_proxy`: a routing plugin for the LiteLLM proxy (``litellm --config``), named
  in its config as ``router_settings.plugins: ["routers.integrations.litellm_proxy.routelab_plugin"]``.

Each adapter imports its gateway's package, an optional extra: import the adapter module itself, not this
package, so that RouteLab never needs the gateway installed.
"""
