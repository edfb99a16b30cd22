"""Several hosts on one Postgres store: each batch is run by one runner at a time wherever it was
started (a lease in the batch's row, renewed by the heartbeat, taken over once it lapses); cancel
and resume work from any host; two hosts resuming one batch at the same moment submit nothing
twice (the fal stand-in counts what it accepted).

"Another host" is a runner process in its own UTS namespace (`unshare -u`, root only) with its
own host name and its own data directory: to the store it is another machine, as its pid cannot
be checked from here."""
from __future__ import annotations

import collections
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

from core.batches import plans
from core.catalog.payloads import payload_hash
from core.config import REPO_ROOT, load_settings
from core.store import HEARTBEAT_STALE_S, open_store

SCHNELL = "fal-ai/flux/schnell"
pytestmark = pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("unshare"),
                                reason="another host is a UTS namespace: needs root and unshare")


@pytest.fixture
def team(pg_url, fal_standin, monkeypatch, tmp_path):
    """This host's settings on a fresh Postgres store, fal's stand-in live."""
    monkeypatch.setenv("DATABASE_URL", pg_url)
    return load_settings()


def _batch(settings, poses=("Standing", "Walking", "Sitting", "Running"), seeds=(1, 2)) -> str:
    plan = plans.make_plan({"name": "team", "options": {"pose": list(poses)}, "models": [SCHNELL],
                            "seeds": list(seeds)})
    with open_store(settings) as st:
        return st.create_batch(plan.new_batch(), dry_run=False).id


def _runner(tmp_path, host: str | None, *args: str) -> subprocess.Popen:
    """`python -m core <args>` on this host (None) or on another named `host`, with its own data
    directory."""
    env = dict(os.environ, DASHBOARD_DATA_DIR=str(tmp_path / f"data-{host or 'here'}"))
    command = [sys.executable, "-m", "core", *args]
    if host is not None:
        command = ["unshare", "-u", "sh", "-c", f'hostname {host} && exec "$0" "$@"', *command]
    return subprocess.Popen(command, cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _accepted(standin) -> collections.Counter:
    return collections.Counter((x["endpoint"], payload_hash(x["body"])) for x in standin.received
                               if x["accepted"])


def _wait(predicate, timeout=60.0, what="condition"):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def test_two_hosts_resuming_one_batch_at_the_same_moment_submit_nothing_twice(team, fal_standin, tmp_path):
    fal_standin.set_latency(0.3)
    for round_ in range(3):
        batch_id = _batch(team, seeds=(10 * round_ + 1, 10 * round_ + 2))   # new payloads each round
        procs = [_runner(tmp_path, None, "batch", "resume", batch_id, "--quiet"),
                 _runner(tmp_path, f"host-b{round_}", "batch", "resume", batch_id, "--quiet")]
        outcomes = [(p.wait(120), *p.communicate()) for p in procs]
        busy = [err for code, _, err in outcomes if code != 0]
        # the one that lost the claim says who holds the batch; the other ran it all
        assert len(busy) <= 1, outcomes
        assert all("is being run by process" in err for err in busy), outcomes
        with open_store(team) as st:
            requests = st.batch_requests(batch_id)
            assert {r.status for r in requests} == {"completed"}
            assert st.get_batch(batch_id).status == "finished"
    accepted = _accepted(fal_standin)
    assert len(accepted) == 3 * 8 and set(accepted.values()) == {1}   # each payload paid once
    assert fal_standin.submissions == 3 * 8


def test_cancel_from_another_host_stops_the_runner_and_its_images_are_seen_here(team, fal_standin, tmp_path):
    fal_standin.set_latency(2.0)
    batch_id = _batch(team, poses=("Standing", "Walking", "Sitting", "Running", "Jumping", "Kneeling"))
    runner = _runner(tmp_path, "host-b", "batch", "resume", batch_id, "--concurrency", "2", "--quiet")
    try:
        with open_store(team) as st:
            _wait(lambda: st.get_batch(batch_id).runner_host == "host-b", what="host-b to claim the batch")
            _wait(lambda: any(r.status == "completed" for r in st.batch_requests(batch_id)),
                  what="a first result")
        cancel = _runner(tmp_path, None, "batch", "cancel", batch_id)
        assert cancel.wait(60) == 0, cancel.communicate()
        cancel.communicate()
        assert runner.wait(90) is not None
        runner.communicate()
    finally:
        if runner.poll() is None:
            runner.kill()
            runner.communicate()
    with open_store(team) as st:
        batch = st.get_batch(batch_id)
        requests = st.batch_requests(batch_id)
        done = [r for r in requests if r.status == "completed"]
        assert batch.status == "cancelled" and batch.runner_pid is None
        assert done and len(done) < len(requests)
        assert {r.status for r in requests} <= {"completed", "cancelled"}
        images = st.result_images([r.id for r in done])
        assert all(len(v) == 1 and v[0].sha256 for v in images.values())   # recorded for every host
    assert set(_accepted(fal_standin).values()) == {1}


@pytest.mark.slow
def test_a_lease_that_lapses_is_taken_over_and_nothing_is_paid_twice(team, fal_standin, tmp_path):
    """host-b is killed mid-batch (its lease stays in the row, its pid cannot be checked from
    here): resuming here is refused while the lease is fresh, then takes the batch over once it
    lapses; what host-b had sent is followed, what its kill cut is in doubt, nothing is resent."""
    fal_standin.set_latency(1.0)
    fal_standin.hold_submissions_after(3)
    batch_id = _batch(team)
    runner = _runner(tmp_path, "host-b", "batch", "resume", batch_id, "--concurrency", "4", "--quiet")
    try:
        assert fal_standin.wait_for_held(1, timeout=60)
        with open_store(team) as st:
            _wait(lambda: sum(r.fal_request_id is not None for r in st.batch_requests(batch_id)) == 3,
                  what="3 jobs at fal")
    finally:
        runner.send_signal(signal.SIGKILL)
        runner.communicate()
    refused = _runner(tmp_path, None, "batch", "resume", batch_id, "--quiet")
    code, _, err = refused.wait(60), *refused.communicate()
    assert code != 0 and "host-b" in err and "Traceback" not in err
    fal_standin.release()
    with open_store(team) as st:
        beat = st.get_batch(batch_id).heartbeat_at
    from core.store._sql import seconds_between
    from core.values import now

    _wait(lambda: seconds_between(beat, now()) > HEARTBEAT_STALE_S, timeout=HEARTBEAT_STALE_S + 10,
          what="the lease to lapse")
    taken = _runner(tmp_path, None, "batch", "resume", batch_id, "--quiet")
    code, out, err = taken.wait(120), *taken.communicate()
    with open_store(team) as st:
        requests = st.batch_requests(batch_id)
        batch = st.get_batch(batch_id)
    assert batch.runner_pid is None, (code, out, err)
    in_doubt = [r for r in requests if r.status == "in_doubt"]
    assert in_doubt and {r.status for r in requests} <= {"completed", "in_doubt"}
    assert sum(r.status == "completed" for r in requests) == 8 - len(in_doubt)
    assert set(_accepted(fal_standin).values()) == {1}
