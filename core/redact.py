"""Masking secrets in text that came from outside, before it reaches a message, a row or a log.

Some gateways echo the request's `Authorization` header in their error bodies, so any text a
server answered may hold our key. `redact(text, secrets)` masks every given secret in it.

Invariants:
- Every occurrence of each secret is replaced by `MASK`, as written and in the forms an echo
  takes: URL-encoded (`%3A` for `:`), JSON-escaped, and inside `Key <secret>` /
  `Bearer <secret>`, which become `Key ***` / `Bearer ***` (the reader still sees what leaked).
- A fal key is `<key id>:<key secret>`; each half is masked on its own too (parts of at least
  `MIN_PART` characters), so an echo of either half leaks nothing.
- Secrets shorter than `MIN_SECRET` characters (and None) are ignored: masking "k" would mangle
  every message while protecting nothing.
- Pure and cheap (a few `str.replace`), so it can run on every body read.
"""
from __future__ import annotations

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


def _forms(secrets: Iterable[str | None]) -> list[str]:
    """Every spelling to mask, longest first, so a whole key is masked before its halves."""
    forms: set[str] = set()
    for secret in secrets:
        if not secret or len(secret) < MIN_SECRET:
            continue
        values = {secret}
        if ":" in secret:
            values.update(p for p in secret.split(":") if len(p) >= MIN_PART)
        for value in values:
            forms.update({value, quote(value, safe=""), quote(value), json.dumps(value)[1:-1]})
    return sorted(forms, key=len, reverse=True)
