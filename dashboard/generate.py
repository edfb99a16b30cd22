"""Generate page: references x option values x seeds x contenders -> a batch, shown in full
(contenders, count, estimated cost, exact payloads) before it is run, then run by a detached runner
process. A contender is a model at one parameter set: per model, several values of a numeric or
enum parameter, or several LoRA sets, make one contender each (core/batches/sweeps.py turns the
inputs into the plan's `sweep`).

The batch keeps running when the tab is closed (`core.batches.service` starts a detached runner);
this page only asks the service what the batch is doing. Unfinished batches are listed and can be
resumed.

The form is kept as a draft for this browser (`core.batches.drafts`, under the id the address
carries): every widget's value, the random seeds and the current batch come back after a page
change, a reload or a restart. Restored values are checked against what exists now (a photo or a
model that is gone is dropped). What the progress lines say is `core.batches.explain`'s.
"""
from __future__ import annotations

import random

import pandas as pd
import streamlit as st

from core.batches import explain, plans, sweeps
from core.catalog import prompts
from core.catalog import registry
from core.batches import service
from core.values import BatchProgress, HistoryFilter
from core.values import RequestStatus
from core.errors import DashboardError, PayloadError, PlanError
from dashboard import _shared, _widgets

PREVIEW_PAYLOADS = 20
RESULT_TILES = 12
POLL_SECONDS = 1.0

state = st.session_state
settings = _shared.settings()
records = _shared.store()
draft = _shared.load_draft()


def _restore(key: str, valid=lambda v: True, default=None) -> None:
    """Give a widget (or the page) its draft value when this session has none yet, or when the
    person just arrived from another page (the draft, saved at the end of every run here, holds
    what the form last showed; Streamlit may have dropped or kept a stale widget value)."""
    if key in state and not (state.get("_arrived") and key in draft):
        return
    if key in draft and draft[key] is not None and valid(draft[key]):
        state[key] = draft[key]
    elif default is not None:
        state[key] = default


st.title("Generate")
if settings.dry_run:
    st.info("**Dry run**: there is no FAL_KEY, so a run records every payload in History as "
            "*dry run* and sends nothing to fal.", icon=":material/science:")


# ---------------------------------------------------------------------------- batch in progress

def _results(batch_id: str) -> None:
    page = records.query_history(HistoryFilter(batch_id=batch_id, status=RequestStatus.COMPLETED,
                                                       page_size=RESULT_TILES))
    if not page.rows:
        return
    images = records.result_images([r.id for r in page.rows])
    varying = explain.varying_options(r.options for r in page.rows)
    cols = st.columns(6)
    for i, req in enumerate(page.rows):
        caption = " · ".join([registry.get_endpoint(req.endpoint).label, f"seed {req.seed}",
                              *(f"{k.replace('_', ' ')} {req.options[k]}" for k in varying if k in req.options)])
        with cols[i % 6]:
            if images[req.id]:
                _widgets.image_tile(images[req.id][0], caption=caption)
            else:
                st.caption(f"(image being stored) {caption}")
    if note := explain.results_caption(len(page.rows), page.total, records.batch_progress(batch_id)):
        st.caption(note)


def _progress(batch_id: str) -> BatchProgress:
    batch = records.get_batch(batch_id)
    progress = records.batch_progress(batch_id)
    st.markdown(f"**{batch.name}** · {progress.total} requests · created "
                f"{_shared.short_time(batch.created_at)}" + (f" by {batch.created_by}" if batch.created_by else ""))
    st.progress(explain.progress_fraction(progress), text=explain.progress_line(progress))
    if progress.dry_run and progress.is_finished:
        st.info(f"Dry run: nothing was sent to fal. {progress.counts.get(RequestStatus.DRY_RUN, 0)} payloads were "
                "recorded — open History to read them.", icon=":material/science:")
    elif progress.dry_run:
        st.info("Dry run: nothing is sent to fal; the payloads are being recorded.", icon=":material/science:")
    for kind, note in explain.outcome_notes(progress):
        (st.warning if kind == "warning" else st.info)(
            note, icon=":material/warning:" if kind == "warning" else ":material/cancel:")
    return progress


def _start(batch_id: str) -> None:
    """Resume the batch through the service and make it the current batch."""
    service.resume(records, batch_id, settings)
    state.active_batch = batch_id


