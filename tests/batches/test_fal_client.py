"""core.fal (the client, and the one status-following path) against the fal stand-in over real HTTP (httpx.MockTransport only for fine-grained cases).

What must hold: the queue path works end to end; every fault ends in success after
retries or in its named error; NO fault ever makes one job into two paid submissions; the key never
leaks into logs, messages or reprs.
"""
from __future__ import annotations

import base64
import io
import json
import logging
import threading
import time

import httpx
import pytest
from PIL import Image

from core.config import load_settings
from core.errors import (
    FalAuthError,
    FalBadResponse,
    FalCancelled,
    FalError,
    FalRateLimited,
    FalServerError,
    FalTimeout,
    FalUnavailable,
    FalValidationError,
)
from core.fal import (
    Completed,
    FalClient,
    FalOutput,
    InProgress,
    OutputImage,
    QueueHandle,
    Queued,
    RetryPolicy,
    handle_from_row,
    parse_output,
    retry_reason,
)
from core.fal.follow import Cadence, Finished, Gone, Outage, PollPolicy, Signals, follow
from core.catalog.payloads import payload_hash
from tests.standins.fal_server import DEFAULT_KEY

SCHNELL = "fal-ai/flux/schnell"
EDIT = "fal-ai/flux-2/lora/edit"


