"""Narrow reads for the pages: each reads only what it shows, and still sees every change."""
from __future__ import annotations

import pytest

from core.store import open_store
from tests.review_support import EDIT, SCHNELL, completed_batch


@pytest.fixture
def two_batches(settings):
    first = completed_batch("first", options={"subject": ["Woman", "Man", "Child"]})
    second = completed_batch("second")
    st = open_store(settings)
    yield st, first, second
    st.close()


def test_request_costs_of_given_ids_are_those_rows_in_planning_order(two_batches):
    """"All batches" reads the requests its votes show by id: over several batches, in the order
    every request is planned (the order the cost sums add in), unknown ids left out."""
    st, _, _ = two_batches
    every = st.request_costs()
    asked = [every[-1].id, every[0].id, "no-such-request", every[len(every) // 2].id]
    assert st.request_costs(request_ids=asked) == [every[0], every[len(every) // 2], every[-1]]
    assert st.request_costs(request_ids=[]) == []


def test_a_batchs_data_version_follows_its_own_images_metrics_and_votes_only(two_batches):
    st, (batch, groups, by_group), (other, other_groups, other_by_group) = two_batches
    mine = st.data_version(batch_id=batch.id)
    everything = st.data_version()
    # a measurement and a vote in the OTHER batch leave this batch's stamp as it was
    image = st.result_images([other_by_group[other_groups[0].id][EDIT].id])
    (img,) = next(iter(image.values()))
    st.db.execute("UPDATE result_images SET metrics_at = '2099-01-01T00:00:00' WHERE id = ?", [img.id])
    g = other_groups[0]
    st.add_vote(group_id=g.id, rater="ana", left_request_id=other_by_group[g.id][SCHNELL].id,
                right_request_id=other_by_group[g.id][EDIT].id, verdict="left", winner=SCHNELL, note=None)
    assert st.data_version(batch_id=batch.id) == mine
    assert st.data_version() != everything
    # its own measurement, check and vote each move it
    g = groups[0]
    (own,) = next(iter(st.result_images([by_group[g.id][EDIT].id]).values()))
    st.db.execute("UPDATE result_images SET checked_at = '2099-01-02T00:00:00' WHERE id = ?", [own.id])
    after_check = st.data_version(batch_id=batch.id)
    assert after_check != mine
    st.db.execute("UPDATE result_images SET metrics_at = '2099-01-03T00:00:00' WHERE id = ?", [own.id])
    after_metrics = st.data_version(batch_id=batch.id)
    assert after_metrics != after_check
    st.add_vote(group_id=g.id, rater="bo", left_request_id=by_group[g.id][SCHNELL].id,
                right_request_id=by_group[g.id][EDIT].id, verdict="right", winner=EDIT, note=None)
    assert st.data_version(batch_id=batch.id) != after_metrics


def test_the_all_batches_version_is_answered_by_indexes(two_batches, sqlite_only):
    """Over every batch the stamp must not read the tables (100,000 requests): each part of it is
    a count or a maximum an index answers."""
    st, _, _ = two_batches
    plans = []
    for sql in ("SELECT max(completed_at) FROM requests", "SELECT max(metrics_at) FROM result_images",
                "SELECT max(checked_at) FROM result_images"):
        plans += [row[3] for row in st.db.execute("EXPLAIN QUERY PLAN " + sql).fetchall()]
    assert all("USING COVERING INDEX" in p for p in plans), plans
