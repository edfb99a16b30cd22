"""Fidelity metrics and response checks on the pages: the Compare tab and the trigger that
starts the background worker. Rendering only; numbers come with each `ResultImage.metrics`.

Invariants:
- A page never measures: `ensure_measured` at most starts the detached worker
  (`fidelity.start_background`), and at most once per `_TRIGGER_EVERY_S` per browser session,
  so reruns do not spawn processes while the worker is still starting.
"""
from __future__ import annotations

import time

import pandas as pd
import streamlit as st

from core.evaluation import fidelity
from core.catalog import registry
from core.values import Batch, Group, RequestRecord
from core.values import SAME_PERSON_THRESHOLD
from core.errors import DashboardError
from dashboard import _format, _resources

_TRIGGER_EVERY_S = 15.0


def ensure_measured() -> None:
    """Start the background metrics worker if images are pending and none is running."""
    last = st.session_state.get("_metrics_triggered_at", 0.0)
    if time.monotonic() - last < _TRIGGER_EVERY_S:
        return
    st.session_state["_metrics_triggered_at"] = time.monotonic()
    try:
        fidelity.start_background(_resources.settings())
    except (OSError, DashboardError) as e:  # the page still works; metrics stay pending
        st.caption(f"Metrics worker not started ({e}); run `python -m core metrics`.")


def metrics_tab(batch: Batch, groups: list[Group],
                requests: dict[str, list[RequestRecord]]) -> None:
    """Compare tab: per group on view, each model's fidelity to the reference and its checks."""
    store = _resources.store()
    ensure_measured()
    reqs = [r for g in groups for r in requests.get(g.id, [])]
    images = store.result_images([r.id for r in reqs])
    rows = []
    for g in groups:
        for r in requests.get(g.id, []):
            for image in images[r.id]:
                m = image.metrics
                rows.append({
                    "seed": g.seed, "model": registry.endpoint_label(r.endpoint) + (" (re-run)" if r.rerun_of else ""),
                    "image": image.idx,
                    "face": m.face_status,
                    "face distance": m.face_distance,
                    "same person": m.same_person,
                    "phash": m.phash_distance,
                    "ΔE2000": m.ciede2000,
                    "SSIM": m.ssim,
                    "surprises": ", ".join(m.check_flags),
                    "size": "" if m.pixel_width is None else
                    f"{m.pixel_width}x{m.pixel_height}"
                    + (f" (asked {m.requested_width}x{m.requested_height})"
                       if m.requested_width and (m.requested_width, m.requested_height)
                       != (m.pixel_width, m.pixel_height) else ""),
                    "error": m.metrics_error,
                    "prompt": g.prompt,   # last: long, and the same for every model of a group
                })
    if not rows:
        st.info("No result images on this page yet.", icon=":material/straighten:")
        return
    pending = sum(1 for r in rows if r["face"] is None)
    if pending:
        st.caption(f"{pending} image(s) still being measured in the background; reload to see them.")
    st.caption("Face distance: dlib identity distance to the group's first reference (under "
               f"{SAME_PERSON_THRESHOLD} = same person). phash: 0-64 bits differing. ΔE2000: mean colour difference. SSIM: only for edit "
               "outputs, which keep the reference's framing.")
    frame = pd.DataFrame(rows)
    if not st.toggle("Show all columns", key="cmp_metrics_all",
                     help="The numbers that decide are shown by default; this adds the size check, "
                          "measuring errors and the prompt."):
        frame = frame.drop(columns=["size", "error", "prompt"])
    st.dataframe(_format.table(frame), hide_index=True, width="stretch", column_config={
        "face distance": st.column_config.NumberColumn(format="%.3f"),
        "ΔE2000": st.column_config.NumberColumn(format="%.1f"),
        "SSIM": st.column_config.NumberColumn(format="%.3f"),
    }, key="cmp_metrics_table")

