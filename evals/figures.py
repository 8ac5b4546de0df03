"""The one quality-versus-cost frontier figure (plotly), used by the report, MLflow artifacts and the app.

One function, :func:`frontier_figure`, draws every frontier plot RouteLab shows: each router's curve (with
its non-decreasing hull, dashed), the single models as labelled points (with their intervals when known),
the oracle (curve and point), the random mix and, optionally, the parity line. What differs between the
surfaces is only how much hover detail the curves carry (:class:`CurveData.detail`).

It takes either :class:`~evals.workbench.frontier.Frontier` objects (duck-typed: anything with ``router``,
``oracle``, ``singles``, ``random`` curves, ``models``, ``n_samples``, ``cost_estimated``) or the plain
:class:`CurveData` / :class:`References` records, which the app builds from its thinned point tables or from
a ``frontier.csv`` logged to MLflow (:func:`curves_from_frame`, :func:`references_from_frame`).

Colours: a router keeps one colour on every page and in every report (:func:`router_color`, keyed by its
label). The cost axis switches to log scale when costs span more than 20x, with a labelled tick per decade.

Example:
    >>> fig = frontier_figure([r.frontier for r in result.routers], title="Quality vs cost")  # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from evals.metrics import nondecreasing_hull

__all__ = [
    "PALETTE",
    "CurveData",
    "References",
    "curves_from_frame",
    "frontier_figure",
    "references_from_frame",
    "router_color",
]

#: Colours of routers (colour-blind-friendly first ten, then a second set for labels hashed beyond them).
PALETTE = (
    "#1f77b4",
    "#d62728",
    "#2ca02c",
    "#9467bd",
    "#ff7f0e",
    "#8c564b",
    "#e377c2",
    "#17becf",
    "#bcbd22",
    "#393b79",
    "#637939",
    "#8c6d31",
    "#843c39",
    "#7b4173",
    "#3182bd",
    "#e6550d",
)

# The built-in routers get fixed, well separated colours (the app preselects the first five together).
_FIXED = {
    "category": PALETTE[0],
    "knn": PALETTE[1],
    "mf": PALETTE[2],
    "cost-aware": PALETTE[3],
    "random-mix": PALETTE[4],
    "classifier": PALETTE[5],
    "cascade": PALETTE[6],
    "irt-blend": PALETTE[7],
    "ensemble": PALETTE[8],
    "rules": PALETTE[9],
    "single": PALETTE[10],
    "provider": PALETTE[11],
    "adaptive": PALETTE[12],
}
_SINGLE_COLOR = "#616161"


def router_color(label: str) -> str:
    """The colour of a router label, the same on every page and report.

    Built-in router names have fixed colours; any other label (``knn(k=20)``, a custom router) gets a colour
    from a hash of the label, so it too is stable across pages, processes and runs.
    """
    if label in _FIXED:
        return _FIXED[label]
    digest = hashlib.sha1(label.encode("utf-8")).digest()
    return PALETTE[int.from_bytes(digest[:4], "big") % len(PALETTE)]


@dataclass(frozen=True)
class CurveData:
    """One router's operating points, as drawn.

    ``detail`` (optional) gives hover detail per point, row-aligned with the arrays; its columns ``q_low``,
    ``q_high``, ``n`` (a 95% interval of quality) and ``split`` (traffic split as text) are shown when present.
    """

    label: str
    """The router label: legend entry and colour key."""
    cost_per_1k: np.ndarray
    """Dollars per 1,000 requests at each point."""
    quality: np.ndarray
    """Mean quality at each point."""
    lam: np.ndarray | None = None
    """The operating point of each point (shown on hover)."""
    detail: pd.DataFrame | None = None
    """Optional per-point hover detail (see the class docstring)."""
    name: str | None = None
    """Legend entry when it differs from ``label`` (e.g. ``knn @ run 3``); the colour still follows ``label``."""
    dash: str | None = None
    """Line dash (``solid``, ``dot``, ...), to tell apart several runs of the same router."""
    hull: bool = True
    """Draw the non-decreasing hull (dashed) beside the curve."""

    @classmethod
    def from_frontier(cls, frontier: Any) -> CurveData:
        """The router curve of a :class:`~evals.workbench.frontier.Frontier`."""
        cv = frontier.router
        return cls(
            label=str(frontier.name),
            cost_per_1k=np.asarray(cv.cost_per_1k, dtype=float),
            quality=np.asarray(cv.quality, dtype=float),
            lam=np.asarray(cv.lam, dtype=float),
        )


@dataclass(frozen=True)
class References:
    """What every router is compared with: single models, the oracle, the random mix (one test split)."""

    models: Sequence[str]
    """Single model names."""
    single_cost_per_1k: np.ndarray
    """Each model's dollars per 1,000 requests."""
    single_quality: np.ndarray
    """Each model's mean quality."""
    oracle_cost_per_1k: np.ndarray | None = None
    """The oracle sweep (its last point is the oracle itself)."""
    oracle_quality: np.ndarray | None = None
    random_cost_per_1k: np.ndarray | None = None
    """The random mix between the cheapest and the best model."""
    random_quality: np.ndarray | None = None
    single_low: np.ndarray | None = None
    """Optional 95% interval of each model's quality (error bars)."""
    single_high: np.ndarray | None = None
    single_n: np.ndarray | None = None
    n_samples: int | None = None
    """Test samples behind every point (axis title)."""
    cost_estimated: bool = False
    """Whether costs are estimated rather than billed (said on the axis)."""

    @classmethod
    def from_frontier(cls, frontier: Any) -> References:
        """The references of a :class:`~evals.workbench.frontier.Frontier`."""
        return cls(
            models=list(frontier.models),
            single_cost_per_1k=np.asarray(frontier.singles.cost_per_1k, dtype=float),
            single_quality=np.asarray(frontier.singles.quality, dtype=float),
            oracle_cost_per_1k=np.asarray(frontier.oracle.cost_per_1k, dtype=float),
            oracle_quality=np.asarray(frontier.oracle.quality, dtype=float),
            random_cost_per_1k=np.asarray(frontier.random.cost_per_1k, dtype=float),
            random_quality=np.asarray(frontier.random.quality, dtype=float),
            n_samples=int(frontier.n_samples),
            cost_estimated=bool(frontier.cost_estimated),
        )


