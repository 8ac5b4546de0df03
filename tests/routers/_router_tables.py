"""Hand-made outcome tables for router tests: now in ``tests/shared_tables.py`` (one home), re-exported here."""

from __future__ import annotations

from shared_tables import COSTS, VOCAB, held_out_prompts, prompt, right, separable_table

__all__ = ["COSTS", "VOCAB", "held_out_prompts", "prompt", "right", "separable_table"]