def _outage_notice(batch_state: service.BatchState) -> None:
    if isinstance(batch_state, service.Running) and batch_state.unreachable_since:
        st.warning(f"fal unreachable since {_shared.local_time(batch_state.unreachable_since)}, retrying: "
                   "nothing is lost, jobs fal accepted are followed when it answers again.",
                   icon=":material/cloud_off:")


def _stopped_notice(batch_id: str, batch_state: service.Stopped) -> None:
    st.warning(f"The runner stopped before the batch finished: {batch_state.reason.rstrip('.')}.  \n"
               "*Resume* sends what is left; requests fal already has are followed, never sent twice.",
               icon=":material/pause_circle:")
    st.caption(f"What the runner did, step by step: `{batch_state.log_path}`")
    resume, cancel = st.columns([1, 5])
    if resume.button("Resume", key=f"resume_current_{batch_id}", icon=":material/play_arrow:"):
        try:
            _start(batch_id)
        except DashboardError as e:
            _shared.show_error(e)
        else:
            st.rerun()
    with cancel:
        if _cancel_button(batch_id, batch_state.progress):
            st.rerun()


def _cancel_button(batch_id: str, progress: BatchProgress) -> bool:
    """True when the user just asked to cancel. A batch whose requests are all final offers none."""
    if progress.settled:
        return False
    if progress.cancel_requested:
        st.caption("Cancel requested: nothing more is sent; what fal still holds is being cancelled.")
        return False
    if st.button("Cancel batch", icon=":material/cancel:", key=f"cancel_{batch_id}"):
        service.cancel(records, batch_id, settings)
        return True
    return False


@st.fragment(run_every=POLL_SECONDS)
def _watch(batch_id: str) -> None:
    batch_state = service.state(records, batch_id, settings)
    progress = _progress(batch_id)
    _outage_notice(batch_state)
    if _cancel_button(batch_id, progress):
        st.rerun(scope="fragment")
    _results(batch_id)
    if isinstance(batch_state, (service.Finished, service.Cancelled, service.Stopped, service.Undecided)):
        st.rerun()  # the whole page, once: a finished or stopped batch is drawn without polling


def _show_batch(batch_id: str) -> None:
    batch_state = service.state(records, batch_id, settings)
    if isinstance(batch_state, (service.Finished, service.Cancelled, service.Undecided)):
        _progress(batch_id)
        _results(batch_id)
    elif isinstance(batch_state, service.Stopped):
        _progress(batch_id)
        _stopped_notice(batch_id, batch_state)
        _results(batch_id)
    else:
        _watch(batch_id)


unfinished = [b for b in records.unfinished_batches() if b.id != state.get("active_batch")]
if unfinished:
    with st.expander(f"Unfinished batches ({len(unfinished)})", expanded=True, icon=":material/pending:"):
        for b in unfinished:
            b_state = service.state(records, b.id, settings)
            alive = isinstance(b_state, (service.Running, service.Starting))
            info, action = st.columns([4, 1], vertical_alignment="center")
            info.markdown(f"**{b.name}** · {b.request_count} requests · {_shared.short_time(b.created_at)}"
                          + (" · *running*" if alive else " · *stopped*"))
            if alive:
                if action.button("Watch", key=f"watch_{b.id}", icon=":material/visibility:"):
                    state.active_batch = b.id
                    st.rerun()
            elif action.button("Resume", key=f"resume_{b.id}", icon=":material/play_arrow:"):
                try:
                    _start(b.id)
                except DashboardError as e:
                    _shared.show_error(e)
                else:
                    st.toast(f"{b.name} resumed: its progress is at the bottom of the page.",
                             icon=":material/play_arrow:")
                    st.rerun()

# ---------------------------------------------------------------------------- plan

st.subheader("1. Reference photos")
refs = records.list_references(limit=200)
ref_by_id = {r.id: r for r in refs}
_restore("gen_refs", lambda v: isinstance(v, list))
if "gen_refs" in state:
    state.gen_refs = [r for r in state.gen_refs if r in ref_by_id]
picked = st.multiselect(
    "Reference photos (for the edit models)", list(ref_by_id), key="gen_refs",
    format_func=lambda rid: f"{ref_by_id[rid].role} · {ref_by_id[rid].original_name or rid[:8]} "
                            f"· {_shared.short_time(ref_by_id[rid].created_at)}",
    placeholder="Choose photos uploaded on the Upload page")
if not refs:
    st.caption("No reference photos yet: upload some on the Upload page (text-to-image models need none).")
