"""Generate's steps, one function each, in the order the page draws them: each draws its widgets
and returns its part of the spec. Step 3, models and parameters, is `_generate_models`'s.

Invariants:
- Every widget key is `_draft`'s, and every restored value is checked against what exists now
  (a photo that is gone, an option no longer in the catalogue is dropped).
- A problem typed in a step is shown there and repeated in step 5, which then offers no run
  button; the rules of planning are `core.batches`'.
- Send above the confirmation threshold (`core.batches.budget.needs_confirmation`) only asks: the
  question names the intent (`service.launch_key`), so a changed plan asks again, and only its
  Yes launches (still one batch per intent). A batch over a spending limit gets no button.
"""
from __future__ import annotations

import random
from dataclasses import dataclass

import pandas as pd
import streamlit as st

from core.batches import budget, explain, service
from core.batches.spec import MAX_SEED
from core.catalog import prompts, registry
from core.config import Settings
from core.errors import DashboardError
from core.store import Store
from dashboard import _draft, _format, _identity, _resources

PREVIEW_PAYLOADS = 20
# the Send confirmation's own state (this step's, like its widgets): the launch key it asks about
_CONFIRMING = "run_confirming"
_CONFIRM_YES = "run_confirm_yes"
_CONFIRM_NO = "run_confirm_no"


@dataclass(frozen=True)
class SeedsPart:
    seeds: list[int]
    problem: str = ""   # what keeps the run button away, or ""


def references(store: Store) -> list[str]:
    """Step 1: the reference photos picked (ids), for the edit models."""
    state = st.session_state
    refs = store.list_references(limit=200)
    ref_by_id = {r.id: r for r in refs}
    _draft.restore(_draft.REFS, lambda v: isinstance(v, list))
    if _draft.REFS in state:
        state[_draft.REFS] = [r for r in state[_draft.REFS] if r in ref_by_id]
    picked = st.multiselect(
        "Reference photos (for the edit models)", list(ref_by_id), key=_draft.REFS,
        format_func=lambda rid: f"{ref_by_id[rid].role} · {ref_by_id[rid].original_name or rid[:8]} "
                                f"· {_format.short_time(ref_by_id[rid].created_at)}",
        placeholder="Choose photos uploaded on the Upload page")
    if not refs:
        st.caption("No reference photos yet: upload some on the Upload page (text-to-image models need none).")
    if picked:
        cols = st.columns(8)
        for col, rid in zip(cols, picked):
            ref = ref_by_id[rid]
            thumb = _resources.thumbnail(ref.storage_backend, ref.storage_path, ref.sha256, size=160)
            if thumb:
                col.image(thumb, caption=ref.role, width="stretch")
    return list(picked)


def prompt_options() -> dict[str, list[str]]:
    """Step 2: the values picked or typed per prompt option, and the extra text."""
    state = st.session_state
    st.caption("Pick one or more values per option, or type your own; every combination is a variant.")
    catalogs = prompts.load_catalogs()
    options: dict[str, list[str]] = {}
    opt_cols = st.columns(4)
    for i, option in enumerate(prompts.CATALOG_KEYS):
        key = _draft.option_key(option)
        with opt_cols[i % 4]:
            fixed = option == "aspect_ratio"  # only ratios with a fal image size exist
            _draft.restore(key, lambda v: isinstance(v, list) and all(isinstance(x, str) for x in v))
            if fixed and key in state:
                state[key] = [v for v in state[key] if v in catalogs.get(option, ())]
            values = st.multiselect(
                option.replace("_", " ").capitalize(), list(catalogs.get(option, ())), key=key,
                accept_new_options=not fixed, placeholder="any" if fixed else "choose or type")
        if values:
            options[option] = values
    _draft.restore(_draft.EXTRA, lambda v: isinstance(v, str))
    extra = st.text_input("Extra text (added at the end of the prompt)", key=_draft.EXTRA)
    if extra.strip():
        options["extra"] = [extra]
    return options


