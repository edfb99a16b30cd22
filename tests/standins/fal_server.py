"""A fal stand-in speaking fal's wire protocol over real HTTP on 127.0.0.1.

    server = FalStandin(latency=0.05).start()
    server.url       # queue base: POST /<endpoint>, GET|PUT /<owner>/<app>/requests/<id>[/status|/cancel]
    ...
    server.stop()

Out of process: `python -m tests.standins.fal_server --port 0 --latency 1.0` prints the queue base
URL on its first stdout line; `StandinControl(url)` drives the test API over `/_standin/...`.

What it guarantees (the client's tests rely on each):
- Queue protocol as in docs/fal.md: submit 200 IN_QUEUE with URLs under
  `/<owner>/<app>/requests/<id>`; status 202 IN_QUEUE(+queue_position)/IN_PROGRESS, 200 COMPLETED
  with `metrics`; `logs` always present (null unless `logs=1`/`true`); result replays the model's
  status and body; cancel 202/400/404.
- Status stream `GET .../status/stream`: `text/event-stream`, chunked, one `data: {status}` event
  each time the job's state, queue position or log count changes (the first at once), the
  connection closed after the COMPLETED event. Every answer from the "app" carries `x-fal-request-id`;
  ingress error pages (injected) carry none.
- Auth `Authorization: Key <key>` on every app call (not on /files: that is the public CDN).
- Bodies are validated against core/catalog/schemas/<endpoint>.json (Draft 2020-12); unknown keys are
  dropped like fal does, and remembered (`received[i]["dropped_keys"]`).
- Outage mode (`outage(seconds, kind=, status=)`, cleared by `end_outage()` or when the time is
  up): every call but the test API (submit, status, stream, result, cancel, files) meets the
  outage, and nothing is recorded or accepted. Kinds (`OUTAGE_KINDS`): "ingress" (the gateway's
  HTML page, `status` 502/503/504, WITHOUT `x-fal-request-id`), "fal" (fal's app answers a JSON
  502/503/504 WITH `x-fal-request-id`), "drop" (the request is read, the connection closed
  unanswered), "reset" (headers and part of the body, then a TCP reset), "hang" (no answer until
  the outage ends, then closed: a read timeout for a client whose timeout is shorter). Refused
  connections come from `tests/standins/tcp_proxy.py` in front of the stand-in, DNS failures
  from `tests/standins/fake_dns` (see there).
- Odd answers (`inject(where, kind)`, `SHAPE_FAULTS`): on status "odd_logs" (`"logs": 5`),
  "odd_metrics" (`"metrics": [1, 2, 3]`), "unknown_status", "deep" (a `depth`-deep JSON array,
  default 200,000), "gzip_bomb" (gzip that inflates to `size` bytes, default 1 GiB), "drip" (the
  answer one byte every `every` s, default 20); on submit "huge_position" (`queue_position`
  10**400) and "foreign_urls" (status/response/cancel URLs on `host`); on result "huge" (a valid
  output padded to `size` bytes, default 300 MB, generated as it is sent), "echo_key_forms" (the
  output echoes the key's halves, base64 and URL-encoded forms), "gzip_bomb", "drip"; on stream
  "keepalive" (only `: ping` comments, never an event) and "endless_line" (one `data:` line that
  never ends); on file "html" (200 text/html).
- Billing: a result answered 200 carries `x-fal-billable-units`, the output megapixels (width x
  height / 1024², summed over the images, 4 decimals) as fal bills a per-megapixel endpoint; an
  error result carries 0. `billable_units` set to a number sends that instead, to None sends none.
- `advertise(url)`: answers name URLs under `url` (a proxy in front) instead of the stand-in's own.
- fal's catalogue (OpenAPI documents by id, model search, prices) is served by the same server from
  tests/standins/fal_catalogue.py (`catalogue`, see there); a body sent to an endpoint whose document
  it serves is checked against that document too, and a field it lacks is a 422 ("extra field").
- A job is counted in `submissions` only once accepted; faults injected before acceptance, a 422,
  or a held submission whose client went away are never counted.
- Jobs take `latency` seconds from the moment a worker takes them; with `capacity` K, jobs queue
  and `queue_position` counts down. The schedule is computed lazily from the clock (no timer threads).
- Results are real images (Pillow) of the requested size and format, served at `/files/<name>`;
  encoded bytes are cached per (width, height, format, colour), so hundreds of jobs stay cheap.
  `large_file(size)` serves a PNG-signed file of any size generated while it is sent (never held
  in memory), with or without a Content-Length.
"""
from __future__ import annotations

import argparse
import base64
import collections
import io
import json
import random
import struct
import zlib
import select
import socket
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

import httpx
import jsonschema
from PIL import Image, ImageDraw

from core.catalog.payloads import payload_hash
from tests.standins import fal_catalogue

SCHEMA_DIR = Path(__file__).resolve().parents[2] / "core" / "catalog" / "schemas"
DEFAULT_KEY = "standin-key-1234:not-a-real-secret"
DEFAULT_LATENCY = 0.05

PRESETS = {
    "square_hd": (1024, 1024), "square": (512, 512),
    "portrait_4_3": (768, 1024), "portrait_16_9": (576, 1024),
    "landscape_4_3": (1024, 768), "landscape_16_9": (1024, 576),
}
CONTENT_TYPES = {"jpeg": "image/jpeg", "png": "image/png", "webp": "image/webp"}
PALETTE = [(214, 69, 65), (52, 152, 219), (46, 204, 113), (241, 196, 15), (155, 89, 182),
           (230, 126, 34), (26, 188, 156), (236, 240, 241), (52, 73, 94), (233, 30, 99),
           (0, 150, 136), (121, 85, 72)]

WHERES = ("submit", "status", "stream", "result", "cancel", "file", "job")
FAULTS = ("401", "422", "429", "500", "503", "502", "504", "ingress", "slow", "drop", "echo_auth")
STREAM_FAULTS = ("cut", "named", "keepalive", "endless_line")
# answers of an unexpected shape or size, played by the route itself (see the module docstring)
SHAPE_FAULTS = {"status": ("odd_logs", "odd_metrics", "unknown_status", "deep", "gzip_bomb", "drip"),
                "submit": ("huge_position", "foreign_urls"),
                "result": ("huge", "echo_key_forms", "gzip_bomb", "drip"),
                "stream": (), "cancel": (), "job": (), "file": ("html",)}
OUTAGE_KINDS = ("ingress", "fal", "drop", "reset", "hang")
JOB_FAULTS = ("content_policy_violation", "runner_disconnected", "list_body", "missing_fields",
              "image_404")

_INGRESS_HTML = ("<html>\r\n<head><title>{code} {reason}</title></head>\r\n<body>\r\n<center><h1>{code} "
                 "{reason}</h1></center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n")
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_ZEROS = memoryview(bytes(1024 * 1024))   # the body of a large file, sent again and again
_REASONS = {502: "Bad Gateway", 503: "Service Temporarily Unavailable", 504: "Gateway Time-out"}
# Stand-in choice: fal does not document how a cancelled job's result is replayed.
_CANCELLED = (400, {"detail": "Request was cancelled", "error_type": "request_cancelled"})


