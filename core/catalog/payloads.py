"""Canonical JSON, payload hashes and safe display of payloads.

Invariants:
- `canonical_json` is `sort_keys=True` with compact separators: the same body always gives the
  same text, so `payload_hash` ("v1:" + sha256 hex of that text) identifies a request body.
- A `data:` URI is never stored or logged whole: `core.redact.abbreviate` turns it into
  "data:<mime>;base64,…(<n> bytes, sha256 <first 12 hex>)".
- A stored payload names a local reference photo as `reference://<reference id>`; the `data:` URI
  that fal receives is built only at send time.
"""
from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

HASH_VERSION = "v1"
REFERENCE_SCHEME = "reference://"


def canonical_json(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def payload_hash(obj: Any) -> str:
    return f"{HASH_VERSION}:" + hashlib.sha256(canonical_json(obj).encode("utf-8")).hexdigest()


def reference_token(reference_id: str) -> str:
    return f"{REFERENCE_SCHEME}{reference_id}"


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
