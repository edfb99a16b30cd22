"""Blind review: raters judge two outputs of one group side by side without seeing the contenders.

A CONTENDER is an endpoint at one parameter set (core/catalog/contenders.py); a plain two-model
batch has one contender per model. A REVIEW ITEM is one group (same prompt, seed and size) and the
outputs of two of its contenders. Per contender the output is `Store.group_outputs(by_contender=
True)` (the one rule, `pick_output`: its newest completed request in the group whose first
image, idx 0, is stored). A group with k contenders gives every pair, k*(k-1)/2 items.

Invariants:
- Which pair comes next: in a group with more than two contenders, the first pair shown is
  `pairing.choose_from_counts` over every vote of the batch (Bradley-Terry strengths closest
  together and fewest comparisons first), among the pairs this rater has not judged (nor skipped)
  in that group; groups keep planning order. So a rater who stops early has rated the pairs that
  tell the most.
- Left/right is random but stable: a hash of (rater, group, the two sides) decides it, where a
  side is named by its endpoint when the two endpoints differ (so a plain two-model batch keeps the
  order it always had) and by its contender id otherwise. The order shown is stored with the vote
  (`left_request_id`, `right_request_id`).
- A rater never gets an item they already judged (same group, same two contenders; rater names
  compared case-insensitively) unless `include_reviewed`; judging it again stores a NEW vote, and
  statistics use each rater's latest verdict per item (`stats_votes`).
- Verdicts are `stats.VERDICTS`: "left", "right", "both_good", "both_bad". `winner` is stored
  unblinded: the endpoint of the better side, or null for a tie; statistics read the winning
  CONTENDER from the verdict and the sides (`StoredVote.winner_contender`). Skipping stores nothing.
- Votes are written only through `record_vote` (which checks them), stored by the Store
  (`Store.add_vote`, table `votes`).
"""
from __future__ import annotations

import hashlib
import itertools
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass

from core.evaluation import pairing, stats
from core.errors import StoreError
from core.store import Store
from core.values import Group, GroupOutput, StoredVote

VERDICTS = stats.VERDICTS
MAX_NOTE = 2000


@dataclass(frozen=True)
class ReviewItem:
    group: Group
    left: GroupOutput
    right: GroupOutput
    position: int  # 1-based, in the batch's review order

    @property
    def key(self) -> str:
        """Names the item whatever the side order: group id and the two contender ids, sorted."""
        return item_key(self.group.id, _side(self.left), _side(self.right))


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


def item_key(group_id: str, contender_a: str, contender_b: str) -> str:
    a, b = sorted((contender_a, contender_b))
    return f"{group_id}|{a}|{b}"


def _side(output: GroupOutput) -> str:
    """The contender id of an output (its endpoint for a request stored without one)."""
    return output.contender_id or output.endpoint


def _rater(rater: str | None) -> str:
    name = (rater or "").strip()
    if not name:
        raise StoreError("A vote needs the rater's name: type your name in the sidebar first.")
    return name


def left_first(rater: str, group_id: str, endpoint_a: str, endpoint_b: str) -> bool:
    """Whether the alphabetically first side name goes left for this rater and group (sides are
    named by endpoint, or by contender id when both are of one endpoint: see `_sides_of`)."""
    a, b = sorted((endpoint_a, endpoint_b))
    digest = hashlib.sha256(f"{rater.strip().casefold()}\x00{group_id}\x00{a}\x00{b}".encode()).digest()
    return digest[0] & 1 == 0


# ---------------------------------------------------------------------------- items


def _ordered(rater: str, group_id: str, a: GroupOutput, b: GroupOutput) -> tuple[GroupOutput, GroupOutput]:
    """(left, right) as this rater sees the pair (see the module invariants)."""
    if a.endpoint != b.endpoint:
        name_a, name_b = a.endpoint, b.endpoint
    else:
        name_a, name_b = _side(a), _side(b)
    first, second = (a, b) if name_a < name_b else (b, a)
    return (first, second) if left_first(rater, group_id, name_a, name_b) else (second, first)


