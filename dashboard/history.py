"""History page: every request, filterable and paginated (never the whole table), with a detail
view (payload exactly as sent, response, timings, cost, errors, images), the last payload sent,
a diff of two requests, re-run, and a CSV download of the filtered rows.

The table shows the columns a person reads first (image, time, model, status, prompt, options,
seed, cost, time); *Show all columns* adds the rest. A request that was never sent (dry run,
cancelled before sending) shows no cost and is never called "sent". The last payload sent shows
what left for fal: a local photo's `reference://<id>` as the data: URI it became (abbreviated).
"""
from __future__ import annotations

import dataclasses
import hashlib
import datetime as dt

import pandas as pd
import streamlit as st

from core.catalog import registry
from core.batches import explain, service
from core.photos import references
from core.values import HistoryFilter, RequestRecord
from core.values import REQUEST_STATUSES
from core.values import RequestStatus
from core.errors import DashboardError
from dashboard import _format, _identity, _onboarding, _resources, _widgets

PAGE_SIZES = (25, 50, 100)
TABLE_THUMB_PX = 96
DETAIL_THUMB_PX = 512

state = st.session_state
store = _resources.store()
endpoints = {e.id: e for e in registry.list_endpoints()}

st.title("History")

last = store.last_payload_sent()
with st.expander("Last payload sent to fal", icon=":material/send:", expanded=False):
    if last is None:
        st.caption("Nothing has been sent to fal yet (dry runs are recorded, never sent).")
    else:
        st.caption(f"{last.endpoint} · submitted {_format.short_time(last.submitted_at)} · request `{last.id}`")
        try:
            # what left: a local photo's reference://<id> became a data: URI at send time
            sent = references.resolve_payload(last.payload, store, _resources.storage())
        except DashboardError as e:
            sent = last.payload
            st.caption(f"A reference photo could not be read ({e}); shown as stored.")
        st.code(_format.payload_json(sent), language="json")


# ---------------------------------------------------------------------------- filters

batches = store.list_batches(limit=200)
batch_names = {b.id: f"{b.name} · {_format.short_time(b.created_at)}" for b in batches}
f1, f2, f3, f4, f5 = st.columns([2, 1.6, 2.2, 2.1, 2])
endpoint = f1.selectbox("Model", [None, *endpoints], key="hist_endpoint",
                        format_func=lambda e: "all models" if e is None else endpoints[e].label)
status = f2.selectbox("Status", [None, *(s.value for s in REQUEST_STATUSES)], key="hist_status",
                      format_func=lambda s: "any status" if s is None else s.replace("_", " "))
if state.get("hist_batch") and state.hist_batch not in batch_names:
    batch_names[state.hist_batch] = state.hist_batch  # a batch chosen elsewhere (e.g. Compare)
batch_id = f3.selectbox("Batch", [None, *batch_names], key="hist_batch",
                        format_func=lambda b: "all batches" if b is None else batch_names[b])
dates = f4.date_input("Dates", value=(), key="hist_dates", format="YYYY-MM-DD")
text = f5.text_input("Prompt contains", key="hist_text")
surprises_col, all_col = st.columns([1, 1])
show_all = all_col.toggle("Show all columns", key="hist_all_columns",
                          help="The table shows what is read first; this adds who ran it and the request id.")
surprises = surprises_col.toggle("Surprises only", key="hist_surprises",
                      help="Requests with an image whose response checks flagged something: another size "
                           "than asked, another seed, an NSFW flag (checked in the background after a run).")
date_from = dates[0] if len(dates) > 0 else None
date_to = dates[1] if len(dates) > 1 else date_from

page_size = state.get("hist_page_size", PAGE_SIZES[0])
flt = HistoryFilter(endpoint=endpoint, status=status, batch_id=batch_id, date_from=date_from,
                          date_to=date_to, text=text or None, surprises=surprises, page_size=page_size)
# one pager per filter: a new filter starts on page 1 without writing to a widget's state
page_key = "hist_page_" + hashlib.sha1(repr(flt).encode()).hexdigest()[:12]
flt = dataclasses.replace(flt, page=state.get(page_key, 1))
page = store.query_history(flt)
state.hist_filter = flt  # what the CSV download exports, exactly the rows shown (all pages)


# ---------------------------------------------------------------------------- table

head, dl = st.columns([3, 1], vertical_alignment="bottom")
head.markdown(f"**{page.total}** request{'s' if page.total != 1 else ''}"
              + (f" · page {page.page} of {page.pages}" if page.pages > 1 else ""))
dl.download_button(
    "Download CSV", data=lambda: _resources.history_csv(_resources.store_location(), flt), file_name=f"history-{dt.date.today()}.csv",
    mime="text/csv", icon=":material/download:", on_click="ignore", key="hist_csv",
    help="Every request matching the filters (all pages), one row per result image.")

images = store.result_images([r.id for r in page.rows])


