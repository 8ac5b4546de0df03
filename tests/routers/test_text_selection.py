"""Text selection on templated prompts: a long fixed system prompt + a 5-shot block + the question."""

from __future__ import annotations

import json

import numpy as np
import pytest

from evals.serving.wire import prompt_of
from routers import runtime
from routers.text_selection import TEXT_MODES, TextSelector, head_and_tail

SYSTEM = (
    "You are a careful assistant. Answer the multiple-choice question below.\n"
    "Think step by step, then finish with 'The answer is (X)'.\n"
)
SHOTS = "".join(
    f"Question: example question number {i} about topic {i}?\nOptions: (A) yes (B) no\n"
    f"Answer: Let's think step by step. The answer is (A).\n\n"
    for i in range(5)
)
SUFFIX = "\nAnswer: Let's think step by step."
QUESTIONS = [
    "Which planet is the largest in the solar system?\nOptions: (A) Mars (B) Jupiter",
    "What is the derivative of x squared?\nOptions: (A) 2x (B) x",
    "Who wrote the novel War and Peace?\nOptions: (A) Tolstoy (B) Chekhov",
    "Which gas do plants absorb from the air?\nOptions: (A) oxygen (B) carbon dioxide",
]


def templated(question: str) -> str:
    return SYSTEM + SHOTS + "Question: " + question + SUFFIX


def test_question_mode_strips_the_learned_template_exactly():
    sel = TextSelector.fit([templated(q) for q in QUESTIONS], "question")
    assert sel.prefix == SYSTEM + SHOTS  # cut back to the line break before "Question: " (no split word)
    assert sel.suffix == SUFFIX
    for q in QUESTIONS:
        assert sel.select(templated(q)) == "Question: " + q
    # A new request with the same template: the same stripping.
    assert sel.select(templated("What is 2 + 2?")) == "Question: What is 2 + 2?"
    # A request without the template is left alone.
    assert sel.select("plain text, no template") == "plain text, no template"


def test_recurring_lines_are_removed_when_the_template_is_not_at_the_ends():
    # The 5-shot block sits after a per-request header line, so it is not a shared prefix: its lines recur.
    names = ["Alice", "Bob", "Carol", "Dan"]
    prompts = [f"{names[i]} asks:\n" + SHOTS + "Question: " + q for i, q in enumerate(QUESTIONS)]
    sel = TextSelector.fit(prompts, "auto")
    assert sel.prefix == "" and "Options: (A) yes (B) no" in sel.recurring_lines
    assert "Alice asks:" not in sel.recurring_lines  # in one prompt of four: not template
    out = sel.select(prompts[1])
    assert out.startswith("Bob asks:\n") and out.endswith(QUESTIONS[1])
    assert "example question" not in out
    # line_share: a line in 3 of 4 prompts recurs at 0.5 but not at 0.75.
    extra = [p + ("\nPlease be brief." if i < 3 else "") for i, p in enumerate(prompts)]
    assert "Please be brief." in TextSelector.fit(extra, "auto").recurring_lines
    assert "Please be brief." not in TextSelector.fit(extra, "auto", line_share=0.75).recurring_lines


def test_auto_falls_back_to_the_whole_text_when_all_is_template_and_question_does_not():
    sel_auto = TextSelector.fit([templated(q) for q in QUESTIONS], "auto")
    sel_q = TextSelector.fit([templated(q) for q in QUESTIONS], "question")
    all_template = SYSTEM + SHOTS + SUFFIX
    assert sel_auto.select(all_template) == all_template
    assert sel_q.select(all_template) == ""


def test_full_and_last_user_learn_nothing_and_full_changes_nothing():
    prompts = [templated(q) for q in QUESTIONS]
    full = TextSelector.fit(prompts, "full", max_chars=10)
    assert full == TextSelector(mode="full", max_chars=10) and not full.changes_text
    assert full.select(prompts[0]) == prompts[0]  # no cut either: "full" is the old behaviour
    last = TextSelector.fit(prompts, "last_user", max_chars=40)
    assert last.prefix == "" and last.recurring_lines == ()
    assert last.select(prompts[0]) == head_and_tail(prompts[0], 40)


def test_chats_route_on_the_last_user_message_like_the_proxy():
    chat = [
        {"role": "system", "content": SYSTEM},
        {"role": "user", "content": "first question"},
        {"role": "assistant", "content": "an answer"},
        {"role": "user", "content": [{"type": "text", "text": "second "}, {"type": "text", "text": "question"}]},
    ]
    assert prompt_of(chat) == "second question"  # the one rule (evals.serving.wire), also what the proxy reads
    for mode in TEXT_MODES:
        assert TextSelector(mode=mode).select(chat) == "second question"
        assert TextSelector(mode=mode).select([{"role": "system", "content": "only a system prompt"}]) == ""
    # The template is learned from (and stripped in) the last user message.
    chats = [[{"role": "system", "content": SYSTEM}, {"role": "user", "content": templated(q)}] for q in QUESTIONS]
    sel = TextSelector.fit(chats, "auto")
    assert sel.select(chats[2]) == "Question: " + QUESTIONS[2]
    assert sel.select(chats[2]) == sel.select(templated(QUESTIONS[2]))