def review_items(store: Store, batch_id: str, rater: str) -> list[ReviewItem]:
    """Every item of the batch in review order (groups in planning order, pairs by contender id),
    with sides as this rater sees them."""
    rater = _rater(rater)
    outputs = store.group_outputs(batch_id, by_contender=True)
    items: list[ReviewItem] = []
    for group in store.get_groups(batch_id):
        by_contender = outputs.get(group.id, {})
        for a, b in itertools.combinations(sorted(by_contender), 2):
            left, right = _ordered(rater, group.id, by_contender[a], by_contender[b])
            items.append(ReviewItem(group, left, right, len(items) + 1))
    return items


def reviewed_keys(store: Store, batch_id: str, rater: str) -> set[str]:
    """Item keys this rater has judged in the batch."""
    return {item_key(g, a, b) for g, a, b in store.voted_pairs(batch_id, _rater(rater))}


def queue(store: Store, batch_id: str, rater: str, *, include_reviewed: bool = False,
          skip: Collection[str] = (), seen: Collection[str] = ()) -> ReviewQueue:
    """The rater's items still to show in a batch, in order; `skip` holds item keys skipped,
    `seen` the keys voted on in this sitting: with `include_reviewed` the queue goes through the
    reviewed items once and moves on after each vote, instead of offering the first one again.
    In the first group with something left, a group of more than two contenders puts the pair
    `pairing` chooses first."""
    items = review_items(store, batch_id, rater)
    done = reviewed_keys(store, batch_id, rater)
    todo = [i for i in items if (include_reviewed or i.key not in done) and i.key not in skip
            and i.key not in seen]
    reviewed = sum(i.key in done for i in items)
    skipped = sum(i.key in skip and (include_reviewed or i.key not in done) for i in items)
    if todo:
        todo = _next_pair_first(store, batch_id, rater, todo)
    return ReviewQueue(items=tuple(todo), total=len(items), reviewed=reviewed, skipped=skipped)


@dataclass(frozen=True)
class ReviewNext:
    """What the Review page shows of a rater's queue: the item to show now and the counts, as
    `queue` gives them (`next`, `total`, `reviewed`, `skipped`; `remaining` = `len(queue.items)`)."""
    next: ReviewItem | None
    total: int
    reviewed: int
    skipped: int
    remaining: int


def next_up(store: Store, batch_id: str, rater: str, *, include_reviewed: bool = False,
            skip: Collection[str] = (), seen: Collection[str] = ()) -> ReviewNext:
    """`queue`'s next item and counts, reading only what they need: which contenders have an
    output in each group (`Store.output_contenders`, no request rows) and the outputs of the one
    group shown, so a visit costs the same at 40 or 40,000 outputs in the batch."""
    rater = _rater(rater)
    done = reviewed_keys(store, batch_id, rater)
    skip, seen = set(skip), set(seen)
    total = reviewed = skipped = remaining = 0
    first: tuple[str, list[tuple[int, str, str]]] | None = None
    for group_id, sides in store.output_contenders(batch_id):
        for a, b in itertools.combinations(sides, 2):
            total += 1
            key = item_key(group_id, a, b)
            judged = key in done
            reviewed += judged
            if key in skip and (include_reviewed or not judged):
                skipped += 1
            if (include_reviewed or not judged) and key not in skip and key not in seen:
                remaining += 1
                if first is None:
                    first = (group_id, [])
                if first[0] == group_id:
                    first[1].append((total, a, b))
    if first is None:
        return ReviewNext(None, total, reviewed, skipped, remaining)
    group_id, pairs = first
    group = store.groups_by_id([group_id])[group_id]
    outputs = store.group_outputs(batch_id, by_contender=True, group_ids=[group_id]).get(group_id, {})
    items = [ReviewItem(group, *_ordered(rater, group_id, outputs[a], outputs[b]), position)
             for position, a, b in pairs]
    return ReviewNext(_next_pair_first(store, batch_id, rater, items)[0], total, reviewed, skipped, remaining)


