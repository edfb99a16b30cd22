"""Reading a plan file, and the value checks every plan input passes (a file or the Generate form).

Invariants:
- Plan input is refused with one PlanError line, never a traceback, within a second or two
  whatever its shape: a plan file must be a regular file of at most `MAX_PLAN_BYTES` (a FIFO, a
  device or a directory is refused before it is read), UTF-8, JSON nested at most `MAX_DEPTH`
  deep (measured in one linear pass before parsing, so parsing never recurses too deep), without
  NaN or Infinity, lone surrogates, keys given twice or texts over `MAX_TEXT` characters.
- `check_values` applies the same value checks to a spec given as a dict (the Generate page),
  with an explicit stack, never recursion.
- Nothing here is written: reading only.
"""
from __future__ import annotations

import itertools
import json
import math
import os
import re
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from core.errors import PlanError

PLAN_KEYS = ("name", "references", "options", "models", "params", "sweep", "seeds")
MAX_PLAN_BYTES = 1024 * 1024          # a 10,000-request plan is a few KB; this bounds the read
MAX_DEPTH = 32                        # a plan is 5 levels deep; a LoRA sweep 6
MAX_TEXT = 4096                       # characters of one text value (a signed LoRA URL fits)
_SURROGATE = re.compile("[\ud800-\udfff]")
# possessive: a string (terminated or not) is matched once from its opening quote, never retried
_JSON_STRING = re.compile(r'"(?:[^"\\]++|\\.)*+"?', re.S)
_NOT_BRACKET = re.compile(r"[^\[\]{}]+")


def load_plan_file(path: str | Path) -> dict[str, Any]:
    """The JSON object of a plan file; PlanError (one line) if it cannot be read or used."""
    path = Path(path)
    data = read_capped(path, MAX_PLAN_BYTES, f"plan file {path}")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise PlanError(f"plan file {path} is not UTF-8 text (byte 0x{data[e.start]:02x} at offset "
                        f"{e.start}): save it as UTF-8") from None
    depth = json_depth(text)
    if depth > MAX_DEPTH:
        raise PlanError(f"plan file {path} nests JSON {depth} levels deep; a plan needs at most "
                        f"{MAX_DEPTH}: check the file is the plan you meant")
    try:
        # NaN, Infinity and 1e999 parse as floats here; `_check_values` refuses them by field name
        spec = json.loads(text, object_pairs_hook=unique_keys)
    except PlanError as e:
        raise PlanError(f"plan file {path}: {e}") from None
    except RecursionError:  # the depth check above should make this unreachable
        raise PlanError(f"plan file {path} nests JSON too deep") from None
    except ValueError as e:
        raise PlanError(f"plan file {path} is not valid JSON: {e}") from None
    if not isinstance(spec, dict):
        raise PlanError(f"plan file {path} must hold a JSON object with keys {', '.join(PLAN_KEYS)}")
    try:
        check_values(spec)
    except PlanError as e:
        raise PlanError(f"plan file {path}: {e}") from None
    return spec


def read_capped(path: Path, cap: int, what: str) -> bytes:
    """At most `cap` bytes of a regular file; anything else (a FIFO, a device, a directory, a
    larger file) is a PlanError before more than `cap` + 1 bytes are read."""
    try:
        # O_NONBLOCK: opening a FIFO for reading must not wait for a writer
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    except OSError as e:
        raise PlanError(f"cannot read {what}: {e.strerror or e}") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise PlanError(f"{what} is not a regular file (a directory, FIFO or device): "
                            "give the path of a file")
        if info.st_size > cap:
            raise PlanError(f"{what} is {human_size(info.st_size)}, over the {human_size(cap)} limit")
        chunks: list[bytes] = []
        left = cap + 1
        while left > 0:
            chunk = os.read(fd, min(left, 1 << 20))
            if not chunk:
                break
            chunks.append(chunk)
            left -= len(chunk)
        data = b"".join(chunks)
        if len(data) > cap:  # the file grew after fstat
            raise PlanError(f"{what} is over the {human_size(cap)} limit")
        return data
    except OSError as e:
        raise PlanError(f"cannot read {what}: {e.strerror or e}") from None
    finally:
        os.close(fd)


def human_size(n: int) -> str:
    for unit, factor in (("GB", 1 << 30), ("MB", 1 << 20), ("KB", 1 << 10)):
        if n >= factor:
            return f"{n / factor:.1f} {unit}"
    return f"{n} bytes"


def json_depth(text: str) -> int:
    """The deepest nesting of arrays and objects in JSON text, without recursing and in one pass
    (strings are skipped, so brackets quoted inside texts do not count). Linear in the text's
    length whatever its shape: a string is consumed once, possessively, and an unterminated one
    runs to the end (json.loads then says where it is broken)."""
    brackets = _NOT_BRACKET.sub("", _JSON_STRING.sub("", text))
    if not brackets:
        return 0
    steps = map({"[": 1, "{": 1, "]": -1, "}": -1}.__getitem__, brackets)
    return max(itertools.accumulate(steps))


def unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise PlanError(f"the key {key!r} is given twice in one object: keep one")
        out[key] = value
    return out


def check_values(spec: Any) -> None:
    """Refuse what JSON (or a dict from a form) can carry but a request must not: NaN and Infinity,
    lone surrogates, over-long texts, non-text keys, nesting deeper than MAX_DEPTH, non-JSON values.
    Walks with an explicit stack, never recursion."""
    stack: list[tuple[Any, str, int]] = [(spec, "", 0)]
    while stack:
        value, where, depth = stack.pop()
        name = f"`{where}`" if where else "the plan"
        if depth > MAX_DEPTH:
            raise PlanError(f"{name} nests deeper than {MAX_DEPTH} levels")
        if isinstance(value, str):
            check_text(value, name)
        elif isinstance(value, bool) or value is None or isinstance(value, int):
            continue
        elif isinstance(value, float):
            if not math.isfinite(value):
                shown = "NaN" if math.isnan(value) else ("-" if value < 0 else "") + "Infinity"
                raise PlanError(f"{name} is {shown}, not a number a request can carry: give a finite number")
        elif isinstance(value, Mapping):
            for key, item in value.items():
                if not isinstance(key, str):
                    raise PlanError(f"{name} has a key {key!r} that is not text")
                check_text(key, f"a key of {name}")
                stack.append((item, f"{where}.{key}" if where else key, depth + 1))
        elif isinstance(value, (list, tuple)):
            for i, item in enumerate(value):
                stack.append((item, f"{where}[{i}]", depth + 1))
        else:
            raise PlanError(f"{name} is a {type(value).__name__}, not a JSON value")


def check_text(text: str, name: str) -> None:
    if len(text) > MAX_TEXT:
        raise PlanError(f"{name} is {len(text)} characters long, over the limit of {MAX_TEXT}")
    bad = _SURROGATE.search(text)
    if bad:
        raise PlanError(f"{name} holds a lone surrogate (\\u{ord(bad.group()):04x} at character "
                        f"{bad.start()}), which is not text: fix the escape sequence")