def test_long_texts_keep_head_and_tail():
    text = "HEAD " + "x" * 100 + " TAIL"
    assert head_and_tail(text, None) == text and head_and_tail(text, 1000) == text
    cut = head_and_tail(text, 20)
    assert cut == text[:10] + "\n" + text[-10:] and cut.startswith("HEAD") and cut.endswith("TAIL")
    sel = TextSelector.fit([templated(q + " " + "filler " * 50) for q in QUESTIONS], "auto", max_chars=60)
    out = sel.select(templated(QUESTIONS[0] + " " + "filler " * 50))
    assert out.startswith("Question: Which planet") and len(out) == 61


def test_state_round_trips_through_json_and_strips_the_same():
    prompts = [templated(q) for q in QUESTIONS]
    sel = TextSelector.fit(prompts, "auto", max_chars=500)
    again = TextSelector.from_state(json.loads(json.dumps(sel.to_state())))
    assert again == sel
    assert again.select_many(prompts) == sel.select_many(prompts)
    with pytest.raises(ValueError, match="format"):
        TextSelector.from_state({**sel.to_state(), "format": 99})
    with pytest.raises(ValueError, match="lacks the field 'prefix'"):
        TextSelector.from_state({k: v for k, v in sel.to_state().items() if k != "prefix"})


def test_degenerate_inputs():
    # One distinct train text: no template (it would be the whole text).
    sel = TextSelector.fit([templated(QUESTIONS[0])] * 3, "auto")
    assert sel.prefix == sel.suffix == "" and sel.recurring_lines == ()
    # A shared prefix that is a whole train text is not learned.
    sel = TextSelector.fit(["same start\n", "same start\nmore"], "question")
    assert sel.prefix == ""
    with pytest.raises(ValueError, match="text must be one of"):
        TextSelector(mode="everything")
    with pytest.raises(ValueError, match="line_share"):
        TextSelector.fit(QUESTIONS, "auto", line_share=1.0)
    with pytest.raises(TypeError, match="string or a list of chat messages"):
        TextSelector().select(42)  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------- embedding routers
EMBEDDING_ROUTERS = ["classifier", "cost-aware", "irt-blend", "knn", "mf"]


def _templated_table():
    from evals.outcomes import OutcomeTable
    from routers.checks import check_table

    frame = check_table().frame.copy()
    frame["prompt"] = [templated(p) for p in frame["prompt"]]
    return OutcomeTable(frame)


@pytest.fixture(scope="module")
def table():
    return _templated_table()


@pytest.mark.parametrize("name", EMBEDDING_ROUTERS)
def test_every_embedding_router_takes_text_and_full_is_the_old_behaviour(name, table):
    from sklearn.base import clone

    from routers import Queries, router_registry

    cls = router_registry.get(name)
    base = cls(**cls._test_params)
    assert base.text == "full"
    queries = Queries.from_table(table)
    old = clone(base).fit(table)
    assert old.text_selection_state() is None
    assert "text_selection" not in json.dumps(old.export_state()[0])  # a "full" state is the old state
    # "full" given explicitly decides exactly like the default, and exports the same state.
    again = clone(base).set_params(text="full").fit(table)
    np.testing.assert_array_equal(again.predict_quality(queries), old.predict_quality(queries))
    assert again.export_state()[0] == old.export_state()[0]


@pytest.mark.parametrize("name", EMBEDDING_ROUTERS)
def test_a_text_rule_is_part_of_the_state_and_the_runtime_applies_it(name, table):
    from routers import Queries, router_registry

    cls = router_registry.get(name)
    r = cls(**{**cls._test_params, "text": "auto"}).fit(table)
    state = r.text_selection_state()
    assert state["mode"] == "auto" and state["prefix"] == SYSTEM + SHOTS and state["suffix"] == SUFFIX
    # The rule travels in the exported state (in each part of a blend), as plain JSON.
    meta, arrays = r.export_state()
    meta = json.loads(json.dumps(meta))
    rules = [meta.get("text_selection")] + [p.get("text_selection") for p in meta.get("parts", [])]
    assert state in rules
    # Routing a templated prompt is routing its question: the template is stripped before the encoder.
    q_templated = Queries.of([templated("easy task 1: add the two small numbers quickly")], ["easy"])
    q_bare = Queries.of(["Question: easy task 1: add the two small numbers quickly"], ["easy"])
    np.testing.assert_allclose(r.predict_quality(q_templated), r.predict_quality(q_bare))
    assert r.route(q_templated, 0.01) == r.route(q_bare, 0.01)
    # The runtime alone (what an export folder runs), rebuilt from the JSON state, decides the same.
    loaded = runtime.load_state(meta, arrays)
    queries = Queries.from_table(table)
    for lam in (0.0, 0.01, 1.0):
        np.testing.assert_array_equal(
            loaded.route_indices(list(queries.prompts), lam, queries.categories), r.route_indices(queries, lam)
        )
    np.testing.assert_allclose(loaded.predict_cost(list(queries.prompts)), r.predict_cost(Queries.of(queries.prompts)))