def _next_pair_first(store: Store, batch_id: str, rater: str, todo: list[ReviewItem]) -> list[ReviewItem]:
    """`todo` with the pair `pairing.choose_from_counts` picks moved to the front of its group
    (the first group in `todo`), when that group has more than two contenders left to pair."""
    group_id = todo[0].group.id
    in_group = [i for i in todo if i.group.id == group_id]
    if len(in_group) < 2:
        return todo
    sides = {i.key: (_side(i.left), _side(i.right)) for i in in_group}
    contenders = sorted({c for pair in sides.values() for c in pair})
    offered = {frozenset(pair) for pair in sides.values()}
    # every pair of these contenders not offered now (judged or skipped) is excluded
    excluded = [(a, b) for n, a in enumerate(contenders) for b in contenders[n + 1:]
                if frozenset((a, b)) not in offered]
    votes = stats_votes(store, batch_id=batch_id)
    choice = pairing.choose_pair(contenders, votes, excluded, seed=f"{rater.casefold()}\x00{group_id}")
    if choice is None:
        return todo
    wanted = frozenset((choice.a, choice.b))
    first = next(i for i in in_group if frozenset(sides[i.key]) == wanted)
    return [first, *(i for i in todo if i is not first)]


# ---------------------------------------------------------------------------- votes


def record_vote(store: Store, *, group_id: str, left_request_id: str, right_request_id: str,
                rater: str, verdict: str, note: str | None = None) -> StoredVote:
    """Store one verdict on two outputs of a group, with the side order the rater saw."""
    rater = _rater(rater)
    if verdict not in VERDICTS:
        raise StoreError(f"Unknown verdict {verdict!r}; one of {', '.join(VERDICTS)}.")
    left, right = store.get_request(left_request_id), store.get_request(right_request_id)
    for side in (left, right):
        if side.group_id != group_id:
            raise StoreError(f"Request {side.id} is not in group {group_id}; reload the review page.")
    if (left.contender_id or left.endpoint) == (right.contender_id or right.endpoint):
        raise StoreError("Both sides come from the same contender (model and settings); a vote "
                         "compares two.")
    note = (note or "").strip()[:MAX_NOTE] or None
    winner = {"left": left.endpoint, "right": right.endpoint}.get(verdict)
    return store.add_vote(group_id=group_id, rater=rater, left_request_id=left.id,
                       right_request_id=right.id, verdict=verdict, winner=winner, note=note)


def record_item_vote(store: Store, item: ReviewItem, *, rater: str, verdict: str,
                     note: str | None = None) -> StoredVote:
    return record_vote(store, group_id=item.group.id, left_request_id=item.left.request_id,
                       right_request_id=item.right.request_id, rater=rater, verdict=verdict, note=note)


def vote_sides(vote: StoredVote) -> tuple[str, str]:
    """(left, right) contender ids of a stored vote (endpoints for requests stored without one)."""
    return vote.left_contender or vote.left_endpoint, vote.right_contender or vote.right_endpoint


def vote_winner(vote: StoredVote) -> str | None:
    """The contender id of the better side, None for a tie."""
    return {"left": vote_sides(vote)[0], "right": vote_sides(vote)[1]}.get(vote.verdict)


def latest_votes(votes: Iterable[StoredVote]) -> list[StoredVote]:
    """Each rater's latest vote per item (group and pair of contenders), in the original order."""
    votes = list(votes)
    last: dict[tuple[str, str], StoredVote] = {}
    for v in votes:
        last[(v.rater.casefold(), item_key(v.group_id, *vote_sides(v)))] = v
    keep = {id(v) for v in last.values()}
    return [v for v in votes if id(v) in keep]


def stats_votes(store: Store, *, batch_id: str | None = None,
                latest: Sequence[StoredVote] | None = None) -> list[stats.Vote]:
    """The unblinded votes for `core.evaluation.stats` (their "models" are contender ids), each
    rater's latest per item, with the group's prompt options as factors (pose, style, lighting, angle, aspect_ratio, ...).
    `latest`: the selection's `latest_votes` when already read."""
    votes = latest_votes(store.list_votes(batch_id=batch_id)) if latest is None else list(latest)
    groups = store.groups_by_id(sorted({v.group_id for v in votes}))
    options = {gid: {k: str(v) for k, v in g.options.items() if v is not None} for gid, g in groups.items()}
    return [stats.vote_from_verdict(v.group_id, v.rater.casefold(), *vote_sides(v),
                                    v.verdict, options.get(v.group_id, {})) for v in votes]