if picked:
    cols = st.columns(8)
    for col, rid in zip(cols, picked):
        ref = ref_by_id[rid]
        thumb = _shared.thumbnail(ref.storage_backend, ref.storage_path, ref.sha256, size=160)
        if thumb:
            col.image(thumb, caption=ref.role, width="stretch")

st.subheader("2. Prompt options")
st.caption("Pick one or more values per option, or type your own; every combination is a variant.")
catalogs = prompts.load_catalogs()
options: dict[str, list[str]] = {}
opt_cols = st.columns(4)
for i, key in enumerate(prompts.CATALOG_KEYS):
    with opt_cols[i % 4]:
        fixed = key == "aspect_ratio"  # only ratios with a fal image size exist
        _restore(f"opt_{key}", lambda v: isinstance(v, list) and all(isinstance(x, str) for x in v))
        if fixed and f"opt_{key}" in state:
            state[f"opt_{key}"] = [v for v in state[f"opt_{key}"] if v in catalogs.get(key, ())]
        values = st.multiselect(
            key.replace("_", " ").capitalize(), list(catalogs.get(key, ())), key=f"opt_{key}",
            accept_new_options=not fixed, placeholder="any" if fixed else "choose or type")
    if values:
        options[key] = values
_restore("opt_extra", lambda v: isinstance(v, str))
extra = st.text_input("Extra text (added at the end of the prompt)", key="opt_extra")
if extra.strip():
    options["extra"] = [extra]

st.subheader("3. Models and parameters")
endpoints = {e.id: e for e in registry.list_endpoints()}
_restore("gen_models", lambda v: isinstance(v, list), default=list(registry.DEFAULT_MODELS))
state.gen_models = [m for m in state.gen_models if m in endpoints]
models = st.multiselect("Models", list(endpoints), key="gen_models",
                        format_func=lambda m: f"{endpoints[m].label} ({m})")
for key in draft:
    if key.startswith("param::"):
        _restore(key)


def _sweep_inputs(m: str, fields: list[dict]) -> tuple[dict[str, list], list[str]]:
    """Parameters given several values (one contender per combination), and problems typed."""
    candidates = {f["name"]: f for f in fields if sweeps.sweepable(f)}
    names = st.multiselect(
        "Try several values of", list(candidates), key=f"gen_sweep::{m}",
        format_func=lambda n: candidates[n]["title"], placeholder="no sweep: one parameter set",
        help="Each value (and each combination of values) is its own contender, e.g. 7 and 28 steps.")
    swept: dict[str, list] = {}
    problems: list[str] = []
    for name in names:
        field = candidates[name]
        hint = ", ".join(map(str, field["enum"])) if field["enum"] else "e.g. 7, 28"
        text = st.text_input(f"{field['title']}: values, separated by commas", key=f"gen_sweep::{m}::{name}",
                             placeholder=hint)
        try:
            swept[name] = sweeps.parse_values(field, text)
        except PlanError as e:
            problems.append(str(e))
    return swept, problems


def _lora_inputs(m: str, max_items: int | None) -> tuple[sweeps.LoraPlan | None, list[str]]:
    """The LoRA editor: rows of path or URL, scale and set; used as one set or swept."""
    st.markdown("**LoRAs**" + (f" (up to {max_items} per set)" if max_items else ""))
    empty = pd.DataFrame({"path": pd.Series(dtype="str"), "scale": pd.Series(dtype="float"),
                          "set": pd.Series(dtype="int")})
    table = st.data_editor(empty, num_rows="dynamic", key=f"gen_loras::{m}", width="stretch", column_config={
        "path": st.column_config.TextColumn("Path or URL", help="a .safetensors URL, a HuggingFace repo id "
                                            "or a path fal can read", required=True),
        "scale": st.column_config.NumberColumn("Scale", min_value=0.0, max_value=4.0, step=0.1, default=1.0),
        "set": st.column_config.NumberColumn("Set", min_value=1, step=1, default=1,
                                             help="rows with the same number form one LoRA set")})
    rows = [sweeps.LoraRow(str(r["path"]), 1.0 if pd.isna(r["scale"]) else float(r["scale"]),
                           1 if pd.isna(r["set"]) else int(r["set"]))
            for _, r in table.iterrows() if isinstance(r["path"], str) and r["path"].strip()]
    if not rows:
        return None, []
    modes = {"fixed": "Use these LoRAs", "scales": "Sweep their scale", "sets": "Sweep over the sets"}
    mode = st.radio("LoRA sweep", list(modes), format_func=modes.get, horizontal=True, key=f"gen_lora_mode::{m}",
                    label_visibility="collapsed")
    scales = ""
    if mode == "scales":
        scales = st.text_input("Scales to try, separated by commas", key=f"gen_lora_scales::{m}",
                               placeholder="e.g. 0.4, 0.8, 1.2")
    include_none = mode != "fixed" and st.checkbox("Also without any LoRA", key=f"gen_lora_none::{m}")
    try:
        return sweeps.lora_plan(rows, mode=mode, scales=scales, include_none=include_none,
                                max_items=max_items), []
    except PlanError as e:
        return None, [str(e)]


