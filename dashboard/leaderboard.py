"""Leaderboard page: which model wins the blind review and where, how sure we are, whether raters
agree, how faithful each model is to the reference, and what each costs and how long it takes.
Every number comes from core/evaluation/comparison.py (definitions there); this page draws it.

It opens on the batch with the newest vote (else the newest batch): a new batch nobody reviewed
yet must not hide the votes just cast. Wide tables show the columns that decide by default;
*Show all columns* brings back the rest.
"""
from __future__ import annotations

import datetime as dt
from typing import Any

import pandas as pd
import streamlit as st

from core.evaluation import tally
from core.export import comparison
from core.evaluation import fidelity
from core.catalog import registry
from core.store import open_store
from core.values import SAME_PERSON_THRESHOLD
from dashboard import _format, _identity, _metrics_views, _onboarding, _resources

ALL = "__all__"
FACTOR_LABELS = {"pose": "Pose", "style": "Style", "lighting": "Lighting", "angle": "Angle",
                 "aspect_ratio": "Aspect ratio"}
METRICS = {"face_distance": f"Face distance (under {SAME_PERSON_THRESHOLD} = same person)", "phash_distance": "Perceptual hash distance",
           "ciede2000": "Colour difference (CIEDE2000)", "ssim": "SSIM (edit outputs only)"}

state = st.session_state
store = _resources.store()


def _label(key: str) -> str:
    """A contender's label (a model's, for a key that is an endpoint)."""
    if key in selection.labels:
        return selection.labels[key]
    return registry.endpoint_label(key)


def _money(value: float | None) -> str:
    return "—" if value is None else f"${value:.4f}"


def _rates_frame(rates) -> pd.DataFrame:
    return pd.DataFrame([{
        "model": _label(r.model), "win rate": None if r.n == 0 else r.rate, "low": r.low, "high": r.high,
        "wins": r.wins, "losses": r.losses, "ties": r.ties, "decisive votes": r.n,
    } for r in rates])


def _n(field: str, **extra: Any) -> dict[str, Any]:
    return {"field": field, "type": "nominal", **extra}


def _q(field: str, **extra: Any) -> dict[str, Any]:
    return {"field": field, "type": "quantitative", **extra}


# Charts are Vega-Lite specs written out: altair would validate every channel on every rerun
# (0.2-0.3 s per page view) for the same spec.
def _rate_chart(*, colour: str | None = None, x: str = "model") -> dict[str, Any]:
    """Win rates as bars with their Wilson interval as a rule, a dashed line at 50%."""
    enc = {"color": _n(colour, title=None)} if colour else {}
    offset = {"xOffset": _n(colour)} if colour else {}
    tooltip = [_n(x), *([_n(colour)] if colour else []), _q("win rate", format=".0%"), _q("low", format=".0%"),
               _q("high", format=".0%"), _q("wins"), _q("losses"), _q("ties")]
    return {"height": 260, "layer": [
        {"mark": {"type": "bar", "opacity": 0.75}, "encoding": {
            "x": _n(x, title=None, axis={"labelAngle": 0, "labelLimit": 0}),
            "y": _q("win rate", scale={"domain": [0, 1]},
                    axis={"format": "%", "title": "win rate (bar: 95% Wilson interval)"}),
            "tooltip": tooltip, **enc, **offset}},
        {"mark": {"type": "rule", "color": "black", "strokeWidth": 2},
         "encoding": {"x": _n(x), "y": _q("low", title=None), "y2": {"field": "high"}, **offset}},
        {"data": {"values": [{"y": 0.5}]}, "mark": {"type": "rule", "strokeDash": [4, 4], "color": "gray"},
         "encoding": {"y": _q("y", title=None)}},
    ]}


st.title("Leaderboard")
batches = store.list_batches(limit=200)
names = {ALL: "all batches", **{b.id: f"{b.name} · {_format.short_time(b.created_at)}" for b in batches}}
if state.get("lb_batch") not in names:
    # the batch with the newest vote, else the newest batch: the one being reviewed
    voted = store.newest_voted_batch()
    state.lb_batch = voted if voted in names else (batches[0].id if batches else ALL)
pick, every, dl = st.columns([3, 1, 1], vertical_alignment="bottom")
choice = pick.selectbox("Batch", list(names), key="lb_batch", format_func=names.get)
show_all = every.toggle("Show all columns", key="lb_all_columns",
                        help="The tables show the columns that decide by default; this adds the rest.")
