"""Generate's batch panels: the current batch (progress, outage and stop notices, Resume and
Cancel, the newest results) under the run button, and the list of unfinished batches above the
form.

The batch runs in a detached runner (`core.batches.service`); these panels only ask the service
what it is doing, and say it in `core.batches.explain`'s words. A batch being worked on is polled
in a fragment; a finished, cancelled or stopped one is drawn once, without polling.
"""
from __future__ import annotations

import streamlit as st

from core.batches import explain, service
from core.catalog import registry
from core.config import Settings
from core.errors import DashboardError
from core.store import Store
from core.values import BatchProgress, HistoryFilter, RequestStatus
from dashboard import _draft, _format, _identity, _resources, _widgets

RESULT_TILES = 12
POLL_SECONDS = 1.0


def unfinished_batches(store: Store, settings: Settings) -> None:
    """Batches not yet finished, besides the current one: watch a running one, resume a stopped one."""
    state = st.session_state
    unfinished = [b for b in store.unfinished_batches() if b.id != state.get(_draft.ACTIVE_BATCH)]
    if not unfinished:
        return
    with st.expander(f"Unfinished batches ({len(unfinished)})", expanded=True, icon=":material/pending:"):
        for b in unfinished:
            b_state = service.state(store, b.id, settings)
            alive = isinstance(b_state, (service.Running, service.Starting))
            info, action = st.columns([4, 1], vertical_alignment="center")
            info.markdown(f"**{_format.plain(b.name)}** · {b.request_count} requests · {_format.short_time(b.created_at)}"
                          + (" · *running*" if alive else " · *stopped*"))
            if alive:
                if action.button("Watch", key=_draft.watch_key(b.id), icon=":material/visibility:"):
                    state[_draft.ACTIVE_BATCH] = b.id
                    st.rerun()
            elif _identity.may("resume") and action.button("Resume", key=_draft.resume_key(b.id),
                                                           icon=":material/play_arrow:"):
                try:
                    _start(store, settings, b.id)
                except DashboardError as e:
                    _format.show_error(e)
                else:
                    st.toast(f"{_format.plain(b.name)} resumed: its progress is at the bottom of the page.",
                             icon=":material/play_arrow:")
                    st.rerun()


def current_batch(store: Store, settings: Settings) -> None:
    """The batch just started (or resumed) sits under the button that started it; after a reload
    the draft brings it back. Close forgets it (the batch itself goes on)."""
    state = st.session_state

    def exists(batch_id) -> bool:
        try:
            return isinstance(batch_id, str) and store.get_batch(batch_id) is not None
        except DashboardError:
            return False

    _draft.restore(_draft.ACTIVE_BATCH, exists)
    if not state.get(_draft.ACTIVE_BATCH):
        return
    with st.container(border=True):
        st.subheader("Current batch")
        try:
            _show_batch(store, settings, state[_draft.ACTIVE_BATCH])
        except DashboardError as e:
            _format.show_error(e)
        if st.button("Close", key=_draft.CLOSE_BATCH, icon=":material/close:"):
            del state[_draft.ACTIVE_BATCH]
            _draft.save()
            st.rerun()


def _start(store: Store, settings: Settings, batch_id: str) -> None:
    """Resume the batch through the service and make it the current batch."""
    _identity.person().require("resume")
    service.resume(store, batch_id, settings, by=_identity.user())
    st.session_state[_draft.ACTIVE_BATCH] = batch_id


def _results(store: Store, batch_id: str) -> None:
    page = store.query_history(HistoryFilter(batch_id=batch_id, status=RequestStatus.COMPLETED,
                                             page_size=RESULT_TILES))
    if not page.rows:
        return
    images = store.result_images([r.id for r in page.rows])
    varying = explain.varying_options(r.options for r in page.rows)
    cols = st.columns(6)
    for i, req in enumerate(page.rows):
        caption = " · ".join([registry.get_endpoint(req.endpoint).label, f"seed {req.seed}",
                              *(f"{k.replace('_', ' ')} {req.options[k]}" for k in varying if k in req.options)])
        with cols[i % 6]:
            if images[req.id]:
                _widgets.image_tile(images[req.id][0], caption=caption)
            else:
                st.caption(f"(image being stored) {_format.plain(caption)}")
    if note := explain.results_caption(len(page.rows), page.total, store.batch_progress(batch_id)):
        st.caption(note)


def _progress(store: Store, batch_id: str) -> BatchProgress:
    batch = store.get_batch(batch_id)
    progress = store.batch_progress(batch_id)
    st.markdown(f"**{_format.plain(batch.name)}** · {progress.total} requests · created "
                f"{_format.short_time(batch.created_at)}" + (f" by {_format.plain(batch.created_by)}" if batch.created_by else ""))
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


def _outage_notice(batch_state: service.BatchState) -> None:
    if isinstance(batch_state, service.Running) and batch_state.unreachable_since:
        st.warning(f"fal unreachable since {_format.local_time(batch_state.unreachable_since)}, retrying: "
                   "nothing is lost, jobs fal accepted are followed when it answers again.",
                   icon=":material/cloud_off:")


def _stopped_notice(store: Store, settings: Settings, batch_id: str, batch_state: service.Stopped) -> None:
    st.warning(f"The runner stopped before the batch finished: {batch_state.reason.rstrip('.')}.  \n"
               "*Resume* sends what is left; requests fal already has are followed, never sent twice.",
               icon=":material/pause_circle:")
    st.caption(f"What the runner did, step by step: `{batch_state.log_path}`")
    resume, cancel = st.columns([1, 5])
    if _identity.may("resume") and resume.button("Resume", key=_draft.resume_current_key(batch_id),
                                                 icon=":material/play_arrow:"):
        try:
            _start(store, settings, batch_id)
        except DashboardError as e:
            _format.show_error(e)
        else:
            st.rerun()
    with cancel:
        if _cancel_button(store, settings, batch_id, batch_state.progress):
            st.rerun()


def _cancel_button(store: Store, settings: Settings, batch_id: str, progress: BatchProgress) -> bool:
    """True when the user just asked to cancel. Offered only while `explain.may_cancel` says so."""
    if note := explain.cancel_note(progress):
        st.caption(note)
    if not explain.may_cancel(progress) or not _identity.may("cancel"):
        return False
    if st.button("Cancel batch", icon=":material/cancel:", key=_draft.cancel_key(batch_id)):
        _identity.person().require("cancel")
        service.cancel(store, batch_id, settings, by=_identity.user())
        return True
    return False


@st.fragment(run_every=POLL_SECONDS)
def _watch(batch_id: str) -> None:
    # the fragment reruns on its own: it takes this session's store and settings each time
    store, settings = _resources.store(), _resources.settings()
    batch_state = service.state(store, batch_id, settings)
    progress = _progress(store, batch_id)
    _outage_notice(batch_state)
    if _cancel_button(store, settings, batch_id, progress):
        st.rerun(scope="fragment")
    _results(store, batch_id)
    if isinstance(batch_state, (service.Finished, service.Cancelled, service.Stopped, service.Undecided)):
        st.rerun()  # the whole page, once: a finished or stopped batch is drawn without polling


def _show_batch(store: Store, settings: Settings, batch_id: str) -> None:
    batch_state = service.state(store, batch_id, settings)
    if isinstance(batch_state, (service.Finished, service.Cancelled, service.Undecided)):
        _progress(store, batch_id)
        _results(store, batch_id)
    elif isinstance(batch_state, service.Stopped):
        _progress(store, batch_id)
        _stopped_notice(store, settings, batch_id, batch_state)
        _results(store, batch_id)
    else:
        _watch(batch_id)
