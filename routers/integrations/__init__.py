"""Adapters that run an exported RouteLab router inside other gateways.

* :mod:`routers.integrations.litellm`: a LiteLLM custom routing strategy (``pip install -e ".[litellm]"``).

Each adapter imports its gateway's package, an optional extra: import the adapter module itself, not this
package, so that RouteLab never needs the gateway installed.
"""
