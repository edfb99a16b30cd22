"""The clean-up journal: objects that may still need deleting, as JSON lines in the data directory.

`<data dir>/storage-cleanup.jsonl` holds two kinds of entries: "delete" (an object that must go
but the backend kept: a refused or no-op delete, or an upload whose answer was lost) and
"unconfirmed" (an object written before the row that names it; resolved once the row exists).
`core.blobs.storage.sweep` retries the first kind and deletes the second kind when, after a grace
period, no row names the object. Appends and rewrites take an exclusive lock on a sibling
`.lock` file, so several processes can share the journal; an append is fsynced (an intent must
survive the crash it is there for).
"""
from __future__ import annotations

import fcntl
import json
import os
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

JOURNAL_NAME = "storage-cleanup.jsonl"
# An "unconfirmed" object younger than this may belong to an upload still in progress in
# another process (an upload times out after 30 s; its row follows at once).
UNCONFIRMED_GRACE_S = 15 * 60


@dataclass(frozen=True)
class JournalEntry:
    id: str
    at: float                 # unix time the entry was written
    location: str             # the storage it belongs to (`Storage.location`)
    path: str
    kind: str                 # "delete" | "unconfirmed"
    tag: str                  # who wrote it ("reference", ...): which table may name the object
    reason: str


@dataclass(frozen=True)
class SweepReport:
    deleted: tuple[str, ...]      # objects deleted now
    kept: tuple[str, ...]         # confirmed: a row names them
    left: tuple[JournalEntry, ...]  # still pending (refused again, or too recent)


class CleanupJournal:
    """Objects that may be orphaned, as JSON lines. See the module docstring."""

    def __init__(self, path: Path | str):
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"CleanupJournal({str(self.path)!r})"

    @contextmanager
    def _locked(self) -> Iterator[None]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path.with_name(self.path.name + ".lock"), "a") as lock:
            fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock.fileno(), fcntl.LOCK_UN)

    def _append(self, record: dict[str, Any]) -> None:
        line = (json.dumps(record, ensure_ascii=False, sort_keys=True) + "\n").encode("utf-8")
        with self._locked(), open(self.path, "a+b") as f:
            if f.tell() > 0:
                f.seek(-1, os.SEEK_END)
                if f.read(1) != b"\n":  # a line torn by a crash: do not glue this one to it
                    line = b"\n" + line
            f.write(line)
            f.flush()
            os.fsync(f.fileno())  # an intent must survive the crash it is there for

    def add(self, location: str, path: str, kind: str, *, tag: str = "", reason: str = "") -> str:
        """Record an object that may need deleting; returns the entry id (for `resolve`)."""
        assert kind in ("delete", "unconfirmed"), kind
        entry = JournalEntry(uuid.uuid4().hex, time.time(), location, path, kind, tag, reason)
        self._append(asdict(entry))
        return entry.id

    def resolve(self, entry_id: str) -> None:
        """The entry needs nothing more (its row exists, or its object is gone)."""
        self._append({"resolved": entry_id, "at": time.time()})

    def _read(self) -> list[dict[str, Any]]:
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return []
        records = []
        for line in text.splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                continue  # a line torn by a crash mid-write: the rest is still good
            if isinstance(record, dict):
                records.append(record)
        return records

    def pending(self, location: str | None = None) -> list[JournalEntry]:
        """Unresolved entries, oldest first (of one storage when `location` is given)."""
        records = self._read()
        resolved = {r["resolved"] for r in records if "resolved" in r}
        out = []
        for r in records:
            if "resolved" in r or r.get("id") in resolved:
                continue
            try:
                entry = JournalEntry(**{k: r[k] for k in JournalEntry.__dataclass_fields__})
            except (KeyError, TypeError):
                continue
            if location is None or entry.location == location:
                out.append(entry)
        return out

    def compact(self) -> None:
        """Rewrite the file with only the unresolved entries (atomically, under the lock)."""
        with self._locked():
            records = self._read()
            resolved = {r["resolved"] for r in records if "resolved" in r}
            keep = [r for r in records if "resolved" not in r and r.get("id") not in resolved]
            if len(keep) == len(records):
                return
            if not keep:
                self.path.unlink(missing_ok=True)
                return
            tmp = self.path.with_name(self.path.name + ".tmp")
            tmp.write_text("".join(json.dumps(r, ensure_ascii=False, sort_keys=True) + "\n" for r in keep),
                           encoding="utf-8")
            os.replace(tmp, self.path)