def seeds() -> SeedsPart:
    """Step 4: random seeds (kept until rerolled) or a typed list."""
    state = st.session_state
    _draft.restore(_draft.SEED_MODE, lambda v: v in ("Random", "List"))
    _draft.restore(_draft.SEED_N, lambda v: isinstance(v, int) and 1 <= v <= 100, default=1)
    _draft.restore(_draft.SEED_LIST, lambda v: isinstance(v, str), default="1")
    _draft.restore(_draft.RANDOM_SEEDS, lambda v: isinstance(v, list) and all(isinstance(x, int) for x in v))
    mode = st.radio("Seeds", ["Random", "List"], horizontal=True, key=_draft.SEED_MODE,
                    label_visibility="collapsed")
    if mode == "Random":
        n = st.number_input("How many random seeds", min_value=1, max_value=100, key=_draft.SEED_N)
        if (len(state.get(_draft.RANDOM_SEEDS, [])) != n
                or st.button("New random seeds", icon=":material/casino:", key=_draft.NEW_SEEDS)):
            state[_draft.RANDOM_SEEDS] = random.sample(range(MAX_SEED + 1), int(n))
        chosen = list(state[_draft.RANDOM_SEEDS])
        st.caption("Seeds: " + ", ".join(map(str, chosen)))
        return SeedsPart(chosen)
    text = st.text_input("Seeds, separated by commas", key=_draft.SEED_LIST)
    try:
        return SeedsPart([int(s) for s in text.replace(" ", ",").split(",") if s.strip()])
    except ValueError:
        st.error("Seeds must be whole numbers separated by commas, e.g. `1, 2, 42`.", icon=":material/error:")
        return SeedsPart([], "Seeds (step 4): whole numbers separated by commas, e.g. `1, 2, 42`")


def name_and_launch(store: Store, settings: Settings, spec: dict, problems: list[str]) -> dict:
    """Step 5: the batch's name, then what keeps the batch from running, else its plan in full
    (count, cost, contenders, exact payloads) and the button that sends it (or records a dry run).
    Returns the whole spec, named."""
    _draft.restore(_draft.BATCH_NAME, lambda v: isinstance(v, str))
    name = st.text_input("Batch name", key=_draft.BATCH_NAME, placeholder="untitled",
                         help="Shown in Compare and History next to the time the batch was created.")
    spec = {"name": name.strip() or "untitled", **spec}
    if left := budget.left_today_line(store, settings, _identity.user()):
        st.caption(left)
    models, picked = spec["models"], spec["references"]
    needing = explain.models_needing_references(models, picked)
    if problems:
        st.error("Nothing can run until these are fixed:\n" + "\n".join(f"- {_format.plain(b)}" for b in problems),
                 icon=":material/error:")
    elif not models:
        st.info("Choose at least one model in step 3.", icon=":material/tune:")
    elif needing:
        st.info("Next: pick at least one reference photo in step 1 — "
                + " and ".join(_format.plain(_label(m)) for m in needing)
                + (" edits" if len(needing) == 1 else " edit") + " a photo. Or remove "
                + ("it" if len(needing) == 1 else "them") + " from the models in step 3.",
                icon=":material/add_photo_alternate:")
        if not store.list_references(limit=1):
            st.page_link("upload.py", label="Upload a photo first", icon=":material/upload:")
    else:
        try:
            plan = _resources.plan(spec)
        except DashboardError as e:
            _format.show_error(e)
        else:
            _plan_summary(plan)
            _run_button(store, settings, plan)
    return spec


def _label(m: str) -> str:
    return registry.get_endpoint(m).label


