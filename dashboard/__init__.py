"""The Streamlit pages (thin: widgets, calls into core, rendering) and their shared helpers."""