# --- endpoints ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class _Endpoint:
    endpoint_id: str
    input_schema: dict
    validator: jsonschema.Draft202012Validator
    legacy_images: bool  # fal-ai/flux/* use the old Image model (url/width/height/content_type)

    @property
    def properties(self) -> dict:
        return self.input_schema.get("properties", {})


def _load_endpoints() -> dict[str, _Endpoint]:
    out = {}
    for path in sorted(SCHEMA_DIR.glob("*.json")):
        if path.name.startswith("_"):
            continue
        doc = json.loads(path.read_text())
        endpoint_id = doc.get("endpoint_id") or path.stem.replace("__", "/")
        schema = doc["input"]
        out[endpoint_id] = _Endpoint(endpoint_id, schema, jsonschema.Draft202012Validator(schema),
                                     legacy_images=endpoint_id.startswith("fal-ai/flux/"))
    return out


_TYPE_NAMES = {"integer": ("int_type", "integer"), "number": ("float_type", "number"),
               "string": ("string_type", "string"), "boolean": ("bool_type", "boolean"),
               "array": ("list_type", "list"), "object": ("dict_type", "dictionary")}


def _validation_detail(endpoint: _Endpoint, body: dict) -> list[dict]:
    """fal/pydantic-shaped 422 entries for every schema violation in `body`."""
    detail: list[dict] = []
    seen: set[tuple] = set()
    for error in sorted(endpoint.validator.iter_errors(body), key=lambda e: list(e.absolute_path)):
        path = list(error.absolute_path)
        kind, msg, ctx = "value_error", error.message, None
        v = error.validator_value
        if error.validator == "required":
            for name in v:
                if isinstance(error.instance, dict) and name not in error.instance:
                    loc = ("body", *path, name)
                    if loc not in seen:
                        seen.add(loc)
                        detail.append({"type": "missing", "loc": list(loc), "msg": "Field required",
                                       "input": error.instance})
            continue
        if error.validator == "maximum":
            kind, msg, ctx = "less_than_equal", f"Input should be less than or equal to {v}", {"le": v}
        elif error.validator == "minimum":
            kind, msg, ctx = "greater_than_equal", f"Input should be greater than or equal to {v}", {"ge": v}
        elif error.validator == "exclusiveMinimum":
            kind, msg, ctx = "greater_than", f"Input should be greater than {v}", {"gt": v}
        elif error.validator == "enum":
            kind = "literal_error"
            msg = "Input should be " + " or ".join(repr(x) for x in v)
            ctx = {"expected": ", ".join(repr(x) for x in v)}
        elif error.validator == "type":
            kind, name = _TYPE_NAMES.get(v if isinstance(v, str) else v[0], ("type_error", str(v)))
            msg = f"Input should be a valid {name}"
        elif error.validator == "maxItems":
            kind, msg, ctx = "too_long", f"List should have at most {v} items", {"max_length": v}
        elif error.validator == "minItems":
            kind, msg, ctx = "too_short", f"List should have at least {v} items", {"min_length": v}
        elif error.validator == "anyOf":
            kind = "union_error"
            msg = "Input should be a valid preset name or an object with width and height"
        loc = ("body", *path)
        if loc in seen:
            continue
        seen.add(loc)
        entry = {"type": kind, "loc": list(loc), "msg": msg, "input": error.instance}
        if ctx:
            entry["ctx"] = ctx
        detail.append(entry)
    return detail


# --- jobs and faults ----------------------------------------------------------------------------

@dataclass
class _Fault:
    fault: str
    remaining: int
    params: dict


@dataclass
class _Job:
    request_id: str
    endpoint: _Endpoint
    owner_app: str
    body: dict
    flags: list[str]
    submitted_at: float
    latency: float
    fault: str | None = None
    fault_params: dict = field(default_factory=dict)
    state: str = "IN_QUEUE"
    started_at: float | None = None
    finish_at: float | None = None
    outcome: tuple[int, Any] | None = None  # the model's (status, body), built on first read
    error: str | None = None
    error_type: str | None = None
    logs: list[dict] = field(default_factory=list)


def _stamp() -> str:
    return datetime.now(timezone.utc).isoformat()


def _log(job: _Job, message: str, level: str = "INFO") -> None:
    job.logs.append({"message": message, "level": level, "source": "user", "timestamp": _stamp()})


# --- the server ---------------------------------------------------------------------------------

