"""Everything but the pages: prompts, endpoint registry and payload validation, fal client,
storage, the SQLite store, the batch runner, comparison metrics and CSV export.

Never imports streamlit. Modules are imported where used (`from core import prompts`), so
`python -m core` starts fast.
"""
