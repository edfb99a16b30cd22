"""Streamlit entry: navigation and the sidebar. Pages are thin: widgets and calls into core."""
from __future__ import annotations

import sys
from pathlib import Path

# `streamlit run dashboard/app.py` puts dashboard/ on sys.path, not the repo root.
ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import streamlit as st  # noqa: E402

from core.config import load_settings  # noqa: E402

st.set_page_config(page_title="fal model comparison", page_icon=":material/compare:", layout="wide")

settings = load_settings()
with st.sidebar:
    summary = settings.public_summary()
    if settings.dry_run:
        st.warning("Dry run: no FAL_KEY, nothing is sent to fal.", icon=":material/science:")
    else:
        st.success("fal: live", icon=":material/cloud_done:")
    st.caption(f"Storage: {summary['storage']}")
    st.caption(f"Data: {summary['data_dir']}")

pages = [
    st.Page("upload.py", title="Upload", icon=":material/upload:", default=True),
    st.Page("generate.py", title="Generate", icon=":material/auto_awesome:"),
    st.Page("compare.py", title="Compare", icon=":material/compare:"),
    st.Page("history.py", title="History", icon=":material/history:"),
]
st.navigation(pages).run()
