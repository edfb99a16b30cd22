"""Compare page."""
import streamlit as st

st.title("Compare")
st.info("This page arrives with the dashboard issue.")
