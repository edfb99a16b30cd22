"""What a job's end means for its request row (core/batches/record.py), without threads or a
runner: a real store file, real local storage, and a scripted download. What must hold: a paid
job is never made final by a fault on our side, images are kept one by one, an answer of the
wrong shape fails with the answer kept, and fal's id survives a database that refuses it."""
from __future__ import annotations

import io

import pytest
from PIL import Image

from core.batches import record
from core.fal import Completed, FalOutput, OutputImage, QueueHandle
from core.errors import (
    FalBadResponse,
    FalCancelled,
    FalError,
    FalRateLimited,
    FalServerError,
    FalTimeout,
    FalUnavailable,
    FalValidationError,
    StoreError,
    StoreUnavailable,
)
from core.store import open_store
from core.blobs import LocalStorage

SCHNELL = "fal-ai/flux/schnell"
HANDLE = QueueHandle(SCHNELL, "fal-1", "http://127.0.0.1:9/s", "http://127.0.0.1:9/r", "http://127.0.0.1:9/c")


def _png(colour=(200, 30, 30)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (16, 8), colour).save(out, "PNG")
    return out.getvalue()


class Downloads:
    """fal's CDN: url -> bytes, or an exception to raise."""

    def __init__(self, files):
        self.files = files

    def download(self, url):
        answer = self.files[url]
        if isinstance(answer, BaseException):
            raise answer
        return answer, "image/png"


@pytest.fixture
def store(settings):
    s = open_store(settings)
    yield s
    s.close()


@pytest.fixture
def storage(settings):
    return LocalStorage(settings.images_dir)


def _running(store) -> str:
    rec = store.record_request(endpoint=SCHNELL, payload={"prompt": "p"})
    store.mark_submitted(rec.id)
    store.mark_queued(rec.id, fal_request_id="fal-1", status_url=HANDLE.status_url,
                   response_url=HANDLE.response_url, cancel_url=HANDLE.cancel_url)
    return rec.id


def _output(*urls) -> FalOutput:
    return FalOutput(images=tuple(OutputImage(u, 16, 8, "image/png") for u in urls), seed=1,
                     nsfw=tuple(False for _ in urls), inference_s=0.5,
                     raw={"images": [{"url": u} for u in urls], "seed": 1})


def test_a_result_is_recorded_with_every_image_kept(store, storage):
    rid = _running(store)
    out = _output("u0", "u1")
    images = record.keep_images(Downloads({"u0": _png(), "u1": _png((0, 0, 255))}), storage, rid, out)
    assert record.record_result(store, rid, record.Result(out, images, 0.5)) == "completed"
    rec = store.get_request(rid)
    assert rec.status == "completed" and rec.inference_time_s == 0.5
    kept = store.result_images([rid])[rid]
    assert [i.idx for i in kept] == [0, 1] and all(storage.get(i.storage_path) for i in kept)


def test_an_image_the_cdn_no_longer_has_is_missing_and_the_others_are_kept(store, storage):
    rid = _running(store)
    out = _output("u0", "u1", "u2", "u3")
    cdn = Downloads({"u0": _png(), "u1": FalError("gone", status_code=404), "u2": _png(), "u3": _png()})
    images = record.keep_images(cdn, storage, rid, out)
    assert [type(i).__name__ for i in images] == ["KeptImage", "MissingImage", "KeptImage", "KeptImage"]
    assert record.record_result(store, rid, record.Result(out, images)) == "completed"
    kept = store.result_images([rid])[rid]
    assert [i.idx for i in kept if i.storage_path] == [0, 2, 3]
    assert [i.fal_url for i in kept if not i.storage_path] == ["u1"]


def test_a_passing_outage_while_downloading_raises_so_the_job_stays_resumable(store, storage):
    rid = _running(store)
    with pytest.raises(FalUnavailable):
        record.keep_images(Downloads({"u0": FalUnavailable("down")}), storage, rid, _output("u0"))
    assert store.get_request(rid).status == "queued"


def test_keeping_again_skips_kept_images_and_never_overwrites(store, storage):
    rid = _running(store)
    out = _output("u0", "u1")
    first = record.keep_images(Downloads({"u0": _png()}), storage, rid, _output("u0"))
    record.record_result(store, rid, record.Result(_output("u0"), first))
    again = record.keep_images(Downloads({"u0": _png(), "u1": _png()}), storage, rid, out, kept=[0])
    assert [i.idx for i in again] == [1]
    # the same bytes again land on the same path: no overwrite needed (insert-only storage keys)
    same = record.keep_images(Downloads({"u0": _png()}), storage, rid, _output("u0"))
    assert same[0].path == first[0].path


