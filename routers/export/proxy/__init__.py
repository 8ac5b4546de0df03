"""An OpenAI-compatible proxy that routes each request with an exported router (``routelab serve FOLDER``).

Endpoints:

* ``POST /v1/chat/completions``: a request for a routed name (``router`` by default, see ``route_names``
  in ``upstreams.toml``) is routed on the text of its last user message and forwarded (with aiohttp's pooled
  client, see :meth:`ProxyState.startup` for why not httpx), with its ``model`` replaced, to the chosen
  model's upstream; a request for one of the folder's models is passed through to
  that model's upstream unchanged. Streaming (SSE) is passed through as it arrives.
* ``GET /v1/models``, ``GET /healthz`` (no auth), ``GET /metrics`` (Prometheus text format).
* ``POST /v1/feedback`` ``{"category", "model", "score"}``: feeds an adaptive export; others answer 404.
  ``GET``/``PUT /v1/feedback/state`` reads or replaces a worker's counts (to keep them across a restart).

Failure handling, per upstream: a per-attempt timeout and ``retries`` extra attempts on connection errors,
timeouts, 408/429/5xx, redirects (never followed) and answers that are not answers (a 200 that is not a JSON
object with a ``choices`` list, a body over ``max_response_bytes``, a stream that ends before its first event);
short exponential backoff, ``Retry-After`` honoured up to 1 s. Attempts and fallbacks of one request share
``request_deadline_s``; when it runs out the client gets a 504 naming what was tried (a stream already
relaying ends with an error event, code ``deadline_exceeded``: raise the deadline for long generations). At most
``max_fallback_hops`` models are tried after the chosen one. When the chosen model's upstream fails every
attempt, the next model of ``fallback_order`` (after the
chosen one, wrapping around) is tried; the failed upstream is then skipped for ``cooldown_s`` seconds (a
circuit breaker), so later requests go straight to the fallback without paying its retry budget. After the
cooldown the next request tries it again; when every candidate is cooling down, each is probed once. A stream
that breaks after bytes reached the client ends with an OpenAI-style error event (``data: {"error": ...}``).

Response headers: ``x-routelab-model`` (the model that answered), ``x-routelab-choice`` (the router's
choice), ``x-routelab-reason`` (``routed``, ``fallback from <model>``, ``passthrough``),
``x-routelab-cost-usd`` (usage x the export's prices), ``x-routelab-request-id`` (the id in the proxy's
log and decision log), ``x-routelab-attempts`` (upstream attempts made, retries and fallbacks included),
``x-routelab-arm`` (the rollout arm, when a rollout is configured). A stream's usage arrives after its headers, so a
streamed answer that reports usage ends with the SSE comment ``: x-routelab-cost-usd <dollars>`` instead.
Request bodies over ``max_request_bytes`` (``[proxy]`` of ``upstreams.toml``, 8 MiB by default) get 413.
Every error is OpenAI-shaped JSON (``{"error": {"message", "type", "param", "code"}}``); invalid requests get
a 400 naming the field (``messages[2].content[0].text``); see :mod:`.validation`.

Security: clients must send ``Authorization: Bearer <key>`` with a key from the environment variable named
by ``client_keys_env`` (``ROUTELAB_PROXY_KEYS`` by default), unless the server was built with
``no_auth=True``. Upstream keys are read from the environment variables named in ``upstreams.toml``; they
are sent only to their upstream and never appear in responses, errors or logs (upstream 401/403 bodies,
which can quote a key, are not forwarded; every other forwarded body, 200s included, is scrubbed of upstream
and client keys). The only state is the circuit breakers, the metrics, the live telemetry, spend counters and an
adaptive router's counts, kept per process or, with ``[state] url`` in ``upstreams.toml``, shared by every replica
through Redis (:mod:`.shared_state`), so several workers and replicas can run behind a load balancer.

Modules: :mod:`.upstream` (the upstream client, answer validation, breakers), :mod:`.handlers` (the
endpoints), :mod:`.context` (one request's facts), :mod:`.policy` (router choice, then rollout, exploration and
budget steps), :mod:`.features` (where the optional ``upstreams.toml`` sections attach: :mod:`.decision_log`,
:mod:`.rollout`, :mod:`.exploration`, :mod:`.shadow`, :mod:`.telemetry`, :mod:`.shared_state`, :mod:`.budget`),
:mod:`.validation` (request checks), :mod:`.metrics`, :mod:`.errors` (the error shape and the
guard against unexpected exceptions), :mod:`.serving` (the app, uvicorn, workers, connection limits).
"""

from __future__ import annotations

from evals.serving.wire import prompt_of  # the replay server reads requests the same way
from routers.export.proxy.serving import ProxyServer, app_from_environment, build_proxy_app, serve
from routers.export.proxy.state import ProxyState

__all__ = ["ProxyServer", "ProxyState", "app_from_environment", "build_proxy_app", "prompt_of", "serve"]
