"""What must never be shown whole: secrets in text that came from outside, and `data:` URIs.

A leaf: it imports nothing of the project (core/errors.py depends on it).

`abbreviate(obj)` shortens every `data:` URI in a value (whole strings or quoted inside text) to
"data:<mime>;base64,…(<n> bytes, sha256 <first 12 hex>)", for logs, stored responses, errors,
pages and exports.

Some gateways echo the request's `Authorization` header in their error bodies, so any text a
server answered may hold our key. `redact(text, secrets)` masks every given secret in it.

Invariants:
- Every occurrence of each secret is replaced by `MASK`, as written and in the forms an echo
  takes: URL-encoded (`%3A` for `:`), JSON-escaped, and inside `Key <secret>` /
  `Bearer <secret>`, which become `Key ***` / `Bearer ***` (the reader still sees what leaked).
- A fal key is `<key id>:<key secret>`; each half is masked on its own too (parts of at least
  `MIN_PART` characters), so an echo of either half leaks nothing.
- A JWT-like secret (Supabase's service key: `header.payload.signature`) has each part split at
  dots and whitespace masked on its own too (parts of at least `MIN_PART` characters): a server
  may echo only the payload or the signature.
- The two halves of each secret (split at its middle) are masked too, and so are the base64
  spellings (standard and URL-safe) of the secret, of `Key <secret>` (a Basic-style echo) and of
  each part, wherever they start in a longer base64 text: the characters that depend on the
  secret's bytes alone are masked.
- Secrets shorter than `MIN_SECRET` characters (and None) are ignored: masking "k" would mangle
  every message while protecting nothing.
- Pure and cheap (a few `str.replace`), so it can run on every body read.
"""
from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import json
import re
from collections.abc import Iterable
from typing import Any
from urllib.parse import quote

__all__ = ["MASK", "abbreviate", "describe_data_uri", "redact"]

MASK = "***"
MIN_SECRET = 4
MIN_PART = 8


def redact(text: str, secrets: Iterable[str | None]) -> str:
    """`text` with every form of each secret (see the module docstring) replaced by `MASK`."""
    if not text:
        return text
    for form in _forms(secrets):
        if form in text:
            text = text.replace(form, MASK)
    return text


@functools.lru_cache(maxsize=64)
def _forms_of(secret: str) -> tuple[str, ...]:
    values = {secret}
    values.update(p for p in re.split(r"[:.\s]", secret) if len(p) >= MIN_PART)
    for value in list(values):
        half = len(value) // 2
        values.update(p for p in (value[:half], value[half:]) if len(p) >= MIN_PART)
    forms: set[str] = set()
    for value in values:
        forms.update({value, quote(value, safe=""), quote(value), json.dumps(value)[1:-1]})
    for value in (*values, f"Key {secret}", f"Bearer {secret}"):
        forms.update(f for f in _base64_cores(value.encode()) if len(f) >= MIN_PART)
    return tuple(forms)


def _base64_cores(raw: bytes) -> set[str]:
    """The base64 text of `raw` as it appears inside any longer base64 string: for each of the
    three alignments, only the characters that `raw`'s bytes fully decide (std and URL-safe)."""
    out: set[str] = set()
    n = len(raw)
    for offset in range(3):
        encoded = base64.b64encode(b"\0" * offset + raw + b"\0\0").decode()
        first = -(-8 * offset // 6)                    # the first char made of raw's bits only
        last = (8 * (offset + n)) // 6                 # one past the last such char
        core = encoded[first:last]
        out.update({core, core.replace("+", "-").replace("/", "_")})
    return out


def _forms(secrets: Iterable[str | None]) -> list[str]:
    """Every spelling to mask, longest first, so a whole key is masked before its halves."""
    forms: set[str] = set()
    for secret in secrets:
        if not secret or len(secret) < MIN_SECRET:
            continue
        forms.update(_forms_of(secret))
    return sorted(forms, key=len, reverse=True)


_ABBREVIATED = re.compile(r"^data:[^;,]*;base64,…\((\d+ bytes, sha256 [0-9a-f]{12}|unparseable)\)$")
_EMBEDDED = re.compile(r"data:[\w.+-]+/[\w.+-]+(?:;[\w.+-]+=[\w.+-]+)*;base64,[A-Za-z0-9+/]+=*")
_DATA_URI = re.compile(r"^data:(?P<mime>[^;,]*)(?P<params>(;[^;,]*)*?)(?P<b64>;base64)?,(?P<data>.*)$", re.S)


def describe_data_uri(uri: str) -> str:
    """"data:image/png;base64,…(1234 bytes, sha256 0123456789ab)" for a data URI."""
    m = _DATA_URI.match(uri)
    if not m:
        return "data:;base64,…(unparseable)"
    raw = m.group("data")
    if m.group("b64"):
        try:
            data = base64.b64decode(raw, validate=False)
        except (binascii.Error, ValueError):
            data = raw.encode()
    else:
        data = raw.encode()
    mime = m.group("mime") or "text/plain"
    return f"data:{mime};base64,…({len(data)} bytes, sha256 {hashlib.sha256(data).hexdigest()[:12]})"


def abbreviate(obj: Any) -> Any:
    """A copy of `obj` with every `data:` URI abbreviated, whole strings or quoted inside text
    (for logs, stored responses and errors, pages, exports)."""
    if isinstance(obj, str):
        if obj.startswith("data:"):
            return obj if _is_abbreviated(obj) else describe_data_uri(obj)
        # a data: URI quoted inside a longer text (e.g. fal's error `detail` echoing the input)
        return _EMBEDDED.sub(lambda m: describe_data_uri(m.group(0)), obj) if "data:" in obj else obj
    if isinstance(obj, dict):
        return {k: abbreviate(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [abbreviate(v) for v in obj]
    return obj


def _is_abbreviated(uri: str) -> bool:
    # already the short form (e.g. a stored response): abbreviating again would describe the summary
    return bool(_ABBREVIATED.match(uri))