class FalStandin:
    """One stand-in: state, test API, and an HTTP server in a background thread."""

    def __init__(self, *, key: str = DEFAULT_KEY, latency: float = DEFAULT_LATENCY,
                 capacity: int | None = None, port: int = 0):
        self.endpoints = _load_endpoints()
        self._defaults = (key, latency, capacity)
        self._port = port
        self._lock = threading.RLock()
        self._cond = threading.Condition(self._lock)
        self._images_lock = threading.Lock()
        self._encoded: dict[tuple, bytes] = {}
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.url = ""
        self._reset_state()

    # --- lifecycle ------------------------------------------------------------------------------

    def start(self) -> FalStandin:
        self._httpd = _Server(("127.0.0.1", self._port), _Handler)
        self._httpd.standin = self
        host, port = self._httpd.server_address[:2]
        self.url = f"http://{host}:{port}"
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="fal-standin",
                                        kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self.release()
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._thread.join(timeout=5)
            self._httpd = None

    def __enter__(self) -> FalStandin:
        return self.start() if self._httpd is None else self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- test API -------------------------------------------------------------------------------

    def _reset_state(self) -> None:
        with self._lock:
            self.key, self.latency, self.capacity = self._defaults
            self.billable_units = "megapixels"
            self._jobs: dict[str, _Job] = {}
            self._waiting: collections.deque[_Job] = collections.deque()
            self._running: list[_Job] = []
            self._faults: dict[str, list[_Fault]] = {w: [] for w in WHERES}
            self._files: dict[str, tuple] = {}
            self._large: dict[str, tuple[int, bool]] = {}
            self._large_sent = 0
            self._outage_until: float | None = None
            self._outage_status = 502
            self._outage_kind = "ingress"
            self._public_url: str | None = None
            self._outage_answers = 0
            self.received: list[dict] = []
            self._accepted = 0
            self._by_endpoint: collections.Counter = collections.Counter()
            self._by_hash: collections.Counter = collections.Counter()
            self._requests: collections.Counter = collections.Counter()
            self._hold_after: int | None = None
            self._hold_seen = 0
            self._held = 0
            self._discarded = 0
            self._hold_gen = getattr(self, "_hold_gen", 0) + 1
            # submissions still held from before a reset are discarded, never accepted
            self._epoch = getattr(self, "_epoch", 0) + 1
            self._cond.notify_all()

    def reset(self) -> None:
        """Forget jobs, counts, faults and holds; back to the constructor's key/latency/capacity."""
        self._reset_state()

    @property
    def catalogue(self) -> fal_catalogue.Catalogue:
        """Documents, search and prices (tests/standins/fal_catalogue.py), fresh after a reset."""
        return fal_catalogue.catalogue_of(self)

    def set_latency(self, seconds: float) -> None:
        with self._lock:
            self.latency = float(seconds)

    def set_capacity(self, capacity: int | None) -> None:
        """Workers taking jobs at once; None = unlimited (every job starts when submitted)."""
        with self._lock:
            self._advance(time.monotonic())
            self.capacity = None if capacity is None else int(capacity)
            self._fill(time.monotonic())

    def set_key(self, key: str) -> None:
        with self._lock:
            self.key = key

    def inject(self, where: str, fault: str | int, times: int = 1, **params: Any) -> None:
        """Make the next `times` calls at `where` fail with `fault`.

        where: submit, status, stream, result, cancel, file; or "job": the next accepted jobs complete
        with a model error, "content_policy_violation" (422) or "runner_disconnected" (503), or
        succeed with an output fal's schema does not promise: "list_body" (a JSON list holding
        the output), "missing_fields" (fields=[top-level keys to leave out], default ["images"];
        image_fields=[keys to leave out of every image]), "image_404" (index=k, default 1: image
        k's URL answers 404, like an expired file; send num_images > k).
        fault: "401", "422" (detail=list|str), "429" (retry_after=seconds|None), "500" (carries
        x-fal-request-id), "503" (runner_scheduling_failure), "502"/"504"/"ingress" (nginx HTML,
        NO x-fal-request-id; status=502), "slow" (seconds=N, then answer normally), "drop" (close
        the socket unanswered), "echo_auth" (a gateway error, status=400 by default, without
        x-fal-request-id, whose JSON body echoes the Authorization header as sent: in `detail`,
        in `error_type`, URL-encoded, and the key id alone). On submit, accepted=True makes the job exist before the fault
        answers (or drops); default False: refused before acceptance, never counted.
        On "stream" also: "cut" (end the stream after events=N events, default 1, before
        COMPLETED; abrupt=True drops the connection instead of ending the chunked body) and
        "named" (every event carries `event: status`, with `: ping` comments between them).
        """
        fault = str(fault)
        if where not in WHERES:
            raise ValueError(f"where must be one of {WHERES}, got {where!r}")
        allowed = JOB_FAULTS if where == "job" else (FAULTS + (STREAM_FAULTS if where == "stream" else ())
                                                     + SHAPE_FAULTS[where])
        if fault not in allowed:
            raise ValueError(f"fault at {where} must be one of {allowed}, got {fault!r}")
        with self._lock:
            self._faults[where].append(_Fault(fault, int(times), dict(params)))

    def large_file(self, size: int, *, declare_length: bool = True) -> str:
        """The URL of a `size`-byte "image" (PNG signature, then zeros) generated as it is sent.
        Without `declare_length` it is sent chunked, so only reading it tells its size."""
        name = f"large-{uuid.uuid4().hex}.png"
        with self._lock:
            self._large[name] = (int(size), bool(declare_length))
        return f"{self.url}/files/{name}"

    @property
    def large_bytes_sent(self) -> int:
        """Bytes of large files written to clients so far (a client that stops early stops it)."""
        with self._lock:
            return self._large_sent

    def hold_submissions_after(self, n: int) -> None:
        """Let the next `n` submissions through; later ones block before being
        accepted until `release()`. A held one whose client disconnects is discarded, uncounted."""
        with self._lock:
            self._hold_after = int(n)
            self._hold_seen = 0
            self._hold_gen += 1

    def outage(self, seconds: float, *, status: int = 502, kind: str = "ingress") -> None:
        """For the next `seconds`, every call (not the test API) meets an outage of `kind` (see
        `OUTAGE_KINDS`; `status` for "ingress" and "fal"); a new call replaces the previous one."""
        if kind not in OUTAGE_KINDS:
            raise ValueError(f"kind must be one of {OUTAGE_KINDS}, got {kind!r}")
        with self._lock:
            self._outage_until = time.monotonic() + float(seconds)
            self._outage_status = int(status)
            self._outage_kind = kind

    def advertise(self, url: str | None) -> None:
        """Name URLs under `url` in answers (a proxy in front of the stand-in); None: our own."""
        with self._lock:
            self._public_url = url.rstrip("/") if url else None

    @property
    def public_url(self) -> str:
        return self._public_url or self.url

    def end_outage(self) -> None:
        with self._lock:
            self._outage_until = None

    @property
    def in_outage(self) -> bool:
        with self._lock:
            return self._outage_until is not None and time.monotonic() < self._outage_until

    def release(self) -> None:
        with self._lock:
            self._hold_after = None
            self._hold_gen += 1
            self._cond.notify_all()

    @property
    def held(self) -> int:
        with self._lock:
            return self._held

    def wait_for_held(self, n: int, timeout: float = 10.0) -> bool:
        """Block until at least `n` submissions are held (True) or `timeout` passes (False)."""
        with self._lock:
            return self._cond.wait_for(lambda: self._held >= n, timeout)

    @property
    def submissions(self) -> int:
        """Accepted jobs: what fal would run and bill."""
        with self._lock:
            return self._accepted

    @property
    def submissions_by_endpoint(self) -> dict[str, int]:
        with self._lock:
            return dict(self._by_endpoint)

    @property
    def submissions_by_hash(self) -> dict[str, int]:
        """Accepted jobs per `core.catalog.payloads.payload_hash` of the body as received."""
        with self._lock:
            return dict(self._by_hash)

    @property
    def dropped_keys(self) -> list[list[str]]:
        """Keys fal would ignore, per received body (in arrival order)."""
        with self._lock:
            return [list(r["dropped_keys"]) for r in self.received]

    def job_state(self, request_id: str) -> str | None:
        with self._lock:
            self._advance(time.monotonic())
            job = self._jobs.get(request_id)
            return job.state if job else None

    def stats(self) -> dict:
        with self._lock:
            self._advance(time.monotonic())
            states = collections.Counter(j.state for j in self._jobs.values())
            return {
                "submissions": self._accepted,
                "by_endpoint": dict(self._by_endpoint),
                "by_hash": dict(self._by_hash),
                "requests": dict(self._requests),
                "jobs": dict(states),
                "held": self._held,
                "discarded": self._discarded,
                "received": len(self.received),
                "dropped_keys": [list(r["dropped_keys"]) for r in self.received],
                "latency": self.latency,
                "capacity": self.capacity,
                "outage_left": max(0.0, round(self._outage_until - time.monotonic(), 3))
                if self._outage_until is not None else 0.0,
                "outage_answers": self._outage_answers,
            }

    # --- scheduling (call with the lock held) ---------------------------------------------------

    def _start(self, job: _Job, at: float) -> None:
        job.state, job.started_at, job.finish_at = "IN_PROGRESS", at, at + job.latency
        self._running.append(job)
        _log(job, "Starting generation")

    def _has_slot(self) -> bool:
        return self.capacity is None or len(self._running) < self.capacity

    def _fill(self, at: float) -> None:
        while self._waiting and self._has_slot():
            self._start(self._waiting.popleft(), at)

    def _advance(self, now: float) -> None:
        """Play the schedule forward to `now`: finish due jobs, hand their slots to waiting ones."""
        while self._running:
            job = min(self._running, key=lambda j: j.finish_at)
            if job.finish_at > now:
                break
            self._running.remove(job)
            self._finish(job)
            while self._waiting and self._has_slot():
                nxt = self._waiting.popleft()
                self._start(nxt, max(job.finish_at, nxt.submitted_at))
        self._fill(now)

    def _finish(self, job: _Job) -> None:
        job.state = "COMPLETED"
        if job.fault == "content_policy_violation":
            msg = ("The content could not be processed because it contained material flagged "
                   "by a content checker.")
            job.error, job.error_type = msg, "content_policy_violation"
            job.outcome = (422, {"detail": [{"loc": ["body", "prompt"], "msg": msg,
                                             "type": "content_policy_violation",
                                             "input": job.body.get("prompt")}]})
            _log(job, msg, "ERROR")
        elif job.fault == "runner_disconnected":
            msg = "The runner disconnected unexpectedly during processing."
            job.error, job.error_type = msg, "runner_disconnected"
            job.outcome = (503, {"detail": msg, "error_type": "runner_disconnected"})
            _log(job, msg, "ERROR")
        else:
            _log(job, "Generation finished")

    def _cancel_job(self, job: _Job) -> None:
        if job in self._waiting:
            self._waiting.remove(job)
        if job in self._running:
            self._running.remove(job)
            self._fill(time.monotonic())
        job.state = "COMPLETED"
        job.error, job.error_type = _CANCELLED[1]["detail"], _CANCELLED[1]["error_type"]
        job.outcome = _CANCELLED
        _log(job, "Request cancelled", "WARN")

    def _take_fault(self, where: str) -> _Fault | None:
        with self._lock:
            queue = self._faults[where]
            if not queue:
                return None
            fault = queue[0]
            fault.remaining -= 1
            if fault.remaining <= 0:
                queue.pop(0)
            return fault

    # --- results --------------------------------------------------------------------------------

    def _output_size(self, job: _Job) -> tuple[int, int]:
        size = job.body.get("image_size")
        props = job.endpoint.properties
        if size is None and "image_size" in props:
            size = props["image_size"].get("default")
        if isinstance(size, str):
            return PRESETS[size]
        if isinstance(size, dict):
            return int(size.get("width", 512)), int(size.get("height", 512))
        if "image_size" not in props:  # image-to-image: output follows the input image
            found = _data_uri_size(job.body.get("image_url"))
            if found:
                return found
        job.flags.append("image_size_defaulted")
        _log(job, "stand-in: no image_size given; generated 1024x1024", "WARN")
        return 1024, 1024

    def _build_output(self, job: _Job) -> dict:
        """fal's output body for a successful job; images are registered under /files/."""
        width, height = self._output_size(job)
        props = job.endpoint.properties
        fmt = job.body.get("output_format") or props.get("output_format", {}).get("default") or "jpeg"
        seed = job.body.get("seed")
        if seed is None:
            seed = random.randrange(2**31)
        sync = bool(job.body.get("sync_mode"))
        images = []
        for i in range(int(job.body.get("num_images") or 1)):
            key = (width, height, fmt, (seed + i) % len(PALETTE))
            if sync:
                data = self._encode(key)
                url = f"data:{CONTENT_TYPES[fmt]};base64," + base64.b64encode(data).decode()
            else:
                name = f"{uuid.uuid4().hex}.{'jpg' if fmt == 'jpeg' else fmt}"
                with self._lock:
                    self._files[name] = key
                url = f"{self.public_url}/files/{name}"
            image = {"url": url, "width": width, "height": height, "content_type": CONTENT_TYPES[fmt]}
            if not job.endpoint.legacy_images:
                image.update(file_name=None, file_size=None)
            images.append(image)
        return {"images": images, "seed": seed, "has_nsfw_concepts": [False] * len(images),
                "prompt": job.body.get("prompt", ""), "timings": {"inference": job.latency}}

    def _faulty_output(self, job: _Job, output: dict) -> Any:
        """The output as a "job" fault of the unexpected-shape kind reshapes it."""
        params = job.fault_params
        if job.fault == "list_body":
            return [output]
        if job.fault == "missing_fields":
            for name in params.get("fields", ["images"]):
                output.pop(name, None)
            for image in output.get("images") or []:
                for name in params.get("image_fields", []):
                    image.pop(name, None)
        elif job.fault == "image_404":
            index = int(params.get("index", 1))
            images = output["images"]
            if index < len(images) and not images[index]["url"].startswith("data:"):
                with self._lock:
                    self._files.pop(images[index]["url"].rsplit("/", 1)[1], None)
        return output

    # what a 200 result bills: "megapixels" (the images' own), a number, or None (no header)
    billable_units: Any = "megapixels"

    def _billable(self, code: int, body: Any) -> str | None:
        if self.billable_units is None:
            return None
        if code != 200:
            return "0"
        if self.billable_units != "megapixels":
            return str(self.billable_units)
        images = body.get("images") if isinstance(body, dict) else None
        pixels = sum(int(i.get("width") or 0) * int(i.get("height") or 0)
                     for i in images or () if isinstance(i, dict))
        return f"{pixels / 1024 ** 2:.4f}"

    def _outcome(self, job: _Job) -> tuple[int, Any]:
        if job.outcome is None:
            built = (200, self._faulty_output(job, self._build_output(job)))
            with self._lock:
                if job.outcome is None:
                    job.outcome = built
        return job.outcome

    def _encode(self, key: tuple) -> bytes:
        with self._images_lock:
            cached = self._encoded.get(key)
        if cached is not None:
            return cached
        width, height, fmt, colour = key
        image = Image.new("RGB", (width, height), PALETTE[colour])
        ImageDraw.Draw(image).rectangle((0, height // 3, width, 2 * height // 3),
                                        fill=PALETTE[(colour + 5) % len(PALETTE)])
        buf = io.BytesIO()
        if fmt == "jpeg":
            image.save(buf, "JPEG", quality=80)
        elif fmt == "png":
            image.save(buf, "PNG", compress_level=1)
        else:
            image.save(buf, "WEBP", quality=70, method=0)
        data = buf.getvalue()
        with self._images_lock:
            self._encoded[key] = data
        return data


_BOMBS: dict[int, bytes] = {}


def _gzip_bomb(size: int) -> bytes:
    """gzip bytes (about size/1000 of them) that inflate to `size` zero bytes; made once per size."""
    if size not in _BOMBS:
        packer = zlib.compressobj(9, zlib.DEFLATED, 31)
        zeros, parts, left = bytes(1 << 20), [], size
        while left > 0:
            parts.append(packer.compress(zeros[:left]))
            left -= min(left, len(zeros))
        parts.append(packer.flush())
        _BOMBS[size] = b"".join(parts)
    return _BOMBS[size]


def _data_uri_size(value: Any) -> tuple[int, int] | None:
    if not isinstance(value, str) or not value.startswith("data:"):
        return None
    try:
        raw = base64.b64decode(value.partition(",")[2])
        with Image.open(io.BytesIO(raw)) as im:
            return im.size
    except Exception:  # noqa: BLE001 - any undecodable input means "unknown size"
        return None


# --- HTTP ---------------------------------------------------------------------------------------

class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    # socketserver's default listen backlog is 5: a runner opening 16-32 connections at once
    # overflowed it, and the kernel's SYN-cookie path then reset a connection the client had
    # already written a POST to (a ReadError on a submit: possibly sent, never resent). fal's
    # servers, like any production server (uvicorn 2048, nginx 511), accept far more.
    request_queue_size = 1024
    standin: FalStandin

    def handle_error(self, request, client_address) -> None:
        # Clients that time out or get killed leave broken pipes behind: expected, not noise.
        exc = sys.exc_info()[1]
        if isinstance(exc, (ConnectionError, TimeoutError, OSError)):
            return
        super().handle_error(request, client_address)


class _Drop(Exception):
    """Close the connection without answering."""


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # http.server writes headers and body separately; with Nagle and delayed ACKs every answer
    # would wait ~40 ms, which no real fal server does
    disable_nagle_algorithm = True
    timeout = 30  # idle keep-alive connections are closed after this
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        pass

    @property
    def standin(self) -> FalStandin:
        return self.server.standin

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    # --- plumbing -------------------------------------------------------------------------------

    def _dispatch(self, method: str) -> None:
        self._epoch = self.standin._epoch
        self._shape: _Fault | None = None
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        split = urlsplit(self.path)
        parts = [p for p in split.path.split("/") if p]
        query = parse_qs(split.query)
        try:
            if parts[:1] == ["_standin"]:
                return self._control(method, parts[1:], raw)
            if self._outage_answered():
                return
            if fal_catalogue.handles(method, parts):
                return fal_catalogue.serve(self, parts, query)
            if parts[:1] == ["files"] and method == "GET" and len(parts) == 2:
                return self._file(parts[1])
            if method == "POST" and "requests" not in parts:
                return self._submit("/".join(parts), raw)
            if len(parts) >= 4 and parts[2] == "requests":
                owner_app, request_id, tail = "/".join(parts[:2]), parts[3], parts[4:]
                logs = query.get("logs", ["0"])[0].lower() in ("1", "true")
                if method == "GET" and tail == ["status"]:
                    return self._status(owner_app, request_id, logs)
                if method == "GET" and tail == ["status", "stream"]:
                    return self._stream(owner_app, request_id, logs)
                if method == "GET" and not tail:
                    return self._result(owner_app, request_id)
                if method == "PUT" and tail == ["cancel"]:
                    return self._cancel(owner_app, request_id)
            self._json(404, {"detail": "Not Found"}, request_id=str(uuid.uuid4()))
        except _Drop:
            self.close_connection = True

    def _send(self, code: int, body: bytes, content_type: str, headers: dict[str, str]) -> None:
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def _json(self, code: int, obj: Any, *, request_id: str | None,
              headers: dict[str, str] | None = None) -> None:
        all_headers = dict(headers or {})
        if request_id:
            all_headers["x-fal-request-id"] = request_id
        self._send(code, json.dumps(obj).encode(), "application/json", all_headers)

    def _outage_answered(self) -> bool:
        standin = self.standin
        with standin._lock:
            if standin._outage_until is None or time.monotonic() >= standin._outage_until:
                return False
            standin._outage_answers += 1
            code, kind = standin._outage_status, standin._outage_kind
        if kind == "ingress":
            self._ingress_page(code)
        elif kind == "fal":
            body = ({"detail": "No runner could be allocated to handle the request.",
                     "error_type": "runner_scheduling_failure"} if code == 503
                    else {"detail": _REASONS.get(code, "Error")})
            self._json(code, body, request_id=str(uuid.uuid4()))
        elif kind == "drop":
            raise _Drop()
        elif kind == "reset":
            self._reset_mid_body(code)
        else:   # hang: nothing until the outage is over (or the client left), then closed
            while standin.in_outage and not self._client_gone():
                time.sleep(0.05)
            raise _Drop()
        return True

    def _reset_mid_body(self, code: int = 502) -> None:
        """Headers promising a body, part of it, then a TCP reset (RST) instead of the rest."""
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", "4096")
        self.end_headers()
        self.wfile.write(b'{"detail": "' + b"x" * 100)
        self.wfile.flush()
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.connection.close()
        raise _Drop()

    def _ingress_page(self, code: int) -> None:
        page = _INGRESS_HTML.format(code=code, reason=_REASONS.get(code, "Error")).encode()
        self._send(code, page, "text/html", {})

    def _client_gone(self) -> bool:
        try:
            readable, _, _ = select.select([self.connection], [], [], 0)
            if not readable:
                return False
            return self.connection.recv(1, socket.MSG_PEEK) == b""
        except OSError:
            return True

    def _apply_fault(self, where: str, *, on_accept=None) -> bool:
        """Serve an injected fault for `where`; True when it answered (or dropped) the request.
        A stream-only fault is left in `self._stream_fault` for the stream to play."""
        standin = self.standin
        with standin._lock:
            standin._requests[where] += 1
        fault = standin._take_fault(where)
        if fault is None:
            return False
        kind, params = fault.fault, fault.params
        if kind in STREAM_FAULTS or kind in SHAPE_FAULTS[where]:
            self._stream_fault = self._shape = fault
            return False
        if kind == "slow":
            time.sleep(float(params.get("seconds", 1.0)))
            return False
        rid = str(uuid.uuid4())
        if on_accept is not None and params.get("accepted"):
            rid = on_accept()
        if kind == "drop":
            raise _Drop()
        if kind == "401":
            self._json(401, {"detail": "No user found for Key ID and Secret"}, request_id=rid)
        elif kind == "422":
            detail = params.get("detail") or [{"type": "value_error", "loc": ["body", "prompt"],
                                               "msg": "stand-in: injected validation error", "input": None}]
            self._json(422, {"detail": detail}, request_id=rid, headers={"x-fal-billable-units": "0"})
        elif kind == "429":
            retry_after = params.get("retry_after", 1)
            headers = {} if retry_after is None else {"Retry-After": str(retry_after)}
            self._json(429, {"detail": "Too many requests: concurrency limit reached"},
                       request_id=rid, headers=headers)
        elif kind == "500":
            self._json(500, {"detail": "Internal Server Error"}, request_id=rid)
        elif kind == "503":
            self._json(503, {"detail": "No runner could be allocated to handle the request.",
                             "error_type": "runner_scheduling_failure"}, request_id=rid,
                       headers={"X-Fal-Error-Type": "runner_scheduling_failure"})
        elif kind == "echo_auth":
            auth = self.headers.get("Authorization") or ""
            token = auth.partition(" ")[2]
            self._json(int(params.get("status", 400)), {
                "detail": f"Gateway could not route the request (headers: Authorization: {auth})",
                "error_type": f"gateway_rejected:{token}",
                "echo": {"url": f"{self.path}?authorization={quote(auth, safe='')}",
                         "key_id": token.split(":")[0]},
            }, request_id=None)
        else:  # ingress: the proxy answers, fal never saw the request
            self._ingress_page(int(params.get("status") or (int(kind) if kind.isdigit() else 502)))
        return True

    def _authorized(self) -> bool:
        if self.headers.get("Authorization") == f"Key {self.standin.key}":
            return True
        self._json(401, {"detail": "No user found for Key ID and Secret"}, request_id=str(uuid.uuid4()))
        return False

    # --- app routes -----------------------------------------------------------------------------

    def _submit(self, endpoint_id: str, raw: bytes) -> None:
        standin = self.standin
        endpoint = standin.endpoints.get(endpoint_id) or standin.catalogue.endpoint(endpoint_id)
        try:
            body = json.loads(raw or b"null")
        except ValueError:
            body = None
        record = {"endpoint": endpoint_id, "body": body, "accepted": False,
                  "dropped_keys": [], "request_id": None,
                  "headers": {k: v for k, v in self.headers.items() if k.lower() != "authorization"}}
        with standin._lock:
            standin.received.append(record)
        accepted: list[_Job] = []

        def accept() -> str:
            job = self._accept(endpoint, body, record)
            accepted.append(job)
            return job.request_id

        can_accept = endpoint is not None and isinstance(body, dict) and not _validation_detail(
            endpoint, {k: v for k, v in body.items() if k in endpoint.properties})
        if self._apply_fault("submit", on_accept=accept if can_accept else None):
            return
        if not self._authorized():
            return
        if endpoint is None:
            return self._json(404, {"detail": f"Application '{endpoint_id}' not found"},
                              request_id=str(uuid.uuid4()))
        if not isinstance(body, dict):
            return self._json(422, {"detail": [{"type": "model_attributes_type", "loc": ["body"],
                                                "msg": "Input should be a valid dictionary",
                                                "input": body}]}, request_id=str(uuid.uuid4()))
        record["dropped_keys"] = sorted(k for k in body if k not in endpoint.properties)
        detail = _validation_detail(endpoint, {k: v for k, v in body.items() if k in endpoint.properties})
        detail = detail or standin.catalogue.refusals(endpoint_id, body, _validation_detail)
        if detail:
            return self._json(422, {"detail": detail}, request_id=str(uuid.uuid4()),
                              headers={"x-fal-billable-units": "0"})
        if not self._wait_if_held():
            raise _Drop()
        job = self._accept(endpoint, body, record)
        urls = self._urls(job)
        answer = {"status": "IN_QUEUE", "request_id": job.request_id, **urls,
                  "queue_position": self._position(job)}
        shape = self._shape.fault if self._shape else None
        if shape == "huge_position":
            answer["queue_position"] = 10**400
        elif shape == "foreign_urls":
            host = self._shape.params.get("host", "http://127.0.0.2:9").rstrip("/")
            answer.update({name: url.replace(self.standin.public_url, host) for name, url in urls.items()})
        self._json(200, answer, request_id=job.request_id)

    def _wait_if_held(self) -> bool:
        """Block while submissions are held; False when the client went away meanwhile."""
        standin = self.standin
        with standin._cond:
            if standin._hold_after is None:
                return True
            standin._hold_seen += 1
            if standin._hold_seen <= standin._hold_after:
                return True
            gen, epoch = standin._hold_gen, standin._epoch
            standin._held += 1
            standin._cond.notify_all()
            try:
                while standin._hold_gen == gen:
                    standin._cond.wait(0.05)
                    if self._client_gone():
                        standin._discarded += 1
                        return False
            finally:
                standin._held -= 1
            if standin._epoch != epoch or self._client_gone():
                standin._discarded += 1
                return False
            return True

    def _accept(self, endpoint: _Endpoint, body: dict, record: dict) -> _Job:
        standin = self.standin
        clean = {k: v for k, v in body.items() if k in endpoint.properties}
        with standin._lock:
            if standin._epoch != self._epoch:
                # arrived before a reset (e.g. a slow answer from the previous test): never counted
                raise _Drop()
            now = time.monotonic()
            standin._advance(now)
            job_fault = standin._take_fault("job")
            job = _Job(request_id=str(uuid.uuid4()), endpoint=endpoint,
                       owner_app="/".join(endpoint.endpoint_id.split("/")[:2]), body=clean,
                       flags=[], submitted_at=now, latency=standin.latency,
                       fault=job_fault.fault if job_fault else None,
                       fault_params=dict(job_fault.params) if job_fault else {})
            if record["dropped_keys"] or set(body) - set(clean):
                record["dropped_keys"] = sorted(set(body) - set(clean))
                _log(job, f"ignored unknown keys: {', '.join(record['dropped_keys'])}", "WARN")
            record["accepted"], record["request_id"], record["flags"] = True, job.request_id, job.flags
            standin._accepted += 1
            standin._by_endpoint[endpoint.endpoint_id] += 1
            standin._by_hash[payload_hash(body)] += 1
            standin._jobs[job.request_id] = job
            if standin._has_slot():
                standin._start(job, now)
            else:
                standin._waiting.append(job)
        return job

    def _urls(self, job: _Job) -> dict[str, str]:
        base = f"{self.standin.public_url}/{job.owner_app}/requests/{job.request_id}"
        return {"response_url": base, "status_url": f"{base}/status", "cancel_url": f"{base}/cancel"}

    def _position(self, job: _Job) -> int:
        with self.standin._lock:
            return self.standin._waiting.index(job) if job in self.standin._waiting else 0

    def _job(self, owner_app: str, request_id: str) -> _Job | None:
        standin = self.standin
        with standin._lock:
            standin._advance(time.monotonic())
            job = standin._jobs.get(request_id)
        return job if job is not None and job.owner_app == owner_app else None

    def _status(self, owner_app: str, request_id: str, logs: bool) -> None:
        if self._apply_fault("status") or not self._authorized():
            return
        job = self._job(owner_app, request_id)
        if job is None:
            return self._json(404, {"status": "NOT_FOUND"}, request_id=request_id)
        body = self._status_body(job, logs)
        code = 200 if body["status"] == "COMPLETED" else 202
        if self._shape is not None:
            return self._odd(code, body, job.request_id)
        self._json(code, body, request_id=job.request_id)

    def _odd(self, code: int, body: dict, request_id: str) -> None:
        """Answer `body` reshaped or resized as the injected shape fault says."""
        kind, params = self._shape.fault, self._shape.params
        if kind == "odd_logs":
            body["logs"] = 5
        elif kind == "odd_metrics":
            body["metrics"] = [1, 2, 3]
        elif kind == "unknown_status":
            body["status"] = "REPLICATING"
        elif kind == "echo_key_forms":
            key = self.standin.key
            half = len(key) // 2
            body["debug"] = {"first": key[:half], "second": key[half:],
                             "b64": base64.b64encode(key.encode()).decode(),
                             "b64url": base64.urlsafe_b64encode(f"Key {key}".encode()).decode(),
                             "quoted": quote(f"Key {key}", safe="")}
        elif kind == "deep":
            depth = int(params.get("depth", 200_000))
            return self._send(code, b"[" * depth + b"]" * depth, "application/json",
                              {"x-fal-request-id": request_id})
        elif kind == "gzip_bomb":
            return self._send(code, _gzip_bomb(int(params.get("size", 1 << 30))), "application/json",
                              {"x-fal-request-id": request_id, "Content-Encoding": "gzip"})
        elif kind == "drip":
            return self._drip(code, json.dumps(body).encode(), float(params.get("every", 20.0)),
                              request_id)
        elif kind == "huge":
            return self._huge(code, body, int(params.get("size", 300 * 1024 * 1024)), request_id)
        self._json(code, body, request_id=request_id)

    def _drip(self, code: int, data: bytes, every: float, request_id: str) -> None:
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("x-fal-request-id", request_id)
        self.end_headers()
        self.close_connection = True
        for i in range(len(data)):
            self.wfile.write(data[i:i + 1])
            self.wfile.flush()
            if self._sleep_unless_gone(every):
                return

    def _sleep_unless_gone(self, seconds: float) -> bool:
        """Wait `seconds`; True as soon as the client has gone (or the stand-in was reset)."""
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            if self._client_gone() or self._epoch != self.standin._epoch:
                return True
            time.sleep(min(0.05, max(0.0, end - time.monotonic())))
        return False

    def _huge(self, code: int, body: dict, size: int, request_id: str) -> None:
        """`body` with a `padding` string that brings it to `size` bytes, generated as it is sent."""
        head = json.dumps(body)[:-1].encode() + b', "padding": "'
        tail = b'"}'
        pad = max(0, size - len(head) - len(tail))
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(head) + pad + len(tail)))
        self.send_header("x-fal-request-id", request_id)
        self.end_headers()
        self.close_connection = True
        self.wfile.write(head)
        chunk = b"a" * (1024 * 1024)
        while pad > 0:
            piece = chunk[:pad]
            self.wfile.write(piece)
            pad -= len(piece)
            with self.standin._lock:
                self.standin._large_sent += len(piece)
        self.wfile.write(tail)

    def _status_body(self, job: _Job, logs: bool) -> dict:
        with self.standin._lock:
            self.standin._advance(time.monotonic())
            body = {"status": job.state, "request_id": job.request_id, **self._urls(job),
                    "logs": list(job.logs) if logs else None}
            if job.state == "IN_QUEUE":
                body["queue_position"] = self.standin._waiting.index(job)
            if job.state == "COMPLETED":
                ran = (job.finish_at or time.monotonic()) - (job.started_at or job.submitted_at)
                body["metrics"] = {"inference_time": round(max(ran, 0.0), 4)}
                if job.error is not None:
                    body["error"], body["error_type"] = job.error, job.error_type
        return body

    def _stream(self, owner_app: str, request_id: str, logs: bool) -> None:
        """Server-sent events: the status body whenever it changes; closed after COMPLETED."""
        self._stream_fault = None
        if self._apply_fault("stream") or not self._authorized():
            return
        job = self._job(owner_app, request_id)
        if job is None:
            return self._json(404, {"status": "NOT_FOUND"}, request_id=request_id)
        fault = self._stream_fault
        if fault is not None and fault.fault in ("keepalive", "endless_line"):
            return self._odd_stream(fault, job.request_id)
        named = fault is not None and fault.fault == "named"
        cut_after = int(fault.params.get("events", 1)) if fault is not None and fault.fault == "cut" else None
        self.send_response(200)
        for name, value in (("Content-Type", "text/event-stream"), ("Cache-Control", "no-cache"),
                            ("Transfer-Encoding", "chunked"), ("x-fal-request-id", job.request_id),
                            ("Connection", "close")):
            self.send_header(name, value)
        self.end_headers()
        # fal closes the stream after COMPLETED; saying so keeps a client from reusing the socket
        self.close_connection = True
        sent, last = 0, None
        while self._epoch == self.standin._epoch and not self._client_gone():
            body = self._status_body(job, logs)
            seen = (body["status"], body.get("queue_position"), len(body["logs"] or ()))
            if seen != last:
                last = seen
                event = f"data: {json.dumps(body)}\n\n"
                if named:
                    event = f": ping\n\nevent: status\n{event}"
                self._chunk(event.encode())
                sent += 1
                if body["status"] == "COMPLETED":
                    break
                if cut_after is not None and sent >= cut_after:
                    if fault.params.get("abrupt"):
                        return   # no final chunk: the client sees the connection drop mid-body
                    break
            with self.standin._lock:
                due = job.finish_at if job.state == "IN_PROGRESS" else None
            time.sleep(0.02 if due is None else min(0.05, max(0.001, due - time.monotonic())))
        self._chunk(b"")

    def _odd_stream(self, fault: _Fault, request_id: str) -> None:
        """A stream that never yields an event: keep-alive comments only, or one endless line."""
        self.send_response(200)
        for name, value in (("Content-Type", "text/event-stream"), ("Transfer-Encoding", "chunked"),
                            ("x-fal-request-id", request_id), ("Connection", "close")):
            self.send_header(name, value)
        self.end_headers()
        self.close_connection = True
        if fault.fault == "keepalive":
            every = float(fault.params.get("every", 0.5))
            while True:
                self._chunk(b": ping\n\n")
                if self._sleep_unless_gone(every):
                    return
        self._chunk(b"data: ")
        chunk = b"x" * (256 * 1024)
        while self._epoch == self.standin._epoch:
            self._chunk(chunk)
            with self.standin._lock:
                self.standin._large_sent += len(chunk)

    def _chunk(self, data: bytes | memoryview) -> None:
        self.wfile.write(f"{len(data):x}\r\n".encode())
        self.wfile.write(data)
        self.wfile.write(b"\r\n")

    def _result(self, owner_app: str, request_id: str) -> None:
        if self._apply_fault("result") or not self._authorized():
            return
        job = self._job(owner_app, request_id)
        if job is None:
            return self._json(404, {"status": "NOT_FOUND"}, request_id=request_id)
        if job.state != "COMPLETED":
            return self._json(400, {"detail": "Request is still in progress"}, request_id=request_id)
        code, body = self.standin._outcome(job)
        if self._shape is not None and isinstance(body, dict):
            return self._odd(code, dict(body), request_id)
        headers = {"X-Fal-Error-Type": body["error_type"]} if "error_type" in body else {}
        units = self.standin._billable(code, body)
        if units is not None:
            headers["x-fal-billable-units"] = units
        self._json(code, body, request_id=request_id, headers=headers)

    def _cancel(self, owner_app: str, request_id: str) -> None:
        if self._apply_fault("cancel") or not self._authorized():
            return
        job = self._job(owner_app, request_id)
        if job is None:
            return self._json(404, {"status": "NOT_FOUND"}, request_id=request_id)
        with self.standin._lock:
            if job.state == "COMPLETED":
                answer = (400, "ALREADY_COMPLETED")
            else:
                # queued: removed; in progress: the runner gets the signal and (here) stops at once
                self.standin._cancel_job(job)
                answer = (202, "CANCELLATION_REQUESTED")
        self._json(answer[0], {"status": answer[1]}, request_id=request_id)

    def _file(self, name: str) -> None:
        if self._apply_fault("file"):
            return
        with self.standin._lock:
            key = self.standin._files.get(name)
            large = self.standin._large.get(name)
        if large is not None:
            return self._large_file(*large)
        if self._shape is not None and self._shape.fault == "html":
            return self._send(200, b"<!doctype html><html><body><h1>Sign in</h1></body></html>",
                              "text/html; charset=utf-8", {})
        if key is None:
            return self._send(404, b"Not Found", "text/plain", {})
        self._send(200, self.standin._encode(key), CONTENT_TYPES[key[2]], {})

    def _large_file(self, size: int, declared: bool) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "image/png")
        self.send_header("Content-Length" if declared else "Transfer-Encoding",
                         str(size) if declared else "chunked")
        self.end_headers()
        self.close_connection = True
        left = size
        while left > 0:
            piece = memoryview(_PNG_SIGNATURE) if left == size else _ZEROS
            piece = piece[:left]
            if declared:
                self.wfile.write(piece)
            else:
                self._chunk(piece)
            left -= len(piece)
            with self.standin._lock:
                self.standin._large_sent += len(piece)
        if not declared:
            self._chunk(b"")

    # --- control API (out-of-process tests) -----------------------------------------------------

    def _control(self, method: str, parts: list[str], raw: bytes) -> None:
        standin = self.standin
        args = json.loads(raw) if raw else {}
        action = parts[0] if parts else ""
        try:
            if method == "GET" and action == "stats":
                return self._json(200, standin.stats(), request_id=None)
            if method != "POST":
                return self._json(405, {"detail": "POST to change the stand-in"}, request_id=None)
            if action == "reset":
                standin.reset()
            elif action == "latency":
                standin.set_latency(args["seconds"])
            elif action == "capacity":
                standin.set_capacity(args.get("capacity"))
            elif action == "key":
                standin.set_key(args["key"])
            elif action == "inject" and args.get("where") in fal_catalogue.WHERES:
                standin.catalogue.inject(args.pop("where"), args.pop("fault"), args.pop("times", 1), **args)
            elif action == "catalogue_document":
                standin.catalogue.register(args.pop("endpoint_id"), args.pop("document"), **args)
            elif action == "catalogue_price":
                standin.catalogue.set_price(**args)
            elif action == "inject":
                standin.inject(args.pop("where"), args.pop("fault"), args.pop("times", 1), **args)
            elif action == "hold":
                standin.hold_submissions_after(args["after"])
            elif action == "release":
                standin.release()
            elif action == "outage":
                standin.outage(args["seconds"], status=args.get("status", 502),
                               kind=args.get("kind", "ingress"))
            elif action == "advertise":
                standin.advertise(args.get("url"))
            elif action == "end_outage":
                standin.end_outage()
            else:
                return self._json(404, {"detail": f"no control action {action!r}"}, request_id=None)
        except (KeyError, ValueError, TypeError) as e:
            return self._json(400, {"detail": str(e)}, request_id=None)
        self._json(200, {"ok": True}, request_id=None)


