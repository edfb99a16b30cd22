"""History page."""
import streamlit as st

st.title("History")
st.info("This page arrives with the dashboard issue.")