def curves_from_frame(frame: pd.DataFrame, *, label: str | None = None, **kwargs: Any) -> list[CurveData]:
    """The router curve(s) of a ``Frontier.to_frame()`` table (e.g. a ``frontier.csv`` logged to MLflow).

    Args:
        frame: The long table (columns ``router``, ``kind``, ``lam``, ``cost_per_1k``, ``quality``).
        label: Use this label (colour key) instead of the frame's ``router`` column.
        **kwargs: Passed to :class:`CurveData` (``name``, ``dash``, ``hull``).
    """
    rows = frame[frame["kind"] == "router"]
    groups = list(rows.groupby("router", sort=False)) if "router" in rows else [("router", rows)]
    out = []
    for name, part in groups:
        out.append(
            CurveData(
                label=str(label or name),
                cost_per_1k=part["cost_per_1k"].to_numpy(dtype=float),
                quality=part["quality"].to_numpy(dtype=float),
                lam=part["lam"].to_numpy(dtype=float) if "lam" in part else None,
                **kwargs,
            )
        )
    return out


def references_from_frame(frame: pd.DataFrame) -> References:
    """The references (single models, oracle, random mix) of a ``Frontier.to_frame()`` table."""

    def part(kind: str) -> pd.DataFrame:
        return frame[frame["kind"] == kind]

    s, o, r = part("single"), part("oracle"), part("random")
    if "router" in frame and len(s):  # a concatenation of several routers' frames: one copy of each line
        first = s["router"].iloc[0]
        s, o, r = (p[p["router"] == first] if len(p) else p for p in (s, o, r))
    return References(
        models=[str(m) for m in s["curve"]],
        single_cost_per_1k=s["cost_per_1k"].to_numpy(dtype=float),
        single_quality=s["quality"].to_numpy(dtype=float),
        oracle_cost_per_1k=o["cost_per_1k"].to_numpy(dtype=float) if len(o) else None,
        oracle_quality=o["quality"].to_numpy(dtype=float) if len(o) else None,
        random_cost_per_1k=r["cost_per_1k"].to_numpy(dtype=float) if len(r) else None,
        random_quality=r["quality"].to_numpy(dtype=float) if len(r) else None,
        cost_estimated=bool(frame["cost_estimated"].astype(bool).any()) if "cost_estimated" in frame else False,
    )


