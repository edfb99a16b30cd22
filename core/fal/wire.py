"""Reading what fal answers without trusting its size or shape: bounded bodies (gzip and deflate
inflated 64 KB at a time, never past a cap), JSON objects, server-sent events, `data:` URIs.

Invariants:
- No answer is held in memory past its cap, compressed or not: a gzip bomb is cut at the cap.
- Every body is passed through `core.redact.redact` with the key before it is parsed.
"""
from __future__ import annotations

import base64
import binascii
import json
import zlib
from collections.abc import Iterable, Iterator
from typing import Any
from urllib.parse import urlsplit

from core._imports import hidden

with hidden("click"):   # httpx's command-line client, unused (core/_imports.py)
    import httpx

from core.errors import (
    FalBadResponse,
    FalError,
    FalServerError,
)
from core.redact import redact


DOWNLOAD_CHUNK = 256 * 1024


# an error answer is read up to this much: enough for any JSON detail or gateway page
ERROR_BODY_LIMIT = 1024 * 1024


def as_timeout(value: httpx.Timeout | float) -> httpx.Timeout:
    return value if isinstance(value, httpx.Timeout) else httpx.Timeout(value)


def inflated(response: httpx.Response, piece: int = DOWNLOAD_CHUNK) -> Iterator[bytes]:
    """The body of a streamed `response`, decoded, in pieces of at most `piece` bytes: a gzip
    answer is inflated `piece` bytes at a time (httpx's own decoder inflates a whole network read
    at once: 64 KB of a gzip bomb is 64 MB), so a reader that stops at its limit never holds more
    than the limit and one piece. Only the encodings we ask for (`ACCEPT_ENCODING`) are read."""
    raw_pieces = raw_chunks(response, piece)
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


def raw_chunks(response: httpx.Response, piece: int) -> Iterator[bytes] | None:
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


def bounded_body(response: httpx.Response, limit: int) -> httpx.Response:
    """A read copy of a streamed `response` holding at most `limit` bytes of its body."""
    body = bytearray()
    for chunk in inflated(response):
        body += chunk[:limit - len(body)]
        if len(body) >= limit:
            break
    headers = [(k, v) for k, v in response.headers.multi_items()
               if k.lower() not in ("content-length", "content-encoding", "transfer-encoding")]
    return httpx.Response(response.status_code, headers=headers, content=bytes(body),
                          request=response.request)


def human_size(n: int) -> str:
    return f"{n // (1024 * 1024)} MB" if n % (1024 * 1024) == 0 else f"{n} bytes"


def origin_of(url: str) -> tuple[str, str, int | None]:
    """Scheme, host and port of a URL (default ports filled in), to compare hosts exactly."""
    try:
        split = urlsplit(url)
        port = split.port or {"https": 443, "http": 80}.get(split.scheme.lower())
    except ValueError:
        return ("", url, None)
    return (split.scheme.lower(), (split.hostname or "").lower(), port)


def checked_endpoint(endpoint: str) -> str:
    parts = endpoint.split("/")
    if len(parts) < 2 or any(p in ("", ".", "..") for p in parts) or any(c in endpoint for c in "?#\\ "):
        raise FalError(f"{endpoint!r} is not a fal endpoint id (expected e.g. 'fal-ai/flux/schnell').")
    return endpoint


def short_url(url: str) -> str:
    """A URL without its query, for logs and messages."""
    s = urlsplit(url)
    return f"{s.scheme}://{s.netloc}{s.path}"


def loads_redacted(response: httpx.Response, secrets: tuple[str, ...]) -> Any:
    """The JSON of a body with the secrets masked first (None when it is not JSON)."""
    try:
        return json.loads(redact(response.text, secrets))
    except (ValueError, RecursionError):   # not JSON, or nested deeper than Python parses
        return None


def json_object(response: httpx.Response, *, what: str, endpoint: str | None,
                 secrets: tuple[str, ...]) -> dict:
    body = loads_redacted(response, secrets)
    if not isinstance(body, dict):
        raise FalServerError(
            f"fal answered the {what} for {endpoint} with {response.status_code} but the body is not "
            "a JSON object; try again later.", status_code=response.status_code,
            request_id=response.headers.get("x-fal-request-id"))
    return body


def sse_data(lines: Iterable[str]) -> Iterator[str]:
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


def decode_data_uri(uri: str) -> tuple[bytes, str]:
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
        mime = sniff(raw) or mime
    return raw, mime


def sniff(data: bytes) -> str | None:
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if data.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return None
