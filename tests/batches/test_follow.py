"""Following one accepted job (core/fal/follow.py), without threads, a store or a server: a
scripted client answers each poll. What must hold: a job is followed to its end through any
passing fault, given up (resumable) only past the outage limit or when the run stops, and fal's
own "not found" is the only way a job is gone."""
from __future__ import annotations

import threading

import pytest

from core.fal import Completed, InProgress, QueueHandle, Queued
from core.fal.follow import Cadence, Finished, Gone, Lost, Outage, PollPolicy, Signals, follow
from core.errors import FalAuthError, FalError, FalServerError, FalUnavailable

HANDLE = QueueHandle("fal-ai/flux/schnell", "req-1", "http://127.0.0.1:9/s", "http://127.0.0.1:9/r",
                     "http://127.0.0.1:9/c")
FAST = PollPolicy(first=0.0, proportion=0.0, cap=0.0)


class Scripted:
    """Answers status polls from a list (a value is returned, an exception raised)."""

    interrupted = False

    def __init__(self, answers, cancel_answer="CANCELLATION_REQUESTED"):
        self.answers = list(answers)
        self.polls = 0
        self.cancels = 0
        self.cancel_answer = cancel_answer

    def status(self, handle):
        self.polls += 1
        answer = self.answers.pop(0)
        if isinstance(answer, BaseException):
            raise answer
        return answer

    def cancel(self, handle):
        self.cancels += 1
        return self.cancel_answer

    def redacted(self, text):
        return text


def _follow(client, *, outage=None, signals=None, **kw):
    return follow(client, HANDLE, cadence=Cadence(FAST), signals=signals or Signals(threading.Event(), threading.Event()),
                  outage=outage or Outage(600, base=0.0, cap=0.0), **kw)


def test_a_job_is_followed_through_queue_and_progress_to_completion():
    positions, started = [], []
    client = Scripted([Queued(3), Queued(1), InProgress(("loading",)), Completed(metrics={"inference_time": 1.2})])
    outcome = _follow(client, on_queued=positions.append, on_running=started.append)
    assert isinstance(outcome, Finished) and outcome.status.ok and not outcome.cancel_sent
    assert positions == [3, 1] and started == [("loading",)]


def test_passing_faults_are_ridden_through_and_end_the_outage():
    outage = Outage(600, base=0.0, cap=0.0)
    client = Scripted([FalUnavailable("down"), FalServerError("502", status_code=502), Completed()])
    assert isinstance(_follow(client, outage=outage), Finished)
    assert client.polls == 3 and not outage.active


def test_an_outage_past_the_limit_leaves_the_job_lost_not_failed():
    outage = Outage(0.0, base=0.0, cap=0.0)
    outcome = _follow(Scripted([FalUnavailable("down"), FalUnavailable("down")]), outage=outage)
    assert isinstance(outcome, Lost) and "unreachable" in outcome.reason
    assert outage.active and outage.since is not None


def test_only_fals_not_found_makes_a_job_gone():
    outcome = _follow(Scripted([FalError("no such request", status_code=404)]))
    assert isinstance(outcome, Gone) and not outcome.cancelled


def test_a_refused_key_while_following_is_lost_so_a_resume_can_follow_it_later():
    outcome = _follow(Scripted([FalAuthError("key refused", status_code=401)]))
    assert isinstance(outcome, Lost) and "key refused" in outcome.reason


def test_cancel_is_sent_once_and_a_job_fal_forgot_is_cancelled():
    signals = Signals(threading.Event(), threading.Event())
    signals.cancel.set()
    client = Scripted([], cancel_answer="NOT_FOUND")
    outcome = _follow(client, signals=signals)
    assert isinstance(outcome, Gone) and outcome.cancelled and client.cancels == 1


def test_a_job_that_finishes_after_cancel_is_kept():
    signals = Signals(threading.Event(), threading.Event())
    signals.cancel.set()
    client = Scripted([InProgress(), Completed()])
    outcome = _follow(client, signals=signals)
    assert isinstance(outcome, Finished) and outcome.cancel_sent and client.cancels == 1


def test_a_stopping_run_leaves_the_job_lost():
    signals = Signals(threading.Event(), threading.Event())
    signals.stop.set()
    outcome = _follow(Scripted([Completed()]), signals=signals)
    assert isinstance(outcome, Lost)


SCHNELL, EDIT = "fal-ai/flux/schnell", "fal-ai/flux-2/lora/edit"


def test_cadence_waits_until_just_before_the_expected_completion_then_polls_fast():
    cadence = Cadence(PollPolicy())
    assert cadence.next_delay(SCHNELL, 0.0) == pytest.approx(0.1)       # nothing seen yet
    assert cadence.next_delay(SCHNELL, 8.0) == pytest.approx(0.8)       # ~10% of the wait
    assert cadence.next_delay(SCHNELL, 60.0) == pytest.approx(2.0)      # capped
    for s in (2.00, 2.01, 2.02, 2.01, 2.0):
        cadence.observe(SCHNELL, s)
    assert 1.9 < 0.2 + cadence.next_delay(SCHNELL, 0.2) < 2.0           # one sleep to just before 2 s
    assert cadence.next_delay(SCHNELL, 2.005) == pytest.approx(0.01)    # fast near completion
    late = [cadence.next_delay(SCHNELL, t) for t in (2.5, 4.0, 10.0, 100.0)]
    assert late == sorted(late) and late[-1] == 2.0                      # backs off when late
    assert cadence.next_delay(SCHNELL, 2.005, queue_position=5) >= 0.5  # queued: not about to finish
    assert cadence.next_delay(EDIT, 0.0) == pytest.approx(0.1)          # per endpoint


def test_outage_backoff_is_capped_and_described_for_people():
    outage = Outage(600, base=0.5, cap=4.0)
    assert outage.describe() == "fal answers"
    for _ in range(20):
        outage.failed()
    assert 2.0 <= outage.delay() <= 4.0
    assert outage.describe().startswith("fal unreachable since ") and outage.describe().endswith("retrying")
    outage.recovered()
    assert not outage.active and outage.since is None


class Streaming(Scripted):
    """A client whose status stream yields `events` (then ends, or raises `then`)."""

    def __init__(self, events, answers=(), then=None):
        super().__init__(answers)
        self.events = list(events)
        self.then = then

    def status_events(self, handle):
        yield from self.events
        if self.then:
            raise self.then


def test_the_status_stream_brings_completion_without_a_poll():
    client = Streaming([Queued(2), InProgress(), Completed()])
    positions, started = [], []
    outcome = _follow(client, stream=True, on_queued=positions.append, on_running=started.append)
    assert isinstance(outcome, Finished) and client.polls == 0
    assert positions == [2] and started == [()]


def test_a_stream_that_fails_or_closes_early_falls_back_to_polling():
    for then in (FalUnavailable("reset"), None):
        client = Streaming([Queued(0)], answers=[InProgress(), Completed()], then=then)
        assert isinstance(_follow(client, stream=True), Finished)
        assert client.polls == 2


def test_a_stop_reaches_a_follower_waiting_on_a_silent_stream():
    import time

    class Silent(Scripted):
        def status_events(self, handle):
            time.sleep(5)
            yield Completed()

    signals = Signals(threading.Event(), threading.Event())
    threading.Timer(0.2, signals.stop.set).start()
    began = time.monotonic()
    outcome = _follow(Silent([]), signals=signals, stream=True)
    assert isinstance(outcome, Lost) and time.monotonic() - began < 2