params: dict[str, dict] = {}
sweep: dict[str, dict[str, list]] = {}
params_ok = True
blocking: list[str] = []  # every problem that keeps the run button away, repeated in step 5
for m in models:
    with st.expander(f"{endpoints[m].label} — {m} · {endpoints[m].mode}", icon=":material/tune:"):
        for note in endpoints[m].notes:
            st.caption(note)
        fields = registry.parameter_fields(m)
        max_items = sweeps.max_loras(endpoints[m].schema)
        has_loras = any(f["name"] == "loras" for f in fields)
        changed, problems = _widgets.parameter_form(m, [f for f in fields if f["name"] != "loras"])
        swept, sweep_problems = _sweep_inputs(m, fields)
        problems += sweep_problems
        if has_loras:
            lora_plan, lora_problems = _lora_inputs(m, max_items)
            problems += lora_problems
            if lora_plan is not None and lora_plan.fixed is not None:
                changed["loras"] = lora_plan.fixed
            if lora_plan is not None and lora_plan.sweep is not None:
                swept["loras"] = lora_plan.sweep
        for name in swept:  # a swept parameter is set by its sweep, not by the form
            changed.pop(name, None)
        if swept:
            sweep[m] = swept
        try:
            # the would-be body, checked as it will be before sending
            registry.build_payload(
                m, prompt="preview", image_urls=["reference://preview"] if endpoints[m].mode == "edit" else (),
                params=changed)
        except PayloadError as e:
            problems += e.messages
        for p in problems:
            st.error(p, icon=":material/error:")
        params_ok = params_ok and not problems
        blocking += [f"{endpoints[m].label}: {p}" for p in problems]
    if changed:
        params[m] = changed

st.subheader("4. Seeds")
_restore("seed_mode", lambda v: v in ("Random", "List"))
_restore("seed_n", lambda v: isinstance(v, int) and 1 <= v <= 100, default=1)
_restore("seed_list", lambda v: isinstance(v, str), default="1")
_restore("random_seeds", lambda v: isinstance(v, list) and all(isinstance(x, int) for x in v))
seed_mode = st.radio("Seeds", ["Random", "List"], horizontal=True, key="seed_mode", label_visibility="collapsed")
seeds: list[int] = []
if seed_mode == "Random":
    n = st.number_input("How many random seeds", min_value=1, max_value=100, key="seed_n")
    if len(state.get("random_seeds", [])) != n or st.button("New random seeds", icon=":material/casino:"):
        state.random_seeds = random.sample(range(plans.MAX_SEED + 1), int(n))
    seeds = list(state.random_seeds)
    st.caption("Seeds: " + ", ".join(map(str, seeds)))
else:
    text = st.text_input("Seeds, separated by commas", key="seed_list")
    try:
        seeds = [int(s) for s in text.replace(" ", ",").split(",") if s.strip()]
    except ValueError:
        st.error("Seeds must be whole numbers separated by commas, e.g. `1, 2, 42`.", icon=":material/error:")
        params_ok = False
        blocking.append("Seeds (step 4): whole numbers separated by commas, e.g. `1, 2, 42`")

st.subheader("5. Review and run")
_restore("batch_name", lambda v: isinstance(v, str))
name = st.text_input("Batch name", key="batch_name", placeholder="untitled",
                     help="Shown in Compare and History next to the time the batch was created.")
spec = {"name": name.strip() or "untitled", "references": picked,
        "options": options, "models": models, "params": params, "seeds": seeds}
if sweep:
    spec["sweep"] = sweep

plan = None
needing = explain.models_needing_references(models, picked)
if not params_ok:
    st.error("Nothing can run until these are fixed:\n" + "\n".join(f"- {b}" for b in blocking),
             icon=":material/error:")
elif not models:
    st.info("Choose at least one model in step 3.", icon=":material/tune:")
