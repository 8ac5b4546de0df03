"""Load an export folder safely: verify every file, refuse what would fail later, then run a trusted runtime.

::

    from routers.export import load_exported
    exported = load_exported("exports/knn-mmlu")   # verifies checksums; runs only a verified runtime
    exported.route(["What is 2 + 2?"])             # ['Meta-Llama-3_1-8B-Instruct'] - as the workbench decides

Checks, in order, before any of the folder's code runs: only the documented files (:func:`verify_folder`),
a well-formed ``router.json`` (:func:`routers.export._manifest.check_manifest`), checksums, a runtime RouteLab
shipped (the installed one or a released one), and ``arrays.npz`` read from its zip directory and ``.npy``
headers alone (:func:`routers.export._arrays.inspect_arrays`: sizes, dtypes and shapes against ``router.json``
and the state, bounded memory) before anything is decompressed. Each refusal is a one-line
:class:`~routers.export.ExportError` naming the file and field.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from routers.export import _folder as F
from routers.export._arrays import inspect_arrays, read_arrays
from routers.export._folder import ExportError, TamperedExportError
from routers.export._manifest import check_manifest, declared_arrays, text_selection_modes
from routers.export.measurement import Measurement
from routers.export.upstreams import ProxyConfig, read_upstreams

__all__ = ["Decision", "ExportedRouter", "load_arrays", "load_exported", "verify_folder"]

_PICKLE_SUFFIXES = (".pkl", ".pickle", ".joblib", ".dill", ".cloudpickle", ".pt", ".pth", ".npy")

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
    def measurement(self) -> Measurement | None:
        """What was measured at the exported point (any schema version of ``router.json``), or None."""
        block = self.manifest.get("measurement")
        return Measurement.from_dict(block) if block else None

    @property
    def routes_slowly(self) -> bool:
        """Whether a decision takes milliseconds (a transformer encoder embeds the prompt): code on an event loop
        runs it in a worker thread (the proxy, the LiteLLM integrations). Hashing and static encoders, and routers
        without an encoder, decide in microseconds and are called directly."""
        enc = self.manifest.get("encoder") or ""
        return bool(enc) and not enc.startswith("hash-bow") and enc != "minilm-static"

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

    def predictions(self, prompt: str, category: str | None = None) -> tuple[int, np.ndarray, np.ndarray]:
        """One prompt's decision at the exported point and every model's predictions, features computed once.

        Returns:
            ``(index of the chosen model, predicted quality (m,), predicted cost in dollars (m,))``; the index is
            what :meth:`route_indices` gives for the same prompt and category (the proxy's decision log and
            exploration read the predictions; a plain proxy calls :meth:`route_indices` alone).
        """
        ps, cats = [str(prompt)], ([category] if category else None)
        state = self.state
        kinds = getattr(self.runtime, "KINDS", None)
        kind = kinds.get(getattr(state, "kind", None)) if isinstance(kinds, dict) else None
        if kind is None or not callable(getattr(self.runtime, "decide", None)):  # a runtime released before KINDS
            idx = int(self.route_indices(ps, None, cats)[0])
            q, c = state.predict_quality(ps, cats), state.predict_cost(ps, cats)
        else:
            x = state.features(ps, cats) if kind.reads_features else None
            q, c = state.predict_quality(ps, cats, x=x), state.predict_cost(ps, cats, x=x)
            # The same rule route_indices applies: the kind's own choice, else the one decision rule.
            chosen = state.route_indices(ps, self.lam, cats) if kind.choose is not None else self.runtime.decide(
                q, c, self.lam
            )
            idx = int(chosen[0])
        return idx, np.asarray(q, dtype=float)[0], np.asarray(c, dtype=float)[0]

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
            malformed ``router.json`` field, a missing file, a checksum mismatch, or a runtime RouteLab never
            shipped (neither the installed one nor a released one).
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
    check_manifest(manifest, mpath)
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
    if F.released_runtime_version(runtime_src) is None and not trust_foreign_runtime:
        shipped = F.installed_runtime_source()
        raise TamperedExportError(
            f"{root / F.RUNTIME} differs from the runtime shipped with this RouteLab and from every released "
            f"runtime ({manifest.get('routelab_version', '?')} wrote it, "
            f"sha256 {F.sha256_bytes(runtime_src)[:16]}...; "
            f"installed runtime sha256 {F.sha256_bytes(shipped)[:16]}..., released ones in "
            "routers/export/released_runtimes.py). "
            "Re-export the router with this RouteLab, "
            "or review that file and pass trust_foreign_runtime=True (--trust-runtime)"
        )
    return manifest, runtime_src


def load_arrays(path: Path, manifest: dict[str, Any] | None = None) -> dict[str, np.ndarray]:
    """Read ``arrays.npz`` with ``allow_pickle=False`` (an object array is refused, never unpickled), after
    checking its zip directory and ``.npy`` headers against ``manifest``'s ``arrays`` declaration (when given)
    and a size cap: nothing is decompressed before that (:func:`routers.export._arrays.inspect_arrays`)."""
    declared = declared_arrays(manifest, path.with_name(F.MANIFEST)) if manifest is not None else None
    inspect_arrays(path, declared)
    return read_arrays(path)


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
    # Sizes, dtypes and shapes from the zip directory and .npy headers: nothing decompressed yet.
    headers = inspect_arrays(root / F.ARRAYS, declared_arrays(manifest, root / F.MANIFEST))
    runtime = F.exec_runtime(runtime_src, root / F.RUNTIME)
    if text_selection_modes(manifest["state"]) and not callable(getattr(runtime, "select_text", None)):
        # A runtime released before text selection would ignore the rule and route on the whole prompt.
        raise TamperedExportError(
            f"{root / F.MANIFEST}: the state selects text (text_selection), which {root / F.RUNTIME} does not "
            "apply (a runtime released before text selection); refusing to load it: re-export the router"
        )
    check = getattr(runtime, "check_state_arrays", None)  # runtimes released before it skip this check
    if check is not None:
        try:
            check(manifest["state"], {k: shape for k, (_, shape) in headers.items()})
        except ValueError as exc:
            raise TamperedExportError(f"{root / F.ARRAYS}: {exc}; refusing to load it") from None
    arrays = read_arrays(root / F.ARRAYS)
    encoder = manifest.get("encoder")
    embed_fn = workbench_embed_fn if encoder and not str(encoder).startswith("hash-bow") else None
    bundled = F.bundled_encoder(manifest)
    if bundled is not None:  # the folder's own encoder (data): RouteLab's encoders are not needed for it
        # Its token table is bounded like arrays.npz: one float32 (vocab_size, dim) array, from its header.
        vocab, dim = bundled.get("vocab_size"), bundled.get("dim")
        shape_known = all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in (vocab, dim))
        inspect_arrays(
            root / F.ENCODER_VECTORS, {"vectors": (np.dtype("<f4"), (vocab, dim))} if shape_known else None
        )
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
    _probe(root, state, float(manifest["operating_point"]["lam"]))
    return ExportedRouter(root, manifest, runtime, state)


_PROBE = ["What is 2 + 2?"]


def _probe(root: Path, state: Any, lam: float) -> None:
    """Decide one request at load, so what would fail every request (an array of the wrong shape the runtime
    did not check, say) fails here, once, with one line, instead of as a 500 per request."""
    try:
        idx = np.asarray(state.route_indices(_PROBE, lam, [""]))
        q = np.asarray(state.predict_quality(_PROBE, [""]), dtype=float)
        c = np.asarray(state.predict_cost(_PROBE, [""]), dtype=float)
    except Exception as exc:  # noqa: BLE001 - any failure here is a broken export, reported in one line
        raise TamperedExportError(
            f"{root}: the router fails on a probe request at load ({type(exc).__name__}: {exc}); "
            "its arrays.npz or router.json state was changed after export; re-export the router"
        ) from None
    m = len(state.models)
    if idx.shape != (1,) or not 0 <= int(idx[0]) < m or q.shape != (1, m) or c.shape != (1, m):
        raise TamperedExportError(
            f"{root}: the router's predictions have the wrong shape at load (quality {q.shape}, cost {c.shape}, "
            f"expected (1, {m})); re-export the router"
        )
