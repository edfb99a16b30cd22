"""The fal client: the queue protocol (submit, status, result, cancel) and result downloads.

One `httpx.Client` per `FalClient` (connection pooling, keep-alive); safe to share between threads.
Queue statuses are small typed values (`Queued`, `InProgress`, `Completed`), as in fal_client, and
a result is parsed once, by `parse_output`, into a `FalOutput` of `OutputImage`s.

Invariants:
- Never risk a second paid job. A submit is sent again ONLY when fal surely did not accept it:
  the connection could not be made, fal answered 429 to a queue submit, or an ingress error page
  came back WITHOUT `x-fal-request-id` (the proxy answered, fal never saw the body). A read
  timeout, a dropped connection after sending, or a 5xx carrying `x-fal-request-id` raise
  instead: the job may exist.
- `stream_status` follows fal's status stream (server-sent events) and, on any error or a stream
  that ends before COMPLETED, carries on by polling `status()`: it always ends with Completed
  (or raises what polling raises).
- Status polls, result fetches, cancels and downloads are idempotent: transport errors, 408, 429
  (honouring `Retry-After`) and 5xx are retried with capped exponential backoff and jitter.
  Both rules live in one pure predicate, `retry_reason`; the send loop only sleeps and counts.
- A result download never reads more than `max_download_bytes` (200 MB unless told otherwise):
  the body is streamed and dropped at the cap.
- The key is sent only to fal's queue URLs (never to a download URL) and never appears in a log
  line, an exception message or a repr. Every body fal answers is passed through
  `core.redact.redact` with the key before it is parsed, so a gateway that echoes the
  `Authorization` header leaks it into no message, stored detail or kept answer.
- Every outgoing payload is logged at INFO on logger "core.batches.fal" as one JSON line with
  `data:` URIs abbreviated (the store keeps the payload itself: History reads it from there).
- Every error is a `core.errors.FalError` whose message says what happened and what to do.
- The TLS context (its CA bundle: ~0.1 s of C code) is built once per process and shared by every
  client; `warm_tls()` starts building it in a thread, which runs beside the caller's Python work
  (OpenSSL releases the interpreter lock), so a runner's first POST does not wait for it.
- A result of an unexpected shape (not JSON, not an object, `images` missing or not a list of
  objects with a `url`) raises FalBadResponse carrying the body: never a KeyError later on.
"""
from __future__ import annotations

import base64
import binascii
import email.utils
import json
import logging
import random
import ssl
import threading
import time
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from core._imports import hidden

with hidden("click"):   # httpx's command-line client, unused (core/_imports.py)
    import httpx

from core.config import Settings, load_settings
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
from core.catalog.payloads import abbreviate, payload_hash
from core.redact import redact

__all__ = [
    "Completed", "DEFAULT_STREAM_TIMEOUT", "DEFAULT_TIMEOUT", "FalClient", "FalOutput", "InProgress",
    "MAX_DOWNLOAD_BYTES", "OutputImage", "QueueHandle", "Queued", "RetryPolicy", "Status",
    "handle_from_row", "parse_output", "retry_reason", "tls_context", "warm_tls",
]

logger = logging.getLogger("core.batches.fal")

DEFAULT_TIMEOUT = httpx.Timeout(30.0, connect=10.0)
# fal sends a comment line on the status stream every 15 s while nothing changes: 120 s without a
# byte means the stream is dead, and `stream_status` carries on by polling.
DEFAULT_STREAM_TIMEOUT = httpx.Timeout(30.0, connect=10.0, read=120.0)
DEFAULT_DOWNLOAD_TIMEOUT = httpx.Timeout(60.0, connect=10.0)
MAX_DOWNLOAD_BYTES = 200 * 1024 * 1024   # a result image larger than this is not kept

_INGRESS_CODES = frozenset({502, 503, 504})
# Raised before a single byte of the request left this machine: always safe to send again.
_NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)
# what answers may be compressed with: only what `_inflated` decodes a bounded piece at a time
ACCEPT_ENCODING = "gzip, deflate"
# a non-JSON body kept with a FalBadResponse is cut here (an HTML page can be large)
_RAW_TEXT_LIMIT = 20_000
# an error answer is read up to this much: enough for any JSON detail or gateway page
_ERROR_BODY_LIMIT = 1024 * 1024
_DOWNLOAD_CHUNK = 256 * 1024
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
_MAX_QUEUE_POSITION = 2 ** 31 - 1
_CANCEL_ANSWERS = frozenset({"CANCELLATION_REQUESTED", "ALREADY_COMPLETED", "NOT_FOUND", "OK"})


# --- typed values -------------------------------------------------------------------------------

