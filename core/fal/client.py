"""The fal client: the queue protocol (submit, status, result, cancel) and result downloads.

One `httpx.Client` per `FalClient` (connection pooling, keep-alive); safe to share between threads.

Invariants:
- The retry rule is `core.fal.retry.retry_reason`; the send loop here only sleeps and counts.
- A result download never reads more than `max_download_bytes` (200 MB unless told otherwise):
  the body is streamed and dropped at the cap.
- The key is sent only to fal's queue host (never to a download URL) and never appears in a log
  line, an exception message or a repr. Every body fal answers is passed through
  `core.redact.redact` with the key before it is parsed, so a gateway that echoes the
  `Authorization` header leaks it into no message, stored detail or kept answer.
- Every outgoing payload is logged at INFO on logger "core.fal" as one JSON line with `data:`
  URIs abbreviated (the store keeps the payload itself: History reads it from there).
- The TLS context (its CA bundle: ~0.1 s of C code) is built once per process and shared by every
  client; `warm_tls()` starts building it in a thread, which runs beside the caller's Python work
  (OpenSSL releases the interpreter lock), so a runner's first POST does not wait for it.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from core._imports import hidden

with hidden("click"):   # httpx's command-line client, unused (core/_imports.py)
    import httpx

from core.config import Settings, load_settings
from core.errors import (
    FalAuthError,
    FalBadResponse,
    FalError,
    FalServerError,
    FalTimeout,
    FalUnavailable,
)
from core.catalog.payloads import payload_hash
from core.redact import abbreviate, redact
from core.fal.tls import tls_context
from core.fal.answers import error_from, transport_error
from core.fal.retry import NOT_SENT, RetryPolicy, retry_after_s, retry_reason
from core.fal.values import FalOutput, QueueHandle, Status, billable_units, parse_output, parse_status, queue_position_of, request_base
from core.fal.wire import ERROR_BODY_LIMIT, as_timeout, bounded_body, checked_endpoint, decode_data_uri, inflated, json_object, origin_of, short_url, human_size, sniff, sse_data


logger = logging.getLogger("core.fal")
DEFAULT_TIMEOUT = httpx.Timeout(30.0, connect=10.0)


# fal sends a comment line on the status stream every 15 s while nothing changes: 120 s without a
# byte means the stream is dead, and `core.fal.follow.follow` carries on by polling.
DEFAULT_STREAM_TIMEOUT = httpx.Timeout(30.0, connect=10.0, read=120.0)
DEFAULT_DOWNLOAD_TIMEOUT = httpx.Timeout(60.0, connect=10.0)
MAX_DOWNLOAD_BYTES = 200 * 1024 * 1024   # a result image larger than this is not kept


# what answers may be compressed with: only what `inflated` decodes a bounded piece at a time
ACCEPT_ENCODING = "gzip, deflate"


# a non-JSON body kept with a FalBadResponse is cut here (an HTML page can be large)
_RAW_TEXT_LIMIT = 20_000


# What is read of an answer fal gives, by call: both the bytes on the wire (compressed) and the
# bytes they inflate to are capped, so no answer (a 300 MB result, a gzip bomb) can exhaust memory.
ANSWER_LIMITS = {"submit": 1024 * 1024, "status": 1024 * 1024, "cancel": 64 * 1024,
                 "result": 48 * 1024 * 1024, "probe": 64 * 1024}
STREAM_LINE_LIMIT = 1024 * 1024    # one line of the status stream


# The longest any one call may take, whatever the server sends (a byte every 20 s passes every
# per-read timeout): past it the call fails as a timeout (a submit is then in doubt).
CALL_DEADLINE_S = {"submit": 60.0, "status": 60.0, "cancel": 60.0, "result": 180.0, "probe": 15.0,
                   "download": 300.0}


# A request id no job has: `probe()` asks its status, an answer that cannot start a job.
_PROBE_ID = "00000000-0000-4000-8000-000000000000"
_CANCEL_ANSWERS = frozenset({"CANCELLATION_REQUESTED", "ALREADY_COMPLETED", "NOT_FOUND", "OK"})


def _log_send(endpoint: str, payload: Any) -> None:
    """One JSON line per payload that leaves for fal, `data:` URIs abbreviated (built only when
    INFO is logged: it is on the path of every POST)."""
    if logger.isEnabledFor(logging.INFO):
        logger.info(json.dumps({"event": "fal.send", "endpoint": endpoint,
                                "payload_hash": payload_hash(payload), "payload": abbreviate(payload)},
                               ensure_ascii=False, separators=(",", ":")))


class FalClient:
    """Talks to fal over one pooled httpx.Client. Thread-safe; close it (or use `with`)."""

    def __init__(self, settings: Settings | None = None, *, key: str | None = None,
                 queue_url: str | None = None,
                 timeout: httpx.Timeout | float = DEFAULT_TIMEOUT,
                 stream_timeout: httpx.Timeout | float = DEFAULT_STREAM_TIMEOUT,
                 download_timeout: httpx.Timeout | float = DEFAULT_DOWNLOAD_TIMEOUT,
                 retry: RetryPolicy = RetryPolicy(),
                 max_download_bytes: int = MAX_DOWNLOAD_BYTES,
                 transport: httpx.BaseTransport | None = None):
        settings = settings or load_settings()
        self._key = key if key is not None else settings.fal_key
        self._secrets: tuple[str, ...] = (self._key,) if self._key else ()
        self.queue_url = (queue_url or settings.fal_queue_url).rstrip("/")
        self._origin = origin_of(self.queue_url)
        self._stop = threading.Event()   # `interrupt()`: every wait and read ends at once
        self.retry = retry
        self.max_download_bytes = max_download_bytes
        self._timeout = as_timeout(timeout)
        self._stream_timeout = as_timeout(stream_timeout)
        self._download_timeout = as_timeout(download_timeout)
        pool = max(20, 2 * settings.concurrency)
        # No Authorization here on purpose: it is added per call to fal's own URLs only, so a
        # download from a CDN (or anywhere a result URL points) never carries the key.
        self._http = httpx.Client(
            transport=transport, timeout=self._timeout, follow_redirects=False, verify=tls_context(),
            limits=httpx.Limits(max_connections=pool, max_keepalive_connections=pool),
            headers={"User-Agent": "fal-model-dashboard", "Accept-Encoding": ACCEPT_ENCODING})

    def __repr__(self) -> str:
        return f"FalClient(queue_url={self.queue_url!r}, key={'set' if self._key else 'missing'})"

    def __enter__(self) -> FalClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def interrupt(self) -> None:
        """End every wait (retry backoff, Retry-After) and body read of this client at once: the
        calls under way raise a FalError, later calls too (a submit not yet sent as not sent). The
        answer of a submit already sent is still read (within its deadline): cutting it would
        leave a job in doubt that fal is about to confirm."""
        self._stop.set()

    def carry_on(self) -> None:
        """Undo `interrupt()`: a client handed to a new run works again."""
        self._stop.clear()

    @property
    def interrupted(self) -> bool:
        return self._stop.is_set()

    def redacted(self, text: str) -> str:
        """`text` with this client's key masked (`core.redact.redact`)."""
        return redact(text, self._secrets)

    # --- sending --------------------------------------------------------------------------------

    def submit(self, endpoint: str, payload: dict, *, headers: dict[str, str] | None = None) -> QueueHandle:
        """Queue a job: POST {queue_url}/{endpoint}. Follow the URLs in the returned handle."""
        url = f"{self.queue_url}/{checked_endpoint(endpoint)}"
        extra = {k: v for k, v in (headers or {}).items() if k.lower() != "authorization"}
        all_headers = {**extra, **self._auth_headers(url)}
        _log_send(endpoint, payload)
        response = self._send("POST", url, what="submit", endpoint=endpoint, json=payload,
                              headers=all_headers, timeout=self._timeout, resend_safe=False)
        body = json_object(response, what="submit", endpoint=endpoint, secrets=self._secrets)
        request_id = body.get("request_id")
        if not isinstance(request_id, str) or not request_id:
            raise FalServerError(
                f"fal accepted the submission to {endpoint} but its answer has no request_id; "
                "check fal's dashboard before resubmitting.", status_code=response.status_code)
        base = request_base(self.queue_url, endpoint, request_id)
        handle = QueueHandle(
            endpoint=endpoint, request_id=request_id,
            status_url=self._own_url(body.get("status_url"), f"{base}/status", request_id),
            response_url=self._own_url(body.get("response_url"), base, request_id),
            cancel_url=self._own_url(body.get("cancel_url"), f"{base}/cancel", request_id),
            queue_position=queue_position_of(body.get("queue_position")))
        logger.info(json.dumps({"event": "fal.queued", "endpoint": endpoint, "request_id": request_id,
                                "queue_position": handle.queue_position}, separators=(",", ":")))
        return handle

    def _own_url(self, given: Any, derived: str, request_id: str) -> str:
        """A URL from fal's answer, kept only when it is on the configured queue host (the key
        goes with every call to it); otherwise the URL fal's protocol derives, and a warning."""
        if not isinstance(given, str) or not given:
            return derived
        if origin_of(given) == self._origin:
            return given
        logger.warning(json.dumps({"event": "fal.foreign_url", "request_id": request_id,
                                   "url": short_url(redact(given, self._secrets))[:200],
                                   "used": short_url(derived)}, separators=(",", ":")))
        return derived

    def probe(self, endpoint: str) -> bool:
        """Whether fal's queue answers, asked in a way that cannot start (or pay for) a job: the
        status of a request id no job has. Any answer fal itself gives (404 included) is True;
        no connection, a dropped one, a gateway page or a 5xx is False. One attempt, bounded."""
        url = f"{request_base(self.queue_url, checked_endpoint(endpoint), _PROBE_ID)}/status"
        try:
            response = self._send("GET", url, what="probe", endpoint=endpoint,
                                  headers=self._auth_headers(url), timeout=self._timeout,
                                  resend_safe=True, answers=(400, 401, 403, 404, 405, 422), attempts=1)
        except FalError:
            return False
        return response.status_code < 500

    # --- following a queued job -----------------------------------------------------------------

    def status(self, handle: QueueHandle, *, logs: bool = True) -> Status:
        """GET the status URL: Queued(position) / InProgress / Completed(metrics, error)."""
        response = self._send("GET", handle.status_url, what="status", endpoint=handle.endpoint,
                              request_id=handle.request_id, params={"logs": "1"} if logs else None,
                              headers=self._auth_headers(handle.status_url), timeout=self._timeout,
                              resend_safe=True)
        body = json_object(response, what="status", endpoint=handle.endpoint, secrets=self._secrets)
        return parse_status(body, handle)

    def status_events(self, handle: QueueHandle, *, logs: bool = True) -> Iterator[Status]:
        """The job's statuses from fal's status stream only, as they arrive. Raises on any
        failure; ending before Completed is the stream closing early. The runner reads it in a
        thread of its own and falls back to its adaptive polling when it fails."""
        return self._stream_events(handle, logs)

    def _stream_events(self, handle: QueueHandle, logs: bool) -> Iterator[Status]:
        """Statuses from one status stream, as they arrive. Raises on anything unexpected."""
        split = urlsplit(handle.status_url)
        url = urlunsplit(split._replace(path=split.path.rstrip("/") + "/stream"))
        headers = {**self._auth_headers(url), "Accept": "text/event-stream"}
        with self._http.stream("GET", url, params={"logs": "1"} if logs else None, headers=headers,
                               timeout=self._stream_timeout) as response:
            if response.status_code != 200:
                raise error_from(bounded_body(response, ERROR_BODY_LIMIT), what="status stream",
                                  endpoint=handle.endpoint, request_id=handle.request_id,
                                  secrets=self._secrets)
            content_type = response.headers.get("content-type", "")
            if not content_type.startswith("text/event-stream"):
                raise FalServerError(f"fal's status stream answered {content_type or 'no content type'}, "
                                     "not text/event-stream.", request_id=handle.request_id)
            for data in sse_data(self._stream_lines(response)):
                body = json.loads(redact(data, self._secrets))
                if not isinstance(body, dict):
                    raise FalServerError("a status stream event is not a JSON object.",
                                         request_id=handle.request_id)
                yield parse_status(body, handle)

    def _stream_lines(self, response: httpx.Response) -> Iterator[str]:
        """The lines of a status stream (CR, LF or CRLF ends one), none longer than
        `STREAM_LINE_LIMIT`: a longer one raises FalBadResponse (the follower then polls)."""
        pending = b""
        for chunk in inflated(response):
            if self._stop.is_set():
                return
            pending += chunk
            *lines, pending = pending.replace(b"\r\n", b"\n").replace(b"\r", b"\n").split(b"\n")
            for line in lines:
                if len(line) > STREAM_LINE_LIMIT:
                    break
                yield line.decode("utf-8", "replace")
            else:
                if len(pending) <= STREAM_LINE_LIMIT:
                    continue
            raise FalBadResponse(f"a line of fal's status stream is longer than {human_size(STREAM_LINE_LIMIT)}; "
                                 "the job is followed by polling instead.")
        if pending:
            yield pending.decode("utf-8", "replace")

    def result(self, handle: QueueHandle) -> FalOutput:
        """GET the response URL: the output parsed (`parse_output`), or the job's replayed error
        raised as a FalError; FalBadResponse (keeping the body) for an answer of the wrong shape."""
        response = self._send("GET", handle.response_url, what="result", endpoint=handle.endpoint,
                              request_id=handle.request_id, headers=self._auth_headers(handle.response_url),
                              timeout=self._timeout, resend_safe=True)
        if response.status_code == 202:
            raise FalError(f"fal request {handle.request_id} has not finished yet: "
                           "poll its status until COMPLETED, then fetch the result.",
                           status_code=202, request_id=handle.request_id)
        text = redact(response.text, self._secrets)
        try:
            body = json.loads(text)
        except (ValueError, RecursionError):
            raise FalBadResponse(
                f"fal's result for request {handle.request_id} is not JSON "
                f"({response.headers.get('content-type') or 'no content type'}); the answer is kept "
                "with the request. Re-run it if the images are needed.",
                raw=text[:_RAW_TEXT_LIMIT], status_code=response.status_code,
                request_id=handle.request_id) from None
        try:
            output = parse_output(body, request_id=handle.request_id)
        except FalBadResponse as e:
            e.status_code = response.status_code
            raise
        units = billable_units(response.headers.get("x-fal-billable-units"))
        return output if units is None else dataclasses.replace(output, billable_units=units)

    def cancel(self, handle: QueueHandle) -> str:
        """PUT the cancel URL -> "CANCELLATION_REQUESTED", "ALREADY_COMPLETED" or "NOT_FOUND"."""
        response = self._send("PUT", handle.cancel_url, what="cancel", endpoint=handle.endpoint,
                              request_id=handle.request_id, headers=self._auth_headers(handle.cancel_url),
                              timeout=self._timeout, resend_safe=True,
                              answers=(400, 404))
        try:
            answer = response.json().get("status")
        except (ValueError, AttributeError):
            answer = None
        if answer in _CANCEL_ANSWERS:
            return answer
        if response.status_code < 300:
            return "CANCELLATION_REQUESTED"
        raise error_from(response, what="cancel", endpoint=handle.endpoint,
                          request_id=handle.request_id, secrets=self._secrets)

    def download(self, url: str) -> tuple[bytes, str]:
        """The bytes and content type of a result image (http(s) URL or `data:` URI). No key sent.

        The body is streamed and never read past `max_download_bytes`: a file that declares a
        larger Content-Length is refused before its body is read, one that turns out larger
        is dropped at the cap. Either is a FalError saying so (not retried)."""
        if url.startswith("data:"):
            data, content_type = decode_data_uri(url)
            if len(data) > self.max_download_bytes:
                raise self._too_large("the data: URI result", f"is {len(data)} bytes")
            return data, content_type
        if urlsplit(url).scheme not in ("http", "https"):
            raise FalError(f"cannot download {url[:80]!r}: only http(s) and data: URLs are supported.")

        def read(response: httpx.Response) -> tuple[bytes, str]:
            data = self._read_capped(response, url)
            content_type = response.headers.get("content-type", "").split(";")[0].strip().lower()
            if not content_type.startswith("image/"):
                content_type = sniff(data) or content_type or "application/octet-stream"
            return data, content_type

        return self._send("GET", url, what="download", endpoint=None, headers=None,
                          timeout=self._download_timeout, resend_safe=True, consume=read)

    def _read_capped(self, response: httpx.Response, url: str) -> bytes:
        cap = self.max_download_bytes
        declared = response.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > cap:
            raise self._too_large(f"the result file at {short_url(url)}", f"declares {int(declared)} bytes")
        data = bytearray()
        for chunk in inflated(response):
            if len(data) + len(chunk) > cap:
                raise self._too_large(f"the result file at {short_url(url)}", f"has more than {cap} bytes")
            data += chunk
        return bytes(data)

    def _too_large(self, what: str, size: str) -> FalError:
        cap = self.max_download_bytes
        limit = f"{cap // (1024 * 1024)} MB" if cap % (1024 * 1024) == 0 else f"{cap} byte"
        return FalError(f"{what} {size}, over the {limit} limit for a result image; it was not "
                        "kept (fal's answer, with its URL, stays with the request).")

    # --- the one place requests are sent --------------------------------------------------------

    def _auth_headers(self, url: str) -> dict[str, str]:
        """The key, for a URL on the configured queue host only (scheme, host and port)."""
        if origin_of(url) != self._origin:
            raise FalError(f"refused to send the key to {short_url(url)}: it is not fal's queue host "
                           f"({self._origin}, from FAL_QUEUE_URL). The request keeps fal's id and "
                           "stays resumable.")
        if not self._key:
            raise FalAuthError("no FAL_KEY is set: set FAL_KEY in the environment or in "
                               ".streamlit/secrets.toml to send requests (without it only dry runs work).")
        return {"Authorization": f"Key {self._key}"}

    def _send(self, method: str, url: str, *, what: str, endpoint: str | None,
              headers: dict[str, str] | None, timeout: httpx.Timeout, resend_safe: bool,
              request_id: str | None = None, json: Any = None, params: dict | None = None,
              answers: tuple[int, ...] = (), consume: Callable[[httpx.Response], Any] | None = None,
              attempts: int | None = None) -> Any:
        """Send, deciding each retry with `retry_reason` (this loop only sleeps and counts). A 2xx
        (or one of `answers`) is returned read, or handed unread to `consume` (whose transport
        errors count as the attempt's); everything else raises the mapped FalError. What is read
        of a body is capped (`ANSWER_LIMITS`, error bodies at `ERROR_BODY_LIMIT`) and each
        attempt ends by `CALL_DEADLINE_S` whatever the server sends; `interrupt()` ends it too."""
        policy = self.retry
        most = attempts or policy.max_attempts
        attempt = 0
        while True:
            attempt += 1
            last = attempt >= most
            if self._stop.is_set():
                raise self._interrupted(what, endpoint, url, request_id, sent=False)
            deadline = time.monotonic() + CALL_DEADLINE_S.get(what, 60.0)
            try:
                request = self._http.build_request(method, url, json=json, params=params,
                                                   headers=headers, timeout=timeout)
                streamed = self._http.send(request, stream=True)
                try:
                    if streamed.status_code < 300 or streamed.status_code in answers:
                        if consume is not None:
                            return consume(streamed)
                        return self._read_bounded(streamed, ANSWER_LIMITS.get(what, ERROR_BODY_LIMIT),
                                                  deadline, what=what, url=url, request_id=request_id)
                    response = self._read_bounded(streamed, ERROR_BODY_LIMIT, deadline, what=what,
                                                  url=url, request_id=request_id, cut=True)
                finally:
                    streamed.close()
            except httpx.TransportError as e:
                if self._stop.is_set() and (what != "submit" or isinstance(e, NOT_SENT)):
                    raise self._interrupted(what, endpoint, url, request_id,
                                            sent=not isinstance(e, NOT_SENT)) from None
                reason = retry_reason(idempotent=resend_safe, error=e)
                if reason and not last:
                    self._pause(what, url, reason, policy.backoff(attempt), attempt)
                    continue
                raise transport_error(e, what=what, endpoint=endpoint, url=url,
                                       request_id=request_id, attempts=attempt) from None
            code = response.status_code
            retry_after = retry_after_s(response) if code == 429 else None
            reason = retry_reason(idempotent=resend_safe, status_code=code,
                                  from_fal="x-fal-request-id" in response.headers,
                                  retry_after=retry_after, max_retry_after=policy.max_retry_after)
            if reason and not last:
                delay = retry_after if retry_after is not None else policy.backoff(attempt)
                self._pause(what, url, reason, delay, attempt)
                continue
            raise error_from(response, what=what, endpoint=endpoint, request_id=request_id,
                              attempts=attempt, secrets=self._secrets)

    def _read_bounded(self, response: httpx.Response, limit: int, deadline: float, *, what: str,
                      url: str, request_id: str | None, cut: bool = False) -> httpx.Response:
        """A read copy of a streamed answer: at most `limit` bytes, inflated and on the wire, read
        before `deadline`. Past the limit, `cut` keeps the first `limit` bytes (an error page);
        otherwise FalBadResponse (a 2xx answer too large to be what fal documents)."""
        body = bytearray()
        for chunk in inflated(response):
            if self._stop.is_set() and what != "submit":   # a submit's answer is waited for
                raise httpx.ReadError("interrupted")
            if time.monotonic() > deadline:
                raise httpx.ReadTimeout(f"the answer took more than {CALL_DEADLINE_S.get(what, 60.0):.0f} s")
            if len(body) + len(chunk) > limit or response.num_bytes_downloaded > limit:
                if cut:
                    body += chunk[:max(0, limit - len(body))]
                    break
                raise FalBadResponse(
                    f"fal's answer to the {what} at {short_url(url)} is larger than {human_size(limit)} (the "
                    "most this dashboard reads of it); only its size is kept. Try again later.",
                    raw={"truncated": True, "read_bytes": len(body) + len(chunk)},
                    status_code=response.status_code, request_id=request_id)
            body += chunk
        headers = [(k, v) for k, v in response.headers.multi_items()
                   if k.lower() not in ("content-length", "content-encoding", "transfer-encoding")]
        return httpx.Response(response.status_code, headers=headers, content=bytes(body),
                              request=response.request)

    def _interrupted(self, what: str, endpoint: str | None, url: str, request_id: str | None, *,
                     sent: bool) -> FalError:
        target = endpoint or short_url(url)
        if not sent:
            return FalUnavailable(f"the {what} of {target} was not sent: the run is stopping.",
                                  not_sent=True, request_id=request_id)
        return FalTimeout(f"the {what} of {target} was cut short: the run is stopping.",
                          request_id=request_id)

    def _pause(self, what: str, url: str, reason: str, delay: float, attempt: int) -> None:
        logger.warning(json.dumps({"event": "fal.retry", "what": what, "url": short_url(url),
                                   "reason": reason, "attempt": attempt, "delay": round(delay, 3)},
                                  separators=(",", ":")))
        if self.retry.sleep is time.sleep:
            self._stop.wait(delay)      # a stop ends the wait; the next attempt sees it
        else:
            self.retry.sleep(delay)     # tests inject a sleep that never waits
