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

st.set_page_config(page_title="fal model comparison", page_icon="🖼️", layout="wide")

settings = load_settings()
with st.sidebar:
    summary = settings.public_summary()
    if settings.dry_run:
        st.warning("Dry run: no FAL_KEY, nothing is sent to fal.", icon="🧪")
    else:
        st.success("fal: live", icon="✅")
    st.caption(f"Storage: {summary['storage']}")
    st.caption(f"Data: {summary['data_dir']}")

pages = [
    st.Page("upload.py", title="Upload", icon="📤", default=True),
    st.Page("generate.py", title="Generate", icon="🎨"),
    st.Page("compare.py", title="Compare", icon="⚖️"),
    st.Page("history.py", title="History", icon="🗂️"),
]
st.navigation(pages).run()