@dataclass(frozen=True)
class Queued:
    """Waiting for a runner; `position` is the number of requests ahead (0-based) when fal says."""
    position: int | None
    logs: tuple = ()


@dataclass(frozen=True)
class InProgress:
    logs: tuple = ()


@dataclass(frozen=True)
class Completed:
    """Final. A failed or cancelled job is also Completed, with `error` / `error_type` set."""
    logs: tuple = ()
    metrics: dict = field(default_factory=dict)
    error: str | None = None
    error_type: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None and self.error_type is None


Status = Queued | InProgress | Completed


@dataclass(frozen=True)
class QueueHandle:
    """What a submit returned; enough to poll, fetch, cancel, and to resume after a crash."""
    endpoint: str
    request_id: str
    status_url: str
    response_url: str
    cancel_url: str
    queue_position: int | None = None


@dataclass(frozen=True)
class OutputImage:
    """One image of a result. Only `url` is promised by every endpoint (an http(s) URL on fal's
    CDN, or a `data:` URI with sync_mode); the rest is None when fal left it out or mistyped it."""
    url: str
    width: int | None = None
    height: int | None = None
    content_type: str | None = None
    file_size: int | None = None


@dataclass(frozen=True)
class FalOutput:
    """A model's output, parsed once (`parse_output`). `nsfw[i]` is fal's flag for image i (None
    when fal gave none for it); `inference_s` is fal's `timings.inference`; `raw` is the body as
    received, kept for the store."""
    images: tuple[OutputImage, ...]
    seed: int | None = None
    nsfw: tuple[bool | None, ...] = ()
    inference_s: float | None = None
    raw: Any = field(default=None, repr=False, compare=False)

    def nsfw_of(self, idx: int) -> bool | None:
        return self.nsfw[idx] if idx < len(self.nsfw) else None


def parse_output(body: Any, *, request_id: str | None = None) -> FalOutput:
    """fal's output JSON (schnell's legacy Image or FLUX.2's ImageFile shape) as a FalOutput.

    FalBadResponse (with `.raw` = body) when the body is not an object, or `images` is missing,
    not a list, or holds an entry that is not an object with a non-empty string `url`. Other
    fields are optional: missing or mistyped ones become None (or `()` for the NSFW flags)."""
    which = f"for request {request_id} " if request_id else ""

    def bad(problem: str) -> FalBadResponse:
        return FalBadResponse(f"fal's result {which}is not what its schema promises ({problem}); "
                              "the answer is kept with the request. Re-run it; if it happens "
                              "again, the endpoint's output format has changed.",
                              raw=body, request_id=request_id)

    if not isinstance(body, dict):
        raise bad(f"the body is {_json_kind(body)}, not an object")
    images = body.get("images")
    if images is None:
        raise bad("no `images`")
    if not isinstance(images, list):
        raise bad(f"`images` is {_json_kind(images)}, not a list")
    parsed = []
    for idx, image in enumerate(images):
        url = image.get("url") if isinstance(image, dict) else None
        if not isinstance(url, str) or not url:
            raise bad(f"image {idx} has no URL")
        parsed.append(OutputImage(url=url, width=_positive_int(image.get("width")),
                                  height=_positive_int(image.get("height")),
                                  content_type=_str_or_none(image.get("content_type")),
                                  file_size=_positive_int(image.get("file_size"))))
    flags = body.get("has_nsfw_concepts")
    nsfw = tuple(f if isinstance(f, bool) else None for f in flags) if isinstance(flags, list) else ()
    timings = body.get("timings")
    inference = timings.get("inference") if isinstance(timings, dict) else None
    if isinstance(inference, bool) or not isinstance(inference, (int, float)):
        inference = None
    seed = body.get("seed")
    if isinstance(seed, bool) or not isinstance(seed, int):
        seed = None
    return FalOutput(images=tuple(parsed), seed=seed, nsfw=nsfw,
                     inference_s=None if inference is None else float(inference), raw=body)


def _json_kind(value: Any) -> str:
    for kind, name in ((bool, "a boolean"), (dict, "an object"), (list, "a list"), (str, "a string"),
                       ((int, float), "a number")):
        if isinstance(value, kind):
            return name
    return "null" if value is None else type(value).__name__


def _positive_int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