def _thumb_uri(request_id: str) -> str | None:
    for image in images[request_id][:1]:
        data = _resources.thumbnail(image.storage_backend, image.storage_path, image.sha256 or image.id,
                                 size=TABLE_THUMB_PX)
        if data:
            return _format.data_uri(data)
        if image.fal_url and image.fal_url.startswith("http"):
            return image.fal_url
    return None


varying = explain.varying_options(r.options for r in page.rows)
table = pd.DataFrame([{
    "image": _thumb_uri(r.id),
    "created": _format.short_time(r.created_at),
    "model": registry.endpoint_label(r.endpoint),
    "status": ("dry run — not sent" if r.status == RequestStatus.DRY_RUN
               else "cancelled — not sent" if r.status == RequestStatus.CANCELLED and explain.never_sent(r)
               else r.status),
    "prompt": r.prompt,
    "options": ", ".join(f"{k.replace('_', ' ')} {r.options[k]}" for k in varying if k in r.options),
    "seed": r.seed,
    "cost $": None if explain.never_sent(r) else r.estimated_cost,
    "time s": r.total_time_s,
    "by": r.created_by,
    "id": r.id,
} for r in page.rows])
if page.rows:
    if not show_all:
        table = table.drop(columns=["by", "id"])
    if not varying:
        table = table.drop(columns=["options"])
    st.dataframe(_format.table(table), hide_index=True, row_height=TABLE_THUMB_PX // 2 + 8, column_config={
        "image": st.column_config.ImageColumn("image", width="small"),
        "created": st.column_config.TextColumn("created", width="small"),
        "prompt": st.column_config.TextColumn("prompt", width="medium"),
        "seed": st.column_config.NumberColumn("seed", width="small", format="%d"),
        "cost $": st.column_config.NumberColumn(format="%.4f", width="small",
                                                help="Estimated when planned; empty when nothing was sent."),
        "time s": st.column_config.NumberColumn(format="%.1f", width="small"),
    }, key="hist_table")
    if any(explain.never_sent(r) for r in page.rows):
        st.caption("Rows marked *not sent* (dry runs, requests cancelled before sending) cost nothing: "
                   "their cost cell is empty.")
else:
    st.info("No requests match these filters." if page.total == 0 and any(
        (endpoint, status, batch_id, date_from, text, surprises)) else
        "No requests yet: plan and run a batch on the Generate page.", icon=":material/history:")

p1, p2 = st.columns([4, 1], vertical_alignment="center")
with p1:
    if page.pages > 1:
        st.pagination(page.pages, key=page_key, max_visible_pages=9)
with p2:
    st.selectbox("Rows per page", PAGE_SIZES, key="hist_page_size")


# ---------------------------------------------------------------------------- detail and diff

def _label(r: RequestRecord) -> str:
    """Short enough not to be cut in the picker, and unique: the varying options (the pose…) and the
    id tell apart requests of one model and seed."""
    model = registry.endpoint_label(r.endpoint)
    opts = [f"{r.options[k]}" for k in varying if k in r.options]
    return " · ".join([r.id[:8], model, f"seed {r.seed}", *opts,
                       "dry run" if r.status == RequestStatus.DRY_RUN else r.status])


by_id = {r.id: r for r in page.rows}
if state.get("hist_detail") and state.hist_detail not in by_id:
    try:
        by_id[state.hist_detail] = store.get_request(state.hist_detail)  # opened, then paged away
    except DashboardError:
        del state.hist_detail
if not by_id:
    st.stop()

st.divider()
pick, other = st.columns(2)
detail_id = pick.selectbox("Open request", list(by_id), key="hist_detail", index=None,
                           format_func=lambda i: _label(by_id[i]), placeholder="choose a row of this page")
diff_id = other.selectbox("Diff its payload with", [i for i in by_id if i != detail_id], key="hist_diff",
                          index=None, format_func=lambda i: _label(by_id[i]),
                          placeholder="choose another request", disabled=detail_id is None)

if detail_id and diff_id:
    d = store.diff_payloads(detail_id, diff_id)
    with st.container(border=True):
        st.markdown(f"**Payload diff** `{detail_id[:8]}` → `{diff_id[:8]}`")
        if d.same:
            st.success("Same payload (same endpoint and body).", icon=":material/check:")
        else:
            st.dataframe(pd.DataFrame(
                [{"change": "changed", "field": e.path, "before": _format.cell(e.old), "after": _format.cell(e.new)}
                 for e in d.changed]
                + [{"change": "added", "field": e.path, "before": "", "after": _format.cell(e.new)} for e in d.added]
                + [{"change": "removed", "field": e.path, "before": _format.cell(e.old), "after": ""}
                   for e in d.removed]), hide_index=True, width="stretch")

