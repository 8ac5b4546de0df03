"""RouteLab's Streamlit app: compare LLM routers on the quality-versus-cost frontier.

Start it with ``streamlit run app`` (Streamlit runs ``app/streamlit_app.py``) or
``streamlit run app/streamlit_app.py``. It binds to 127.0.0.1 (see ``app/.streamlit/config.toml``).

This file only builds the navigation; each page is a thin script in ``app/app_pages/`` (not ``pages/``, which
would trigger Streamlit's legacy auto-discovery) and the logic lives in ``routers/``, ``evals/`` and
``app/services.py``.
"""

from __future__ import annotations

import sys
from pathlib import Path

# Pages import ``app.services``; make the checkout importable however Streamlit was started.
_ROOT = Path(__file__).resolve().parent.parent
if str(_ROOT) not in sys.path:
    sys.path.insert(0, str(_ROOT))

import streamlit as st  # noqa: E402

from app import services  # noqa: E402

st.set_page_config(page_title="RouteLab", page_icon=":material/alt_route:", layout="wide")

PAGES = [
    st.Page("app_pages/start.py", title="Start", icon=":material/dataset:", default=True),
    st.Page("app_pages/compare.py", title="Compare", icon=":material/insights:"),
    st.Page("app_pages/drilldown.py", title="Drill down", icon=":material/search:"),
    st.Page("app_pages/experiments.py", title="Experiments", icon=":material/science:"),
    st.Page("app_pages/tag_traffic.py", title="Tag traffic", icon=":material/label:"),
    st.Page("app_pages/export.py", title="Export", icon=":material/output:"),
    st.Page("app_pages/production.py", title="Production", icon=":material/monitoring:"),
]

# Build the default routers' encoder in the background from the first page view on (a no-op once done).
services.start_encoder_warmup()

page = st.navigation(PAGES)
with st.sidebar:
    st.caption(f"Task set: **{services.source_label(services.current_source())}**")
page.run()