def _plan_summary(plan) -> None:
    c1, c2, c3, c4 = st.columns(4)
    c1.metric("Requests", plan.request_count)
    c2.metric("Groups (variant x seed)", len(plan.groups))
    c3.metric("Estimated cost", f"${plan.estimated_cost:.3f}")
    c4.metric("Models", len(plan.models))
    st.caption(" · ".join(f"{_format.plain(_label(m))}: ${c:.3f}" for m, c in plan.cost_by_model().items()))
    if len(plan.contenders) > len(plan.models):
        st.markdown(f"**{len(plan.contenders)} contenders** (a model at one set of parameters each)")
        st.dataframe(pd.DataFrame([{"contender": line.label, "requests": line.requests,
                                    "estimated cost": f"${line.estimated_cost:.3f}"}
                                   for line in plan.contender_lines()]),
                     hide_index=True, width="stretch", key=_draft.CONTENDERS)
    for warning in plan.warnings:
        st.warning(warning, icon=":material/aspect_ratio:")
    with st.expander(f"Exact payloads ({plan.request_count})", icon=":material/data_object:"):
        st.caption("What each request's body will be, as stored. `reference://<id>` stands for a locally "
                   "stored photo: it becomes a data: URI only at send time, and is never stored.")
        for req in plan.requests[:PREVIEW_PAYLOADS]:
            st.markdown(f"**{_format.plain(plan.labels.get(req.contender.id, _label(req.endpoint)))}** · seed {req.seed} · "
                        f"${req.estimated_cost:.4f} · `{req.payload_hash[:15]}`")
            st.code(_format.payload_json(req.payload), language="json")
        if plan.request_count > PREVIEW_PAYLOADS:
            st.caption(f"First {PREVIEW_PAYLOADS} of {plan.request_count} shown; every payload is "
                       "recorded in History when the batch is created.")


def _run_button(store: Store, settings: Settings, plan) -> None:
    state = st.session_state
    if not _identity.may("run"):   # a viewer or rater sees the plan, not the button (the page says why)
        return
    label = (f"Record dry run of {plan.request_count} requests (nothing is sent)" if settings.dry_run
             else f"Send {plan.request_count} requests to fal (about ${plan.estimated_cost:.3f})")
    # one batch per intent: a second click, a reload or another tab finds the batch the first made;
    # sending the very same batch again is its own, explicit intent. Asked of the batch this
    # session sent, not of the current one: the draft restores that one later in the same run
    # (in another tab, the button this run drew must be the one its click runs)
    sent_before = service.already_launched(store, plan, settings, created_by=_identity.user())
    repeat_of = None
    if sent_before is not None and sent_before.id != state.get(_draft.LAUNCHED):
        st.info(f"This exact batch was already sent as “{_format.plain(sent_before.name)}” at "
                f"{_format.short_time(sent_before.created_at)}. Sending it again runs (and pays for) "
                "every request a second time.", icon=":material/content_copy:")
        label = "Send the same batch again" + ("" if settings.dry_run else f" (about ${plan.estimated_cost:.3f})")
        repeat_of = sent_before.id
    estimate = budget.of_plan(plan)
    try:   # over a spending limit: the refusal instead of a button (launch would refuse it too)
        budget.check(store, settings, estimate_usd=estimate.usd, unpriced=estimate.unpriced,
                     person=_identity.user())
    except DashboardError as e:
        _format.show_error(e)
        return
    intent = service.launch_key(plan, settings, created_by=_identity.user(), repeat_of=repeat_of)
    if state.get(_CONFIRMING) == intent:
        st.warning(budget.confirmation(plan.request_count, estimate), icon=":material/payments:")
        yes, no = st.columns([2, 1])
        if yes.button(f"Yes, send {plan.request_count} requests", type="primary", icon=":material/play_arrow:",
                      key=_CONFIRM_YES):
            _launch(store, settings, plan, repeat_of)
        if no.button("Not now", key=_CONFIRM_NO):
            del state[_CONFIRMING]
            st.rerun()
        return
    if st.button(label, type="primary", icon=":material/play_arrow:", key=_draft.RUN):
        if budget.needs_confirmation(settings, estimate.usd, store):
            state[_CONFIRMING] = intent   # the next run asks; only its Yes sends
            st.rerun()
        _launch(store, settings, plan, repeat_of)


def _launch(store: Store, settings: Settings, plan, repeat_of: str | None) -> None:
    state = st.session_state
    try:
        _identity.person().require("run")
        batch = service.launch(store, plan, settings, created_by=_identity.user(),
                               concurrency=settings.concurrency, repeat_of=repeat_of)
        state[_draft.ACTIVE_BATCH] = state[_draft.LAUNCHED] = batch.id
    except DashboardError as e:
        _format.show_error(e)
    else:
        state.pop(_CONFIRMING, None)
        st.rerun()