def _wait_completed(client: FalClient, handle: QueueHandle, limit: float = 15.0) -> Completed:
    """Poll like the batch runner does; the limit only guards against a hang."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        status = client.status(handle)
        if isinstance(status, Completed):
            return status
        time.sleep(0.02)
    raise AssertionError(f"{handle.request_id} did not complete")


def _output(client: FalClient, endpoint: str, body: dict) -> FalOutput:
    """Submit, wait for COMPLETED, and fetch the result."""
    handle = client.submit(endpoint, body)
    _wait_completed(client, handle)
    return client.result(handle)


def _png_data_uri(size=(64, 48)) -> str:
    buf = io.BytesIO()
    Image.new("RGB", size, (10, 20, 30)).save(buf, "PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


# --- the happy paths ----------------------------------------------------------------------------

def test_queue_path_goes_queued_then_in_progress_then_completed_and_downloads_the_image(
        fal_standin, standin_fal_client):
    """A second job behind a busy worker is Queued with a position, then runs, completes, and its
    result image downloads at the requested size and format."""
    fal_standin.set_capacity(1)
    fal_standin.set_latency(0.3)
    client = standin_fal_client
    first = client.submit(SCHNELL, {"prompt": "a red fox", "image_size": "portrait_4_3"})
    second = client.submit(SCHNELL, {"prompt": "a red fox", "image_size": "portrait_4_3",
                                     "output_format": "png", "seed": 7})
    assert isinstance(client.status(second), Queued)
    assert client.status(second).position == 0

    seen = []
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        status = client.status(second)
        if not seen or type(status) is not seen[-1]:
            seen.append(type(status))
        if isinstance(status, Completed):
            break
        time.sleep(0.02)
    assert seen == [Queued, InProgress, Completed]
    done = client.status(second)
    assert done.ok and done.metrics["inference_time"] > 0
    assert any("finished" in entry["message"] for entry in done.logs)

    output = client.result(second)
    assert output.seed == 7 and output.raw["prompt"] == "a red fox"
    (image,) = output.images
    assert (image.width, image.height, image.content_type) == (768, 1024, "image/png")
    assert output.nsfw == (False,) and output.inference_s == pytest.approx(0.3)
    data, content_type = client.download(image.url)
    assert content_type == "image/png"
    assert Image.open(io.BytesIO(data)).size == (768, 1024)
    assert _wait_completed(client, first).ok
    assert fal_standin.submissions == 2


def test_edit_output_follows_the_endpoint_defaults(fal_standin, standin_fal_client):
    """flux-2/lora/edit defaults to png and, without image_size, the stand-in makes 1024x1024
    (and flags it)."""
    output = _output(standin_fal_client, EDIT, {"prompt": "make it blue", "num_images": 2, "seed": 3,
                                                "image_urls": [_png_data_uri()]})
    assert [(i.width, i.height, i.content_type) for i in output.images] == \
        [(1024, 1024, "image/png")] * 2
    assert output.nsfw == (False, False) and output.seed == 3
    assert fal_standin.submissions == 1
    assert "image_size_defaulted" in fal_standin.received[0]["flags"]


def test_sync_mode_result_data_uri_downloads_without_http(standin_fal_client):
    output = _output(standin_fal_client, SCHNELL, {"prompt": "x", "sync_mode": True,
                                                   "image_size": "square"})
    url = output.images[0].url
    assert url.startswith("data:image/jpeg;base64,")
    data, content_type = standin_fal_client.download(url)
    assert content_type == "image/jpeg"
    assert Image.open(io.BytesIO(data)).size == (512, 512)


def test_unknown_keys_are_dropped_by_fal_not_refused(fal_standin, standin_fal_client):
    """`strength` is not a FLUX.2 parameter: fal accepts the body and ignores the key."""
    handle = standin_fal_client.submit(EDIT, {"prompt": "p", "image_urls": ["https://x/y.png"],
                                              "strength": 0.65})
    assert _wait_completed(standin_fal_client, handle).ok
    assert fal_standin.dropped_keys == [["strength"]]


def test_handle_from_row_resumes_a_job_in_a_new_client(fal_standin, standin_fal_client):
    """After a crash the runner rebuilds the handle from its row and a fresh client follows it;
    missing URLs are derived from owner/app, like fal."""
    handle = standin_fal_client.submit(EDIT, {"prompt": "p", "image_urls": ["https://x/y.png"]})
    with FalClient(load_settings()) as fresh:
        same = handle_from_row(handle.endpoint, handle.request_id, handle.status_url,
                               handle.response_url, handle.cancel_url)
        derived = handle_from_row(handle.endpoint, handle.request_id, None, None, None)
        assert derived.status_url == handle.status_url
        assert "/fal-ai/flux-2/requests/" in derived.response_url
        assert _wait_completed(fresh, derived).ok
        assert fresh.result(same).images
    assert fal_standin.submissions == 1


def test_one_client_is_safe_to_share_between_threads(fal_standin, standin_fal_client):
    results, errors = [], []

    def work(i: int) -> None:
        try:
            handle = standin_fal_client.submit(SCHNELL, {"prompt": f"p{i}", "image_size": "square"})
            _wait_completed(standin_fal_client, handle)
            results.append(standin_fal_client.result(handle))
        except Exception as e:  # noqa: BLE001 - collected and asserted below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len(results) == 16 and fal_standin.submissions == 16


# --- the output, parsed once --------------------------------------------------------------------

FLUX2_OUTPUT = {  # FLUX.2's ImageFile model: file_name / file_size often null
    "images": [{"url": "https://v3.fal.media/files/a/x.png", "content_type": "image/png",
                "file_name": None, "file_size": 812345, "width": 1024, "height": 768},
               {"url": "https://v3.fal.media/files/a/y.png", "content_type": "image/png",
                "file_name": "y.png", "file_size": None, "width": 1024, "height": 768}],
    "seed": 42, "has_nsfw_concepts": [False, True], "prompt": "p", "timings": {"inference": 3.25}}
SCHNELL_OUTPUT = {  # the legacy Image model: url, width, height, content_type
    "images": [{"url": "https://v3.fal.media/files/b/z.jpeg", "width": 576, "height": 1024,
                "content_type": "image/jpeg"}],
    "seed": 7, "has_nsfw_concepts": [False], "prompt": "p", "timings": {"inference": 0.4}}


def test_parse_output_reads_flux2_and_schnell_shapes_into_typed_values():
    flux2 = parse_output(FLUX2_OUTPUT)
    assert flux2.images == (
        OutputImage("https://v3.fal.media/files/a/x.png", 1024, 768, "image/png", 812345),
        OutputImage("https://v3.fal.media/files/a/y.png", 1024, 768, "image/png", None))
    assert (flux2.seed, flux2.nsfw, flux2.inference_s) == (42, (False, True), 3.25)
    assert flux2.raw is FLUX2_OUTPUT
    schnell = parse_output(SCHNELL_OUTPUT)
    assert schnell.images == (OutputImage("https://v3.fal.media/files/b/z.jpeg", 576, 1024, "image/jpeg"),)
    assert (schnell.seed, schnell.nsfw, schnell.inference_s) == (7, (False,), 0.4)


def test_parse_output_turns_missing_or_mistyped_optional_fields_into_none():
    """Only `images[].url` is promised everywhere: the rest may be absent or of another type,
    which must not stop the images being kept."""
    out = parse_output({"images": [{"url": "data:image/png;base64,AAAA", "width": "1024",
                                    "height": True, "content_type": 3, "file_size": -1}],
                        "seed": "7", "has_nsfw_concepts": [None, "no"], "timings": {"inference": "1"}})
    assert out.images == (OutputImage("data:image/png;base64,AAAA"),)
    assert (out.seed, out.nsfw, out.inference_s) == (None, (None, None), None)
    bare = parse_output({"images": [], "seed": True})
    assert (bare.images, bare.seed, bare.nsfw, bare.inference_s) == ((), None, (), None)


@pytest.mark.parametrize("body, problem", [
    ([SCHNELL_OUTPUT], "the body is a list, not an object"),
    (None, "the body is null"),
    ("images", "the body is a string"),
    ({"seed": 1, "prompt": "p"}, "no `images`"),
    ({"images": None}, "no `images`"),
    ({"images": {"url": "https://x/y.png"}}, "`images` is an object, not a list"),
    ({"images": ["https://x/y.png"]}, "image 0 has no URL"),
    ({"images": [{"url": "https://x/a.png"}, {"width": 3}]}, "image 1 has no URL"),
    ({"images": [{"url": ""}]}, "image 0 has no URL"),
])
def test_parse_output_refuses_an_unexpected_answer_keeping_it(body, problem):
    with pytest.raises(FalBadResponse, match="not what its schema promises") as e:
        parse_output(body, request_id="r-9")
    assert problem in str(e.value) and "r-9" in str(e.value)
    assert e.value.raw is body and e.value.request_id == "r-9"


@pytest.mark.parametrize("fault, params, raw_check", [
    ("list_body", {}, lambda raw: isinstance(raw, list) and raw[0]["images"]),
    ("missing_fields", {}, lambda raw: isinstance(raw, dict) and "images" not in raw and raw["seed"] == 5),
])
def test_result_of_an_unexpected_shape_raises_bad_response_once_without_retries(
        fal_standin, standin_fal_client, fal_sleeps, fault, params, raw_check):
    """Asking again would get the same answer: no retry, and the body travels with the error
    so the runner can keep it with the failed request."""
    fal_standin.inject("job", fault, **params)
    handle = standin_fal_client.submit(SCHNELL, {"prompt": "p", "seed": 5})
    assert _wait_completed(standin_fal_client, handle).ok
    with pytest.raises(FalBadResponse) as e:
        standin_fal_client.result(handle)
    assert raw_check(e.value.raw) and e.value.status_code == 200
    assert e.value.request_id == handle.request_id
    assert fal_sleeps == [] and fal_standin.stats()["requests"]["result"] == 1


def test_result_with_images_lacking_sizes_parses_with_none(fal_standin, standin_fal_client):
    fal_standin.inject("job", "missing_fields", fields=["seed", "has_nsfw_concepts", "timings"],
                       image_fields=["width", "height", "content_type"])
    output = _output(standin_fal_client, SCHNELL, {"prompt": "p", "image_size": "square"})
    (image,) = output.images
    assert (image.width, image.height, image.content_type) == (None, None, None)
    assert (output.seed, output.nsfw, output.inference_s) == (None, (), None)
    data, content_type = standin_fal_client.download(image.url)
    assert content_type == "image/jpeg" and Image.open(io.BytesIO(data)).size == (512, 512)


def test_result_that_is_not_json_raises_bad_response_with_the_text():
    def handler(request):
        return httpx.Response(200, text="<html>oops</html>", headers={"content-type": "text/html"})

    handle = handle_from_row(SCHNELL, "r", None, None, None, queue_url="https://queue.fal.run")
    with _mock_client(handler, []) as client, pytest.raises(FalBadResponse, match="not JSON") as e:
        client.result(handle)
    assert e.value.raw == "<html>oops</html>" and e.value.status_code == 200


# --- status stream ------------------------------------------------------------------------------

def _statuses(client: FalClient, handle: QueueHandle, *, poll_every: float = 0.1) -> list:
    """What the one status-following path (`core.fal.follow.follow`, stream first, then polling)
    reports: Queued(position) and InProgress(logs) as they change, then the final Completed, or
    the Gone/Lost outcome. A hang fails the test instead of blocking it."""
    out: list = []
    done = threading.Event()

    def consume() -> None:
        try:
            outcome = follow(client, handle, cadence=Cadence(PollPolicy(first=poll_every, proportion=0.0,
                                                                         cap=poll_every)),
                             signals=Signals(threading.Event(), threading.Event()), outage=Outage(30),
                             on_queued=lambda position: out.append(Queued(position)),
                             on_running=lambda logs: out.append(InProgress(logs)), stream=True)
            out.append(outcome.status if isinstance(outcome, Finished) else outcome)
        except Exception as e:  # noqa: BLE001 - handed to the asserting thread
            out.append(e)
        finally:
            done.set()

    threading.Thread(target=consume, daemon=True).start()
    assert done.wait(15), "follow did not end"
    if out and isinstance(out[-1], Exception):
        raise out[-1]
    return out


def test_follow_takes_each_change_from_the_stream_without_polling(fal_standin,
                                                                          standin_fal_client):
    fal_standin.set_capacity(1)
    fal_standin.set_latency(0.3)
    standin_fal_client.submit(SCHNELL, {"prompt": "blocker"})
    second = standin_fal_client.submit(SCHNELL, {"prompt": "waits"})
    seen = _statuses(standin_fal_client, second)
    assert [type(s) for s in seen] == [Queued, InProgress, Completed]
    assert seen[0].position == 0
    assert seen[-1].ok and seen[-1].metrics["inference_time"] > 0
    assert any("finished" in entry["message"] for entry in seen[-1].logs)
    requests = fal_standin.stats()["requests"]
    assert requests["stream"] == 1 and "status" not in requests


def test_follow_reads_named_events_and_comments_on_the_stream(fal_standin, standin_fal_client):
    fal_standin.set_latency(0.2)
    fal_standin.inject("stream", "named")
    handle = standin_fal_client.submit(SCHNELL, {"prompt": "p"})
    seen = _statuses(standin_fal_client, handle)
    assert [type(s) for s in seen] == [InProgress, Completed]
    assert "status" not in fal_standin.stats()["requests"]


def test_follow_reports_a_failed_job_as_completed_with_its_error(fal_standin,
                                                                        standin_fal_client):
    fal_standin.inject("job", "content_policy_violation")
    handle = standin_fal_client.submit(SCHNELL, {"prompt": "forbidden"})
    last = _statuses(standin_fal_client, handle)[-1]
    assert isinstance(last, Completed) and not last.ok
    assert last.error_type == "content_policy_violation"


@pytest.mark.parametrize("abrupt", [False, True])
def test_stream_closed_early_falls_back_to_polling_until_completed(fal_standin, standin_fal_client,
                                                                   caplog, abrupt):
    """The stream ends (cleanly or mid-body) after its first event: polling takes over, and
    the caller still sees every change once, ending with Completed."""
    fal_standin.set_latency(0.4)
    fal_standin.inject("stream", "cut", events=1, abrupt=abrupt)
    handle = standin_fal_client.submit(SCHNELL, {"prompt": "p"})
    with caplog.at_level(logging.WARNING, logger="core.fal"):
        seen = _statuses(standin_fal_client, handle, poll_every=0.02)
    assert isinstance(seen[0], InProgress) and isinstance(seen[-1], Completed) and seen[-1].ok
    assert all(a != b for a, b in zip(seen, seen[1:]))     # polling yields changes only
    assert fal_standin.stats()["requests"]["status"] >= 2   # it polled while the job ran
    assert '"event":"fal.stream_fallback"' in caplog.text


@pytest.mark.parametrize("fault", ["502", "500", "401", "429", "drop"])
def test_stream_errors_fall_back_to_polling(fal_standin, standin_fal_client, fault):
    fal_standin.set_latency(0.2)
    fal_standin.inject("stream", fault)
    handle = standin_fal_client.submit(SCHNELL, {"prompt": "p"})
    seen = _statuses(standin_fal_client, handle, poll_every=0.02)
    assert isinstance(seen[-1], Completed) and seen[-1].ok
    assert fal_standin.stats()["requests"]["status"] >= 1


def test_following_an_unknown_request_ends_gone_as_fal_says(fal_standin, standin_fal_client):
    ghost = handle_from_row(SCHNELL, "no-such-id", None, None, None)
    outcome = _statuses(standin_fal_client, ghost)[-1]
    assert isinstance(outcome, Gone) and "no longer knows request no-such-id" in outcome.message


def _stream_mock(body: bytes, *, content_type="text/event-stream", polls=None):
    """A fal whose stream answers `body`; polls (if any) answer COMPLETED and are counted."""
    def handler(request):
        if request.url.path.endswith("/stream"):
            assert request.headers["accept"] == "text/event-stream"
            return httpx.Response(200, content=body, headers={"content-type": content_type,
                                                              "x-fal-request-id": "r"})
        if polls is not None:
            polls.append(request)
        return httpx.Response(200, json={"status": "COMPLETED", "logs": None, "metrics": {}},
                              headers={"x-fal-request-id": "r"})
    return handler


@pytest.mark.parametrize("body", [
    b'data: {"status": "IN_PROGRESS", "logs": null}\n\ndata: {"status": "COMPLETED", "logs": null}\n\n',
    b'event: status\r\ndata:{"status": "IN_PROGRESS"}\r\n\r\n: keep-alive\r\n\r\n'
    b'id: 2\r\nevent: message\r\ndata: {"status": "COMPLETED",\r\ndata:  "metrics": {"inference_time": 1.5}}\r\n\r\n',
    b'data: {"status": "IN_PROGRESS"}\n\ndata: {"status": "COMPLETED"}',   # no blank line at the end
])
def test_stream_framing_variants_are_read_without_polling(body):
    polls: list = []
    handle = handle_from_row(SCHNELL, "r", None, None, None, queue_url="https://queue.fal.run")
    with _mock_client(_stream_mock(body, polls=polls), []) as client:
        seen = _statuses(client, handle, poll_every=0.0)
    assert [type(s) for s in seen] == [InProgress, Completed] and polls == []


@pytest.mark.parametrize("body, content_type", [
    (b'data: [1, 2]\n\n', "text/event-stream"),
    (b'data: not json\n\n', "text/event-stream"),
    (b'data: {"status": "WEIRD"}\n\n', "text/event-stream"),
    (b'{"status": "COMPLETED"}', "application/json"),
])
def test_an_unreadable_stream_falls_back_to_polling(body, content_type):
    polls: list = []
    handle = handle_from_row(SCHNELL, "r", None, None, None, queue_url="https://queue.fal.run")
    with _mock_client(_stream_mock(body, content_type=content_type, polls=polls), []) as client:
        seen = _statuses(client, handle, poll_every=0.0)
    assert [type(s) for s in seen] == [Completed] and len(polls) == 1


# --- cancel -------------------------------------------------------------------------------------

def test_cancel_queued_job_then_result_raises_cancelled(fal_standin, standin_fal_client):
    fal_standin.set_capacity(1)
    fal_standin.set_latency(5)
    client = standin_fal_client
    client.submit(SCHNELL, {"prompt": "blocker"})
    queued = client.submit(SCHNELL, {"prompt": "to cancel"})
    assert client.cancel(queued) == "CANCELLATION_REQUESTED"
    status = client.status(queued)
    assert isinstance(status, Completed) and not status.ok
    with pytest.raises(FalCancelled, match="cancelled"):
        client.result(queued)


def test_cancel_of_a_finished_job_and_of_an_unknown_id(fal_standin, standin_fal_client):
    client = standin_fal_client
    handle = client.submit(SCHNELL, {"prompt": "p"})
    _wait_completed(client, handle)
    assert client.cancel(handle) == "ALREADY_COMPLETED"
    ghost = handle_from_row(SCHNELL, "no-such-id", None, None, None)
    assert client.cancel(ghost) == "NOT_FOUND"
    with pytest.raises(FalError, match="does not know request") as e:
        client.status(ghost)
    assert e.value.status_code == 404


# --- auth ---------------------------------------------------------------------------------------

def test_without_a_key_nothing_is_sent_and_the_error_says_set_fal_key(fal_standin, monkeypatch):
    monkeypatch.delenv("FAL_KEY")
    with FalClient(load_settings()) as client:
        with pytest.raises(FalAuthError, match="FAL_KEY"):
            client.submit(SCHNELL, {"prompt": "p"})
    assert fal_standin.stats()["received"] == 0


def test_wrong_key_is_a_401_auth_error_without_retries(fal_standin, fal_sleeps):
    with FalClient(load_settings(), key="wrong-key", retry=RetryPolicy(sleep=fal_sleeps.append)) as c:
        with pytest.raises(FalAuthError, match=r"rejected the key \(401\): check FAL_KEY") as e:
            c.submit(SCHNELL, {"prompt": "p"})
    assert e.value.status_code == 401
    assert fal_sleeps == [] and fal_standin.submissions == 0


# --- validation (422) ---------------------------------------------------------------------------

def test_422_detail_list_names_the_fields(fal_standin, standin_fal_client):
    with pytest.raises(FalValidationError) as e:
        standin_fal_client.submit(SCHNELL, {"prompt": "p", "num_inference_steps": 40})
    assert isinstance(e.value.detail, list)
    assert e.value.detail[0]["loc"] == ["body", "num_inference_steps"]
    assert "num_inference_steps: Input should be less than or equal to 12" in str(e.value)
    assert fal_standin.submissions == 0


def test_422_detail_as_plain_string(fal_standin, standin_fal_client):
    fal_standin.inject("submit", "422", detail="Image too small: at least 256 px")
    with pytest.raises(FalValidationError, match="Image too small: at least 256 px") as e:
        standin_fal_client.submit(SCHNELL, {"prompt": "p"})
    assert e.value.detail == "Image too small: at least 256 px"


def test_job_failing_with_content_policy_replays_422_on_result(fal_standin, standin_fal_client):
    fal_standin.inject("job", "content_policy_violation")
    handle = standin_fal_client.submit(SCHNELL, {"prompt": "forbidden"})
    status = _wait_completed(standin_fal_client, handle)
    assert status.error_type == "content_policy_violation" and status.error
    with pytest.raises(FalValidationError, match=r"prompt: .*\[content_policy_violation\]") as e:
        standin_fal_client.result(handle)
    assert e.value.detail[0]["type"] == "content_policy_violation"


# --- 429 ----------------------------------------------------------------------------------------

def test_429_on_submit_honours_retry_after_then_succeeds(fal_standin, standin_fal_client, fal_sleeps):
    fal_standin.inject("submit", "429", retry_after=2)
    handle = standin_fal_client.submit(SCHNELL, {"prompt": "p"})
    assert handle.request_id
    assert fal_sleeps == [2.0]
    assert fal_standin.submissions == 1


def test_429_with_a_long_retry_after_is_not_waited_for(fal_standin, standin_fal_client, fal_sleeps):
    fal_standin.inject("submit", "429", retry_after=3600)
    with pytest.raises(FalRateLimited, match="wait 3600 s") as e:
        standin_fal_client.submit(SCHNELL, {"prompt": "p"})
    assert e.value.retry_after == 3600 and fal_sleeps == []
    assert fal_standin.submissions == 0


def test_429_that_never_ends_gives_rate_limited_after_max_attempts(fal_standin, fal_sleeps):
    fal_standin.inject("submit", "429", times=10, retry_after=None)
    policy = RetryPolicy(max_attempts=3, sleep=fal_sleeps.append)
    with FalClient(load_settings(), retry=policy) as client, pytest.raises(FalRateLimited):
        client.submit(SCHNELL, {"prompt": "p"})
    assert len(fal_sleeps) == 2 and fal_standin.submissions == 0


# --- submit: resend only when fal surely did not accept -----------------------------------------

def test_ingress_502_on_submit_is_retried_and_accepted_once(fal_standin, standin_fal_client, fal_sleeps):
    fal_standin.inject("submit", "502", times=2)
    standin_fal_client.submit(SCHNELL, {"prompt": "p"})
    assert len(fal_sleeps) == 2
    assert fal_standin.submissions == 1
    assert fal_standin.stats()["received"] == 3


@pytest.mark.parametrize("accepted", [True, False])
def test_500_with_request_id_on_submit_is_never_resent(fal_standin, standin_fal_client, fal_sleeps,
                                                       accepted):
    """A 5xx that came from fal (x-fal-request-id) may hide an accepted job: raise, don't resend."""
    fal_standin.inject("submit", "500", accepted=accepted)
    with pytest.raises(FalServerError, match="NOT sent again") as e:
        standin_fal_client.submit(SCHNELL, {"prompt": "p"})
    assert e.value.request_id
    assert fal_standin.stats()["received"] == 1 and fal_sleeps == []
    assert fal_standin.submissions == (1 if accepted else 0)


