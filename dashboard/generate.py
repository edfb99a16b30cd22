"""Generate page."""
import streamlit as st

st.title("Generate")
st.info("This page arrives with the dashboard issue.")
