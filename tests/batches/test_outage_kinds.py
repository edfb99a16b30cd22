"""Every kind of outage is ridden through (issue 21): a 40-request batch at concurrency 8, run by
the command line as a person would, meets an outage after its first 8 jobs were accepted, and
finishes by itself with every request completed except at most 8 in doubt (the submits that left
before the runner saw the outage's first failure, one per sender, and got no answer: after it none
leaves until a call made since is answered), nothing sent twice, and an exit status and words that
say which.

The kinds: connections refused (a proxy in front of fal closes its port), the name not resolving
(DNS), the connection dropped after the request was sent, reset in the middle of an answer, no
answer at all (hung until the outage ends; past the client's 30 s read timeout in the long runs),
the gateway's 502/503/504 pages without fal's request id, and fal's own 502/503/504 answers with
one. Each kind has its own stand-in, data directory and runner process; all kinds run at once,
so the 30 s and 90 s runs (marked `slow`, kept in CI) take about as long as one."""
from __future__ import annotations

import collections
import json
import os
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from core.catalog.payloads import payload_hash
from core.config import REPO_ROOT
from core.fal import Completed, QueueHandle
from core.fal.follow import Cadence, Finished, Outage, PollPolicy, Signals, follow
from core.store import open_store
from tests.standins.fal_server import DEFAULT_KEY, FalStandin
from tests.standins.tcp_proxy import TcpProxy

KINDS = ("refused", "dns", "dropped", "reset", "no_answer", "ingress502", "ingress503", "ingress504",
         "fal502", "fal503", "fal504")
REQUESTS, CONCURRENCY = 40, 8
FAKE_DNS = Path(__file__).resolve().parents[1] / "standins" / "fake_dns"
DNS_NAME = "queue.fal-standin.test"


