"""Odd answers are bad answers, never runner errors (issue 21): a job fal accepted is followed
through status answers of any shape, streams that never speak, an unreadable queue position, a
foreign host in its URLs, and is either completed or kept with its answer; no traceback is logged,
the key goes nowhere but the queue host, and no form of it is stored. Real HTTP to the fal
stand-in; the runner in-process so its log can be read."""
from __future__ import annotations

import base64
import json
import logging
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from core.fal import follow
from core.batches import schedule
from tests.batches.test_schedule import SCHNELL, live, quick_fal  # noqa: F401 - fixtures by name
from tests.standins.fal_server import DEFAULT_KEY


def _no_traceback(caplog) -> None:
    bad = [r for r in caplog.records if r.exc_info or "Traceback" in r.getMessage()]
    assert not bad, [r.getMessage() for r in bad]


@pytest.mark.parametrize("fault, times", [
    ("odd_logs", 2), ("odd_metrics", 2), ("unknown_status", 3), ("deep", 2),
    ("gzip_bomb", 2), ("500", 3),
])
def test_a_status_answer_of_any_shape_is_asked_again_and_the_job_completes(live, fal_standin, quick_fal,
                                                                          caplog, fault, times):
    settings, d, make_batch = live
    batch = make_batch(models=(SCHNELL,), poses=("Standing", "Walking"))
    fal_standin.inject("status", fault, times)
    with caplog.at_level(logging.INFO):
        report = schedule.run_batch(batch.id, settings=settings, fal=quick_fal, stream=False)
    assert report.finished, report.stopped
    assert {r.status for r in d.batch_requests(batch.id)} == {"completed"}
    assert fal_standin.stats()["requests"]["status"] >= times     # the odd answers were met
    assert fal_standin.submissions == 2
    _no_traceback(caplog)


@pytest.mark.parametrize("fault", ["keepalive", "endless_line"])
def test_a_stream_that_never_speaks_falls_back_to_polling(live, fal_standin, quick_fal, monkeypatch, caplog,
                                                          fault):
    settings, d, make_batch = live
    monkeypatch.setattr(follow, "STREAM_SILENCE_S", 1.0)
    batch = make_batch(models=(SCHNELL,), poses=("Standing",))
    fal_standin.inject("stream", fault, 5)
    with caplog.at_level(logging.INFO):
        report = schedule.run_batch(batch.id, settings=settings, fal=quick_fal, stream=True)
    assert report.finished, report.stopped
    (r,) = d.batch_requests(batch.id)
    assert r.status == "completed"
    assert fal_standin.stats()["requests"].get("status", 0) >= 1   # a poll said COMPLETED
    _no_traceback(caplog)


def _one_request_meeting(live, fal_standin, quick_fal, where, fault, **params):
    """Run a one-request batch whose `where` call meets `fault`; its finished row."""
    settings, d, make_batch = live
    batch = make_batch(models=(SCHNELL,), poses=("Standing",))
    fal_standin.inject(where, fault, **params)
    report = schedule.run_batch(batch.id, settings=settings, fal=quick_fal)
    assert report.finished, report.stopped
    (r,) = d.batch_requests(batch.id)
    return r


def test_a_queue_position_no_one_can_read_still_keeps_fals_id(live, fal_standin, quick_fal, caplog):
    with caplog.at_level(logging.INFO):
        r = _one_request_meeting(live, fal_standin, quick_fal, "submit", "huge_position")
    assert r.status == "completed" and r.fal_request_id
    assert r.fal_request_id in {x["request_id"] for x in fal_standin.received if x["accepted"]}
    _no_traceback(caplog)


class _Catcher(BaseHTTPRequestHandler):
    """Another host: records what it is sent (it must never see the key)."""
    seen: list[dict] = []

    def _any(self) -> None:
        self.seen.append({"path": self.path, "authorization": self.headers.get("Authorization")})
        body = b'{"status": "COMPLETED"}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_PUT = do_POST = _any

    def log_message(self, *args) -> None:
        pass


def test_status_and_result_urls_on_another_host_never_get_the_key(live, fal_standin, quick_fal, caplog):
    settings, d, make_batch = live
    catcher = ThreadingHTTPServer(("127.0.0.2", 0), _Catcher)
    threading.Thread(target=catcher.serve_forever, daemon=True).start()
    _Catcher.seen = []
    try:
        batch = make_batch(models=(SCHNELL,), poses=("Standing", "Walking"))
        fal_standin.inject("submit", "foreign_urls", 2, host=f"http://127.0.0.2:{catcher.server_address[1]}")
        with caplog.at_level(logging.INFO):
            for stream in (True, False):
                report = schedule.run_batch(batch.id, settings=settings, fal=quick_fal, stream=stream)
    finally:
        catcher.shutdown()
        catcher.server_close()
    assert report.finished, report.stopped
    assert {r.status for r in d.batch_requests(batch.id)} == {"completed"}   # followed on fal's own host
    assert not [s for s in _Catcher.seen if s["authorization"]], _Catcher.seen
    assert _Catcher.seen == []                                                # not even asked
    assert any("another host" in r.getMessage() or "foreign" in r.getMessage() for r in caplog.records)
    _no_traceback(caplog)


def test_no_form_of_the_key_an_answer_echoes_is_stored(live, fal_standin, quick_fal):
    d = live[1]
    r = _one_request_meeting(live, fal_standin, quick_fal, "result", "echo_key_forms")
    assert r.status == "completed"
    stored = json.dumps(r.response)
    half = len(DEFAULT_KEY) // 2
    forms = {"key": DEFAULT_KEY, "first half": DEFAULT_KEY[:half], "second half": DEFAULT_KEY[half:],
             "base64": base64.b64encode(DEFAULT_KEY.encode()).decode(),
             "base64url of 'Key <key>'": base64.urlsafe_b64encode(f"Key {DEFAULT_KEY}".encode()).decode(),
             "url-encoded": urllib.parse.quote(f"Key {DEFAULT_KEY}", safe="")}
    assert "debug" in r.response                                  # the echo was there, masked
    leaked = [name for name, form in forms.items() if form in stored]
    assert not leaked, (leaked, stored[:400])
    dump = "\n".join(d.db.iterdump())
    assert not [name for name, form in forms.items() if form in dump]


def test_an_html_page_at_an_image_url_is_not_kept_as_a_result_image(live, fal_standin, quick_fal):
    d = live[1]
    r = _one_request_meeting(live, fal_standin, quick_fal, "file", "html")
    assert r.status == "failed" and r.error_type == "download_failed", (r.status, r.error_type)
    assert "not an image" in r.error_message
    assert not [i for i in d.result_images([r.id])[r.id] if i.storage_path]


@pytest.mark.parametrize("fault", ["huge", "gzip_bomb"])
def test_a_result_too_large_to_hold_is_refused_and_kept_as_a_bounded_summary(live, fal_standin, quick_fal,
                                                                              caplog, fault):
    d = live[1]
    with caplog.at_level(logging.INFO):
        r = _one_request_meeting(live, fal_standin, quick_fal, "result", fault,
                                 **({"size": 100 * 1024 * 1024} if fault == "huge" else {}))
    assert r.status == "failed" and r.fal_request_id, (r.status, r.error_message)
    assert "MB" in r.error_message
    assert len(d.db.execute("SELECT response_json FROM requests WHERE id = ?", [r.id]).fetchone()[0] or "") < 300_000
    _no_traceback(caplog)