# ---------------------------------------------------------------------------------------------- layout
# Where a single model's name goes relative to its marker, tried in this order until it does not collide.
_POSITIONS = ("top center", "bottom center", "middle right", "middle left", "top right", "bottom left")


# How a label at each position sits relative to its marker (annotation anchors and pixel shifts).
_ANCHORS = {
    "top center": {"xanchor": "center", "yanchor": "bottom", "yshift": 7},
    "bottom center": {"xanchor": "center", "yanchor": "top", "yshift": -7},
    "middle right": {"xanchor": "left", "yanchor": "middle", "xshift": 7},
    "middle left": {"xanchor": "right", "yanchor": "middle", "xshift": -7},
    "top right": {"xanchor": "left", "yanchor": "bottom", "xshift": 4, "yshift": 5},
    "bottom left": {"xanchor": "right", "yanchor": "top", "xshift": -4, "yshift": -5},
}


def _label_positions(x: np.ndarray, y: np.ndarray, log_x: bool) -> list[str]:
    """A text position per point so that names of nearby models do not sit on top of each other.

    Works in axis-normalised units: two labels collide when their points are closer than about a label's
    width horizontally and a line's height vertically, and share a position.
    """
    if len(x) == 0:
        return []
    xs = np.log10(np.maximum(x, 1e-12)) if log_x else np.asarray(x, dtype=float)
    ys = np.asarray(y, dtype=float)
    span_x = float(np.ptp(xs)) or 1.0
    span_y = float(np.ptp(ys)) or 1.0
    nx, ny = (xs - xs.min()) / span_x, (ys - ys.min()) / span_y
    placed: list[tuple[float, float, str]] = []
    out = []
    for i in np.argsort(-ny, kind="stable"):  # from the top down
        for pos in _POSITIONS:
            clash = any(p == pos and abs(nx[i] - px) < 0.12 and abs(ny[i] - py) < 0.06 for px, py, p in placed)
            if not clash:
                break
        placed.append((nx[i], ny[i], pos))
        out.append((int(i), pos))
    return [pos for _, pos in sorted(out)]


def _log_axis(costs: np.ndarray) -> tuple[bool, list[float] | None]:
    """Whether the cost axis is logarithmic, and its range (log10 units) with room for the labels."""
    pos = costs[np.isfinite(costs) & (costs > 0)]
    if len(pos) == 0 or pos.max() / pos.min() <= 20:
        return False, None
    lo, hi = math.log10(pos.min()), math.log10(pos.max())
    pad = 0.06 * (hi - lo) + 0.05  # so the leftmost and rightmost names are not clipped
    left, right = lo - pad, hi + pad
    # Reach the nearest decade when it is close, so the axis shows a labelled tick at each end.
    if lo - math.floor(lo) < 0.35:
        left = min(left, math.floor(lo) - 0.02)
    if math.ceil(hi) - hi < 0.35:
        right = max(right, math.ceil(hi) + 0.02)
    return True, [left, right]