@dataclass
class _Run:
    """One outage kind: a stand-in (and a proxy or a resolver in front), a data dir, a runner."""
    kind: str
    root: Path
    duration: float
    standin: FalStandin = field(init=False)
    proxy: TcpProxy | None = None
    proc: subprocess.Popen | None = None
    began: float | None = None
    ended: float | None = None
    finished_at: float | None = None
    out: str = ""
    err: str = ""

    def start(self) -> None:
        self.standin = FalStandin(latency=0.5).start()
        port = int(self.standin.url.rsplit(":", 1)[1])
        self.root.mkdir(parents=True)
        env = {**os.environ, "FAL_KEY": DEFAULT_KEY, "DASHBOARD_DATA_DIR": str(self.root / "data"),
               "DASHBOARD_SECRETS": str(self.root / "no-secrets.toml"), "FAL_QUEUE_URL": self.standin.url}
        if self.kind == "refused":
            self.proxy = TcpProxy(("127.0.0.1", port)).start()
            env["FAL_QUEUE_URL"] = self.proxy.url
        elif self.kind == "dns":
            env["FAL_QUEUE_URL"] = f"http://{DNS_NAME}:{port}"
            env.update(FAKE_DNS_HOST=DNS_NAME, FAKE_DNS_DOWN=str(self.root / "dns-down"),
                       PYTHONPATH=os.pathsep.join(filter(None, [str(FAKE_DNS), env.get("PYTHONPATH")])))
        self.standin.advertise(env["FAL_QUEUE_URL"])
        plan = self.root / "plan.json"
        plan.write_text(json.dumps({"name": f"outage {self.kind}", "models": ["fal-ai/flux/schnell", "fal-ai/flux-2"],
                                    "options": {"pose": [f"pose {k}" for k in range(REQUESTS // 2)]},
                                    "seeds": [1]}))
        self.proc = subprocess.Popen([sys.executable, "-m", "core", "batch", "run", str(plan),
                                      "--concurrency", str(CONCURRENCY)], cwd=REPO_ROOT, env=env,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        threading.Thread(target=self._collect, daemon=True).start()

    def _collect(self) -> None:
        self.out, self.err = self.proc.communicate()

    def maybe_begin(self) -> None:
        """Start the outage once 8 jobs were accepted (32 requests are then still to be sent)."""
        if self.began is not None or self.standin.submissions < CONCURRENCY:
            return
        self.began = time.monotonic()
        if self.kind == "refused":
            self.proxy.refuse(self.duration)
        elif self.kind == "dns":
            (self.root / "dns-down").touch()
        else:
            kind = {"dropped": "drop", "reset": "reset", "no_answer": "hang"}.get(self.kind, self.kind[:-3])
            self.standin.outage(self.duration, kind=kind, status=int(self.kind[-3:]) if kind in ("ingress", "fal") else 502)

    def maybe_end(self) -> None:
        if self.began is not None and self.ended is None and time.monotonic() - self.began >= self.duration:
            self.ended = time.monotonic()
            if self.kind == "dns":
                (self.root / "dns-down").unlink()

    def problems(self) -> list[str]:
        """What this run got wrong, in words (empty: it held)."""
        if self.began is None:
            return ["the outage never began (fewer than 8 jobs accepted)"]
        if self.proc.returncode is None:
            return ["the runner did not finish"]
        found = []
        with open_store(self.root / "data" / "dashboard.db") as st:
            (batch,) = st.list_batches()
            rows = st.batch_requests(batch.id)
            stop_reason = st.get_batch(batch.id).stop_reason
        statuses = collections.Counter(r.status for r in rows)
        doubt = statuses.get("in_doubt", 0)
        accepted = collections.Counter((x["endpoint"], payload_hash(x["body"]))
                                       for x in self.standin.received if x["accepted"])
        if len(rows) != REQUESTS or set(statuses) - {"completed", "in_doubt"}:
            found.append(f"statuses {dict(statuses)}")
        if doubt > CONCURRENCY:
            found.append(f"{doubt} in doubt (at most {CONCURRENCY} submits were in flight)")
        if accepted and max(accepted.values()) > 1:
            found.append(f"sent twice: {[k for k, n in accepted.items() if n > 1]}")
        # every completed request is a job fal accepted; a job fal accepted whose answer was cut
        # (the outage began while it came back) is in doubt, never lost and never sent again
        completed = statuses.get("completed", 0)
        if not completed <= sum(accepted.values()) <= completed + doubt:
            found.append(f"fal accepted {sum(accepted.values())} jobs; {completed} completed, {doubt} in doubt")
        want = 3 if doubt else 0
        if self.proc.returncode != want:
            found.append(f"exit {self.proc.returncode}, expected {want}")
        if doubt and f"finished EXCEPT {doubt} request(s) in doubt" not in self.out:
            found.append("the words do not say how many are in doubt")
        if not doubt and "finished:" not in self.out:
            found.append("the words do not say it finished")
        if stop_reason is not None:
            found.append(f"stopped: {stop_reason}")
        if "Traceback" in self.err:
            found.append("a traceback: " + self.err[-600:])
        if self.ended is None or self.finished_at < self.began + self.duration:
            found.append("it finished before the outage ended (the outage did not meet the batch)")
        if self.kind not in ("refused", "dns") and not self.standin.stats()["outage_answers"]:
            found.append("the stand-in answered no call with the outage")
        return found

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        if self.proxy is not None:
            self.proxy.stop()
        self.standin.stop()


def _ride_through(tmp_path: Path, duration: float) -> None:
    runs = [_Run(kind, tmp_path / kind, duration) for kind in KINDS]
    try:
        for run in runs:
            run.start()
        deadline = time.monotonic() + duration + 240
        while any(r.proc.poll() is None for r in runs) and time.monotonic() < deadline:
            for run in runs:
                run.maybe_begin()
                run.maybe_end()
                if run.proc.poll() is not None and run.finished_at is None:
                    run.finished_at = time.monotonic()
            time.sleep(0.05)
        for run in runs:
            if run.finished_at is None:
                run.finished_at = time.monotonic()
            run.maybe_end()
            if run.proc.poll() is not None:
                run.proc.wait()
        time.sleep(0.2)   # the collectors have read the last words
        verdicts = {run.kind: run.problems() for run in runs}
    finally:
        for run in runs:
            run.stop()
    bad = {kind: found for kind, found in verdicts.items() if found}
    assert not bad, "\n".join(f"{kind}: {'; '.join(found)}" for kind, found in bad.items())


class _StreamThatOutlivesTheOutage:
    """A job's status stream opened before the outage; while it is open another thread's call
    fails (the outage is noticed), then the stream still brings COMPLETED, as a connection made
    before a proxy, DNS or ingress went away does."""

    interrupted = False

    def __init__(self, outage: Outage):
        self.outage = outage

    def status_events(self, handle):
        time.sleep(0.01)
        self.outage.failed()
        yield Completed()

    def redacted(self, text):
        return text


def test_an_answer_to_a_call_made_before_the_outage_does_not_end_it():
    """A stream event (or a submit's or poll's answer) under way when the outage began was taken
    for fal answering again: new submits left into an outage the runner had already seen, each
    one more request in doubt, past the one per sender the runs above allow (a 90 s run once
    ended with 9 in doubt at concurrency 8)."""
    outage = Outage(600, base=0.0, cap=0.0)
    handle = QueueHandle("fal-ai/flux/schnell", "req-1", "http://127.0.0.1:9/s", "http://127.0.0.1:9/r",
                         "http://127.0.0.1:9/c")
    outcome = follow(_StreamThatOutlivesTheOutage(outage), handle, cadence=Cadence(PollPolicy()),
                     signals=Signals(threading.Event(), threading.Event()), outage=outage, stream=True)
    assert isinstance(outcome, Finished)
    assert outage.active, "an event on a stream opened before the outage ended it"

    outage = Outage(600, base=0.0, cap=0.0)
    sent_at = time.monotonic()              # a submit leaves...
    time.sleep(0.01)
    outage.failed()                         # ...another call fails...
    outage.recovered(sent_at)               # ...then the submit's answer arrives
    assert outage.active
    outage.recovered(time.monotonic())      # a call made since (the probe): fal answers again
    assert not outage.active


def test_every_kind_of_3_s_outage_is_ridden_through(tmp_path):
    _ride_through(tmp_path, 3.0)


@pytest.mark.slow
def test_every_kind_of_30_s_outage_is_ridden_through(tmp_path):
    _ride_through(tmp_path, 30.0)


@pytest.mark.slow
def test_every_kind_of_90_s_outage_is_ridden_through(tmp_path):
    _ride_through(tmp_path, 90.0)