def test_runner_503_on_submit_is_a_server_error_with_its_type(fal_standin, standin_fal_client):
    fal_standin.inject("submit", "503")
    with pytest.raises(FalServerError, match="runner_scheduling_failure") as e:
        standin_fal_client.submit(SCHNELL, {"prompt": "p"})
    assert e.value.error_type == "runner_scheduling_failure"
    assert fal_standin.stats()["received"] == 1


@pytest.mark.parametrize("accepted", [True, False])
def test_dropped_connection_on_submit_is_never_resent(fal_standin, standin_fal_client, fal_sleeps,
                                                      accepted):
    fal_standin.inject("submit", "drop", accepted=accepted)
    with pytest.raises(FalUnavailable, match="may have been accepted"):
        standin_fal_client.submit(SCHNELL, {"prompt": "p"})
    assert fal_standin.stats()["received"] == 1 and fal_sleeps == []
    assert fal_standin.submissions == (1 if accepted else 0)


def test_read_timeout_on_submit_is_never_resent(fal_standin, fal_sleeps):
    """fal took the body and is slow to answer: the job exists, a resend would pay twice."""
    fal_standin.inject("submit", "slow", seconds=0.5)
    with FalClient(load_settings(), timeout=httpx.Timeout(0.1, connect=5),
                   retry=RetryPolicy(sleep=fal_sleeps.append)) as client:
        with pytest.raises(FalTimeout, match="NOT sent again"):
            client.submit(SCHNELL, {"prompt": "p"})
    deadline = time.monotonic() + 10
    while fal_standin.submissions < 1 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert fal_standin.submissions == 1
    assert fal_standin.stats()["received"] == 1 and fal_sleeps == []


