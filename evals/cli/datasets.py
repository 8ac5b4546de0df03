"""``routelab datasets``: the importable outcome sources, and a summary of one source or outcome file.

    routelab datasets list [--data-dir DIR]
    routelab datasets show NAME|PATH [--data-dir DIR]

``show`` prints, per model, the sample count, the mean quality with a 95% confidence interval, the mean cost
per 1k requests and whether that cost is measured or estimated; the per-category sample counts; and the
dataset card.
"""

from __future__ import annotations

import argparse
import json

from evals.paths import data_dir

__all__ = ["register"]


def register(subparsers: argparse._SubParsersAction) -> None:  # noqa: SLF001 - argparse's own type
    """Add the ``datasets`` command group."""
    parser = subparsers.add_parser("datasets", help="list the outcome sources, or summarise one")
    sub = parser.add_subparsers(dest="datasets_command", metavar="{list,show}")
    sub.required = True
    p_list = sub.add_parser("list", help="the registered sources: samples, models, costs, license")
    p_list.add_argument(
        "--data-dir", default=None, help="public-data folder (default: ROUTELAB_DATA_DIR, ../shared/data)"
    )
    p_list.set_defaults(func=_list)
    p_show = sub.add_parser("show", help="per-model and per-category summary of a source or an outcome file")
    p_show.add_argument(
        "name", metavar="NAME|PATH", help="a source name (see 'datasets list') or a .csv/.jsonl/.parquet file"
    )
    p_show.add_argument(
        "--data-dir", default=None, help="public-data folder (default: ROUTELAB_DATA_DIR, ../shared/data)"
    )
    p_show.add_argument("--json", action="store_true", help="print the summary as JSON")
    p_show.set_defaults(func=_show)


def _cost_kind(table) -> str:  # noqa: ANN001 - OutcomeTable (imported lazily)
    return _kind(table.frame["cost_estimated"])


def _list(args: argparse.Namespace) -> int:
    from evals import sources

    rows = []
    for name, _desc in sources.list_sources():
        src = sources.get_source(name)
        table = src.load(args.data_dir)
        rows.append([name, f"{table.n_samples:,}", str(table.n_models), _cost_kind(table), src.license])
    _print_table(["source", "samples", "models", "costs", "license"], rows)
    print(
        "\nestimated costs: tokens from text length (characters / 4) x datasets/prices.csv; "
        "'routelab datasets show NAME' for details"
    )
    return 0


def summarise(table) -> dict:  # noqa: ANN001 - OutcomeTable
    """Per-model and per-category summary of an OutcomeTable (what ``datasets show`` prints).

    Quality intervals are 95% CIs of the mean over samples: the Wilson score interval when every score is 0
    or 1 (it stays sensible at 0% and 100%), else the normal approximation ``mean +- 1.96 sd / sqrt(n)``
    clipped to [0, 1].
    """
    f = table.frame
    models = []
    for model in table.models:
        g = f[f["model"] == model]
        n = len(g)
        mean = float(g["score"].mean())
        models.append(
            {
                "model": model,
                "samples": n,
                "quality": mean,
                "ci95": list(_ci95(g["score"].to_numpy())),
                "cost_per_1k": float(g["cost_usd"].mean() * 1000.0),
                "cost": _kind(g["cost_estimated"]),
            }
        )
    cats = f.drop_duplicates("sample_id")["category"].replace("", "(none)").value_counts()
    card = table.card
    return {
        "name": card.name,
        "samples": table.n_samples,
        "models": models,
        "categories": {str(k): int(v) for k, v in cats.items()},
        "card": json.loads(card.to_json()),
    }


def _kind(estimated) -> str:  # noqa: ANN001 - a boolean Series
    return "estimated" if estimated.all() else ("measured" if not estimated.any() else "mixed")


def _ci95(scores) -> tuple[float, float]:  # noqa: ANN001 - a float array
    """The 95% CI of the mean score: the one interval helper, :func:`evals.stats.mean_with_ci`."""
    from evals.stats import mean_with_ci  # lazy like every import here: `routelab --help` stays fast

    _, low, high = mean_with_ci(scores)
    return (low, high)


def _show(args: argparse.Namespace) -> int:
    from evals import sources

    if args.data_dir is not None:
        data_dir(args.data_dir)  # a missing --data-dir is an error even when NAME is a file path
    table = sources.load(args.name, data_dir=args.data_dir)
    summary = summarise(table)
    if args.json:
        print(json.dumps(summary, indent=2, default=str))
        return 0
    card = table.card
    print(f"{card.name}: {table.n_samples:,} samples x {table.n_models} models")
    if card.description:
        print(card.description)
    print()
    rows = [
        [
            m["model"],
            f"{m['samples']:,}",
            f"{m['quality']:.3f}",
            f"[{m['ci95'][0]:.3f}, {m['ci95'][1]:.3f}]",
            f"{m['cost_per_1k']:.4f}",
            m["cost"],
        ]
        for m in summary["models"]
    ]
    _print_table(["model", "samples", "quality", "95% CI", "$ per 1k req", "cost"], rows)
    print("(95% CI of the mean over samples: Wilson for 0/1 scores, else normal approximation)")
    print()
    cats = summary["categories"]
    print(f"categories ({len(cats)}):")
    _print_table(["category", "samples"], [[k, f"{v:,}"] for k, v in cats.items()])
    print()
    print("card:")
    for key in ("source", "license", "grading", "cost_note"):
        value = getattr(card, key)
        if value:
            print(f"  {key}: {value}")
    for key, value in card.extra.items():
        text = json.dumps(value, default=str) if isinstance(value, (dict, list)) else str(value)
        print(f"  {key}: {text}")
    return 0


def _print_table(header: list[str], rows: list[list[str]]) -> None:
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows, strict=False)]
    numeric = [all(_is_number(r[i]) for r in rows) and bool(rows) for i in range(len(header))]

    def fmt(cells: list[str]) -> str:
        return "  ".join(
            str(c).rjust(w) if num else str(c).ljust(w)
            for c, w, num in zip(cells, widths, numeric, strict=False)
        ).rstrip()

    print(fmt(header))
    print("  ".join("-" * w for w in widths))
    for r in rows:
        print(fmt(r))


def _is_number(text: str) -> bool:
    try:
        float(str(text).replace(",", ""))
    except ValueError:
        return False
    return True