class StandinControl:
    """The test API of a stand-in running in another process, over `/_standin/...`."""

    def __init__(self, url: str):
        self.url = url.rstrip("/")
        self._http = httpx.Client(base_url=f"{self.url}/_standin", timeout=10.0)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> StandinControl:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _post(self, action: str, **args: Any) -> None:
        self._http.post(f"/{action}", json=args).raise_for_status()

    def stats(self) -> dict:
        response = self._http.get("/stats")
        response.raise_for_status()
        return response.json()

    @property
    def submissions(self) -> int:
        return self.stats()["submissions"]

    def reset(self) -> None:
        self._post("reset")

    def set_latency(self, seconds: float) -> None:
        self._post("latency", seconds=seconds)

    def set_capacity(self, capacity: int | None) -> None:
        self._post("capacity", capacity=capacity)

    def inject(self, where: str, fault: str | int, times: int = 1, **params: Any) -> None:
        self._post("inject", where=where, fault=str(fault), times=times, **params)

    def hold_submissions_after(self, n: int) -> None:
        self._post("hold", after=n)

    def register_document(self, endpoint_id: str, document: dict | str, **metadata: Any) -> None:
        """Serve `document` for `endpoint_id` (see fal_catalogue.Catalogue.register)."""
        self._post("catalogue_document", endpoint_id=endpoint_id, document=document, **metadata)

    def set_price(self, endpoint_id: str, unit_price: float, unit: str = "images", currency: str = "USD") -> None:
        self._post("catalogue_price", endpoint_id=endpoint_id, unit_price=unit_price, unit=unit,
                   currency=currency)

    def release(self) -> None:
        self._post("release")

    def outage(self, seconds: float, *, status: int = 502, kind: str = "ingress") -> None:
        self._post("outage", seconds=seconds, status=status, kind=kind)

    def advertise(self, url: str | None) -> None:
        self._post("advertise", url=url)

    def end_outage(self) -> None:
        self._post("end_outage")

    def wait_for_held(self, n: int, timeout: float = 10.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.stats()["held"] >= n:
                return True
            time.sleep(0.05)
        return False


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="fal stand-in on 127.0.0.1 (prints its URL first)")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--latency", type=float, default=DEFAULT_LATENCY)
    parser.add_argument("--capacity", type=int, default=None)
    parser.add_argument("--key", default=DEFAULT_KEY)
    args = parser.parse_args(argv)
    from tests.serving import serve_until_terminated

    return serve_until_terminated(FalStandin(key=args.key, latency=args.latency, capacity=args.capacity,
                                             port=args.port))


if __name__ == "__main__":
    sys.exit(main())
