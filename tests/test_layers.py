"""The direction of imports (DESIGN.md's layers), enforced by import-linter's contracts in ``.importlinter``.

* ``lint-imports`` keeps every contract on the tree (import-linter is a dev dependency: missing, this fails);
* every module directly under ``evals/`` is in exactly one layer, so a new module cannot slip past the core
  contract by not being listed;
* the contracts do fail: a copy of the tree with wrong imports (``import routers`` in ``evals/metrics.py``,
  ``import mlflow`` in the workbench) is reported as broken, naming each offending import.
"""

from __future__ import annotations

import ast
import configparser
import pkgutil
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / ".importlinter"
#: The layers above the core inside the evals package.
UPPER = {"evals.workbench", "evals.cli"}


def _lint_imports() -> str:
    exe = shutil.which("lint-imports")
    if exe is None:
        pytest.fail("lint-imports not found: install the dev extras (pip install -e .[dev], import-linter)")
    return exe


def _run(cwd: Path) -> subprocess.CompletedProcess[str]:
    # --no-cache: never write .import_linter_cache into the checkout.
    return subprocess.run(
        [_lint_imports(), "--config", str(cwd / ".importlinter"), "--no-cache", "--no-logo"],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
    )


def _contract_list(contract: str, key: str) -> set[str]:
    parser = configparser.ConfigParser()
    parser.read(CONFIG, encoding="utf-8")
    return {line.strip() for line in parser[f"importlinter:contract:{contract}"][key].splitlines() if line.strip()}


def test_every_import_contract_is_kept():
    done = _run(ROOT)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "0 broken" in done.stdout


def test_every_evals_module_is_in_a_layer():
    children = {f"evals.{m.name}" for m in pkgutil.iter_modules([str(ROOT / "evals")])} - {"evals.__main__"}
    core = _contract_list("core", "source_modules")
    missing = sorted(children - UPPER - core)
    stale = sorted(core - children)
    assert not missing, f"add {missing} to the core contract's source_modules in .importlinter (or to a layer)"
    assert not stale, f"{stale} in .importlinter's core contract no longer exist"
    assert UPPER.isdisjoint(core)


def test_the_evals_package_itself_imports_only_the_core():
    # `evals/__init__.py` cannot be a contract source (that would include the workbench and the CLI below it).
    core = _contract_list("core", "source_modules")
    tree = ast.parse((ROOT / "evals" / "__init__.py").read_text(encoding="utf-8"))
    imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    imported |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    wrong = sorted(m for m in imported if m.split(".")[0] in {"routers", "app"} or m.startswith(tuple(UPPER)))
    assert not wrong, f"evals/__init__.py imports {wrong}, above the core"
    assert all(m in core or m.rsplit(".", 1)[0] in core for m in imported if m.startswith("evals."))


def test_wrong_imports_break_the_contracts_naming_them(tmp_path):
    for package in ("evals", "routers", "app"):
        shutil.copytree(ROOT / package, tmp_path / package, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(CONFIG, tmp_path / ".importlinter")
    for module, wrong in (("evals/metrics.py", "routers"), ("evals/workbench/gates.py", "mlflow")):
        path = tmp_path / module
        path.write_text(path.read_text(encoding="utf-8") + f"\nimport {wrong}  # noqa: E402,F401\n")
    done = _run(tmp_path)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "The evals core never imports routers, the workbench, the CLI or the app BROKEN" in done.stdout
    assert "evals.metrics -> routers" in done.stdout
    assert "only evals.tracking imports mlflow (plus the export's" in done.stdout
    assert "evals.workbench.gates -> mlflow" in done.stdout
    assert "Contracts: 2 kept, 2 broken." in done.stdout