def test_connection_refused_is_retried_then_unavailable(fal_sleeps, monkeypatch):
    """Nothing listens on port 9: safe to retry even a submit; ends in FalUnavailable."""
    monkeypatch.setenv("FAL_KEY", DEFAULT_KEY)
    policy = RetryPolicy(max_attempts=3, sleep=fal_sleeps.append)
    with FalClient(load_settings(), retry=policy) as client:
        with pytest.raises(FalUnavailable, match="could not connect.*nothing was sent"):
            client.submit(SCHNELL, {"prompt": "p"})
    assert len(fal_sleeps) == 2
    assert all(0 < d <= policy.cap for d in fal_sleeps)


# --- polling, results, downloads: idempotent, retried -------------------------------------------

@pytest.mark.parametrize("fault", ["500", "503", "502", "504", "drop", "429"])
@pytest.mark.parametrize("where", ["status", "result"])
def test_polling_faults_are_retried_until_success(fal_standin, standin_fal_client, fal_sleeps,
                                                  where, fault):
    handle = standin_fal_client.submit(SCHNELL, {"prompt": "p"})
    _wait_completed(standin_fal_client, handle)
    fal_standin.inject(where, fault, times=2)
    if where == "status":
        assert standin_fal_client.status(handle).ok
    else:
        assert standin_fal_client.result(handle).images
    assert len(fal_sleeps) == 2
    assert fal_standin.submissions == 1


