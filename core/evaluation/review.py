"""Blind review: raters judge two outputs of one group side by side without seeing the models.

A REVIEW ITEM is one group (same prompt, seed and size) and two of its outputs from different
models. Per model the output is its newest completed request in the group that has a stored
image, and that request's first image (idx 0). A group with k models gives every pair of them,
k*(k-1)/2 items (one item for the usual two models), so Bradley-Terry sees every comparison.

Invariants:
- Left/right is random but stable: a hash of (rater, group, the two models) decides it, so a
  rater who comes back sees the same order, different raters see different orders, and the
  order shown is stored with the vote (`left_request_id`, `right_request_id`).
- A rater never gets an item they already judged (same group, same two models; rater names
  compared case-insensitively) unless `include_reviewed`; judging it again stores a NEW vote, and
  statistics use each rater's latest verdict per item (`stats_votes`).
- Verdicts are `stats.VERDICTS`: "left", "right", "both_good", "both_bad". `winner` is stored
  unblinded: the endpoint of the better side, or null for a tie. Skipping stores nothing.
- Votes are written only here (table `votes`, migration m011); nothing here reads the clock
  except for `created_at`.
"""
from __future__ import annotations

import hashlib
import itertools
import json
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from core.evaluation import stats
from core import store
from core.store.db import new_id, now
from core.errors import StoreError

if TYPE_CHECKING:
    from core.store import Store

VERDICTS = stats.VERDICTS
MAX_NOTE = 2000


@dataclass(frozen=True)
class Output:
    """One model's output in a group: the request and the image shown."""
    request_id: str
    endpoint: str
    image: store.ResultImage


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


@dataclass(frozen=True)
class StoredVote:
    id: str
    group_id: str
    rater: str
    left_request_id: str
    right_request_id: str
    left_endpoint: str
    right_endpoint: str
    verdict: str
    winner: str | None
    note: str | None
    created_at: str

    def describe(self) -> str:
        """The unblinded verdict in words, e.g. "left (fal-ai/flux/schnell) better"."""
        if self.verdict == "left":
            return f"left ({self.left_endpoint}) better"
        if self.verdict == "right":
            return f"right ({self.right_endpoint}) better"
        return self.verdict.replace("_", " ")


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


def _outputs(st: Store, batch_id: str) -> dict[str, dict[str, Output]]:
    """Per group id, per endpoint: the newest completed request with a stored image."""
    sql = ("SELECT r.group_id, r.endpoint, r.id AS rid, i.* FROM requests r "
           "JOIN result_images i ON i.request_id = r.id "
           "WHERE r.batch_id = ? AND r.status = 'completed' AND r.group_id IS NOT NULL "
           "ORDER BY r.created_at, r.rowid, i.idx")
    out: dict[str, dict[str, Output]] = {}
    seen: set[str] = set()
    for row in st.db.query(sql, [batch_id]):
        if row["rid"] in seen:
            continue  # a later image of the same request: the first one is shown
        seen.add(row["rid"])
        image = store.ResultImage(
            id=row["id"], request_id=row["request_id"], idx=row["idx"], fal_url=row["fal_url"],
            storage_backend=row["storage_backend"], storage_path=row["storage_path"],
            sha256=row["sha256"], width=row["width"], height=row["height"],
            content_type=row["content_type"], size_bytes=row["size_bytes"],
            nsfw=None if row["nsfw"] is None else bool(row["nsfw"]), created_at=row["created_at"])
        # rows come oldest first: a newer request (a re-run) replaces the older one
        out.setdefault(row["group_id"], {})[row["endpoint"]] = Output(row["rid"], row["endpoint"], image)
    return out


def review_items(st: Store, batch_id: str, rater: str) -> list[ReviewItem]:
    """Every item of the batch in review order (groups in planning order, pairs by endpoint),
    with sides as this rater sees them."""
    rater = _rater(rater)
    outputs = _outputs(st, batch_id)
    items: list[ReviewItem] = []
    for group in st.get_groups(batch_id):
        by_endpoint = outputs.get(group.id, {})
        for a, b in itertools.combinations(sorted(by_endpoint), 2):
            left, right = (a, b) if left_first(rater, group.id, a, b) else (b, a)
            items.append(ReviewItem(group, by_endpoint[left], by_endpoint[right], len(items) + 1))
    return items


