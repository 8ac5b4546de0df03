"""The price table: datasets/prices.csv content, lookups, costs and validation errors."""

from __future__ import annotations

import pytest

from evals import sources
from evals.exceptions import DataNotFoundError, SchemaError, UnknownComponentError
from evals.prices import PriceTable

# The issue's mid-2024 list prices for the MMLU-Pro cost convention (USD per 1M tokens, input/output).
MMLU_PRO_PRICES = {
    "gpt-4o-2024-05-13": (5, 15),
    "gemini-1.5-pro-002": (1.25, 5),
    "gemini-1.5-flash-002": (0.075, 0.3),
    "DeepSeek-V2-Chat": (0.14, 0.28),
    "DeepSeek-Coder-V2": (0.14, 0.28),
    "jamba-1.5-large": (2, 8),
    "Llama-3.1-70B-Instruct": (0.88, 0.88),
    "Llama-3.1-8B-Instruct": (0.18, 0.18),
    "Mixtral-8x7B-Instruct": (0.6, 0.6),
    "Mistral-7B-Instruct-v0.2": (0.2, 0.2),
    "Phi-3-mini": (0.1, 0.1),
    "Qwen1.5-72B-Chat": (0.9, 0.9),
    "Qwen1.5-7B-Chat": (0.2, 0.2),
    "command-r-v01": (0.5, 1.5),
}


@pytest.fixture(scope="module")
def prices():
    return PriceTable.load()


def test_default_rows_are_the_issue_convention(prices):
    for model, (pin, pout) in MMLU_PRO_PRICES.items():
        p = prices.price(model)
        assert (p.input_per_1m, p.output_per_1m, p.request_fee) == (pin, pout, 0), model
    assert (
        prices.price("gpt-4-1106-preview").input_per_1m,
        prices.price("gpt-4-1106-preview").output_per_1m,
    ) == (10, 30)


def test_every_row_has_a_source_and_a_date(prices):
    f = prices.frame
    assert f["source"].str.len().gt(10).all()
    assert f["date"].str.fullmatch(r"20\d\d-\d\d").all()


def test_covers_every_model_of_every_importer(prices, shared_data):
    for name, _ in sources.list_sources():
        for model in sources.load(name, data_dir=shared_data).models:
            assert model in prices, f"{name}: {model} has no price"


def test_multi_provider_model(prices):
    offers = prices.offers("Llama-3.1-70B-Instruct")
    assert len(offers) >= 3 and len({(o.input_per_1m, o.output_per_1m) for o in offers}) >= 3
    assert prices.price("Llama-3.1-70B-Instruct").provider == "together"  # the default row
    assert prices.price("Llama-3.1-70B-Instruct", "deepinfra").input_per_1m < 0.88
    assert all(o.p50_latency_s > 0 for o in offers)


def test_cost_scalar_and_array(prices):
    assert prices.cost("gpt-4o-2024-05-13", 1_000_000, 0) == pytest.approx(5.0)
    assert prices.cost("gpt-4o-2024-05-13", 1000, 500) == pytest.approx(0.0125)
    arr = prices.cost("Llama-3.1-70B-Instruct", [1e6, 0], [0, 1e6], provider="groq")
    assert arr.tolist() == pytest.approx([0.59, 0.79])


def test_request_fee_is_added(tmp_path):
    path = tmp_path / "p.csv"
    path.write_text(
        "model,provider,input_per_1m,output_per_1m,request_fee,source,date\nm,x,1,2,0.01,s,2024-01\n"
    )
    assert PriceTable.load(path).cost("m", 1e6, 1e6) == pytest.approx(3.01)


def test_unknown_model_lists_near_matches(prices):
    with pytest.raises(
        UnknownComponentError, match=r"'llama-3.1-70b-instruct'.*did you mean Llama-3.1-70B-Instruct"
    ):
        prices.price("llama-3.1-70b-instruct")
    with pytest.raises(UnknownComponentError, match="provider 'acme'.*together"):
        prices.price("Llama-3.1-70B-Instruct", "acme")


@pytest.mark.parametrize(
    ("body", "pattern"),
    [
        (
            "model,provider,input_per_1m,output_per_1m,request_fee,source,date\nm,x,-1,2,0,s,2024-01\n",
            r"line 2 of .*p.csv: column 'input_per_1m' is '-1'",
        ),
        (
            "model,provider,input_per_1m,output_per_1m,request_fee,source,date\nm,x,1,two,0,s,2024-01\n",
            r"line 2 of .*: column 'output_per_1m' is 'two'",
        ),
        (
            "model,provider,input_per_1m,output_per_1m,source,date\nm,x,1,2,s,2024-01\n",
            r"lacks column\(s\) \['request_fee'\]",
        ),
        (
            "model,provider,input_per_1m,output_per_1m,request_fee,source,date\nm,x,1,2,0,s,d\nm,x,1,2,0,s,d\n",
            r"line 3 of .*duplicate \(model, provider\) = \('m', 'x'\)",
        ),
        (
            "model,provider,input_per_1m,output_per_1m,request_fee,default,source,date\n"
            "m,x,1,2,0,1,s,d\nm,y,1,2,0,1,s,d\n",
            "'default' must be 1 on exactly one row",
        ),
        ("model,provider,input_per_1m,output_per_1m,request_fee,source,date\n", "is empty"),
    ],
)
def test_bad_price_files(tmp_path, body, pattern):
    path = tmp_path / "p.csv"
    path.write_text(body)
    with pytest.raises(SchemaError, match=pattern):
        PriceTable.load(path)


def test_missing_price_file(tmp_path):
    with pytest.raises(DataNotFoundError, match="nope.csv"):
        PriceTable.load(tmp_path / "nope.csv")
