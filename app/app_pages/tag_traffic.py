"""Tag traffic: hand-tag a sample of production prompts by difficulty; every tag is saved as it is made."""

from __future__ import annotations

import numpy as np
import streamlit as st

from app import services, tagging
from evals.exceptions import WorkbenchError
from evals.paths import cache_dir

st.title("Tag traffic")
st.markdown(
    "The seed of most routing projects: a sample of real prompts tagged by hand by difficulty. Load a prompt "
    "log, tag a sample, and use the tag file with the **rules** and **classifier** routers."
)

with st.expander("Tag file format", expanded=False):
    st.markdown(
        "JSON Lines, UTF-8, one tag per line, appended and flushed to disk (fsync) the moment you click, so "
        "a closed tab loses nothing; opening the same file again resumes. Re-tagging a prompt appends a line "
        "and the **last line wins**. `prompt` and `category` are required; the rest is informational. It is "
        "a `prompt -> category` mapping: `app.tagging.read_tags(path)` returns it as a dict, and "
        "`app.tagging.apply_tags(table, tags)` puts it in an outcome table's `category` column, which the "
        "`category`, `classifier` / `cost-aware` (`use_category`) and `rules` (a `categories` rule) routers "
        "learn from."
    )
    st.code(
        '{"prompt": "What is 2+2?", "category": "simple", "tagged_at": "2026-11-30T18:59:01Z", "source": "log.csv"}',
        language="json",
    )

log = st.file_uploader(
    "Prompt log (CSV or JSONL with a prompt column)", type=["csv", "jsonl", "ndjson", "json"], key="tag_log"
)
if log is None:
    st.info("Upload a prompt log to start. Columns tried for the prompt: " + ", ".join(tagging._PROMPT_COLUMNS))
    st.stop()

try:
    prompts = tagging.read_prompt_log(log.name, log.getvalue())
except WorkbenchError as exc:
    st.error(f"**Prompt log rejected**: {exc}", icon=":material/error:")
    st.stop()

c1, c2, c3 = st.columns([3, 1, 1])
labels_text = c1.text_input("Labels (comma-separated)", ", ".join(tagging.DEFAULT_LABELS), key="tag_labels")
labels = list(dict.fromkeys(s.strip() for s in labels_text.split(",") if s.strip()))
n_sample = int(c2.number_input("Sample size", 1, len(prompts), min(100, len(prompts)), key="tag_n"))
seed = int(c3.number_input("Seed", 0, 2**31 - 1, 0, key="tag_seed"))
stem = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in log.name.rsplit(".", 1)[0]) or "prompts"
default_path = str(cache_dir() / "tags" / f"{stem}.tags.jsonl")
tag_path = st.text_input(
    "Tag file (JSONL; created on the first tag, resumed if it exists)", default_path, key="tag_path"
)
if len(labels) < 2:
    st.error("Give at least two labels, separated by commas.")
    st.stop()

try:
    store = tagging.TagStore(tag_path)
except (WorkbenchError, OSError) as exc:
    st.error(f"**Cannot use tag file** {tag_path!r}: {exc}", icon=":material/error:")
    st.stop()

# A seeded sample of the log, in a fixed order so that a reload resumes at the same place.
order = np.random.default_rng(seed).permutation(len(prompts))[:n_sample]
sample = prompts["prompt"].iloc[order].tolist()
skipped: set[str] = st.session_state.setdefault("tag_skipped", set())


def _tag(prompt: str, label: str) -> None:
    store.add(prompt, label, source=log.name)


done = sum(p in store.tags for p in sample)
st.progress(done / len(sample), text=f"{done} of {len(sample)} sampled prompts tagged - saved to {tag_path}")

todo = [p for p in sample if p not in store.tags and p not in skipped]
if todo:
    prompt = todo[0]
    st.subheader(f"Prompt {sample.index(prompt) + 1} of {len(sample)}")
    st.text_area(
        "Prompt",
        prompt,
        height=180,
        disabled=True,
        key=f"tag_prompt_{sample.index(prompt)}",
        label_visibility="collapsed",
    )
    buttons = st.columns(len(labels) + 1)
    for col, label in zip(buttons, labels, strict=False):
        col.button(
            label,
            key=f"tag_btn_{label}",
            on_click=_tag,
            args=(prompt, label),
            width="stretch",
            type="primary",
        )
    buttons[-1].button("Skip", key="tag_btn_skip", on_click=skipped.add, args=(prompt,), width="stretch")
else:
    st.success(f"All {len(sample)} sampled prompts are tagged or skipped." if sample else "Nothing to tag.")
    if skipped and st.button("Revisit skipped prompts", key="tag_unskip"):
        skipped.clear()
        st.rerun()

if store.tags:
    counts = store.counts()
    st.subheader("Tags so far")
    st.write(", ".join(f"**{k}**: {v}" for k, v in sorted(counts.items())) + f" (total {len(store)})")
    st.dataframe(
        [{"prompt": p[:200], "category": c} for p, c in reversed(list(store.tags.items()))],
        hide_index=True,
        width="stretch",
        key="tag_table",
    )
    st.download_button(
        "Download tag file",
        store.path.read_bytes(),
        file_name=store.path.name,
        mime="application/jsonl",
        key="tag_download",
    )

    st.subheader("Use the tags")
    current = services.current_source()
    st.caption(
        "Put the tags into the category column of the task set in use "
        f"(**{services.source_label(current)}**) where its prompts were tagged; the Compare page then "
        "routes on them."
    )
    if st.button("Apply tags to the task set", key="tag_apply"):
        try:
            tagged = tagging.apply_tags(services.load_table(current), dict(store.tags))
        except WorkbenchError as exc:
            st.error(str(exc))
        else:
            path = services.save_table(tagged)
            services.set_source(str(path))
            n_tagged = tagged.card.extra["tagged_samples"]
            st.success(f"{n_tagged} samples tagged; now using {path.name} (see Start / Compare).")