def test_slow_status_answer_times_out_and_is_retried(fal_standin, fal_sleeps):
    # 0.5 s leaves the answer after the retry time to arrive on a loaded 2-core machine
    with FalClient(load_settings(), timeout=httpx.Timeout(0.5, connect=5),
                   retry=RetryPolicy(sleep=fal_sleeps.append)) as client:
        handle = client.submit(SCHNELL, {"prompt": "p"})
        fal_standin.inject("status", "slow", seconds=1.5)
        assert isinstance(client.status(handle), (InProgress, Completed))
    assert len(fal_sleeps) == 1


def test_status_failing_for_good_raises_after_max_attempts(fal_standin, fal_sleeps):
    policy = RetryPolicy(max_attempts=3, sleep=fal_sleeps.append)
    with FalClient(load_settings(), retry=policy) as client:
        handle = client.submit(SCHNELL, {"prompt": "p"})
        fal_standin.inject("status", "503", times=5)
        with pytest.raises(FalServerError, match="after 3 attempts"):
            client.status(handle)
    assert len(fal_sleeps) == 2


def test_status_401_is_not_retried(fal_standin, standin_fal_client, fal_sleeps):
    handle = standin_fal_client.submit(SCHNELL, {"prompt": "p"})
    fal_standin.inject("status", "401")
    with pytest.raises(FalAuthError):
        standin_fal_client.status(handle)
    assert fal_sleeps == []


@pytest.mark.parametrize("fault", ["502", "drop", "500"])
def test_download_faults_are_retried(fal_standin, standin_fal_client, fal_sleeps, fault):
    url = _output(standin_fal_client, SCHNELL, {"prompt": "p", "image_size": "square"}).images[0].url
    fal_standin.inject("file", fault)
    data, content_type = standin_fal_client.download(url)
    assert content_type == "image/jpeg" and Image.open(io.BytesIO(data)).size == (512, 512)
    assert len(fal_sleeps) == 1


def test_download_of_an_expired_file_says_so(fal_standin, standin_fal_client):
    with pytest.raises(FalError, match="gone"):
        standin_fal_client.download(f"{fal_standin.url}/files/expired.png")


def test_download_refuses_a_declared_size_over_the_default_cap_without_reading_it(
        fal_standin, standin_fal_client, fal_sleeps):
    """300 MB declared, 200 MB allowed: refused from the headers, the body is never read."""
    assert standin_fal_client.max_download_bytes == 200 * 1024 * 1024
    url = fal_standin.large_file(300 * 1024 * 1024)
    with pytest.raises(FalError, match="declares 314572800 bytes, over the 200 MB limit") as e:
        standin_fal_client.download(url)
    assert "not kept" in str(e.value) and fal_sleeps == []
    time.sleep(0.2)
    assert fal_standin.large_bytes_sent < 64 * 1024 * 1024