batch_id = None if choice == ALL else choice
version = tally.data_version(store, batch_id=batch_id)
outputs_version = tally.outputs_version(store, batch_id=batch_id) if batch_id else None


# What a batch's requests and images say (cost, latency, fidelity) is kept by their write stamp,
# which a vote leaves: after a vote only the votes are read again.
@st.cache_data(max_entries=16, show_spinner=False)
def _outputs(db_path: str, batch: str, outputs_version: tuple) -> tally.Outputs:  # noqa: ARG001 - cache key
    store = open_store(db_path, migrate=False)
    try:
        return tally.batch_outputs(store, batch_id=batch)
    finally:
        store.close()


# The figures read every vote, request and image of the selection once (over every batch: each
# batch's figures kept in the store, merged): computed once per data version.
@st.cache_data(max_entries=16, show_spinner="Aggregating…")
def _figures(db_path: str, batch: str | None, version: tuple,  # noqa: ARG001 - cache key
             outputs_version: tuple | None) -> tally.Figures:
    kept = _outputs(db_path, batch, outputs_version) if batch is not None else None
    store = open_store(db_path, migrate=False)
    try:
        return tally.figures(store, batch_id=batch, outputs=kept)
    finally:
        store.close()


_metrics_views.ensure_measured()
figures = _figures(_resources.store_location(), batch_id, version, outputs_version)
selection = figures.selection


def _comparison_csv(db_path, batch) -> bytes:
    store = open_store(db_path)  # runs on click, outside the script thread: its own connection
    try:
        return comparison.to_csv_bytes(store, batch_id=batch)
    finally:
        store.close()


dl.download_button(
    "Comparison CSV", data=lambda: _comparison_csv(_resources.store_location(), batch_id),
    file_name=f"comparison-{dt.date.today()}.csv", mime="text/csv", icon=":material/download:",
    on_click="ignore", key="lb_csv",
    help="One row per group: options, each model's payload hash, image URL and metrics, and the votes. "
         "Images still being measured have empty metric cells (`python -m core export --comparison` "
         "measures them first).")

# ---------------------------------------------------------------------------- votes

board = figures.board
st.header("Blind review")
if board.votes == 0:
    st.info("No votes yet: judge pairs on the Review page.", icon=":material/rate_review:")
else:
    m = st.columns([1, 1, 1, 3])
    m[0].metric("Votes", board.votes)
    m[1].metric("Raters", board.raters)
    m[2].metric("Groups judged", board.groups)
    m[3].metric("Best (Bradley-Terry)", _label(board.ranking[0]) if board.ranking else "—")
    rates = _rates_frame(board.win_rates)
    rates["strength (BT)"] = [board.strengths.get(r.model) for r in board.win_rates]
    st.vega_lite_chart(rates, _rate_chart(), width="stretch", key="lb_rates_chart")
    # full width under the chart: every column, the model names uncut, no sideways scrolling
    st.dataframe(_format.table(rates.drop(columns=["low", "high"]).assign(
        **{"95% interval": [f"{lo:.0%}–{hi:.0%}" for lo, hi in zip(rates["low"], rates["high"])]})),
        hide_index=True, width="stretch", column_config={
            "win rate": st.column_config.NumberColumn(format="percent"),
            "strength (BT)": st.column_config.NumberColumn(format="%.3f")}, key="lb_rates")
    st.caption("Win rate = wins / decisive votes; ties (both good, both bad) are counted beside it. The bar "
               "is the 95% Wilson interval (votes treated as independent). Bradley-Terry uses every pair.")
    if board.intervals and len(board.intervals) > 2:
        st.subheader("Strengths (Bradley-Terry)")
        st.dataframe(pd.DataFrame([{
            "contender": _label(s.model), "strength": s.strength, "95% interval": f"{s.low:.3f}–{s.high:.3f}",
            "rank": f"{s.rank_low}" if s.rank_low == s.rank_high else f"{s.rank_low}–{s.rank_high}",
            "votes": s.votes} for s in board.intervals]), hide_index=True, width="stretch", key="lb_strengths",
            column_config={"strength": st.column_config.NumberColumn(format="%.3f")})
        st.caption("Strengths sum to 1 over the contenders; the interval and the rank range come from 200 "
                   "bootstrap resamples of whole groups. Overlapping intervals: the order is not settled yet.")
    if len(board.strengths) > 2:
        st.subheader("Head to head")
        st.dataframe(_format.table(pd.DataFrame([{"model A": _label(a), "model B": _label(b), "A wins": aw,
                                                  "B wins": bw, "ties": t}
                                                 for (a, b), (aw, bw, t) in board.pairwise.items()])),
                     hide_index=True, width="stretch", key="lb_pairs")

    if board.breakdowns:
        st.subheader("Where each model wins")
        factor = st.selectbox("By option", list(board.breakdowns), key="lb_factor",
                              format_func=lambda f: FACTOR_LABELS.get(f, f))
        parts = []
        for value, value_rates in board.breakdowns[factor].items():
            frame = _rates_frame(value_rates)
            frame.insert(0, "value", value)
            parts.append(frame)
        by_value = pd.concat(parts, ignore_index=True)
        st.vega_lite_chart(by_value, _rate_chart(colour="model", x="value"), width="stretch",
                           key="lb_factor_chart")
        st.dataframe(_format.table(by_value), hide_index=True, width="stretch", key="lb_factor_table", column_config={
            "win rate": st.column_config.NumberColumn(format="percent"),
            "low": st.column_config.NumberColumn(format="percent"),
            "high": st.column_config.NumberColumn(format="percent")})

    if board.axes:
        st.subheader("What each setting buys (votes)")
        st.caption("Only votes between two contenders that differ in this one setting and nothing else.")
        for axis, axis_rates in board.axes.items():
            st.markdown(f"**{axis}**")
            st.dataframe(_rates_frame(axis_rates).rename(columns={"model": "value"}), hide_index=True,
                         width="stretch", key=f"lb_axis_{axis}",
                         column_config={k: st.column_config.NumberColumn(format="percent")
                                        for k in ("win rate", "low", "high")})

    st.subheader("Agreement between raters")
    a = board.agreement
    if not a["groups"]:
        st.caption("No group was judged by more than one rater yet.")
    else:
        c = st.columns(4)
        c[0].metric("Groups with several raters", a["groups"])
        c[1].metric("Unanimous", f"{a['unanimous_share']:.0%}")
        c[2].metric("Fleiss' kappa", "—" if a["fleiss_kappa"] is None else f"{a['fleiss_kappa']:.2f}")
        c[3].metric("Cohen's kappa", "—" if a["cohen_kappa"] is None else f"{a['cohen_kappa']:.2f}")
        st.caption("Kappa: 1 = full agreement, 0 = what chance alone gives. Cohen's only when exactly two "
                   "raters judged every shared group.")