if detail_id:
    r = store.get_request(detail_id)
    with st.container(border=True):
        st.markdown(f"### {_format.plain(registry.endpoint_label(r.endpoint))} "
                    f"{_widgets.status_badge(r.status)}")
        st.caption(f"request `{r.id}` · {r.endpoint} · created {_format.short_time(r.created_at)}"
                   + (f" by {_format.plain(r.created_by)}" if r.created_by else "")
                   + (f" · batch {_format.plain(batch_names.get(r.batch_id, r.batch_id))}" if r.batch_id else "")
                   + (f" · fal id `{r.fal_request_id}`" if r.fal_request_id else "")
                   + (f" · re-run of `{r.rerun_of[:8]}`" if r.rerun_of else ""))
        if r.dry_run:
            st.info("Dry run: this payload was recorded, never sent to fal.", icon=":material/science:")
        if r.status == RequestStatus.IN_DOUBT:
            st.warning("In doubt: this request was sent but fal never answered, so fal may hold it and "
                       "bill it. Look it up in fal's request history (fal.ai dashboard → Requests) "
                       "first. Then either send it again, knowing it may be paid twice, or give it up.",
                       icon=":material/help:")
            again, give_up, _ = st.columns([2, 2, 3])
            if _identity.may("resume") and again.button("Send again (may pay twice)", key="hist_doubt_again",
                                                        icon=":material/warning:"):
                try:
                    _identity.person().require("resume")
                    sent = service.send_again(store, r.batch_id, _resources.settings(),
                                              by=_identity.user() or "dashboard", request_ids=[r.id])
                except DashboardError as e:
                    _format.show_error(e)
                else:
                    st.toast(f"{len(sent)} request sent again", icon=":material/replay:")
                    st.rerun()
            if _identity.may("resume") and give_up.button("Give it up", key="hist_doubt_give_up", icon=":material/block:"):
                service.give_up(store, r.batch_id, by=_identity.user() or "dashboard", request_ids=[r.id])
                st.rerun()
        if r.resent_by:
            st.caption(f"Decided while in doubt by {_format.plain(r.resent_by)} at {_format.short_time(r.resent_at)}.")
        if r.status == RequestStatus.CANCELLED:
            st.info("Cancelled: " + ("it was never sent, so nothing was spent." if explain.never_sent(r)
                                     else "fal was asked to drop the job before it answered.")
                    + (f" ({_format.plain(r.error_message)})" if r.error_message else ""), icon=":material/cancel:")
        elif r.error_message or r.error_type:
            st.error(f"**{r.error_type or 'error'}**" + (f" (HTTP {r.http_status})" if r.http_status else "")
                     + f": {_format.plain(r.error_message or '')}", icon=":material/error:")
        m = st.columns(6)
        m[0].metric("Estimated cost", "nothing (not sent)" if explain.never_sent(r) else
                    "—" if r.estimated_cost is None else f"${r.estimated_cost:.4f}",
                    help=None if r.billable_units is None else
                    f"fal billed {r.billable_units:g} units" + ("" if r.billed_cost is None else
                                                              f": ${r.billed_cost:.4f} at the endpoint's price"))
        m[1].metric("Queue", _format.seconds(r.queue_time_s))
        m[2].metric("Inference", _format.seconds(r.inference_time_s))
        m[3].metric("Total", _format.seconds(r.total_time_s))
        m[4].metric("HTTP", r.http_status or "—")
        m[5].metric("Attempts", r.attempts)
        st.markdown(f"**Prompt:** {_format.plain(r.prompt)}")
        st.caption(f"seed {r.seed} · image size {r.image_size} · options "
                   + (", ".join(f"{k}: {_format.plain(v)}" for k, v in r.options.items()) or "none"))
        imgs = store.result_images([r.id])[r.id]
        if imgs:
            for col, image in zip(st.columns(4), imgs):  # a quarter width each, even for one image
                with col:
                    _widgets.image_tile(image, size=DETAIL_THUMB_PX, caption=f"#{image.idx} {image.width}x{image.height}"
                                        + (" · NSFW flagged" if image.nsfw else ""))
                    st.caption(image.metrics.summary())
        left, right = st.columns(2)
        with left:
            st.markdown("**Payload, exactly as stored and sent** (data: URIs abbreviated)" if not explain.never_sent(r)
                        and r.submitted_at else
                        "**Payload, exactly as stored** — never sent" if explain.never_sent(r) else
                        "**Payload, exactly as stored** — not sent yet")
            st.code(_format.payload_json(r.payload_json), language="json")
            st.caption(f"hash `{r.payload_hash}`")
        with right:
            st.markdown("**Response**")
            if r.response_json:
                st.code(_format.payload_json(r.response_json), language="json")
            else:
                st.caption("No response (yet)." if not r.dry_run else "No response: nothing was sent.")
            if r.logs_json:
                with st.expander("fal logs"):
                    st.code(_format.payload_json(r.logs_json), language="json")
        if _identity.may("run") and st.button("Re-run this request", icon=":material/replay:", key="hist_rerun",
                                              help="Same endpoint and payload, as a new request linked to this one."):
            try:
                _identity.person().require("run")
                new = service.rerun(store, r.id, _resources.settings(), created_by=_identity.user())
            except DashboardError as e:
                _format.show_error(e)
            else:
                st.success(f"Re-run started as request `{new.id[:8]}`"
                           + (" (dry run: nothing is sent)." if new.dry_run else "."), icon=":material/replay:")

_onboarding.next_step("compare.py", "compare the outputs side by side",
                  "Then Review judges them blind.")
