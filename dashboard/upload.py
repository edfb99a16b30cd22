"""Upload page."""
import streamlit as st

st.title("Upload")
st.info("This page arrives with the dashboard issue.")
