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


def test_routers_list_shows_each_parameter_constraint(capsys) -> None:
    assert main(["routers", "list"]) == 0
    out = capsys.readouterr().out
    knn = out[out.index("\nknn ") :].split("\nmf ")[0]
    assert "k             an int >= 1" in knn and "temperature   a float > 0" in knn
    assert "encoder       an encoder name (minilm, minilm-static, hash-bow-<dim>)" in knn


def test_routers_list_json_describes_parameters_for_forms(capsys) -> None:
    assert main(["routers", "list", "--json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    for name, row in rows.items():
        assert set(row["constraints"]) == set(row["params"]), name
    k = {p["name"]: p for p in rows["knn"]["param_specs"]}["k"]
    assert (k["kind"], k["low"], k["high"], k["default"], k["nullable"]) == ("int", 1, None, 200, False)
    assert k["help"] == "Number of neighbours."
    enc = {p["name"]: p for p in rows["knn"]["param_specs"]}["encoder"]
    assert enc["free_text"] and {"minilm", "minilm-static"} <= set(enc["options"]) and enc["role"] == "encoder"
    assert {p["name"]: p for p in rows["single"]["param_specs"]}["model"]["role"] == "model"
