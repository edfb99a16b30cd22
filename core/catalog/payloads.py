"""Canonical JSON, payload hashes and safe display of payloads.

Invariants:
- `canonical_json` is `sort_keys=True` with compact separators: the same body always gives the
  same text, so `payload_hash` ("v1:" + sha256 hex of that text) identifies a request body.
- A `data:` URI is never stored or logged whole: `abbreviate` turns it into
  "data:<mime>;base64,…(<n> bytes, sha256 <first 12 hex>)".
- A stored payload names a local reference photo as `reference://<reference id>`; the `data:` URI
  that fal receives is built only at send time.
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

HASH_VERSION = "v1"
REFERENCE_SCHEME = "reference://"

_ABBREVIATED = re.compile(r"^data:[^;,]*;base64,…\((\d+ bytes, sha256 [0-9a-f]{12}|unparseable)\)$")
_EMBEDDED = re.compile(r"data:[\w.+-]+/[\w.+-]+(?:;[\w.+-]+=[\w.+-]+)*;base64,[A-Za-z0-9+/]+=*")
_DATA_URI = re.compile(r"^data:(?P<mime>[^;,]*)(?P<params>(;[^;,]*)*?)(?P<b64>;base64)?,(?P<data>.*)$", re.S)


def canonical_json(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def payload_hash(obj: Any) -> str:
    return f"{HASH_VERSION}:" + hashlib.sha256(canonical_json(obj).encode("utf-8")).hexdigest()


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


def reference_token(reference_id: str) -> str:
    return f"{REFERENCE_SCHEME}{reference_id}"


def reference_ids_in(obj: Any) -> list[str]:
    """The reference ids named by `reference://` tokens anywhere in a payload, in order."""
    found: list[str] = []

    def walk(o: Any) -> None:
        if isinstance(o, str) and o.startswith(REFERENCE_SCHEME):
            found.append(o[len(REFERENCE_SCHEME):])
        elif isinstance(o, dict):
            for v in o.values():
                walk(v)
        elif isinstance(o, (list, tuple)):
            for v in o:
                walk(v)

    walk(obj)
    return found


@dataclass(frozen=True)
class DiffEntry:
    """One difference; `path` is dotted with list indexes, e.g. `image_size.width`, `loras[0].scale`."""

    path: str
    old: Any = None
    new: Any = None


@dataclass(frozen=True)
class PayloadDiff:
    a_id: str
    b_id: str
    added: tuple[DiffEntry, ...]
    removed: tuple[DiffEntry, ...]
    changed: tuple[DiffEntry, ...]

    @property
    def same(self) -> bool:
        return not (self.added or self.removed or self.changed)


def diff_values(a: Any, b: Any, path: str = "") -> tuple[list[DiffEntry], list[DiffEntry], list[DiffEntry]]:
    """(added, removed, changed) between two JSON values, walking dicts by key, lists by index.
    1 and 1.0 and True differ: a payload that changed type is a changed payload."""
    added: list[DiffEntry] = []
    removed: list[DiffEntry] = []
    changed: list[DiffEntry] = []

    def walk(x: Any, y: Any, p: str) -> None:
        if isinstance(x, Mapping) and isinstance(y, Mapping):
            for k in sorted(set(x) | set(y), key=str):
                sub = f"{p}.{k}" if p else str(k)
                if k not in y:
                    removed.append(DiffEntry(sub, old=x[k]))
                elif k not in x:
                    added.append(DiffEntry(sub, new=y[k]))
                else:
                    walk(x[k], y[k], sub)
        elif isinstance(x, list) and isinstance(y, list):
            for i in range(max(len(x), len(y))):
                sub = f"{p}[{i}]"
                if i >= len(y):
                    removed.append(DiffEntry(sub, old=x[i]))
                elif i >= len(x):
                    added.append(DiffEntry(sub, new=y[i]))
                else:
                    walk(x[i], y[i], sub)
        elif x != y or type(x) is not type(y):
            changed.append(DiffEntry(p, old=x, new=y))

    walk(a, b, path)
    return added, removed, changed