def reviewed_keys(st: Store, batch_id: str, rater: str) -> set[str]:
    """Item keys this rater has judged in the batch."""
    rows = st.db.execute(
        "SELECT v.group_id, lr.endpoint, rr.endpoint FROM votes v JOIN groups g ON g.id = v.group_id "
        "JOIN requests lr ON lr.id = v.left_request_id JOIN requests rr ON rr.id = v.right_request_id "
        "WHERE g.batch_id = ? AND v.rater = ? COLLATE NOCASE", [batch_id, _rater(rater)]).fetchall()
    return {item_key(g, a, b) for g, a, b in rows}


def queue(st: Store, batch_id: str, rater: str, *, include_reviewed: bool = False,
          skip: Collection[str] = ()) -> ReviewQueue:
    """The rater's items still to show in a batch, in order; `skip` holds item keys skipped."""
    items = review_items(st, batch_id, rater)
    done = reviewed_keys(st, batch_id, rater)
    todo = [i for i in items if (include_reviewed or i.key not in done) and i.key not in skip]
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
    vote_id = new_id()
    st.db["votes"].insert({
        "id": vote_id, "group_id": group_id, "rater": rater, "left_request_id": left.id,
        "right_request_id": right.id, "verdict": verdict, "winner": winner, "note": note,
        "created_at": now(),
    })
    return get_vote(st, vote_id)


def record_item_vote(st: Store, item: ReviewItem, *, rater: str, verdict: str,
                     note: str | None = None) -> StoredVote:
    return record_vote(st, group_id=item.group.id, left_request_id=item.left.request_id,
                       right_request_id=item.right.request_id, rater=rater, verdict=verdict, note=note)


_VOTE_SQL = ("SELECT v.*, lr.endpoint AS left_endpoint, rr.endpoint AS right_endpoint FROM votes v "
             "JOIN requests lr ON lr.id = v.left_request_id JOIN requests rr ON rr.id = v.right_request_id ")


def _vote(row: dict[str, Any]) -> StoredVote:
    return StoredVote(**{k: row[k] for k in StoredVote.__dataclass_fields__})


def get_vote(st: Store, vote_id: str) -> StoredVote:
    for row in st.db.query(_VOTE_SQL + "WHERE v.id = ?", [vote_id]):
        return _vote(row)
    raise StoreError(f"No vote with id {vote_id!r}.")


def list_votes(st: Store, *, batch_id: str | None = None,
               rater: str | None = None) -> list[StoredVote]:
    """Votes oldest first, optionally of one batch and/or one rater."""
    clauses, params = [], []
    if batch_id is not None:
        clauses.append("v.group_id IN (SELECT id FROM groups WHERE batch_id = ?)")
        params.append(batch_id)
    if rater is not None:
        clauses.append("v.rater = ? COLLATE NOCASE")
        params.append(rater.strip())
    where = ("WHERE " + " AND ".join(clauses) + " ") if clauses else ""
    return [_vote(r) for r in st.db.query(_VOTE_SQL + where + "ORDER BY v.created_at, v.rowid", params)]


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
    votes = latest_votes(list_votes(st, batch_id=batch_id))
    options: dict[str, dict[str, str]] = {}
    ids = sorted({v.group_id for v in votes})
    for start in range(0, len(ids), 500):
        chunk = ids[start:start + 500]
        for row in st.db.query(f"SELECT id, options_json FROM groups WHERE id IN ({','.join('?' * len(chunk))})",
                            chunk):
            raw = json.loads(row["options_json"]) if row["options_json"] else {}
            options[row["id"]] = {k: str(v) for k, v in raw.items() if v is not None}
    return [stats.vote_from_verdict(v.group_id, v.rater.casefold(), v.left_endpoint, v.right_endpoint,
                                    v.verdict, options.get(v.group_id, {})) for v in votes]
