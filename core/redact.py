"""Masking secrets in text that came from outside, before it reaches a message, a row or a log.

Some gateways echo the request's `Authorization` header in their error bodies, so any text a
server answered may hold our key. `redact(text, secrets)` masks every given secret in it.

Invariants:
- Every occurrence of each secret is replaced by `MASK`, as written and in the forms an echo
  takes: URL-encoded (`%3A` for `:`), JSON-escaped, and inside `Key <secret>` /
  `Bearer <secret>`, which become `Key ***` / `Bearer ***` (the reader still sees what leaked).
- A fal key is `<key id>:<key secret>`; each half is masked on its own too (parts of at least
  `MIN_PART` characters), so an echo of either half leaks nothing.
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
import functools
import json
from collections.abc import Iterable
from urllib.parse import quote

__all__ = ["MASK", "redact"]

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
    if ":" in secret:
        values.update(p for p in secret.split(":") if len(p) >= MIN_PART)
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
