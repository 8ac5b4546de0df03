"""``notebooks/04_production_loop.ipynb`` walks the whole production loop (issue 15).

``test_notebooks.py`` executes it with the others (marker ``notebook``); this checks, without a kernel, that it
still walks every step of the loop with the real commands and sections, in order, and stops what it starts.
"""

from __future__ import annotations

import nbformat

from evals.paths import repo_root

NOTEBOOK = repo_root() / "notebooks" / "04_production_loop.ipynb"

#: What each step of the loop must run, in this order (as a code cell's text).
STEPS = (
    ('"export", "--config"', "routelab export"),
    ("[log]", "the decision log section"),
    ("[rollout]", "the staged rollout section"),
    ("[exploration]", "the exploration section"),
    ("[shadow]", "the shadow section"),
    ("build_proxy_app(EXPORT", "serving the export with the proxy"),
    ('"logs", "grade"', "routelab logs grade"),
    ('"logs", "report"', "routelab logs report"),
    ("estimate_policy(", "an off-policy estimate checked against the truth"),
    ('"logs", "to-outcomes"', "routelab logs to-outcomes"),
    (".fit(prod)", "the refit on production outcomes"),
    ("replay.stop()", "stopping the replay server"),
)


def _code() -> str:
    nb = nbformat.read(NOTEBOOK, as_version=4)
    return "\n".join(c.source for c in nb.cells if c.cell_type == "code")


def test_the_notebook_walks_every_step_of_the_loop_in_order():
    code = _code()
    positions = []
    for needle, step in STEPS:
        assert needle in code, f"{NOTEBOOK.name} no longer has the step: {step} ({needle!r})"
        positions.append(code.index(needle))
    order = [step for _, step in STEPS]
    got = [step for _, step in sorted(zip(positions, order, strict=True))]
    assert got == order, f"{NOTEBOOK.name}: steps out of order: {got}"


def test_the_notebook_runs_offline_against_the_replay_server():
    code = _code()
    # Every upstream is the replay server on loopback; no provider key is read from the environment.
    assert "ReplayServer(" in code and '"--upstream-base-url", replay.base_url' in code
    assert "os.environ" not in code and "OPENAI_API_KEY" not in code