def _str_or_none(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


@dataclass(frozen=True)
class RetryPolicy:
    """Capped exponential backoff with jitter. `sleep` is injectable so tests never wait.

    A `Retry-After` longer than `max_retry_after` is not waited for: FalRateLimited is raised
    with `.retry_after` so the caller can decide (a batch can pause, a page can say so)."""
    max_attempts: int = 5
    base: float = 0.25
    cap: float = 8.0
    jitter: float = 0.5
    max_retry_after: float = 60.0
    sleep: Callable[[float], None] = field(default=time.sleep, repr=False, compare=False)

    def backoff(self, attempt: int) -> float:
        """Delay before attempt `attempt + 1` (attempt counts from 1)."""
        delay = min(self.cap, self.base * (2 ** (attempt - 1)))
        return delay * (1.0 - self.jitter * random.random())


def _log_send(endpoint: str, payload: Any) -> None:
    """One JSON line per payload that leaves for fal, `data:` URIs abbreviated (built only when
    INFO is logged: it is on the path of every POST)."""
    if logger.isEnabledFor(logging.INFO):
        logger.info(json.dumps({"event": "fal.send", "endpoint": endpoint,
                                "payload_hash": payload_hash(payload), "payload": abbreviate(payload)},
                               ensure_ascii=False, separators=(",", ":")))


def handle_from_row(endpoint: str, request_id: str, status_url: str | None,
                    response_url: str | None, cancel_url: str | None,
                    *, queue_url: str | None = None) -> QueueHandle:
    """A handle rebuilt from a stored row (resume after a crash). Missing URLs are derived the way
    fal builds them: `<queue>/<owner>/<app>/requests/<id>` (only owner/app, not the full path)."""
    if not (status_url and response_url and cancel_url):
        base = _request_base(queue_url or load_settings().fal_queue_url, endpoint, request_id)
        status_url = status_url or f"{base}/status"
        response_url = response_url or base
        cancel_url = cancel_url or f"{base}/cancel"
    return QueueHandle(endpoint, request_id, status_url, response_url, cancel_url)


def _request_base(queue_url: str, endpoint: str, request_id: str) -> str:
    owner_app = "/".join(endpoint.split("/")[:2])
    return f"{queue_url.rstrip('/')}/{owner_app}/requests/{request_id}"


# --- the client ---------------------------------------------------------------------------------

_TLS_LOCK = threading.Lock()
_TLS: list[ssl.SSLContext] = []


def tls_context() -> ssl.SSLContext:
    """httpx's default TLS context (certifi's CAs, or SSL_CERT_FILE / SSL_CERT_DIR), built once."""
    with _TLS_LOCK:
        if not _TLS:
            _TLS.append(httpx.create_ssl_context())
        return _TLS[0]


def warm_tls() -> None:
    """Build `tls_context()` in the background; a failure is raised again by the next caller."""
    def build() -> None:
        try:
            tls_context()
        except Exception:  # noqa: BLE001 - tls_context() raises it again where it is used
            pass

    threading.Thread(target=build, name="tls-context", daemon=True).start()


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
        self._origin = _origin(self.queue_url)
        self._stop = threading.Event()   # `interrupt()`: every wait and read ends at once
        self.retry = retry
        self.max_download_bytes = max_download_bytes
        self._timeout = _as_timeout(timeout)
        self._stream_timeout = _as_timeout(stream_timeout)
        self._download_timeout = _as_timeout(download_timeout)
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

    # --- sending --------------------------------------------------------------------------------

    def submit(self, endpoint: str, payload: dict, *, headers: dict[str, str] | None = None) -> QueueHandle:
        """Queue a job: POST {queue_url}/{endpoint}. Follow the URLs in the returned handle."""
        url = f"{self.queue_url}/{_checked_endpoint(endpoint)}"
        extra = {k: v for k, v in (headers or {}).items() if k.lower() != "authorization"}
        all_headers = {**extra, **self._auth_headers(url)}
        _log_send(endpoint, payload)
        response = self._send("POST", url, what="submit", endpoint=endpoint, json=payload,
                              headers=all_headers, timeout=self._timeout, resend_safe=False)
        body = _json_object(response, what="submit", endpoint=endpoint, secrets=self._secrets)
        request_id = body.get("request_id")
        if not isinstance(request_id, str) or not request_id:
            raise FalServerError(
                f"fal accepted the submission to {endpoint} but its answer has no request_id; "
                "check fal's dashboard before resubmitting.", status_code=response.status_code)
        base = _request_base(self.queue_url, endpoint, request_id)
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
        if _origin(given) == self._origin:
            return given
        logger.warning(json.dumps({"event": "fal.foreign_url", "request_id": request_id,
                                   "url": _short(redact(given, self._secrets))[:200],
                                   "used": _short(derived)}, separators=(",", ":")))
        return derived

    def probe(self, endpoint: str) -> bool:
        """Whether fal's queue answers, asked in a way that cannot start (or pay for) a job: the
        status of a request id no job has. Any answer fal itself gives (404 included) is True;
        no connection, a dropped one, a gateway page or a 5xx is False. One attempt, bounded."""
        url = f"{_request_base(self.queue_url, _checked_endpoint(endpoint), _PROBE_ID)}/status"
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
        body = _json_object(response, what="status", endpoint=handle.endpoint, secrets=self._secrets)
        return _parse_status(body, handle)

    def stream_status(self, handle: QueueHandle, *, logs: bool = True, poll_every: float = 0.25,
                      sleep: Callable[[float], None] = time.sleep) -> Iterator[Status]:
        """The job's statuses as they change, ending with Completed.

        Read from `GET {status_url}/stream` (one `data:` event per change, with or without an
        event name); when the stream fails in any way or ends before COMPLETED, the rest comes
        from polling `status()` every `poll_every` seconds (only changed statuses are yielded).
        Errors of the polling (e.g. FalAuthError, 404) are raised as `status()` raises them."""
        last: Status | None = None
        events = self._stream_events(handle, logs)
        try:
            while True:
                try:
                    status = next(events)
                except StopIteration:
                    reason = "the stream ended before COMPLETED"
                    break
                except Exception as e:  # noqa: BLE001 - any stream failure: carry on by polling
                    reason = f"{type(e).__name__}: {e}"
                    break
                yield status
                last = status
                if isinstance(status, Completed):
                    return
        finally:
            events.close()
        logger.warning(json.dumps({"event": "fal.stream_fallback", "request_id": handle.request_id,
                                   "reason": redact(reason, self._secrets)[:300]},
                                  separators=(",", ":")))
        while True:
            status = self.status(handle, logs=logs)
            if status != last:
                yield status
                last = status
            if isinstance(status, Completed):
                return
            sleep(poll_every)

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
                raise _error_from(_bounded(response, _ERROR_BODY_LIMIT), what="status stream",
                                  endpoint=handle.endpoint, request_id=handle.request_id,
                                  secrets=self._secrets)
            content_type = response.headers.get("content-type", "")
            if not content_type.startswith("text/event-stream"):
                raise FalServerError(f"fal's status stream answered {content_type or 'no content type'}, "
                                     "not text/event-stream.", request_id=handle.request_id)
            for data in _sse_data(self._stream_lines(response)):
                body = json.loads(redact(data, self._secrets))
                if not isinstance(body, dict):
                    raise FalServerError("a status stream event is not a JSON object.",
                                         request_id=handle.request_id)
                yield _parse_status(body, handle)

    def _stream_lines(self, response: httpx.Response) -> Iterator[str]:
        """The lines of a status stream (CR, LF or CRLF ends one), none longer than
        `STREAM_LINE_LIMIT`: a longer one raises FalBadResponse (the follower then polls)."""
        pending = b""
        for chunk in _inflated(response):
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
            raise FalBadResponse(f"a line of fal's status stream is longer than {_size(STREAM_LINE_LIMIT)}; "
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
            return parse_output(body, request_id=handle.request_id)
        except FalBadResponse as e:
            e.status_code = response.status_code
            raise

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
        raise _error_from(response, what="cancel", endpoint=handle.endpoint,
                          request_id=handle.request_id, secrets=self._secrets)

    def download(self, url: str) -> tuple[bytes, str]:
        """The bytes and content type of a result image (http(s) URL or `data:` URI). No key sent.

        The body is streamed and never read past `max_download_bytes`: a file that declares a
        larger Content-Length is refused before its body is read, one that turns out larger
        is dropped at the cap. Either is a FalError saying so (not retried)."""
        if url.startswith("data:"):
            data, content_type = _decode_data_uri(url)
            if len(data) > self.max_download_bytes:
                raise self._too_large("the data: URI result", f"is {len(data)} bytes")
            return data, content_type
        if urlsplit(url).scheme not in ("http", "https"):
            raise FalError(f"cannot download {url[:80]!r}: only http(s) and data: URLs are supported.")

        def read(response: httpx.Response) -> tuple[bytes, str]:
            data = self._read_capped(response, url)
            content_type = response.headers.get("content-type", "").split(";")[0].strip().lower()
            if not content_type.startswith("image/"):
                content_type = _sniff(data) or content_type or "application/octet-stream"
            return data, content_type

        return self._send("GET", url, what="download", endpoint=None, headers=None,
                          timeout=self._download_timeout, resend_safe=True, consume=read)

    def _read_capped(self, response: httpx.Response, url: str) -> bytes:
        cap = self.max_download_bytes
        declared = response.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > cap:
            raise self._too_large(f"the result file at {_short(url)}", f"declares {int(declared)} bytes")
        data = bytearray()
        for chunk in _inflated(response):
            if len(data) + len(chunk) > cap:
                raise self._too_large(f"the result file at {_short(url)}", f"has more than {cap} bytes")
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
        if _origin(url) != self._origin:
            raise FalError(f"refused to send the key to {_short(url)}: it is not fal's queue host "
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
        of a body is capped (`ANSWER_LIMITS`, error bodies at `_ERROR_BODY_LIMIT`) and each
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
                        return self._read_bounded(streamed, ANSWER_LIMITS.get(what, _ERROR_BODY_LIMIT),
                                                  deadline, what=what, url=url, request_id=request_id)
                    response = self._read_bounded(streamed, _ERROR_BODY_LIMIT, deadline, what=what,
                                                  url=url, request_id=request_id, cut=True)
                finally:
                    streamed.close()
            except httpx.TransportError as e:
                if self._stop.is_set() and (what != "submit" or isinstance(e, _NOT_SENT)):
                    raise self._interrupted(what, endpoint, url, request_id,
                                            sent=not isinstance(e, _NOT_SENT)) from None
                reason = retry_reason(idempotent=resend_safe, error=e)
                if reason and not last:
                    self._pause(what, url, reason, policy.backoff(attempt), attempt)
                    continue
                raise _transport_error(e, what=what, endpoint=endpoint, url=url,
                                       request_id=request_id, attempts=attempt) from None
            code = response.status_code
            retry_after = _retry_after(response) if code == 429 else None
            reason = retry_reason(idempotent=resend_safe, status_code=code,
                                  from_fal="x-fal-request-id" in response.headers,
                                  retry_after=retry_after, max_retry_after=policy.max_retry_after)
            if reason and not last:
                delay = retry_after if retry_after is not None else policy.backoff(attempt)
                self._pause(what, url, reason, delay, attempt)
                continue
            raise _error_from(response, what=what, endpoint=endpoint, request_id=request_id,
                              attempts=attempt, secrets=self._secrets)

    def _read_bounded(self, response: httpx.Response, limit: int, deadline: float, *, what: str,
                      url: str, request_id: str | None, cut: bool = False) -> httpx.Response:
        """A read copy of a streamed answer: at most `limit` bytes, inflated and on the wire, read
        before `deadline`. Past the limit, `cut` keeps the first `limit` bytes (an error page);
        otherwise FalBadResponse (a 2xx answer too large to be what fal documents)."""
        body = bytearray()
        for chunk in _inflated(response):
            if self._stop.is_set() and what != "submit":   # a submit's answer is waited for
                raise httpx.ReadError("interrupted")
            if time.monotonic() > deadline:
                raise httpx.ReadTimeout(f"the answer took more than {CALL_DEADLINE_S.get(what, 60.0):.0f} s")
            if len(body) + len(chunk) > limit or response.num_bytes_downloaded > limit:
                if cut:
                    body += chunk[:max(0, limit - len(body))]
                    break
                raise FalBadResponse(
                    f"fal's answer to the {what} at {_short(url)} is larger than {_size(limit)} (the "
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
        target = endpoint or _short(url)
        if not sent:
            return FalUnavailable(f"the {what} of {target} was not sent: the run is stopping.",
                                  not_sent=True, request_id=request_id)
        return FalTimeout(f"the {what} of {target} was cut short: the run is stopping.",
                          request_id=request_id)

    def _pause(self, what: str, url: str, reason: str, delay: float, attempt: int) -> None:
        logger.warning(json.dumps({"event": "fal.retry", "what": what, "url": _short(url),
                                   "reason": reason, "attempt": attempt, "delay": round(delay, 3)},
                                  separators=(",", ":")))
        if self.retry.sleep is time.sleep:
            self._stop.wait(delay)      # a stop ends the wait; the next attempt sees it
        else:
            self.retry.sleep(delay)     # tests inject a sleep that never waits


# --- helpers ------------------------------------------------------------------------------------

def retry_reason(*, idempotent: bool, error: Exception | None = None, status_code: int | None = None,
                 from_fal: bool = False, retry_after: float | None = None,
                 max_retry_after: float = 60.0) -> str | None:
    """Why one attempt's outcome may be sent again (a short label for the log), or None when
    it must not be. Pure: the caller counts attempts, computes delays and sleeps.

    `idempotent` is True for status, result, cancel and downloads, False for a submit (a
    second submit is a second paid job). `error` is the transport error of the attempt, or
    `status_code` / `from_fal` (the answer carried `x-fal-request-id`) / `retry_after` (seconds,
    parsed) describe the answer. A submit is sent again ONLY when fal surely did not get it:
    - the connection was never made (connect error or timeout, no free pooled connection);
    - 429: fal refused it for now (queue submissions are not run when refused);
    - 502/503/504 without `x-fal-request-id`: a gateway page, the body never reached fal.
    Idempotent calls are also sent again after any other transport error, 408 and any 5xx.
    A 429 whose Retry-After exceeds `max_retry_after` is not waited for by anyone."""
    if error is not None:
        if isinstance(error, httpx.UnsupportedProtocol):
            return None   # a bad URL stays bad
        if isinstance(error, _NOT_SENT) or (idempotent and isinstance(error, httpx.TransportError)):
            return type(error).__name__
        return None
    if status_code is None:
        return None
    if status_code == 429:
        return "429" if retry_after is None or retry_after <= max_retry_after else None
    if status_code in _INGRESS_CODES and not from_fal:
        return f"ingress {status_code}"
    if idempotent and (status_code >= 500 or status_code == 408):
        return str(status_code)
    return None


def _as_timeout(value: httpx.Timeout | float) -> httpx.Timeout:
    return value if isinstance(value, httpx.Timeout) else httpx.Timeout(value)


def _inflated(response: httpx.Response, piece: int = _DOWNLOAD_CHUNK) -> Iterator[bytes]:
    """The body of a streamed `response`, decoded, in pieces of at most `piece` bytes: a gzip
    answer is inflated `piece` bytes at a time (httpx's own decoder inflates a whole network read
    at once: 64 KB of a gzip bomb is 64 MB), so a reader that stops at its limit never holds more
    than the limit and one piece. Only the encodings we ask for (`ACCEPT_ENCODING`) are read."""
    raw_pieces = _raw(response, piece)
    if raw_pieces is None:   # a body already in memory (and decoded): a transport of a test
        data = response.content
        for at in range(0, len(data), piece):
            yield data[at:at + piece]
        return
    encoding = response.headers.get("content-encoding", "").strip().lower()
    if encoding in ("", "identity"):
        yield from raw_pieces
        return
    if encoding not in ("gzip", "x-gzip", "deflate"):
        raise FalBadResponse(f"fal answered in an encoding this dashboard does not read ({encoding[:40]!r}).",
                             status_code=response.status_code)
    inflater = zlib.decompressobj(zlib.MAX_WBITS | 32)   # a gzip or zlib header, either
    try:
        for raw in raw_pieces:
            data = raw
            while data:
                out = inflater.decompress(data, piece)
                if out:
                    yield out
                data = inflater.unconsumed_tail
        rest = inflater.flush()
    except zlib.error as e:
        raise FalBadResponse(f"fal's {encoding} answer could not be decoded ({e}).",
                             status_code=response.status_code) from None
    for at in range(0, len(rest), piece):
        yield rest[at:at + piece]


def _raw(response: httpx.Response, piece: int) -> Iterator[bytes] | None:
    """The response's undecoded body as it arrives, or None when it was read already."""
    stream = response.iter_raw(piece)
    try:
        first = next(stream)
    except StopIteration:
        return iter(())
    except httpx.StreamConsumed:
        return None

    def chained() -> Iterator[bytes]:
        yield first
        yield from stream
    return chained()


def _bounded(response: httpx.Response, limit: int) -> httpx.Response:
    """A read copy of a streamed `response` holding at most `limit` bytes of its body."""
    body = bytearray()
    for chunk in _inflated(response):
        body += chunk[:limit - len(body)]
        if len(body) >= limit:
            break
    headers = [(k, v) for k, v in response.headers.multi_items()
               if k.lower() not in ("content-length", "content-encoding", "transfer-encoding")]
    return httpx.Response(response.status_code, headers=headers, content=bytes(body),
                          request=response.request)


def _size(n: int) -> str:
    return f"{n // (1024 * 1024)} MB" if n % (1024 * 1024) == 0 else f"{n} bytes"


def _origin(url: str) -> tuple[str, str, int | None]:
    """Scheme, host and port of a URL (default ports filled in), to compare hosts exactly."""
    try:
        split = urlsplit(url)
        port = split.port or {"https": 443, "http": 80}.get(split.scheme.lower())
    except ValueError:
        return ("", url, None)
    return (split.scheme.lower(), (split.hostname or "").lower(), port)


def queue_position_of(value: Any) -> int | None:
    """fal's `queue_position` when it is a plausible one (a non-negative integer that fits a
    column), else None: an odd value is not worth failing a job fal accepted."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= _MAX_QUEUE_POSITION:
        return None
    return value


def _checked_endpoint(endpoint: str) -> str:
    parts = endpoint.split("/")
    if len(parts) < 2 or any(p in ("", ".", "..") for p in parts) or any(c in endpoint for c in "?#\\ "):
        raise FalError(f"{endpoint!r} is not a fal endpoint id (expected e.g. 'fal-ai/flux/schnell').")
    return endpoint


def _short(url: str) -> str:
    """A URL without its query, for logs and messages."""
    s = urlsplit(url)
    return f"{s.scheme}://{s.netloc}{s.path}"


def _loads(response: httpx.Response, secrets: tuple[str, ...]) -> Any:
    """The JSON of a body with the secrets masked first (None when it is not JSON)."""
    try:
        return json.loads(redact(response.text, secrets))
    except (ValueError, RecursionError):   # not JSON, or nested deeper than Python parses
        return None


def _json_object(response: httpx.Response, *, what: str, endpoint: str | None,
                 secrets: tuple[str, ...]) -> dict:
    body = _loads(response, secrets)
    if not isinstance(body, dict):
        raise FalServerError(
            f"fal answered the {what} for {endpoint} with {response.status_code} but the body is not "
            "a JSON object; try again later.", status_code=response.status_code,
            request_id=response.headers.get("x-fal-request-id"))
    return body


def _parse_status(body: dict, handle: QueueHandle) -> Status:
    """A status body as a Status. Only `status` must be right (an unknown one raises, and is
    asked again); `logs`, `metrics`, `queue_position`, `error` of an odd shape are dropped."""
    raw_logs = body.get("logs")
    logs = tuple(raw_logs) if isinstance(raw_logs, list) else ()
    state = body.get("status")
    if state == "IN_QUEUE":
        return Queued(position=queue_position_of(body.get("queue_position")), logs=logs)
    if state == "IN_PROGRESS":
        return InProgress(logs=logs)
    if state == "COMPLETED":
        metrics = body.get("metrics")
        metrics = {k: v for k, v in metrics.items() if isinstance(k, str)} if isinstance(metrics, dict) else {}
        inference = metrics.get("inference_time")
        if inference is not None and (isinstance(inference, bool) or not isinstance(inference, (int, float))):
            metrics.pop("inference_time")
        error, error_type = body.get("error"), body.get("error_type")
        return Completed(logs=logs, metrics=metrics,
                         error=None if error is None else str(error)[:2000],
                         error_type=None if error_type is None else str(error_type)[:200])
    # a bad answer, not an outage: the follower asks again (up to MAX_BAD_ANSWERS), sending goes on
    raise FalBadResponse(f"fal answered an unknown status {str(state)[:100]!r} for request "
                         f"{handle.request_id}; poll again later.", raw=body, request_id=handle.request_id)


def _sse_data(lines: Iterable[str]) -> Iterator[str]:
    """The `data` of each server-sent event, in order, whatever its event name (`event:`) and
    ignoring comments (`:`), `id:` and `retry:` lines. Multi-line data is joined with newlines,
    as the SSE format says; an event still open when the stream ends is delivered too."""
    data: list[str] = []
    for line in lines:
        if not line:
            if data:
                yield "\n".join(data)
                data = []
            continue
        if line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        if name == "data":
            data.append(value[1:] if value.startswith(" ") else value)
    if data:
        yield "\n".join(data)


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _fields(detail: list) -> list[str]:
    """"image_size: Input should be ..." per entry; `loc` minus its leading "body"."""
    out = []
    for item in detail:
        if not isinstance(item, dict):
            out.append(str(item))
            continue
        loc = [str(p) for p in (item.get("loc") or []) if p != "body"]
        name = ".".join(loc) or "(body)"
        kind = item.get("type")
        out.append(f"{name}: {item.get('msg', 'invalid')}" + (f" [{kind}]" if kind else ""))
    return out


def _error_from(response: httpx.Response, *, what: str, endpoint: str | None,
                request_id: str | None, secrets: tuple[str, ...], attempts: int = 1) -> FalError:
    """The FalError for a non-2xx answer. Everything taken from the answer (body and headers)
    has the secrets masked, and so has the final message."""
    error = _error_for(response, what=what, endpoint=endpoint, request_id=request_id,
                       secrets=secrets, attempts=attempts)
    error.args = tuple(redact(a, secrets) if isinstance(a, str) else a for a in error.args)
    return error


def _error_for(response: httpx.Response, *, what: str, endpoint: str | None,
               request_id: str | None, secrets: tuple[str, ...], attempts: int) -> FalError:
    code = response.status_code
    rid = redact(response.headers.get("x-fal-request-id") or request_id or "", secrets) or None
    body = _loads(response, secrets)
    detail = body.get("detail") if isinstance(body, dict) else None
    error_type = (body.get("error_type") if isinstance(body, dict) else None) \
        or redact(response.headers.get("x-fal-error-type", ""), secrets) or None
    said = detail if isinstance(detail, str) else None
    target = endpoint or _short(str(response.request.url))
    kw = {"status_code": code, "request_id": rid, "error_type": error_type}
    tried = f" after {attempts} attempts" if attempts > 1 else ""

    if code in (401, 403):
        return FalAuthError(f"fal rejected the key ({code}): check FAL_KEY"
                            + (f" (fal said: {said})" if said else "") + ".", **kw)
    if code == 422:
        if isinstance(detail, list):
            problems = "; ".join(_fields(detail)) or "no details given"
        else:
            problems = said or "no details given"
        return FalValidationError(f"fal refused the input for {target} (422): {problems}. "
                                  "Fix those fields and send again.", detail=detail, **kw)
    if code == 429:
        retry_after = _retry_after(response)
        wait = f"wait {retry_after:g} s" if retry_after is not None else "wait a little"
        return FalRateLimited(f"fal is rate-limiting this account (429){tried}: {wait} or lower "
                              "DASHBOARD_CONCURRENCY, then try again.", retry_after=retry_after, **kw)
    if _is_cancelled(detail, error_type):
        return FalCancelled(f"fal request {rid} was cancelled; submit it again if you still want it.",
                            **kw)
    if code in _INGRESS_CODES and "x-fal-request-id" not in response.headers:
        return FalUnavailable(f"fal's gateway answered {code}{tried} for the {what} of {target} "
                              "(the request never reached fal): try again in a minute.",
                              not_sent=True, **kw)
    if code >= 500:
        kind = f" {error_type}" if error_type else ""
        msg = f"fal failed on its side ({code}{kind}){tried} for the {what} of {target}"
        msg += f": {said}" if said else ""
        if what == "submit":
            msg += (". The job may or may not exist, so it was NOT sent again (never risk a second "
                    "paid job): check fal's request history before resubmitting.")
        else:
            msg += ". 5xx answers are not billed; try again later."
        return FalServerError(msg, **kw)
    if code == 404:
        if what == "submit":
            return FalError(f"fal has no endpoint {endpoint} (404): check the endpoint id.", **kw)
        if what == "download":
            return FalError(f"result file {target} is gone (404): fal keeps result files for a "
                            "limited time; run the request again.", **kw)
        return FalError(f"fal does not know request {rid} (404): it may have expired (fal may keep "
                        "a result only an hour, 6 minutes when it is large); run it again.", **kw)
    return FalError(f"fal refused the {what} of {target} ({code})"
                    + (f": {said}" if said else "") + ".", **kw)


def _is_cancelled(detail: Any, error_type: str | None) -> bool:
    text = f"{error_type or ''} {detail if isinstance(detail, str) else ''}".lower()
    return "cancel" in text


def _transport_error(e: httpx.TransportError, *, what: str, endpoint: str | None, url: str,
                     request_id: str | None, attempts: int) -> FalError:
    target = endpoint or _short(url)
    tried = f" after {attempts} attempts" if attempts > 1 else ""
    kw = {"request_id": request_id}
    if isinstance(e, _NOT_SENT):
        return FalUnavailable(f"could not connect to fal at {_short(url)}{tried} "
                              f"({type(e).__name__}): check the network and FAL_QUEUE_URL; "
                              "nothing was sent.", not_sent=True, **kw)
    maybe = ("The job may have been accepted, so it was NOT sent again (never risk a second paid job): "
             "check fal's request history before resubmitting."
             if what == "submit" else "Try again later.")
    if isinstance(e, httpx.TimeoutException):
        return FalTimeout(f"fal did not answer the {what} of {target} in time{tried} "
                          f"({type(e).__name__}). {maybe}", **kw)
    return FalUnavailable(f"the connection to fal dropped during the {what} of {target}{tried} "
                          f"({type(e).__name__}). {maybe}", **kw)


def _decode_data_uri(uri: str) -> tuple[bytes, str]:
    head, sep, data = uri.partition(",")
    if not sep:
        raise FalError("the result is a malformed data: URI (no comma); run the request again.")
    parts = head[5:].split(";")
    mime = parts[0] or "text/plain"
    try:
        raw = base64.b64decode(data, validate=False) if "base64" in parts[1:] else data.encode()
    except (binascii.Error, ValueError):
        raise FalError("the result data: URI is not valid base64; run the request again.") from None
    if not mime.startswith("image/"):
        mime = _sniff(raw) or mime
    return raw, mime


def _sniff(data: bytes) -> str | None:
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if data.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return None
