"""Blind review: raters judge two outputs of one group side by side without seeing the models.

A REVIEW ITEM is one group (same prompt, seed and size) and two of its outputs from different
models. Per model the output is `Store.group_outputs` (the one rule, `store.pick_output`: its
newest completed request in the group whose first image, idx 0, is stored). A group with k
models gives every pair of them, k*(k-1)/2 items (one item for the usual two models), so
Bradley-Terry sees every comparison.

Invariants:
- Left/right is random but stable: a hash of (rater, group, the two models) decides it, so a
  rater who comes back sees the same order, different raters see different orders, and the
  order shown is stored with the vote (`left_request_id`, `right_request_id`).
- A rater never gets an item they already judged (same group, same two models; rater names
  compared case-insensitively) unless `include_reviewed`; judging it again stores a NEW vote, and
  statistics use each rater's latest verdict per item (`stats_votes`).
- Verdicts are `stats.VERDICTS`: "left", "right", "both_good", "both_bad". `winner` is stored
  unblinded: the endpoint of the better side, or null for a tie. Skipping stores nothing.
- Votes are written only through `record_vote` (which checks them), stored by the Store
  (`Store.add_vote`, table `votes`).
"""
from __future__ import annotations

import hashlib
import itertools
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from core.evaluation import stats
from core import store
from core.errors import StoreError
from core.store.values import GroupOutput, StoredVote  # importable here as before

if TYPE_CHECKING:
    from core.store import Store

VERDICTS = stats.VERDICTS
MAX_NOTE = 2000


# One model's output in a group: the request and the image shown.
Output = GroupOutput


@dataclass(frozen=True)
class ReviewItem:
    group: store.Group
    left: Output
    right: Output
    position: int  # 1-based, in the batch's review order

    @property
    def key(self) -> str:
        """Names the item whatever the side order: group id and the two endpoints, sorted."""
        return item_key(self.group.id, self.left.endpoint, self.right.endpoint)


@dataclass(frozen=True)
class ReviewQueue:
    """What a rater has left in a batch. `total` items exist, `reviewed` of them judged by this
    rater; `items` are those to show now (not judged unless asked, not skipped)."""
    items: tuple[ReviewItem, ...]
    total: int
    reviewed: int
    skipped: int

    @property
    def next(self) -> ReviewItem | None:
        return self.items[0] if self.items else None


def item_key(group_id: str, endpoint_a: str, endpoint_b: str) -> str:
    a, b = sorted((endpoint_a, endpoint_b))
    return f"{group_id}|{a}|{b}"


def _rater(rater: str | None) -> str:
    name = (rater or "").strip()
    if not name:
        raise StoreError("A vote needs the rater's name: type your name in the sidebar first.")
    return name


def left_first(rater: str, group_id: str, endpoint_a: str, endpoint_b: str) -> bool:
    """Whether the alphabetically first endpoint goes left for this rater and group."""
    a, b = sorted((endpoint_a, endpoint_b))
    digest = hashlib.sha256(f"{rater.strip().casefold()}\x00{group_id}\x00{a}\x00{b}".encode()).digest()
    return digest[0] & 1 == 0


# ---------------------------------------------------------------------------- items


def review_items(st: Store, batch_id: str, rater: str) -> list[ReviewItem]:
    """Every item of the batch in review order (groups in planning order, pairs by endpoint),
    with sides as this rater sees them."""
    rater = _rater(rater)
    outputs = st.group_outputs(batch_id)
    items: list[ReviewItem] = []
    for group in st.get_groups(batch_id):
        by_endpoint = outputs.get(group.id, {})
        for a, b in itertools.combinations(sorted(by_endpoint), 2):
            left, right = (a, b) if left_first(rater, group.id, a, b) else (b, a)
            items.append(ReviewItem(group, by_endpoint[left], by_endpoint[right], len(items) + 1))
    return items


def reviewed_keys(st: Store, batch_id: str, rater: str) -> set[str]:
    """Item keys this rater has judged in the batch."""
    return {item_key(g, a, b) for g, a, b in st.voted_pairs(batch_id, _rater(rater))}


def queue(st: Store, batch_id: str, rater: str, *, include_reviewed: bool = False,
          skip: Collection[str] = (), seen: Collection[str] = ()) -> ReviewQueue:
    """The rater's items still to show in a batch, in order; `skip` holds item keys skipped,
    `seen` the keys voted on in this sitting: with `include_reviewed` the queue goes through the
    reviewed items once and moves on after each vote, instead of offering the first one again."""
    items = review_items(st, batch_id, rater)
    done = reviewed_keys(st, batch_id, rater)
    todo = [i for i in items if (include_reviewed or i.key not in done) and i.key not in skip
            and i.key not in seen]
    reviewed = sum(i.key in done for i in items)
    skipped = sum(i.key in skip and (include_reviewed or i.key not in done) for i in items)
    return ReviewQueue(items=tuple(todo), total=len(items), reviewed=reviewed, skipped=skipped)


# ---------------------------------------------------------------------------- votes


def record_vote(st: Store, *, group_id: str, left_request_id: str, right_request_id: str,
                rater: str, verdict: str, note: str | None = None) -> StoredVote:
    """Store one verdict on two outputs of a group, with the side order the rater saw."""
    rater = _rater(rater)
    if verdict not in VERDICTS:
        raise StoreError(f"Unknown verdict {verdict!r}; one of {', '.join(VERDICTS)}.")
    left, right = st.get_request(left_request_id), st.get_request(right_request_id)
    for side in (left, right):
        if side.group_id != group_id:
            raise StoreError(f"Request {side.id} is not in group {group_id}; reload the review page.")
    if left.endpoint == right.endpoint:
        raise StoreError("Both sides come from the same model; a vote compares two models.")
    note = (note or "").strip()[:MAX_NOTE] or None
    winner = {"left": left.endpoint, "right": right.endpoint}.get(verdict)
    return st.add_vote(group_id=group_id, rater=rater, left_request_id=left.id,
                       right_request_id=right.id, verdict=verdict, winner=winner, note=note)


def record_item_vote(st: Store, item: ReviewItem, *, rater: str, verdict: str,
                     note: str | None = None) -> StoredVote:
    return record_vote(st, group_id=item.group.id, left_request_id=item.left.request_id,
                       right_request_id=item.right.request_id, rater=rater, verdict=verdict, note=note)


def latest_votes(votes: Iterable[StoredVote]) -> list[StoredVote]:
    """Each rater's latest vote per item (group and pair of models), in the original order."""
    votes = list(votes)
    last: dict[tuple[str, str], StoredVote] = {}
    for v in votes:
        last[(v.rater.casefold(), item_key(v.group_id, v.left_endpoint, v.right_endpoint))] = v
    keep = {id(v) for v in last.values()}
    return [v for v in votes if id(v) in keep]


def stats_votes(st: Store, *, batch_id: str | None = None) -> list[stats.Vote]:
    """The unblinded votes for `core.evaluation.stats`, each rater's latest per item, with the group's
    prompt options as factors (pose, style, lighting, angle, aspect_ratio, ...)."""
    votes = latest_votes(st.list_votes(batch_id=batch_id))
    groups = st.groups_by_id(sorted({v.group_id for v in votes}))
    options = {gid: {k: str(v) for k, v in g.options.items() if v is not None} for gid, g in groups.items()}
    return [stats.vote_from_verdict(v.group_id, v.rater.casefold(), v.left_endpoint, v.right_endpoint,
                                    v.verdict, options.get(v.group_id, {})) for v in votes]
