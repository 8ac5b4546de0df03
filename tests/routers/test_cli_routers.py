"""``routelab routers list`` prints every registered strategy, its description and its parameters."""

from __future__ import annotations

import json

from evals.cli import main
from routers import router_registry


def test_routers_list_names_every_registered_router_with_params(capsys) -> None:
    assert main(["routers", "list"]) == 0
    out = capsys.readouterr().out
    for name in router_registry.names():
        assert f"\n{name} " in f"\n{out}", f"{name} missing from routers list"
    assert 'params: encoder="minilm", k=200, temperature=0.05' in out
    assert "oracle" in out and "[not exportable]" in out


def test_routers_list_json(capsys) -> None:
    assert main(["routers", "list", "--json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert set(rows) == set(router_registry.names())
    assert rows["single"]["params"] == {"model": None}
    assert rows["classifier"]["description"].startswith("Per-model logistic regression")
    assert rows["oracle"]["exportable"] is False