def frontier_figure(
    curves: Sequence[Any],
    references: References | None = None,
    *,
    title: str | None = None,
    cost_estimated: bool | None = None,
    parity: tuple[float, str] | None = None,
    height: int = 600,
) -> Any:
    """A plotly figure of router frontiers against the references, on (cost per 1k, quality) axes.

    Args:
        curves: :class:`CurveData` records or :class:`~evals.workbench.frontier.Frontier` objects (mixed is
            fine). Each router is drawn in its :func:`router_color`.
        references: Single models, oracle and random mix; default: those of the first Frontier in ``curves``
            (every frontier of one evaluation shares the same test samples). None draws curves only.
        title: Figure title (none by default: pages have their own headings).
        cost_estimated: Say "ESTIMATED" on the cost axis (default: from the references).
        parity: ``(quality, text)`` of a horizontal parity line, e.g. the best model's quality minus the margin.
        height: Pixels.

    Returns:
        A ``plotly.graph_objects.Figure``.
    """
    import plotly.graph_objects as go

    if references is None:
        first = next((c for c in curves if not isinstance(c, CurveData)), None)
        references = References.from_frontier(first) if first is not None else None
    data = [c if isinstance(c, CurveData) else CurveData.from_frontier(c) for c in curves]
    est = bool(references.cost_estimated if (cost_estimated is None and references) else cost_estimated)
    est_text = " (ESTIMATED)" if est else ""

    all_costs = [c.cost_per_1k for c in data]
    if references is not None:
        all_costs += [references.single_cost_per_1k]
        if references.oracle_cost_per_1k is not None:
            all_costs.append(references.oracle_cost_per_1k)
    costs = np.concatenate([np.asarray(c, dtype=float) for c in all_costs] or [np.zeros(0)])
    log_x, x_range = _log_axis(costs)

    fig = go.Figure()
    if references is not None:
        _add_references(fig, references, est_text, log_x)
    if parity is not None:
        fig.add_hline(
            y=float(parity[0]),
            line={"dash": "dot", "color": "#c62828", "width": 1},
            annotation_text=parity[1],
            annotation_position="bottom right",
        )
    for c in data:
        _add_curve(fig, c, est_text)

    n = references.n_samples if references is not None else None
    fig.update_layout(
        title=title,
        xaxis_title="$ per 1,000 requests" + est_text + (" (log scale)" if log_x else ""),
        yaxis_title="mean quality on the test split" + (f" (n = {n:,})" if n else ""),
        height=height,
        template="plotly_white",
        margin={"l": 10, "r": 10, "t": 40 if title else 20, "b": 10},
        # Below the plot, so it never hides the toolbar or the curves.
        legend={"orientation": "h", "yanchor": "top", "y": -0.14, "x": 0},
        hovermode="closest",
    )
    if log_x:
        # One labelled tick per decade ($0.01, $0.1, $1, ...), unlabelled minor ticks between.
        fig.update_xaxes(
            type="log",
            range=x_range,
            dtick=1,
            tickformat="$~g",
            minor={"dtick": "D1", "showgrid": True, "gridcolor": "#f0f0f0", "ticks": "outside"},
        )
    else:
        fig.update_xaxes(tickprefix="$", rangemode="tozero")
    return fig