def test_download_of_an_undeclared_size_stops_at_the_cap_and_holds_no_more(fal_standin, fal_sleeps):
    """A chunked body of 64 MB against a 4 MB cap: reading stops at the cap, and the client's
    memory never grows past it (traced)."""
    import tracemalloc

    cap = 4 * 1024 * 1024
    url = fal_standin.large_file(64 * 1024 * 1024, declare_length=False)
    with FalClient(load_settings(), retry=RetryPolicy(sleep=fal_sleeps.append),
                   max_download_bytes=cap) as client:
        tracemalloc.start()
        try:
            with pytest.raises(FalError, match="has more than 4194304 bytes, over the 4 MB limit"):
                client.download(url)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert peak < cap + 2 * 1024 * 1024
    assert fal_sleeps == []
    time.sleep(0.2)
    assert fal_standin.large_bytes_sent < 48 * 1024 * 1024


@pytest.mark.parametrize("declared", [True, False])
def test_download_of_exactly_the_cap_is_kept_and_one_byte_more_is_not(fal_standin, fal_sleeps,
                                                                      declared):
    size = 3 * 1024 * 1024 + 5
    url = fal_standin.large_file(size, declare_length=declared)
    with FalClient(load_settings(), max_download_bytes=size) as client:
        data, content_type = client.download(url)
    assert len(data) == size and data.startswith(b"\x89PNG") and content_type == "image/png"
    with FalClient(load_settings(), max_download_bytes=size - 1) as client, \
            pytest.raises(FalError, match="over the"):
        client.download(url)


def test_a_data_uri_result_over_the_cap_is_refused():
    with FalClient(load_settings(), max_download_bytes=10) as client, \
            pytest.raises(FalError, match=r"data: URI result is \d+ bytes, over the 10 byte limit"):
        client.download(_png_data_uri((1, 1)))


def test_a_submit_during_an_outage_is_resent_and_accepted_once_when_it_ends(fal_standin):
    """Gateway pages without a fal request id mean fal never saw the body: resending is safe,
    and the job is accepted exactly once after the outage."""
    sleeps: list[float] = []

    def sleep(delay: float) -> None:
        sleeps.append(delay)
        if len(sleeps) == 3:
            fal_standin.end_outage()

    fal_standin.outage(60)
    with FalClient(load_settings(), retry=RetryPolicy(max_attempts=5, sleep=sleep)) as client:
        handle = client.submit(SCHNELL, {"prompt": "p"})
        assert _wait_completed(client, handle).ok
    assert len(sleeps) == 3 and fal_standin.stats()["outage_answers"] == 3
    assert fal_standin.submissions == 1


def test_an_outage_longer_than_the_retries_is_unavailable_and_surely_not_sent(fal_standin, fal_sleeps):
    policy = RetryPolicy(max_attempts=3, sleep=fal_sleeps.append)
    with FalClient(load_settings(), retry=policy) as client:
        handle = client.submit(SCHNELL, {"prompt": "p"})
        fal_standin.outage(60)
        for call in (lambda: client.submit(SCHNELL, {"prompt": "q"}), lambda: client.status(handle),
                     lambda: client.result(handle), lambda: client.cancel(handle)):
            with pytest.raises(FalUnavailable, match="gateway answered 502 after 3 attempts") as e:
                call()
            assert e.value.not_sent
    assert len(fal_sleeps) == 4 * 2 and fal_standin.submissions == 1


def test_no_fault_ever_makes_two_submissions(fal_standin, fal_sleeps):
    """Every submit-side fault, in sequence: each payload is accepted at most once."""
    faults = [("429", {}), ("502", {}), ("504", {}), ("500", {"accepted": True}), ("500", {}),
              ("503", {}), ("drop", {"accepted": True}), ("drop", {}), ("401", {}), ("422", {})]
    with FalClient(load_settings(), retry=RetryPolicy(sleep=fal_sleeps.append)) as client:
        for i, (fault, params) in enumerate(faults):
            fal_standin.inject("submit", fault, **params)
            try:
                client.submit(SCHNELL, {"prompt": f"job {i}"})
            except FalError:
                pass
    counts = fal_standin.submissions_by_hash
    assert counts and max(counts.values()) == 1
    assert fal_standin.submissions == len(counts)


# --- logging and secrets ------------------------------------------------------------------------

def test_each_payload_is_logged_as_one_json_line_with_data_uris_abbreviated(standin_fal_client, caplog):
    payload = {"prompt": "p", "image_urls": [_png_data_uri()]}
    with caplog.at_level(logging.INFO, logger="core.fal"):
        standin_fal_client.submit("fal-ai/flux-2/edit", payload)
    sends = [json.loads(r.getMessage()) for r in caplog.records
             if r.name == "core.fal" and '"fal.send"' in r.getMessage()]
    assert len(sends) == 1
    line = sends[0]
    assert line["endpoint"] == "fal-ai/flux-2/edit"
    assert line["payload_hash"] == payload_hash(payload)
    assert line["payload"]["image_urls"][0].startswith("data:image/png;base64,…(")
    assert "iVBOR" not in caplog.text  # no raw base64 in logs


def test_the_key_never_appears_in_logs_messages_or_reprs(fal_standin, fal_sleeps, caplog):
    key = DEFAULT_KEY
    messages = []
    with caplog.at_level(logging.DEBUG):
        with FalClient(load_settings(), retry=RetryPolicy(max_attempts=2, sleep=fal_sleeps.append)) as c:
            messages.append(repr(c))
            messages.append(repr(load_settings()))
            handle = c.submit(SCHNELL, {"prompt": "p"})
            for where, fault in [("submit", "500"), ("submit", "drop"), ("status", "503"),
                                 ("status", "401"), ("submit", "422"), ("submit", "429")]:
                fal_standin.inject(where, fault)
                try:
                    c.status(handle) if where == "status" else c.submit(SCHNELL, {"prompt": "p"})
                except FalError as e:
                    messages.append(str(e))
                    messages.append(repr(e))
        fal_standin.reset()
        with FalClient(load_settings(), key="another-secret-key-xyz") as c2:
            try:
                c2.submit(SCHNELL, {"prompt": "p"})
            except FalAuthError as e:
                messages.append(str(e))
    assert len(messages) >= 8
    text = caplog.text + "\n".join(messages)
    assert key not in text and "another-secret-key-xyz" not in text
    assert "1234:not-a-real" not in text