def test_a_result_whose_one_good_image_an_earlier_attempt_kept_completes(store, storage):
    """A finisher kept image 0 and was stopped; the next attempt finds image 1 gone: the result is
    recorded from both attempts' rows (completed, image 0 kept), not from the last attempt's."""
    rid = _running(store)
    out = _output("u0", "u1")
    (first,) = record.keep_images(Downloads({"u0": _png()}), storage, rid, _output("u0"))
    store.add_result_image(rid, idx=0, fal_url="u0", storage_backend=first.backend, storage_path=first.path,
                           sha256=first.sha256, width=first.width, height=first.height,
                           content_type=first.content_type, size_bytes=first.size_bytes, nsfw=False)
    again = record.keep_images(Downloads({"u1": FalError("gone", status_code=410)}), storage, rid, out, kept=[0])
    assert [type(i).__name__ for i in again] == ["MissingImage"]
    assert record.record_result(store, rid, record.Result(out, again)) == "completed"
    kept = store.result_images([rid])[rid]
    assert [(i.idx, bool(i.storage_path)) for i in kept] == [(0, True), (1, False)]


def test_a_result_whose_every_image_is_gone_fails_with_the_answer_kept(store, storage):
    rid = _running(store)
    out = _output("u0")
    images = record.keep_images(Downloads({"u0": FalError("gone", status_code=410)}), storage, rid, out)
    assert record.record_result(store, rid, record.Result(out, images)) == "failed"
    rec = store.get_request(rid)
    assert rec.error_type == "download_failed" and rec.response == out.raw


def test_an_answer_without_images_fails_the_request_never_leaves_it_waiting(store, storage):
    rid = _running(store)
    out = FalOutput(images=(), raw={"images": []})
    assert record.record_result(store, rid, record.Result(out, ())) == "failed"
    assert store.get_request(rid).error_type == "no_images"


@pytest.mark.parametrize("error, status, cancel_sent, expected", [
    (FalServerError("502 from the proxy", status_code=502), Completed(), False, record.Resumable),
    (FalUnavailable("no route"), Completed(), False, record.Resumable),
    (FalCancelled("cancelled", status_code=400), Completed(error="x"), True, record.Cancelled),
    (FalError("boom", status_code=500), Completed(error="boom", error_type="runner_error"), True, record.Cancelled),
    (FalValidationError("bad", status_code=422, detail=[{"msg": "x"}]), Completed(error="bad"), False, record.Failed),
    (FalBadResponse("a list", raw=[1, 2]), Completed(), False, record.Failed),
])
def test_result_failures_become_one_outcome(error, status, cancel_sent, expected):
    assert isinstance(record.result_failure(error, status=status, cancel_sent=cancel_sent), expected)


def test_a_bad_answer_is_kept_with_the_failure(store):
    rid = _running(store)
    outcome = record.result_failure(FalBadResponse("a list", raw=[1, 2]), status=Completed(), cancel_sent=False)
    record.record_outcome(store, rid, outcome)
    rec = store.get_request(rid)
    assert rec.status == "failed" and rec.error_type == "bad_response" and rec.response == [1, 2]


@pytest.mark.parametrize("error, expected", [
    (FalUnavailable("refused", not_sent=True), record.Unsent),
    (FalValidationError("bad", status_code=422, detail=[]), record.Failed),
    (FalServerError("timeout after sending", status_code=504), record.InDoubt),
    (FalTimeout("no answer in time"), record.InDoubt),
    (FalUnavailable("dropped after sending"), record.InDoubt),
    (FalError("no such endpoint", status_code=404), record.Failed),
    (FalRateLimited("429", retry_after=1.0), record.Unsent),
])
def test_submit_failures_are_resent_only_when_fal_surely_never_got_them(error, expected):
    outcome = record.submit_failure(error)
    assert isinstance(outcome, expected)
    if isinstance(outcome, record.InDoubt):
        assert "NOT sent again" in outcome.reason and outcome.outage


def test_fal_id_refused_by_the_database_goes_to_the_journal_and_resume_replays_it(store, settings):
    rec = store.record_request(endpoint=SCHNELL, payload={"prompt": "p"}, batch_id=None)
    store.mark_submitted(rec.id)

    class Refusing:
        def mark_queued(self, *a, **k):
            raise StoreUnavailable("database or disk is full")

    journal = record.Journal(settings.data_dir, "b1")
    assert record.record_accepted(Refusing(), rec.id, HANDLE, journal, attempts=1) is False
    assert journal.path.exists()
    assert journal.replay(store) == 1 and not journal.path.exists()
    again = store.get_request(rec.id)
    assert again.status == "queued" and again.fal_request_id == "fal-1"


def test_a_lock_held_for_a_while_is_waited_out(store):
    rec = store.record_request(endpoint=SCHNELL, payload={"prompt": "p"})
    store.mark_submitted(rec.id)
    calls = []

    def flaky():
        calls.append(1)
        if len(calls) < 3:
            raise StoreUnavailable("database is locked")
        return store.mark_queued(rec.id, fal_request_id="f", status_url=None, response_url=None, cancel_url=None)

    assert record.write_retrying(flaky, first_wait=0.0) is True and len(calls) == 3
    with pytest.raises(StoreError):
        record.write_retrying(lambda: store.get_request("nope"), first_wait=0.0)
