"""Tag traffic page: load a prompt log, tag prompts (saved at once), resume after a reload."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from app_fixtures import APP, TIMEOUT  # type: ignore[import-not-found]
from streamlit.testing.v1 import AppTest

LOG = (
    "id,prompt\n" + "".join(f"{i},Question {i}: what is {i}+{i}?\n" for i in range(8)) + "8,Question 0: what is 0+0?\n"
)


def _page(tag_file: Path) -> AppTest:
    at = AppTest.from_file(str(APP), default_timeout=TIMEOUT)
    at.run()
    at.switch_page("app_pages/tag_traffic.py").run()
    assert not at.exception, at.exception
    at.file_uploader(key="tag_log").upload("log.csv", LOG.encode(), "text/csv")
    at.run()
    at.text_input(key="tag_path").set_value(str(tag_file)).run()
    at.number_input(key="tag_n").set_value(5).run()
    assert not at.exception, at.exception
    return at


@pytest.mark.slow
def test_tags_are_written_as_made_and_resume(app_env: Path) -> None:
    tag_file = app_env / "tags.jsonl"
    at = _page(tag_file)
    shown = [t.value for t in at.text_area]
    assert len(shown) == 1 and shown[0].startswith("Question ")
    first = shown[0]
    at.button(key="tag_btn_hard").click().run()
    # written to disk immediately, one JSON line with the prompt and its category
    lines = tag_file.read_text().splitlines()
    assert [json.loads(x)["category"] for x in lines] == ["hard"]
    assert json.loads(lines[0])["prompt"] == first
    second = at.text_area[0].value
    assert second != first
    at.button(key="tag_btn_simple").click().run()
    assert "2 of 5 sampled prompts tagged" in at.get("progress")[0].proto.text

    # a fresh session (closed tab) on the same file resumes: the two tagged prompts are not shown again
    again = _page(tag_file)
    assert "2 of 5 sampled prompts tagged" in again.get("progress")[0].proto.text
    assert again.text_area[0].value not in (first, second)
    from app.tagging import read_tags

    assert read_tags(tag_file) == {first: "hard", second: "simple"}


def test_custom_labels_and_skip(app_env: Path) -> None:
    tag_file = app_env / "custom.jsonl"
    at = _page(tag_file)
    at.text_input(key="tag_labels").set_value("code, chat, math").run()
    labels = [b.label for b in at.button if b.key and b.key.startswith("tag_btn_")]
    assert labels == ["code", "chat", "math", "Skip"]
    first = at.text_area[0].value
    at.button(key="tag_btn_skip").click().run()
    assert at.text_area[0].value != first
    assert not tag_file.exists()  # skipping writes nothing
    at.button(key="tag_btn_math").click().run()
    assert list(json.loads(line)["category"] for line in tag_file.read_text().splitlines()) == ["math"]


def test_bad_log_is_rejected(app_env: Path) -> None:
    at = AppTest.from_file(str(APP), default_timeout=TIMEOUT)
    at.run()
    at.switch_page("app_pages/tag_traffic.py").run()
    at.file_uploader(key="tag_log").upload("log.csv", b"id,body\n1,hello\n", "text/csv").run()
    assert not at.exception, at.exception
    assert "no prompt column" in at.error[0].value and "body" in at.error[0].value


def test_read_tags_skips_a_torn_last_line_but_not_a_bad_middle_line(tmp_path: Path) -> None:
    from app.tagging import TagStore, read_tags
    from evals.exceptions import SchemaError

    path = tmp_path / "t.jsonl"
    store = TagStore(path)
    store.add("a", "simple")
    store.add("b", "hard")
    store.add("a", "medium")  # re-tag: last wins
    with open(path, "a") as fh:
        fh.write('{"prompt": "c", "categ')  # a crash mid-write
    assert read_tags(path) == {"a": "medium", "b": "hard"}
    path.write_text('{"prompt": "a"}\n{"prompt": "b", "category": "x"}\n')
    with pytest.raises(SchemaError, match=r"t.jsonl:1: a tag line needs string fields"):
        read_tags(path)


def test_apply_tags_to_the_task_set(app_env: Path) -> None:
    from app_fixtures import make_table  # type: ignore[import-not-found]

    prompts = make_table().prompts[:3]
    log = "prompt\n" + "".join(f'"{p}"\n' for p in prompts)
    at = AppTest.from_file(str(APP), default_timeout=TIMEOUT)
    at.run()
    at.switch_page("app_pages/tag_traffic.py").run()
    at.file_uploader(key="tag_log").upload("toy-log.csv", log.encode(), "text/csv").run()
    at.text_input(key="tag_path").set_value(str(app_env / "toy.tags.jsonl")).run()
    at.number_input(key="tag_n").set_value(3).run()
    for label in ("simple", "hard", "hard"):
        at.button(key=f"tag_btn_{label}").click().run()
    at.button(key="tag_apply").click().run()
    assert not at.exception, at.exception
    assert "3 samples tagged" in at.success[-1].value

    at.switch_page("app_pages/start.py").run()
    assert at.header[0].value == "Task set: toy-tagged"
    from collections import Counter

    from app import services

    counts = Counter(services.load_table(at.session_state["routelab_source"]).categories)
    assert counts["simple"] == 1 and counts["hard"] == 2  # the others keep their own categories
    assert sum(counts.values()) == 120