@pytest.mark.parametrize("where, status", [
    ("submit", 400), ("submit", 401), ("submit", 422), ("submit", 500), ("status", 403),
    ("status", 400), ("result", 400), ("result", 500), ("cancel", 400), ("stream", 400),
])
def test_a_key_echoed_by_a_gateway_appears_in_no_message_repr_detail_or_log(
        fal_standin, fal_sleeps, caplog, where, status):
    """Some gateways echo the Authorization header in their error body: the error still says
    what the gateway said, with the key (and each half of it) masked everywhere."""
    key_id, key_secret = DEFAULT_KEY.split(":")
    error = None
    with caplog.at_level(logging.DEBUG), FalClient(
            load_settings(), retry=RetryPolicy(max_attempts=1, sleep=fal_sleeps.append)) as client:
        handle = None if where == "submit" else client.submit(SCHNELL, {"prompt": "p"})
        if where in ("result", "cancel"):
            _wait_completed(client, handle)
        fal_standin.inject(where, "echo_auth", status=status)
        try:
            if where == "submit":
                client.submit(SCHNELL, {"prompt": "p"})
            elif where == "stream":
                assert isinstance(_statuses(client, handle, poll_every=0.02)[-1], Completed)
            else:
                getattr(client, where)(handle)
        except FalError as e:
            error = e
    if where == "stream":   # the stream failed and polling took over; its log line says why
        seen = [str(r.getMessage()) for r in caplog.records if "fal.stream_fallback" in r.getMessage()]
        assert seen and "Authorization: Key ***" in seen[0]
    else:
        assert error is not None and error.status_code == status
        assert "Authorization: Key ***" in str(error)   # what the gateway said, masked
    texts = [str(error), repr(error), repr(getattr(error, "detail", None)),
             repr(getattr(error, "error_type", None)), repr(getattr(error, "raw", None))]
    texts += [r.getMessage() for r in caplog.records] + [repr(r.args) for r in caplog.records]
    text = "\n".join(texts)
    for secret in (DEFAULT_KEY, key_id, key_secret):
        assert secret not in text


def test_a_key_echoed_in_a_result_body_is_masked_in_the_kept_answer():
    """A 200 whose body is of the wrong shape is kept with the failure: masked too."""
    def handler(request):
        return httpx.Response(200, json=[{"echo": request.headers["authorization"]}],
                              headers={"x-fal-request-id": "r"})

    handle = handle_from_row(SCHNELL, "r", None, None, None, queue_url="https://queue.fal.run")
    settings = load_settings(env={"FAL_KEY": "key-id-0001:very-secret-part", "DASHBOARD_DATA_DIR": "/tmp/unused"})
    with FalClient(settings, transport=httpx.MockTransport(handler)) as client, \
            pytest.raises(FalBadResponse) as e:
        client.result(handle)
    assert e.value.raw == [{"echo": "Key ***"}]


# --- fine-grained cases (httpx.MockTransport) ---------------------------------------------------

def _mock_client(handler, sleeps, **kw) -> FalClient:
    settings = load_settings(env={"FAL_KEY": "k-mock", "FAL_QUEUE_URL": "https://queue.fal.run",
                                  "DASHBOARD_DATA_DIR": "/tmp/unused"})
    return FalClient(settings, transport=httpx.MockTransport(handler),
                     retry=RetryPolicy(sleep=sleeps.append, **kw))


def test_ingress_code_with_a_fal_request_id_on_submit_is_not_resent():
    """504 carrying x-fal-request-id came from fal itself (e.g. request_timeout): the job exists."""
    calls, sleeps = [], []

    def handler(request):
        calls.append(request)
        return httpx.Response(504, json={"detail": "Request timed out", "error_type": "request_timeout"},
                              headers={"x-fal-request-id": "r1"})

    with _mock_client(handler, sleeps) as client, pytest.raises(FalServerError, match="request_timeout"):
        client.submit(SCHNELL, {"prompt": "p"})
    assert len(calls) == 1 and sleeps == []


@pytest.mark.parametrize("exc", [httpx.ReadTimeout, httpx.RemoteProtocolError, httpx.ReadError,
                                 httpx.WriteTimeout])
def test_submit_transport_errors_after_sending_are_not_resent(exc):
    calls, sleeps = [], []

    def handler(request):
        calls.append(request)
        raise exc("boom", request=request)

    with _mock_client(handler, sleeps) as client, pytest.raises((FalTimeout, FalUnavailable)):
        client.submit(SCHNELL, {"prompt": "p"})
    assert len(calls) == 1


def test_connect_error_on_submit_is_retried_and_succeeds():
    calls, sleeps = [], []

    def handler(request):
        calls.append(request)
        if len(calls) < 3:
            raise httpx.ConnectError("refused", request=request)
        return httpx.Response(200, json={"status": "IN_QUEUE", "request_id": "abc", "queue_position": 4})

    with _mock_client(handler, sleeps) as client:
        handle = client.submit(EDIT, {"prompt": "p", "image_urls": ["u"]})
    assert len(calls) == 3 and len(sleeps) == 2
    # URLs missing from the answer are derived from owner/app like fal builds them
    assert handle.status_url == "https://queue.fal.run/fal-ai/flux-2/requests/abc/status"
    assert handle.queue_position == 4


def test_retry_after_as_http_date_is_honoured():
    calls, sleeps = [], []
    when = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(time.time() + 30))

    def handler(request):
        calls.append(request)
        if len(calls) == 1:
            return httpx.Response(429, headers={"Retry-After": when})
        rid = "r-1"
        base = f"https://queue.fal.run/fal-ai/flux/requests/{rid}"
        return httpx.Response(200, headers={"x-fal-request-id": rid}, json={
            "status": "IN_QUEUE", "request_id": rid, "response_url": base,
            "status_url": base + "/status", "cancel_url": base + "/cancel", "queue_position": 0})

    with _mock_client(handler, sleeps) as client:
        assert client.submit(SCHNELL, {"prompt": "p"}).request_id == "r-1"
    assert len(sleeps) == 1 and 20 < sleeps[0] <= 31


_REQ = httpx.Request("POST", "https://queue.fal.run/fal-ai/flux/schnell")


@pytest.mark.parametrize("error, submit, polls", [
    # (transport error, may a submit be resent?, may a status/result/cancel/download be?)
    (httpx.ConnectError("refused", request=_REQ), True, True),
    (httpx.ConnectTimeout("slow connect", request=_REQ), True, True),
    (httpx.PoolTimeout("no free connection", request=_REQ), True, True),
    (httpx.ReadTimeout("no answer", request=_REQ), False, True),
    (httpx.WriteTimeout("half sent", request=_REQ), False, True),
    (httpx.ReadError("reset", request=_REQ), False, True),
    (httpx.RemoteProtocolError("dropped", request=_REQ), False, True),
    (httpx.UnsupportedProtocol("ftp://", request=_REQ), False, False),
])
def test_retry_reason_for_transport_errors(error, submit, polls):
    """Only an error raised before a byte left lets a submit go again: after that the job may
    exist at fal. Idempotent calls may always go again (except a URL that cannot work)."""
    assert bool(retry_reason(idempotent=False, error=error)) is submit
    assert bool(retry_reason(idempotent=True, error=error)) is polls
    if submit:
        assert retry_reason(idempotent=False, error=error) == type(error).__name__


