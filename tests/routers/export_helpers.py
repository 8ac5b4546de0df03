"""Shared helpers of the export / proxy / pyfunc tests (a small outcome table, folders, upstream configs)."""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd

from evals.outcomes import OutcomeTable

MODELS = {"cheap": 0.001, "mid": 0.005, "big": 0.02}
PRICES = {
    "cheap": {"provider": "together", "input_per_1m": 0.1, "output_per_1m": 0.2, "request_fee": 0.0},
    "mid": {"provider": "together", "input_per_1m": 0.5, "output_per_1m": 1.0, "request_fee": 0.0},
    "big": {"provider": "openai", "input_per_1m": 5.0, "output_per_1m": 15.0, "request_fee": 0.0},
}


def small_table(n_per_cat: int = 20) -> OutcomeTable:
    """3 models x (3 * n_per_cat) samples with obvious routing (cheap right on easy, mid on easy+medium)."""
    rows = []
    for cat in ("easy", "medium", "hard"):
        for i in range(n_per_cat):
            sid = f"{cat}-{i}"
            prompt = f"{cat} question number {i}: " + ("please think hard " * (3 if cat == "hard" else 1))
            for model, cost in MODELS.items():
                right = model == "big" or (model == "mid" and cat != "hard") or (model == "cheap" and cat == "easy")
                rows.append(dict(sample_id=sid, category=cat, prompt=prompt, model=model, score=float(right),
                                 cost_usd=cost, response=f"{model} says: the answer is (A) for {sid}",
                                 input_tokens=40.0, output_tokens=12.0))
    return OutcomeTable(pd.DataFrame(rows))


def point_upstreams(folder: Path, urls: dict[str, str], *, timeout_s: float = 5.0, retries: int = 1,
                    cooldown_s: float = 30.0, key_env: str = "TEST_UPSTREAM_KEY") -> None:
    """Rewrite a folder's upstreams.toml so each model points at ``urls[model]`` (what an owner does)."""
    path = folder / "upstreams.toml"
    text = path.read_text()
    for model, url in urls.items():
        block = re.compile(rf'(\[upstreams\."{re.escape(model)}"\]\n)(.*?)(?=\n\[|\Z)', re.S)
        body = (f'base_url = "{url}"\napi_key_env = "{key_env}"\nmodel = "{model}"\n'
                f"timeout_s = {timeout_s}\nretries = {retries}\n")
        text, n = block.subn(lambda m: m.group(1) + body, text)
        assert n == 1, model
    text = re.sub(r"cooldown_s = [0-9.]+", f"cooldown_s = {cooldown_s}", text)
    path.write_text(text)