def _add_references(fig: Any, refs: References, est_text: str, log_x: bool) -> None:
    import plotly.graph_objects as go

    x, y = np.asarray(refs.single_cost_per_1k, dtype=float), np.asarray(refs.single_quality, dtype=float)
    has_ci = refs.single_low is not None and refs.single_high is not None
    n = np.asarray(refs.single_n) if refs.single_n is not None else np.full(len(x), refs.n_samples or 0)
    low = np.asarray(refs.single_low, dtype=float) if has_ci else np.full(len(x), np.nan)
    high = np.asarray(refs.single_high, dtype=float) if has_ci else np.full(len(x), np.nan)
    ci = (
        "<br>quality %{y:.3f} [%{customdata[1]:.3f}, %{customdata[2]:.3f}] (95% CI, n=%{customdata[3]})"
        if has_ci
        else "<br>quality %{y:.3f}"
    )
    fig.add_trace(
        go.Scatter(
            x=x,
            y=y,
            mode="markers",  # the names are annotations (below): readable over the curves
            name="single models",
            text=list(refs.models),
            marker={"symbol": "diamond", "size": 9, "color": _SINGLE_COLOR},
            error_y=(
                {
                    "type": "data",
                    "symmetric": False,
                    "array": high - y,
                    "arrayminus": y - low,
                    "thickness": 1,
                    "width": 3,
                }
                if has_ci
                else None
            ),
            customdata=np.column_stack([np.asarray(refs.models, dtype=object), low, high, n]),
            hovertemplate="<b>%{customdata[0]}</b><br>$%{x:.4f} per 1k requests"
            + est_text
            + ci
            + "<extra>single model</extra>",
        )
    )
    for name, xi, yi, pos in zip(refs.models, x, y, _label_positions(x, y, log_x), strict=True):
        fig.add_annotation(
            # Annotations on a log axis take log10 coordinates.
            x=math.log10(xi) if log_x and xi > 0 else xi,
            y=yi,
            text=str(name),
            showarrow=False,
            font={"size": 10, "color": "#424242"},
            bgcolor="rgba(255, 255, 255, 0.75)",  # readable where it crosses a curve
            borderpad=1,
            **_ANCHORS[pos],
        )
    if refs.random_cost_per_1k is not None:
        fig.add_trace(
            go.Scatter(
                x=refs.random_cost_per_1k,
                y=refs.random_quality,
                mode="lines",
                name="random mix",
                line={"color": "grey", "dash": "dashdot", "width": 1},
                hoverinfo="skip",
            )
        )
    if refs.oracle_cost_per_1k is not None and len(refs.oracle_cost_per_1k):
        hover = "oracle<br>$%{x:.4f} per 1k<br>quality %{y:.3f}<extra></extra>"
        fig.add_trace(
            go.Scatter(
                x=refs.oracle_cost_per_1k,
                y=refs.oracle_quality,
                mode="lines",
                name="oracle",
                line={"dash": "dot", "color": "black", "width": 1},
                hovertemplate=hover,
            )
        )
        fig.add_trace(
            go.Scatter(
                x=refs.oracle_cost_per_1k[-1:],
                y=refs.oracle_quality[-1:],
                mode="markers",
                name="oracle point",
                marker={"symbol": "star", "size": 13, "color": "black"},
                hovertemplate=hover,
            )
        )


def _add_curve(fig: Any, c: CurveData, est_text: str) -> None:
    import plotly.graph_objects as go

    color = router_color(c.label)
    name = c.name or c.label
    x, y = np.asarray(c.cost_per_1k, dtype=float), np.asarray(c.quality, dtype=float)
    if c.hull and len(x):
        hc, hq = nondecreasing_hull(x, y)
        fig.add_trace(
            go.Scatter(
                x=hc,
                y=hq,
                mode="lines",
                name=f"{name} hull",
                legendgroup=name,
                showlegend=False,
                line={"color": color, "dash": "dash", "width": 1},
                hoverinfo="skip",
            )
        )
    lam = np.asarray(c.lam, dtype=float) if c.lam is not None else np.full(len(x), np.nan)
    d = c.detail
    cols = [lam]
    hover = f"<b>{name}</b>"
    hover += "<br>operating point lam=%{customdata[0]:.3g} $/request per +1 quality" if c.lam is not None else ""
    hover += "<br>$%{x:.4f} per 1k requests" + est_text
    if d is not None and {"q_low", "q_high", "n"} <= set(d.columns):
        cols += [d["q_low"].to_numpy(dtype=float), d["q_high"].to_numpy(dtype=float), d["n"].to_numpy()]
        hover += "<br>quality %{y:.3f} [%{customdata[1]:.3f}, %{customdata[2]:.3f}] (95% CI, n=%{customdata[3]})"
    else:
        hover += "<br>quality %{y:.3f}"
    if d is not None and "split" in d.columns:
        cols.append(d["split"].astype(str).to_numpy())
        hover += f"<br>traffic: %{{customdata[{len(cols) - 1}]}}"
    fig.add_trace(
        go.Scatter(
            x=x,
            y=y,
            mode="lines+markers",
            name=name,
            legendgroup=name,
            marker={"size": 4, "color": color},
            line={"color": color, "dash": c.dash or "solid"},
            customdata=np.column_stack(cols) if len(x) else None,
            hovertemplate=hover + "<extra></extra>",
        )
    )