elif needing:
    st.info("Next: pick at least one reference photo in step 1 — "
            + " and ".join(endpoints[m].label for m in needing)
            + (" edits" if len(needing) == 1 else " edit") + " a photo. Or remove "
            + ("it" if len(needing) == 1 else "them") + " from the models in step 3.",
            icon=":material/add_photo_alternate:")
    if not refs:
        st.page_link("upload.py", label="Upload a photo first", icon=":material/upload:")
else:
    try:
        plan = _shared.plan(spec)
    except DashboardError as e:
        _shared.show_error(e)

if plan is not None:
    c1, c2, c3, c4 = st.columns(4)
    c1.metric("Requests", plan.request_count)
    c2.metric("Groups (variant x seed)", len(plan.groups))
    c3.metric("Estimated cost", f"${plan.estimated_cost:.3f}")
    c4.metric("Models", len(plan.models))
    st.caption(" · ".join(f"{endpoints[m].label}: ${c:.3f}" for m, c in plan.cost_by_model().items()))
    if len(plan.contenders) > len(plan.models):
        st.markdown(f"**{len(plan.contenders)} contenders** (a model at one set of parameters each)")
        st.dataframe(pd.DataFrame([{"contender": line.label, "requests": line.requests,
                                    "estimated cost": f"${line.estimated_cost:.3f}"}
                                   for line in plan.contender_lines()]),
                     hide_index=True, width="stretch", key="gen_contenders")
    for warning in plan.warnings:
        st.warning(warning, icon=":material/aspect_ratio:")
    with st.expander(f"Exact payloads ({plan.request_count})", icon=":material/data_object:"):
        st.caption("What each request's body will be, as stored. `reference://<id>` stands for a locally "
                   "stored photo: it becomes a data: URI only at send time, and is never stored.")
        for req in plan.requests[:PREVIEW_PAYLOADS]:
            st.markdown(f"**{plan.labels.get(req.contender.id, endpoints[req.endpoint].label)}** · seed {req.seed} · ${req.estimated_cost:.4f} · "
                        f"`{req.payload_hash[:15]}`")
            st.code(_shared.payload_json(req.payload), language="json")
        if plan.request_count > PREVIEW_PAYLOADS:
            st.caption(f"First {PREVIEW_PAYLOADS} of {plan.request_count} shown; every payload is "
                       "recorded in History when the batch is created.")
    label = (f"Record dry run of {plan.request_count} requests (nothing is sent)" if settings.dry_run
             else f"Send {plan.request_count} requests to fal (about ${plan.estimated_cost:.3f})")
    # one batch per intent: a second click, a reload or another tab finds the batch the first made;
    # sending the very same batch again is its own, explicit intent
    sent_before = service.already_launched(records, plan, settings, created_by=_shared.user())
    repeat_of = None
    if sent_before is not None and sent_before.id != state.get("active_batch"):
        st.info(f"This exact batch was already sent as “{sent_before.name}” at "
                f"{_shared.short_time(sent_before.created_at)}. Sending it again runs (and pays for) "
                "every request a second time.", icon=":material/content_copy:")
        label = "Send the same batch again" + ("" if settings.dry_run else f" (about ${plan.estimated_cost:.3f})")
        repeat_of = sent_before.id
    if st.button(label, type="primary", icon=":material/play_arrow:", key="run"):
        try:
            batch = service.launch(records, plan, settings, created_by=_shared.user(),
                                   concurrency=settings.concurrency, repeat_of=repeat_of)
            state.active_batch = batch.id
        except DashboardError as e:
            _shared.show_error(e)
        else:
            st.rerun()

# the batch just started (or resumed) sits under the button that started it; after a reload the
# draft brings it back
def _batch_exists(batch_id) -> bool:
    try:
        return isinstance(batch_id, str) and records.get_batch(batch_id) is not None
    except DashboardError:
        return False


_restore("active_batch", _batch_exists)
if state.get("active_batch"):
    with st.container(border=True):
        st.subheader("Current batch")
        try:
            _show_batch(state.active_batch)
        except DashboardError as e:
            _shared.show_error(e)
        if st.button("Close", key="close_batch", icon=":material/close:"):
            del state.active_batch
            _shared.save_draft(_shared.draft_values())
            st.rerun()

_shared.save_draft(_shared.draft_values())
if state.get("active_batch"):
    _shared.next_step("compare.py", "compare the outputs side by side",
                      "Then Review judges them blind, and the Leaderboard counts the votes.")
else:
    _shared.next_step("history.py", "see every request in History",
                      "A run, live or dry, records each payload there; Compare shows the outputs.")