def test_the_token_cost_head_reads_the_whole_prompt_not_the_selected_text(table):
    """cost-aware fits input tokens on the length of the whole prompt (what is paid for); routing must too."""
    from routers import Queries, make_router

    r = make_router({"name": "cost-aware", "params": {"encoder": "hash-bow-64", "text": "auto"}}).fit(table)
    short, long_ = "Question: add two numbers", templated("add two numbers")
    cost = r.predict_cost(Queries.of([short, long_]))
    assert (cost[1] > cost[0]).all()  # the same selected text, a longer (dearer) prompt


def test_the_runtime_refuses_a_malformed_rule():
    sel = TextSelector.fit([templated(q) for q in QUESTIONS], "auto").to_state()
    assert runtime.check_text_selection(sel) is sel
    for bad, field in (
        ({**sel, "mode": "everything"}, "text_selection.mode"),
        ({**sel, "format": 2}, "text_selection.format"),
        ({**sel, "prefix": 3}, "text_selection.prefix"),
        ({**sel, "recurring_lines": "x"}, "text_selection.recurring_lines"),
        ({**sel, "max_chars": 1}, "text_selection.max_chars"),
    ):
        with pytest.raises(ValueError, match=field.replace(".", r"\.")):
            runtime.check_text_selection(bad)
        meta = {"format": 1, "kind": "linear", "models": ["a"], "encoder": "hash-bow-8", "text_selection": bad}
        with pytest.raises(ValueError, match=field.replace(".", r"\.")):
            runtime.load_state(meta, {"weights": np.zeros((1, 8)), "bias": np.zeros(1)})
        with pytest.raises(ValueError, match=field.replace(".", r"\.")):
            runtime.check_state_arrays(meta, {"weights": (1, 8), "bias": (1,), "cost_per_model": (1,)})


def test_text_is_validated_and_an_ensemble_member_may_select_text(table):
    from routers import Queries, make_router
    from routers.params import InvalidParameterError

    with pytest.raises(InvalidParameterError, match=r"parameter 'text' must be one of 'full', 'auto'"):
        make_router({"name": "knn", "params": {"text": "everything"}})
    members = [
        {"name": "knn", "params": {"k": 3, "text": "auto"}},
        {"name": "classifier", "params": {"text": "full"}},
    ]
    ens = make_router({"name": "ensemble", "params": {"encoder": "hash-bow-64", "members": members}}).fit(table)
    meta, arrays = ens.export_state()
    assert [p.get("text_selection", {}).get("mode") for p in meta["parts"]] == ["auto", None]
    # Each member embeds its own text (the blend does not share features between different rules).
    queries = Queries.from_table(table)
    knn = make_router({"name": "knn", "params": {"k": 3, "text": "auto", "encoder": "hash-bow-64"}}).fit(table)
    clf = make_router({"name": "classifier", "params": {"encoder": "hash-bow-64"}}).fit(table)
    w = np.asarray(meta["weights"], dtype=float)
    expected = (w[0] * knn.predict_quality(queries) + w[1] * clf.predict_quality(queries)) / w.sum()
    blended = runtime.load_state(meta, arrays).predict_quality(list(queries.prompts), queries.categories)
    np.testing.assert_allclose(blended, expected)


def test_an_eval_config_turns_text_selection_on_for_every_embedding_router():
    from evals.exceptions import ConfigError
    from evals.workbench.config import config_from_dict

    raw = {
        "name": "text",
        "dataset": {"source": "outcomes.csv"},
        "target": {"kind": "parity", "value": 0.01},
        "router_defaults": {"encoder": "hash-bow-64", "text": "auto"},
        "routers": [
            {"name": "knn"},
            {"name": "classifier", "params": {"text": "last_user"}},
            {"name": "category"},  # no text parameter: untouched
        ],
    }
    cfg = config_from_dict(raw)
    assert [spec["params"].get("text") for spec in cfg.routers] == ["auto", "last_user", None]
    with pytest.raises(ConfigError, match="text"):
        config_from_dict({**raw, "router_defaults": {"text": "everything"}})
