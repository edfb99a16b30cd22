"""Review page: blind side-by-side verdicts, one group (and pair of contenders) at a time.

The reference photo and two outputs in a stable random left/right order, contenders (model and
settings) hidden; with more than two contenders in a group, core chooses the pair that tells most;
verdicts left better / right better / both good / both bad, an optional note; the models are
revealed after the vote, then the next group. Keys: ← → ↑ (both good) ↓ (both bad), S skip,
N next. Rules (which pairs, which outputs, never twice) live in core/evaluation/review.py.
With "Include groups I reviewed" on, the items voted on in this sitting are passed to the queue
as `seen`, so *Next group* moves on instead of offering the first group again.
"""
from __future__ import annotations

import streamlit as st

from core.catalog import contenders, registry
from core.evaluation import review
from core.values import Group, ResultImage
from core.errors import DashboardError
from dashboard import _format, _identity, _onboarding, _resources, _widgets

VERDICT_BUTTONS = (
    ("left", "Left better", "left", ":material/arrow_back:"),
    ("right", "Right better", "right", ":material/arrow_forward:"),
    ("both_good", "Both good", "up", ":material/thumb_up:"),
    ("both_bad", "Both bad", "down", ":material/thumb_down:"),
)

state = st.session_state
store = _resources.store()


st.title("Review")
if not _identity.allowed("vote"):   # a viewer reads the Leaderboard; blind review is for raters
    st.stop()
rater = _identity.user()
if not rater:
    st.info("Type your name in the sidebar first: votes are recorded with it, and you are never shown "
            "a group you already judged.", icon=":material/badge:")
    st.stop()

top, opt = st.columns([3, 1], vertical_alignment="bottom")
batch_id = _widgets.batch_picker(store, key="rev_batch", icon=":material/rate_review:", container=top,
                                 with_count=False,
                                 empty="Nothing to review yet: run a batch on the Generate page.")
include = opt.toggle("Include groups I reviewed", key="rev_include",
                     help="Show again the groups you already judged (a new vote replaces yours in the statistics).")
skipped: list[str] = state.setdefault("rev_skipped", {}).setdefault(batch_id, [])
# items voted on in this sitting (per batch and toggle state): "include reviewed" walks past them
seen: list[str] = state.setdefault("rev_seen", {}).setdefault(batch_id, [])
labels = contenders.labels(store.contenders_in(batch_id=batch_id))


def _who(contender_id: str | None, endpoint: str) -> str:
    """A side's contender label (its model's label for a request stored without one)."""
    return labels.get(contender_id or "", registry.endpoint_label(endpoint))


def _vote(item: review.ReviewItem, verdict: str) -> None:
    try:
        _identity.person().require("vote")
        vote = review.record_item_vote(store, item, rater=rater, verdict=verdict,
                                       note=state.get(f"rev_note_{item.key}"))
    except DashboardError as e:
        state.rev_error = str(e)
        return
    state.rev_revealed = {"vote_id": vote.id, "batch": batch_id}
    seen.append(item.key)


def _skip(key: str) -> None:
    skipped.append(key)


def _next() -> None:
    state.pop("rev_revealed", None)


def _show_again() -> None:
    skipped.clear()


def _start_over() -> None:
    seen.clear()


def _reference(group: Group) -> None:
    st.markdown("**Reference**")
    if not group.references:
        st.caption("No reference photo (text-to-image only).")
    for rid in group.references[:1]:
        try:
            ref = store.get_reference(rid)
        except DashboardError:
            st.caption(f"(reference {rid[:8]} not found)")
            continue
        thumb = _resources.thumbnail(ref.storage_backend, ref.storage_path, ref.sha256, size=512)
        if thumb:
            st.image(thumb, width="stretch")


def _sides(group: Group, left: ResultImage, right: ResultImage,
           captions: tuple[str, str] = ("Left", "Right")) -> None:
    st.markdown(f"**{_format.plain(group.prompt)}**")
    st.caption(f"seed {group.seed} · {group.image_size}"
               + "".join(f" · {k}: {_format.plain(v)}" for k, v in group.options.items()))
    cols = st.columns(3)
    with cols[0]:
        _reference(group)
    for col, image, caption in zip(cols[1:], (left, right), captions):
        with col:
            st.markdown(f"**{caption}**")
            _widgets.image_tile(image)


if err := state.pop("rev_error", None):
    st.error(err, icon=":material/error:")

revealed = state.get("rev_revealed")
if revealed and revealed["batch"] == batch_id:
    vote = store.get_vote(revealed["vote_id"])
    group = store.groups_by_id([vote.group_id])[vote.group_id]
    imgs = store.result_images([vote.left_request_id, vote.right_request_id])
    left_name = _format.plain(_who(vote.left_contender, vote.left_endpoint))
    right_name = _format.plain(_who(vote.right_contender, vote.right_endpoint))
    winner = ({"left": f"**{left_name}**", "right": f"**{right_name}**"}.get(vote.verdict)
              or vote.verdict.replace("_", " "))
    st.success(f"Recorded: {winner}. Left was **{left_name}**, right was **{right_name}**.",
               icon=":material/visibility:")
    st.button("Next group", key="rev_next", on_click=_next, shortcut="n", type="primary",
              icon=":material/skip_next:")
    _sides(group, imgs[vote.left_request_id][0], imgs[vote.right_request_id][0],
           (f"Left: {left_name}", f"Right: {right_name}"))
    st.stop()

q = review.next_up(store, batch_id, rater, include_reviewed=include, skip=set(skipped),
                   seen=set(seen) if include else ())
if q.total == 0:
    st.info("This batch has no pair to review yet: a group needs completed results from at least two models.",
            icon=":material/rate_review:")
    st.stop()
st.progress(q.reviewed / q.total, text=f"{q.reviewed} of {q.total} reviewed by {_format.plain(rater)}"
            + (f" · {q.skipped} skipped" if q.skipped else ""))
item = q.next
if item is None:
    st.success("Nothing left to review in this batch." if not q.skipped
               else "Only skipped groups are left.", icon=":material/done_all:")
    if q.skipped:
        st.button("Show skipped groups again", key="rev_unskip", on_click=_show_again)
    if include and seen:
        st.button("Go through the reviewed groups again", key="rev_restart", on_click=_start_over)
    _onboarding.next_step("leaderboard.py", "see who wins on the Leaderboard",
                      "Your votes count there at once, with how sure the result is.")
    st.stop()

st.caption(f"Group {item.position} of {q.total} · models hidden until you vote · keys: "
           "← left better · → right better · ↑ both good · ↓ both bad · S skip · N next group")
cols = st.columns(len(VERDICT_BUTTONS) + 1)
for col, (verdict, text, key, icon) in zip(cols, VERDICT_BUTTONS):
    col.button(text, key=f"rev_{verdict}", on_click=_vote, args=(item, verdict), shortcut=key, icon=icon,
               width="stretch")
cols[-1].button("Skip", key="rev_skip", on_click=_skip, args=(item.key,), shortcut="s",
                icon=":material/redo:", width="stretch")
st.text_input("Note (optional)", key=f"rev_note_{item.key}", placeholder="what decided it")
_sides(item.group, item.left.image, item.right.image)
_onboarding.next_step("leaderboard.py", "see who wins on the Leaderboard",
                  "Every vote counts there at once, with how sure the result is.")