@pytest.mark.parametrize("code, from_fal, retry_after, submit, polls", [
    (429, True, None, True, True),        # refused for now: nothing was queued
    (429, True, 60.0, True, True),        # a Retry-After up to the limit is waited for
    (429, True, 60.5, False, False),      # longer: the caller decides (FalRateLimited)
    (502, False, None, True, True),       # a gateway page: the body never reached fal
    (503, False, None, True, True),
    (504, False, None, True, True),
    (504, True, None, False, True),       # fal's own 504 (request_timeout): the job may exist
    (503, True, None, False, True),
    (500, True, None, False, True),
    (500, False, None, False, True),      # 500 is not a gateway code: the job may exist
    (408, True, None, False, True),
    (400, True, None, False, False),
    (401, True, None, False, False),
    (403, True, None, False, False),
    (404, True, None, False, False),
    (422, True, None, False, False),
])
def test_retry_reason_for_answers(code, from_fal, retry_after, submit, polls):
    kw = {"status_code": code, "from_fal": from_fal, "retry_after": retry_after, "max_retry_after": 60.0}
    assert bool(retry_reason(idempotent=False, **kw)) is submit
    assert bool(retry_reason(idempotent=True, **kw)) is polls


def test_retry_reason_names_what_it_saw():
    assert retry_reason(idempotent=False, status_code=502) == "ingress 502"
    assert retry_reason(idempotent=False, status_code=429) == "429"
    assert retry_reason(idempotent=True, status_code=503, from_fal=True) == "503"
    assert retry_reason(idempotent=True) is None


def test_backoff_is_exponential_capped_and_jittered():
    policy = RetryPolicy(base=0.5, cap=3.0, jitter=0.5)
    for attempt, ceiling in [(1, 0.5), (2, 1.0), (3, 2.0), (4, 3.0), (9, 3.0)]:
        delays = [policy.backoff(attempt) for _ in range(50)]
        assert all(ceiling * 0.5 <= d <= ceiling for d in delays)
        assert len(set(delays)) > 1


def test_auth_goes_to_fal_only_and_extra_headers_cannot_replace_it():
    seen = {}

    def handler(request):
        seen[request.url.host] = request.headers.get("authorization")
        if request.url.host == "v3.fal.media":
            return httpx.Response(200, content=b"\x89PNG\r\n\x1a\nrest", headers={"content-type": ""})
        seen["store-io"] = request.headers.get("x-fal-store-io")
        return httpx.Response(200, json={"status": "IN_QUEUE", "request_id": "r"})

    with _mock_client(handler, []) as client:
        client.submit(SCHNELL, {"prompt": "p"},
                      headers={"X-Fal-Store-IO": "0", "Authorization": "Key stolen"})
        data, content_type = client.download("https://v3.fal.media/files/x")
    assert seen["queue.fal.run"] == "Key k-mock" and seen["store-io"] == "0"
    assert seen["v3.fal.media"] is None
    assert content_type == "image/png"


def test_result_before_completion_is_explained():
    def handler(request):
        return httpx.Response(202, json={"status": "IN_PROGRESS"}, headers={"x-fal-request-id": "r"})

    handle = handle_from_row(SCHNELL, "r", None, None, None, queue_url="https://queue.fal.run")
    with _mock_client(handler, []) as client, pytest.raises(FalError, match="not finished yet"):
        client.result(handle)


def test_unknown_endpoint_is_a_clear_error(fal_standin, standin_fal_client):
    with pytest.raises(FalError, match="no endpoint fal-ai/nope/model"):
        standin_fal_client.submit("fal-ai/nope/model", {"prompt": "p"})
    with pytest.raises(FalError, match="not a fal endpoint id"):
        standin_fal_client.submit("../etc", {"prompt": "p"})


def test_job_failing_on_the_runner_replays_503_as_server_error(fal_standin, standin_fal_client):
    """A replayed runner failure looks like a transient 5xx, so result() retries it (bounded),
    then names the error type."""
    fal_standin.inject("job", "runner_disconnected")
    handle = standin_fal_client.submit(SCHNELL, {"prompt": "p"})
    assert _wait_completed(standin_fal_client, handle).error_type == "runner_disconnected"
    with pytest.raises(FalServerError, match="runner_disconnected") as e:
        standin_fal_client.result(handle)
    assert e.value.error_type == "runner_disconnected"
    assert fal_standin.submissions == 1


def test_errors_say_whether_fal_surely_never_received_the_submit(fal_standin, fal_sleeps):
    """The runner resends later only what fal surely never received: a refused connection or a
    gateway page without a fal request id, never a connection dropped after sending."""
    closed = FalClient(load_settings(env={"FAL_KEY": "k", "FAL_QUEUE_URL": "http://127.0.0.1:9",
                                          "DASHBOARD_DATA_DIR": "/tmp/unused"}),
                       retry=RetryPolicy(max_attempts=1, sleep=fal_sleeps.append))
    with closed, pytest.raises(FalUnavailable) as refused:
        closed.submit(SCHNELL, {"prompt": "p"})
    assert refused.value.not_sent
    client = FalClient(load_settings(), retry=RetryPolicy(max_attempts=1, sleep=fal_sleeps.append))
    with client:
        fal_standin.inject("submit", "drop", accepted=True)
        with pytest.raises(FalUnavailable) as dropped:
            client.submit(SCHNELL, {"prompt": "p"})
        assert not dropped.value.not_sent
        fal_standin.inject("submit", "ingress")
        with pytest.raises(FalUnavailable) as gateway:
            client.submit(SCHNELL, {"prompt": "p"})
        assert gateway.value.not_sent


def test_the_tls_context_is_built_once_verifies_certificates_and_can_be_warmed_in_the_background():
    import ssl

    from core import fal as fal_module

    fal_module.warm_tls()
    context = fal_module.tls_context()
    assert context is fal_module.tls_context()
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