# ---------------------------------------------------------------------------- swept settings

axes = figures.axes
if axes:
    st.header("What each setting buys")
    st.caption("Per swept setting: win rate (votes between contenders differing in it alone), fidelity "
               "to the reference, cost and latency over every output with that value.")
    st.dataframe(pd.DataFrame([{
        "setting": a.axis, "value": a.value, "contenders": a.contenders,
        "win rate": None if a.win_rate is None or a.win_rate.n == 0 else a.win_rate.rate,
        "95% interval": "—" if a.win_rate is None or a.win_rate.n == 0
        else f"{a.win_rate.low:.0%}–{a.win_rate.high:.0%}",
        "decisive votes": 0 if a.win_rate is None else a.win_rate.n,
        "images": a.images, "same person": a.same_person_share,
        "face distance (median)": a.face_distance_median, "per image": _money(a.cost_per_image),
        "inference median s": a.inference_median_s, "total median s": a.total_median_s,
    } for a in axes]), hide_index=True, width="stretch", key="lb_axes", column_config={
        "win rate": st.column_config.NumberColumn(format="percent"),
        "same person": st.column_config.NumberColumn(format="percent"),
        "face distance (median)": st.column_config.NumberColumn(format="%.3f"),
        "inference median s": st.column_config.NumberColumn(format="%.2f"),
        "total median s": st.column_config.NumberColumn(format="%.2f")})

# ---------------------------------------------------------------------------- fidelity

st.header("Fidelity to the reference")
fid = figures.fidelity
if not fid:
    st.info("No result images yet.", icon=":material/straighten:")
