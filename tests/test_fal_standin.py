"""The fal stand-in speaks fal's wire protocol (checked with raw HTTP and with the official
fal-client 1.0.3), including the status stream, counts only accepted jobs, and its hooks (faults,
outage, hold/release, control API, the out-of-process mode) work as the client, batch, crash and
benchmark tests expect."""
from __future__ import annotations

import base64
import io
import json
import socket
import subprocess
import sys
import time

import httpx
import pytest
from PIL import Image

from tests.standins.fal_server import DEFAULT_KEY, StandinControl

SCHNELL = "fal-ai/flux/schnell"
EDIT = "fal-ai/flux-2/lora/edit"
AUTH = {"Authorization": f"Key {DEFAULT_KEY}"}


@pytest.fixture
def http(fal_standin):
    with httpx.Client(base_url=fal_standin.url, headers=AUTH, timeout=10) as client:
        yield client


def _until(predicate, limit=10.0):
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError("condition not reached")


def _submit(http, endpoint=SCHNELL, body=None):
    response = http.post(f"/{endpoint}", json=body or {"prompt": "p"})
    assert response.status_code == 200, response.text
    return response.json()


def _png_data_uri(size) -> str:
    buf = io.BytesIO()
    Image.new("RGB", size).save(buf, "PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


# --- queue protocol -----------------------------------------------------------------------------

def test_submit_answer_has_fals_shape_with_owner_app_urls(fal_standin, http):
    response = http.post(f"/{EDIT}", json={"prompt": "p", "image_urls": ["https://x/a.png"]})
    assert response.status_code == 200 and response.headers["x-fal-request-id"]
    body = response.json()
    rid = body["request_id"]
    base = f"{fal_standin.url}/fal-ai/flux-2/requests/{rid}"
    assert body == {"status": "IN_QUEUE", "request_id": rid, "response_url": base,
                    "status_url": f"{base}/status", "cancel_url": f"{base}/cancel",
                    "queue_position": 0}


def test_status_codes_logs_and_metrics(fal_standin, http):
    fal_standin.set_latency(0.3)
    sub = _submit(http)
    running = http.get(sub["status_url"])
    assert running.status_code == 202 and running.json()["status"] == "IN_PROGRESS"
    assert running.json()["logs"] is None and running.headers["x-fal-request-id"] == sub["request_id"]
    assert isinstance(http.get(sub["status_url"], params={"logs": "1"}).json()["logs"], list)
    done = _until(lambda: (r := http.get(sub["status_url"], params={"logs": "true"})).status_code == 200
                  and r)
    body = done.json()
    assert body["status"] == "COMPLETED" and body["metrics"]["inference_time"] > 0
    assert "error" not in body and body["logs"]


def test_queue_position_counts_down_with_limited_capacity(fal_standin, http):
    fal_standin.set_capacity(1)
    fal_standin.set_latency(0.25)
    subs = [_submit(http, body={"prompt": f"p{i}"}) for i in range(3)]
    assert [s["queue_position"] for s in subs] == [0, 0, 1]
    last = http.get(subs[2]["status_url"]).json()
    assert last["status"] == "IN_QUEUE" and last["queue_position"] == 1
    _until(lambda: http.get(subs[2]["status_url"]).json().get("queue_position") == 0)
    _until(lambda: http.get(subs[2]["status_url"]).json()["status"] == "IN_PROGRESS")
    assert [http.get(s["status_url"]).json()["status"] for s in subs[:2]] == ["COMPLETED"] * 2


def test_result_replays_output_and_unknown_ids_are_not_found(fal_standin, http):
    fal_standin.set_latency(0.3)
    sub = _submit(http, body={"prompt": "p", "image_size": {"width": 640, "height": 480},
                              "num_images": 3, "seed": 11})
    early = http.get(sub["response_url"])
    assert early.status_code == 400 and "in progress" in early.json()["detail"]
    _until(lambda: http.get(sub["status_url"]).status_code == 200)
    out = http.get(sub["response_url"]).json()
    assert out["seed"] == 11 and len(out["images"]) == 3 and out["prompt"] == "p"
    assert set(out["images"][0]) == {"url", "width", "height", "content_type"}  # legacy Image model
    assert {(i["width"], i["height"]) for i in out["images"]} == {(640, 480)}
    files = [httpx.get(i["url"]) for i in out["images"]]  # the CDN needs no key
    assert all(f.status_code == 200 and f.headers["content-type"] == "image/jpeg" for f in files)
    assert Image.open(io.BytesIO(files[0].content)).size == (640, 480)
    assert len({f.content for f in files}) == 3  # one colour per seed
    ghost = f"{fal_standin.url}/fal-ai/flux/requests/nope"
    for url in (f"{ghost}/status", ghost):
        answer = http.get(url)
        assert answer.status_code == 404 and answer.json() == {"status": "NOT_FOUND"}
    wrong_app = sub["status_url"].replace("/fal-ai/flux/", "/fal-ai/flux-2/")
    assert http.get(wrong_app).status_code == 404


def test_cancel_answers(fal_standin, http):
    fal_standin.set_capacity(1)
    fal_standin.set_latency(5)
    _submit(http)
    queued = _submit(http)
    answer = http.put(queued["cancel_url"])
    assert (answer.status_code, answer.json()) == (202, {"status": "CANCELLATION_REQUESTED"})
    status = http.get(queued["status_url"]).json()
    assert status["status"] == "COMPLETED" and status["error_type"] == "request_cancelled"
    again = http.put(queued["cancel_url"])
    assert (again.status_code, again.json()) == (400, {"status": "ALREADY_COMPLETED"})
    ghost = http.put(f"{fal_standin.url}/fal-ai/flux/requests/nope/cancel")
    assert (ghost.status_code, ghost.json()) == (404, {"status": "NOT_FOUND"})


# --- status stream ------------------------------------------------------------------------------

def _events(response) -> list[tuple[str | None, dict]]:
    """(event name, data) of each server-sent event of a finished stream."""
    out, name, data = [], None, []
    for line in response.iter_lines():
        if not line:
            if data:
                out.append((name, json.loads("\n".join(data))))
            name, data = None, []
        elif line.startswith("event:"):
            name = line[6:].strip()
        elif line.startswith("data:"):
            data.append(line[5:].strip())
    return out


def test_status_stream_sends_each_change_and_closes_after_completed(fal_standin, http):
    fal_standin.set_capacity(1)
    fal_standin.set_latency(0.25)
    _submit(http, body={"prompt": "blocker"})
    sub = _submit(http, body={"prompt": "waits"})
    started = time.monotonic()
    with http.stream("GET", sub["status_url"] + "/stream", params={"logs": "1"}) as response:
        assert response.status_code == 200
        assert response.headers["content-type"] == "text/event-stream"
        assert response.headers["x-fal-request-id"] == sub["request_id"]
        events = _events(response)   # returns only because the server closed the stream
    assert time.monotonic() - started < 5
    states = [data["status"] for _, data in events]
    assert states == ["IN_QUEUE", "IN_PROGRESS", "COMPLETED"]
    assert all(name is None for name, _ in events)
    assert events[0][1]["queue_position"] == 0 and isinstance(events[0][1]["logs"], list)
    assert events[-1][1]["metrics"]["inference_time"] > 0
    assert http.get(sub["status_url"]).json()["status"] == "COMPLETED"


def test_status_stream_of_a_finished_job_is_one_event_and_unknown_ids_are_404(fal_standin, http):
    sub = _submit(http)
    _until(lambda: http.get(sub["status_url"]).status_code == 200)
    with http.stream("GET", sub["status_url"] + "/stream") as response:
        events = _events(response)
    assert [data["status"] for _, data in events] == ["COMPLETED"] and events[0][1]["logs"] is None
    ghost = http.get(f"{fal_standin.url}/fal-ai/flux/requests/nope/status/stream")
    assert ghost.status_code == 404 and ghost.json() == {"status": "NOT_FOUND"}


def test_status_stream_faults_cut_it_early_or_name_its_events(fal_standin, http):
    fal_standin.set_latency(0.3)
    fal_standin.inject("stream", "cut", events=1)
    fal_standin.inject("stream", "cut", events=1, abrupt=True)
    fal_standin.inject("stream", "named")
    sub = _submit(http)
    url = sub["status_url"] + "/stream"
    with http.stream("GET", url) as response:
        assert [data["status"] for _, data in _events(response)] == ["IN_PROGRESS"]
    with pytest.raises(httpx.RemoteProtocolError), http.stream("GET", url) as response:
        _events(response)
    with http.stream("GET", url) as response:
        raw = response.read().decode()
    assert ": ping" in raw and "event: status" in raw
    assert raw.rstrip().endswith("}") and '"COMPLETED"' in raw


# --- auth, validation, endpoints ----------------------------------------------------------------

def test_bad_or_missing_key_is_401_and_not_counted(fal_standin):
    for headers in ({}, {"Authorization": "Key wrong"}):
        r = httpx.post(f"{fal_standin.url}/{SCHNELL}", json={"prompt": "p"}, headers=headers)
        assert r.status_code == 401
        assert r.json() == {"detail": "No user found for Key ID and Secret"}
    assert fal_standin.submissions == 0


def test_invalid_body_is_422_in_fals_shape(fal_standin, http):
    r = http.post(f"/{EDIT}", json={"prompt": "p", "image_urls": ["u"], "num_inference_steps": 2,
                                    "output_format": "gif", "loras": [{"path": "a"}] * 4})
    assert r.status_code == 422 and r.headers["x-fal-request-id"]
    detail = r.json()["detail"]
    assert {tuple(d["loc"]) for d in detail} == {
        ("body", "num_inference_steps"), ("body", "output_format"), ("body", "loras")}
    assert all({"type", "loc", "msg", "input"} <= set(d) for d in detail)
    steps = next(d for d in detail if d["loc"][1] == "num_inference_steps")
    assert steps["type"] == "greater_than_equal" and steps["input"] == 2
    missing = http.post(f"/{EDIT}", json={"image_urls": ["u"]}).json()["detail"]
    assert missing == [{"type": "missing", "loc": ["body", "prompt"], "msg": "Field required",
                        "input": {"image_urls": ["u"]}}]
    assert fal_standin.submissions == 0


def test_unknown_keys_are_dropped_and_remembered(fal_standin, http):
    sub = _submit(http, EDIT, {"prompt": "p", "image_urls": ["u"], "strength": 0.65, "foo": 1})
    assert fal_standin.dropped_keys == [["foo", "strength"]]
    _until(lambda: http.get(sub["status_url"]).status_code == 200)
    assert http.get(sub["response_url"]).status_code == 200


def test_unknown_endpoint_is_404(http):
    assert http.post("/fal-ai/does-not/exist", json={"prompt": "p"}).status_code == 404


@pytest.mark.parametrize("endpoint,body,expected", [
    (SCHNELL, {"prompt": "p"}, (1024, 768, "image/jpeg")),
    (SCHNELL, {"prompt": "p", "image_size": "portrait_16_9", "output_format": "png"}, (576, 1024, "image/png")),
    ("fal-ai/flux-2", {"prompt": "p"}, (1024, 768, "image/png")),
    ("fal-ai/flux-2/edit", {"prompt": "p", "image_urls": ["u"], "output_format": "webp",
                            "image_size": "square"}, (512, 512, "image/webp")),
    ("fal-ai/flux/dev/image-to-image", {"prompt": "p", "image_url": "DATA"}, (300, 200, "image/jpeg")),
])
def test_images_follow_size_and_format(fal_standin, http, endpoint, body, expected):
    body = {k: (_png_data_uri((300, 200)) if v == "DATA" else v) for k, v in body.items()}
    sub = _submit(http, endpoint, body)
    _until(lambda: http.get(sub["status_url"]).status_code == 200)
    r = http.get(sub["response_url"])
    assert r.status_code == 200, r.text
    image = r.json()["images"][0]
    assert (image["width"], image["height"], image["content_type"]) == expected
    data = httpx.get(image["url"]).content
    assert Image.open(io.BytesIO(data)).size == expected[:2]
    assert Image.open(io.BytesIO(data)).get_format_mimetype() == expected[2]


# --- faults -------------------------------------------------------------------------------------

def test_ingress_fault_has_no_request_id_and_fal_faults_do(fal_standin, http):
    fal_standin.inject("status", "502")
    fal_standin.inject("status", "503")
    fal_standin.inject("status", "429", retry_after=3)
    sub = _submit(http)
    ingress = http.get(sub["status_url"])
    assert ingress.status_code == 502 and "x-fal-request-id" not in ingress.headers
    assert "nginx" in ingress.text and ingress.headers["content-type"] == "text/html"
    runner = http.get(sub["status_url"])
    assert runner.status_code == 503 and runner.headers["x-fal-request-id"]
    assert runner.headers["x-fal-error-type"] == "runner_scheduling_failure"
    assert runner.json()["error_type"] == "runner_scheduling_failure"
    limited = http.get(sub["status_url"])
    assert limited.status_code == 429 and limited.headers["retry-after"] == "3"
    assert http.get(sub["status_url"]).status_code in (200, 202)  # faults used up


def test_echo_auth_fault_echoes_the_authorization_header_without_a_request_id(fal_standin, http):
    fal_standin.inject("submit", "echo_auth", status=401)
    r = http.post(f"/{SCHNELL}", json={"prompt": "p"})
    assert r.status_code == 401 and "x-fal-request-id" not in r.headers
    body = r.json()
    assert f"Authorization: Key {DEFAULT_KEY}" in body["detail"]
    assert DEFAULT_KEY.split(":")[0] == body["echo"]["key_id"]
    assert fal_standin.submissions == 0


def test_refused_submissions_are_not_counted_but_accepted_ones_are(fal_standin, http):
    fal_standin.inject("submit", "500")
    fal_standin.inject("submit", "500", accepted=True)
    fal_standin.inject("submit", "drop", accepted=True)
    assert http.post(f"/{SCHNELL}", json={"prompt": "a"}).status_code == 500
    assert fal_standin.submissions == 0
    assert http.post(f"/{SCHNELL}", json={"prompt": "b"}).status_code == 500
    assert fal_standin.submissions == 1
    with pytest.raises(httpx.RemoteProtocolError):
        http.post(f"/{SCHNELL}", json={"prompt": "c"})
    assert fal_standin.submissions == 2
    assert fal_standin.stats()["received"] == 3


def test_inject_rejects_unknown_places_and_faults(fal_standin):
    with pytest.raises(ValueError):
        fal_standin.inject("somewhere", "500")
    with pytest.raises(ValueError):
        fal_standin.inject("submit", "418")


# --- outage and results of an unexpected shape -------------------------------------------------

def _is_gateway_page(response, code=502) -> bool:
    return (response.status_code == code and "x-fal-request-id" not in response.headers
            and response.headers["content-type"] == "text/html" and "nginx" in response.text)


def test_outage_answers_every_call_with_a_gateway_page_until_ended(fal_standin, http):
    sub = _submit(http)
    _until(lambda: http.get(sub["status_url"]).status_code == 200)
    image_url = http.get(sub["response_url"]).json()["images"][0]["url"]
    fal_standin.outage(60)
    answers = [http.post(f"/{SCHNELL}", json={"prompt": "during"}), http.get(sub["status_url"]),
               http.get(sub["status_url"] + "/stream"), http.get(sub["response_url"]),
               http.put(sub["cancel_url"]), httpx.get(image_url)]
    assert all(_is_gateway_page(r) for r in answers), [r.status_code for r in answers]
    stats = fal_standin.stats()   # the test API keeps working
    assert stats["outage_answers"] == 6 and 50 < stats["outage_left"] <= 60
    assert fal_standin.submissions == 1 and stats["received"] == 1   # fal never saw the submit
    fal_standin.end_outage()
    assert not fal_standin.in_outage
    assert http.get(sub["response_url"]).status_code == 200 and httpx.get(image_url).status_code == 200
    assert http.post(f"/{SCHNELL}", json={"prompt": "after"}).status_code == 200


def test_each_outage_kind_fails_a_call_the_way_it_says(fal_standin, http):
    fal_standin.outage(60, kind="fal", status=503)
    answer = http.post(f"/{SCHNELL}", json={"prompt": "p"})
    assert answer.status_code == 503 and "x-fal-request-id" in answer.headers   # fal itself answered
    fal_standin.outage(60, kind="drop")
    with pytest.raises(httpx.RemoteProtocolError):
        http.post(f"/{SCHNELL}", json={"prompt": "p"})
    fal_standin.outage(60, kind="reset")
    with pytest.raises((httpx.ReadError, httpx.RemoteProtocolError)):
        http.post(f"/{SCHNELL}", json={"prompt": "p"})
    fal_standin.outage(60, kind="hang")
    with pytest.raises(httpx.ReadTimeout):
        http.post(f"/{SCHNELL}", json={"prompt": "p"}, timeout=0.5)
    fal_standin.end_outage()
    assert fal_standin.submissions == 0 and fal_standin.stats()["outage_answers"] == 4
    with pytest.raises(ValueError):
        fal_standin.outage(1, kind="flood")


def test_the_proxy_refuses_connections_then_listens_again_and_delays_what_it_forwards(fal_standin):
    from tests.standins.tcp_proxy import TcpProxy

    port = int(fal_standin.url.rsplit(":", 1)[1])
    with TcpProxy(("127.0.0.1", port)) as proxy:
        def post():   # a new connection each time
            return httpx.post(f"{proxy.url}/{SCHNELL}", json={"prompt": "p"}, headers=AUTH, timeout=5)

        assert post().status_code == 200
        proxy.refuse(0.5)
        with pytest.raises(httpx.ConnectError):
            post()
        time.sleep(0.7)
        assert post().status_code == 200
        proxy.delay = 0.4
        began = time.monotonic()
        assert post().status_code == 200
        assert time.monotonic() - began >= 0.4
    assert fal_standin.submissions == 3


@pytest.mark.parametrize("where, fault, check", [
    ("status", "odd_logs", lambda r: r.json()["logs"] == 5),
    ("status", "odd_metrics", lambda r: r.json()["metrics"] == [1, 2, 3]),
    ("status", "unknown_status", lambda r: r.json()["status"] == "REPLICATING"),
    ("status", "deep", lambda r: r.content.startswith(b"[[[[") and len(r.content) == 400_000),
    ("status", "gzip_bomb", lambda r: r.headers["content-encoding"] == "gzip"
     and sum(len(c) for c in r.iter_raw()) < 2_000_000),
])
def test_odd_status_answers_are_what_they_say(fal_standin, http, where, fault, check):
    sub = _submit(http)
    fal_standin.inject(where, fault)
    with httpx.Client(headers={**AUTH, "Accept-Encoding": "identity"}, timeout=30) as raw:
        answer = raw.get(sub["status_url"]) if fault != "gzip_bomb" else None
        if answer is None:
            with raw.stream("GET", sub["status_url"]) as streamed:
                assert check(streamed)
            return
    assert check(answer)


def test_odd_submit_and_result_answers(fal_standin, http):
    fal_standin.inject("submit", "huge_position")
    assert '"queue_position": 1' + "0" * 400 in http.post(f"/{SCHNELL}", json={"prompt": "p"}).text
    fal_standin.inject("submit", "foreign_urls", host="http://127.0.0.2:9")
    sub = http.post(f"/{SCHNELL}", json={"prompt": "p"}).json()
    assert all(sub[k].startswith("http://127.0.0.2:9/") for k in ("status_url", "response_url", "cancel_url"))
    own = _submit(http)
    _until(lambda: http.get(own["status_url"]).status_code == 200)
    fal_standin.inject("result", "huge", size=5_000_000)
    answer = http.get(own["response_url"])
    assert len(answer.content) == 5_000_000 and answer.json()["images"]
    fal_standin.inject("result", "echo_key_forms")
    assert http.get(own["response_url"]).json()["debug"]["first"] == DEFAULT_KEY[:len(DEFAULT_KEY) // 2]
    fal_standin.inject("file", "html")
    page = httpx.get(answer.json()["images"][0]["url"])
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")


def test_outage_ends_by_itself_and_reset_clears_it(fal_standin, http):
    fal_standin.outage(0.3, status=503)
    assert _is_gateway_page(http.post(f"/{SCHNELL}", json={"prompt": "p"}), 503)
    _until(lambda: not fal_standin.in_outage)
    assert http.post(f"/{SCHNELL}", json={"prompt": "p"}).status_code == 200
    fal_standin.outage(60)
    fal_standin.reset()
    assert http.post(f"/{SCHNELL}", json={"prompt": "p"}).status_code == 200


def _finished(http, body, endpoint=SCHNELL):
    sub = _submit(http, endpoint, body)
    _until(lambda: http.get(sub["status_url"]).status_code == 200)
    return sub, http.get(sub["response_url"])


def test_result_faults_give_a_list_body_or_leave_fields_out(fal_standin, http):
    fal_standin.inject("job", "list_body")
    fal_standin.inject("job", "missing_fields")
    fal_standin.inject("job", "missing_fields", fields=["seed", "timings"], image_fields=["width"])
    sub, listed = _finished(http, {"prompt": "p", "seed": 3})
    assert http.get(sub["status_url"]).json()["status"] == "COMPLETED"   # the job itself succeeded
    body = listed.json()
    assert listed.status_code == 200 and isinstance(body, list) and body[0]["seed"] == 3
    _, missing = _finished(http, {"prompt": "p", "seed": 3})
    assert missing.status_code == 200 and "images" not in missing.json() and missing.json()["seed"] == 3
    _, partial = _finished(http, {"prompt": "p"})
    out = partial.json()
    assert {"seed", "timings"}.isdisjoint(out) and out["has_nsfw_concepts"] == [False]
    assert set(out["images"][0]) == {"url", "height", "content_type"}


def test_image_404_fault_makes_one_image_of_four_answer_404(fal_standin, http):
    fal_standin.inject("job", "image_404", index=2)
    _, result = _finished(http, {"prompt": "p", "num_images": 4, "image_size": "square"})
    urls = [image["url"] for image in result.json()["images"]]
    assert len(urls) == 4
    assert [httpx.get(u).status_code for u in urls] == [200, 200, 404, 200]
    _, normal = _finished(http, {"prompt": "p", "num_images": 2})   # one job only
    assert all(httpx.get(i["url"]).status_code == 200 for i in normal.json()["images"])


def test_bodies_are_still_validated_while_result_faults_are_armed(fal_standin, http):
    fal_standin.inject("job", "list_body")
    r = http.post(f"/{SCHNELL}", json={"prompt": "p", "num_images": 9})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "num_images"]
    _, listed = _finished(http, {"prompt": "p"})   # the fault went to the first accepted job
    assert isinstance(listed.json(), list)


# --- hold / release -----------------------------------------------------------------------------

def test_hold_blocks_submissions_beyond_n_until_release(fal_standin, standin_fal_client):
    import threading

    fal_standin.hold_submissions_after(1)
    standin_fal_client.submit(SCHNELL, {"prompt": "first"})
    handles = []
    t = threading.Thread(target=lambda: handles.append(standin_fal_client.submit(SCHNELL, {"prompt": "2"})))
    t.start()
    assert fal_standin.wait_for_held(1)
    assert fal_standin.submissions == 1 and handles == []
    fal_standin.release()
    t.join(10)
    assert len(handles) == 1 and fal_standin.submissions == 2


def test_held_submission_of_a_vanished_client_is_discarded(fal_standin):
    fal_standin.hold_submissions_after(0)
    body = json.dumps({"prompt": "p"}).encode()
    port = int(fal_standin.url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(b"POST /fal-ai/flux/schnell HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     + f"Authorization: Key {DEFAULT_KEY}\r\nContent-Length: {len(body)}\r\n\r\n".encode()
                     + body)
        assert fal_standin.wait_for_held(1)
    _until(lambda: fal_standin.stats()["discarded"] == 1)
    fal_standin.release()
    assert fal_standin.submissions == 0 and fal_standin.held == 0


# --- out of process and the official client -----------------------------------------------------

def test_runs_as_a_process_printing_its_url_and_obeys_the_control_api():
    proc = subprocess.Popen([sys.executable, "-m", "tests.standins.fal_server", "--port", "0",
                             "--latency", "0.05"], stdout=subprocess.PIPE, text=True)
    try:
        url = proc.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:")
        with StandinControl(url) as control, httpx.Client(headers=AUTH, timeout=10) as http:
            control.inject("submit", "429", retry_after=1)
            assert http.post(f"{url}/{SCHNELL}", json={"prompt": "p"}).status_code == 429
            control.hold_submissions_after(1)
            assert http.post(f"{url}/{SCHNELL}", json={"prompt": "p"}).status_code == 200
            assert control.submissions == 1
            control.release()
            control.set_latency(0.01)
            control.set_capacity(2)
            assert http.post(f"{url}/{SCHNELL}", json={"prompt": "p"}).status_code == 200
            stats = control.stats()
            assert stats["submissions"] == 2 and stats["by_endpoint"] == {SCHNELL: 2}
            assert stats["capacity"] == 2
            control.outage(30)
            assert _is_gateway_page(http.post(f"{url}/{SCHNELL}", json={"prompt": "p"}))
            assert control.stats()["outage_answers"] == 1
            control.end_outage()
            assert http.post(f"{url}/{SCHNELL}", json={"prompt": "p"}).status_code == 200
            control.reset()
            assert control.stats()["submissions"] == 0
    finally:
        proc.terminate()
        proc.wait(10)
        proc.stdout.close()
    assert proc.returncode == 0


def test_official_fal_client_works_against_the_standin(fal_standin, monkeypatch):
    """fal-client 1.0.3 pointed here: submit + status + get, cancel."""
    import fal_client
    import fal_client.client as fc

    monkeypatch.setattr(fc, "QUEUE_URL_FORMAT", f"{fal_standin.url}/")
    client = fal_client.SyncClient(key=DEFAULT_KEY)
    try:
        handle = client.submit(SCHNELL, {"prompt": "p", "image_size": "square"})
        assert isinstance(handle.status(with_logs=True), (fal_client.InProgress, fal_client.Completed))
        result = handle.get()
        assert result["images"][0]["width"] == 512
        assert isinstance(handle.status(), fal_client.Completed)

        fal_standin.set_capacity(1)
        fal_standin.set_latency(5)
        client.submit(SCHNELL, {"prompt": "blocker"})
        queued = client.submit(SCHNELL, {"prompt": "waits"})
        assert isinstance(queued.status(), fal_client.Queued)
        queued.cancel()
        assert queued.status().error_type == "request_cancelled"
    finally:
        client._client.close()
    assert fal_standin.submissions == 3