else:
    pending = sum(f.pending for f in fid)
    errors = sum(f.errors for f in fid)
    if pending:
        st.caption(f"{pending} image(s) are being measured in the background; reload to see them.")
    if errors:
        if _identity.may("run") and st.button(f"Measure the {errors} failed image(s) again", key="lb_retry",
                                              icon=":material/refresh:"):
            fidelity.reset(store, batch_id=batch_id, failed=True)
            state.pop("_metrics_triggered_at", None)
            _metrics_views.ensure_measured()
            st.rerun()
    fid_frame = pd.DataFrame([{
        "model": f.label or _label(f.endpoint), "images": f.images, "measured": f.measured,
        "same person": None if f.same_person_share is None else f.same_person_share,
        "faces compared": f.faces_compared, "no face in output": f.no_face_output,
        "face distance (median)": f.face_distance["median"], "phash (median)": f.phash_distance["median"],
        "ΔE2000 (median)": f.ciede2000["median"], "SSIM (median)": f.ssim["median"],
        "surprises": f.surprises, "errors": f.errors,
    } for f in fid])
    if not show_all:
        fid_frame = fid_frame.drop(columns=["faces compared", "no face in output", "errors"])
    st.dataframe(_format.table(fid_frame), hide_index=True, width="stretch", key="lb_fidelity", column_config={
        "same person": st.column_config.NumberColumn(format="percent"),
        "face distance (median)": st.column_config.NumberColumn(format="%.3f"),
        "ΔE2000 (median)": st.column_config.NumberColumn(format="%.1f"),
        "SSIM (median)": st.column_config.NumberColumn(format="%.3f")})
    frame = figures.metrics
    metric = st.selectbox("Distribution of", list(METRICS), key="lb_metric", format_func=METRICS.get)
    measured = frame[metric].notna()
    shown = pd.DataFrame({"model": frame["contender"][measured], metric: frame[metric][measured]})
    if shown.empty:
        st.caption("No measured value for this metric yet.")
    else:
        box = {"mark": {"type": "boxplot", "extent": "min-max"}, "encoding": {
            "x": _n("model", title=None, axis={"labelAngle": 0}), "y": _q(metric, title=METRICS[metric]),
            "color": _n("model", legend=None)}}
        if metric == "face_distance":
            box = {"layer": [box, {"data": {"values": [{"y": SAME_PERSON_THRESHOLD}]},
                                   "mark": {"type": "rule", "strokeDash": [4, 4], "color": "red"},
                                   "encoding": {"y": _q("y")}}]}
        st.vega_lite_chart(shown, {"height": 260, **box}, width="stretch", key="lb_metric_chart")

# ---------------------------------------------------------------------------- cost and latency

st.header("Cost and latency")
costs = figures.costs
if not costs:
    st.info("No requests yet.", icon=":material/payments:")
else:
    cost_frame = pd.DataFrame([{
        "model": c.label or _label(c.endpoint), "requests": c.requests, "completed": c.completed, "failed": c.failed,
        "queue median s": c.queue_s["median"], "queue p90 s": c.queue_s["p90"],
        "inference median s": c.inference_s["median"], "inference p90 s": c.inference_s["p90"],
        "total median s": c.total_s["median"], "total p90 s": c.total_s["p90"],
        "cost (est.)": _money(c.cost), "per image": _money(c.cost_per_image),
        "per preferred image": _money(c.cost_per_preferred_image),
        "preferred / reviewed": f"{c.preferred_outputs} / {c.reviewed_outputs}",
    } for c in costs])
    if not show_all:  # the money and the typical wait; the rest behind "Show all columns"
        cost_frame = cost_frame[["model", "completed", "failed", "total median s", "total p90 s",
                                 "cost (est.)", "per image", "per preferred image"]]
    st.dataframe(_format.table(cost_frame), hide_index=True, width="stretch", key="lb_costs", column_config={
        f"{k} {s} s": st.column_config.NumberColumn(format="%.2f")
        for k in ("queue", "inference", "total") for s in ("median", "p90")})
    st.caption("Costs are the estimates made when planning, not fal's bill. A preferred image is an output "
               "judged good (won, or both good) more often than not; per preferred image = cost of the "
               "reviewed outputs / preferred ones.")
    latency = pd.DataFrame([{"model": c.label or _label(c.endpoint), "phase": phase, "statistic": stat,
                             "seconds": summary[stat]}
                            for c in costs for phase, summary in (("queue", c.queue_s), ("inference", c.inference_s))
                            for stat in ("median", "p90") if summary[stat] is not None])
    if not latency.empty:
        st.vega_lite_chart(latency, {"height": 220, "width": 220, "mark": {"type": "bar"}, "encoding": {
            "x": _n("model", title=None, axis={"labelAngle": 0, "labelLimit": 0}), "xOffset": _n("statistic"),
            "y": _q("seconds"), "color": _n("statistic", title=None), "column": _n("phase", title=None),
            "tooltip": [_n("model"), _n("phase"), _n("statistic"), _q("seconds", format=".2f")]}},
            key="lb_latency_chart")

_onboarding.next_step("generate.py", "try another batch on Generate",
                  "Change an option or a parameter where a model loses, run it, and review it again.")
