"""The Postgres sessions a process keeps between its stores (core/store/pg.py opens them):
`IdleSessions` hands a closed store's session to the next store on the same server and opens a
run's sessions in the background (`warm`); `SharedSessions` lends a few sessions to many worker
stores, statement by statement (`WorkerSessions` keeps them per server). docs/postgres.md says
why, with its sources."""
from __future__ import annotations

import contextlib
import itertools
import os
import select
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any


class IdleSessions:
    """Sessions a closed store gave back, for the next store this process opens on the same
    server: a page's run opens several stores and the runner one per worker, and a new session
    costs a connect, authentication and a server process (5 ms here, several round trips to a
    remote server) where a kept one costs nothing.

    - Only a session left as new is kept: open, not broken, outside any transaction (the store
      holds no other session state: no prepared statements, temporary tables dropped at commit,
      its session advisory lock released in a `finally`, its cursors closed).
    - A kept session the server has written to is never handed out: an idle session is sent
      nothing unless the server is ending it (a restart, an administrator, an idle timeout).
    - One idle for more than CHECK_AFTER_S answers `SELECT 1` first; one idle for more than
      KEEP_S is closed; at most MAX are kept per server.
    - A forked child forgets them without closing them (the sockets are the parent's).

    psycopg_pool was the library for this and was not taken: its `getconn` waits for its
    background workers, so a wrong DATABASE_URL would be refused after the pool's timeout, with
    its own message, instead of at once with the server's (docs/postgres.md)."""

    MAX = 40
    CHECK_AFTER_S = 30.0
    KEEP_S = 300.0

    def __init__(self, connect: Callable[[str, str], Any]) -> None:
        self._connect = connect   # (url, where) -> a new session, set up; sqlite3.Error if refused
        self._lock = threading.Lock()
        self._free: dict[str, list[tuple[float, Any]]] = {}
        self._opening: dict[str, int] = {}

    def take(self, url: str) -> Any:
        while True:
            with self._lock:
                free = self._free.get(url)
                if not free:
                    return None
                since, conn = free.pop()   # the newest: the likeliest still alive
            idle = time.monotonic() - since
            if conn.closed or conn.broken or idle > self.KEEP_S or _readable(conn):
                _close_quietly(conn)
                continue
            if idle > self.CHECK_AFTER_S:
                try:
                    conn.execute("SELECT 1")
                except Exception:  # noqa: BLE001 - any failure: this session is gone
                    _close_quietly(conn)
                    continue
            return conn

    def give(self, url: str, conn: Any) -> None:
        from psycopg.pq import TransactionStatus

        kept = False
        if not conn.closed and not conn.broken and conn.info.transaction_status == TransactionStatus.IDLE:
            now = time.monotonic()
            with self._lock:
                free = self._free.setdefault(url, [])
                stale = [c for since, c in free if now - since > self.KEEP_S]
                free[:] = [(since, c) for since, c in free if now - since <= self.KEEP_S]
                if len(free) < self.MAX:
                    free.append((now, conn))
                    kept = True
            for old in stale:
                _close_quietly(old)
        if not kept:
            _close_quietly(conn)

    def close(self, url: str | None = None) -> None:
        """Close the kept sessions (of one server, or all): before its database is dropped or
        copied, which other sessions would block."""
        with self._lock:
            urls = [url] if url is not None else list(self._free)
            gone = [conn for u in urls for _, conn in self._free.pop(u, ())]
        for conn in gone:
            _close_quietly(conn)

    def warm(self, url: str, where: str, n: int) -> None:
        """Open sessions in the background until `n` are kept for `url` (counting those being
        opened): workers about to start then find theirs ready. A failure only ends the warming
        (the worker that needs a session meets the error itself)."""
        with self._lock:
            missing = min(n, self.MAX) - len(self._free.get(url, ())) - self._opening.get(url, 0)
            if missing <= 0:
                return
            self._opening[url] = self._opening.get(url, 0) + missing

        def open_some(count: int) -> None:
            for done in range(count):
                try:
                    conn = self._connect(url, where)
                except sqlite3.Error:
                    with self._lock:
                        self._opening[url] -= count - done
                    return
                self.give(url, conn)
                with self._lock:
                    self._opening[url] -= 1

        threads = min(4, missing)
        for i in range(threads):
            threading.Thread(target=open_some, args=(missing // threads + (i < missing % threads),),
                             name="store-warm", daemon=True).start()

    def forget(self) -> None:
        self._lock = threading.Lock()
        self._free = {}
        self._opening = {}


class SharedSessions:
    """The sessions the worker stores of a process (a runner's senders and finishers,
    `Store.twin`) share on one server, lent for one statement outside a transaction or for a
    whole transaction (or a stream being read).

    Why: a run of 16 slots has 32 worker threads. On a near server (a round trip under
    NEAR_RTT_S: this machine or the one beside it), each session costs a connect and a server
    process, and its first writes ~3 ms of the server's CPU, on the cores the run itself needs;
    the server does the workers' short writes a few at a time anyway. So a near server's
    sessions are capped at two per core of this machine (`worker_cap`: 4 here, against one per
    worker before; the batch benchmark's run 0.12 s shorter, docs/postgres.md). A far one
    (Supabase's hosted Postgres) is not capped: its round trips, not its CPU, are the cost,
    and each worker waiting on its own is the fastest.

    - A worker that finds no free session opens one while the cap allows (one opening at a
      time), else waits for one; after STALL_S it opens one anyway, so nothing waits forever
      whatever a worker holds (no deadlock).
    - A lent session comes back outside any transaction and unbroken, or is closed; one the
      server wrote to while it was free (it is ending it) is never lent again.
    - When the last worker store closes, the free sessions go to the idle ones (`IdleSessions`),
      for the next store or run."""

    STALL_S = 1.0

    def __init__(self, idle: IdleSessions, url: str, where: str, connect: Callable[[str, str], Any],
                 cap_of: Callable[[str, Any], int | None]) -> None:
        self._idle, self._url, self._where, self._connect = idle, url, where, connect
        self._cap_of = cap_of   # (url, a session) -> the cap, or None; cached per server (WorkerSessions)
        self._cond = threading.Condition(threading.Lock())
        self._free: list[Any] = []
        self._lent = 0
        self._opening = False
        self.cap: int | None = None   # set as each session is opened (`cap_of`)
        self.users = 0   # worker stores open on these sessions (under WorkerSessions' lock)

    def borrow(self) -> Any:
        started = time.monotonic()
        with self._cond:
            while True:
                while self._free:
                    conn = self._free.pop()
                    if conn.closed or conn.broken or _readable(conn):
                        _close_quietly(conn)
                        continue
                    self._lent += 1
                    return conn
                if not self._opening and (self.cap is None or self._lent < self.cap
                                          or time.monotonic() - started >= self.STALL_S):
                    self._opening = True
                    break
                self._cond.wait(self.STALL_S / 4)
        conn = None
        try:
            conn = self._idle.take(self._url) or self._connect(self._url, self._where)
            self.cap = self._cap_of(self._url, conn)
        finally:
            with self._cond:
                self._opening = False
                if conn is not None:
                    self._lent += 1
                self._cond.notify_all()
        return conn

    def give_back(self, conn: Any) -> None:
        from psycopg.pq import TransactionStatus

        usable = (not conn.closed and not conn.broken
                  and conn.info.transaction_status == TransactionStatus.IDLE)
        if not usable:
            _close_quietly(conn)
        with self._cond:
            self._lent -= 1
            if usable:
                self._free.append(conn)
            self._cond.notify()

    def retire(self) -> None:
        """The last worker store closed: the free sessions become idle ones."""
        with self._cond:
            free, self._free = self._free, []
        for conn in free:
            self._idle.give(self._url, conn)


class WorkerSessions:
    """Per server, the `SharedSessions` of this process's worker stores (while one is open) and
    their cap (`worker_cap`, measured once per process and server)."""

    def __init__(self, idle: IdleSessions, connect: Callable[[str, str], Any]) -> None:
        self._idle, self._connect = idle, connect
        self._lock = threading.Lock()
        self.sets: dict[str, SharedSessions] = {}
        self.caps: dict[str, int | None] = {}

    def cap(self, url: str, conn: Any) -> int | None:
        if url in self.caps:
            return self.caps[url]
        cap = worker_cap(conn)
        if not (conn.closed or conn.broken):   # a probe the session failed says nothing of the server
            self.caps[url] = cap
        return cap

    def join(self, url: str, where: str) -> SharedSessions:
        with self._lock:
            shared = self.sets.get(url)
            if shared is None:
                shared = self.sets[url] = SharedSessions(self._idle, url, where, self._connect, self.cap)
            shared.users += 1
            return shared

    def leave(self, url: str, shared: SharedSessions) -> None:
        """A worker store closed; the last one's free sessions become idle ones."""
        with self._lock:
            shared.users -= 1
            if shared.users > 0 or self.sets.get(url) is not shared:
                return
            del self.sets[url]
        shared.retire()

    def forget(self) -> None:
        """In a forked child: the parent's sessions are not this process's."""
        self._lock = threading.Lock()
        self.sets = {}


class ReadRows:
    """A statement's result read to the end, so that its session can serve another worker
    store at once (a shared session, `SharedSessions`): the cursor surface the store uses."""

    def __init__(self, cursor: Any) -> None:
        self.description = cursor.description
        self.rowcount = cursor.rowcount
        self._rows = iter(cursor.fetchall() if self.description is not None else ())

    def fetchone(self) -> Any:
        return next(self._rows, None)

    def fetchmany(self, size: int) -> list[Any]:
        return list(itertools.islice(self._rows, size))

    def fetchall(self) -> list[Any]:
        return list(self._rows)

    def __iter__(self) -> Iterator[Any]:
        return self._rows

    def close(self) -> None:
        self._rows = iter(())


NEAR_RTT_S = 0.001


def worker_cap(conn: Any) -> int | None:
    """How many sessions a process's worker stores share on the server of `conn`: two per core
    of this machine for a near server (its best of three round trips under NEAR_RTT_S), None
    (no cap: one per worker at most) for a far one. See `SharedSessions`."""
    best = float("inf")
    for _ in range(3):
        asked = time.perf_counter()
        try:
            conn.execute("SELECT 1")
        except Exception:  # noqa: BLE001 - a failing session: the caller's statement meets it
            return None
        best = min(best, time.perf_counter() - asked)
    if best >= NEAR_RTT_S:
        return None
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return 2 * max(1, cores)


def _readable(conn: Any) -> bool:
    """Whether the server wrote to this idle session (it is ending it), without a round trip."""
    try:
        poller = select.poll()   # poll, not select: any descriptor number, however many are open
        poller.register(conn.fileno(), select.POLLIN)
        return bool(poller.poll(0))
    except (OSError, ValueError):
        return True


def _close_quietly(conn: Any) -> None:
    with contextlib.suppress(Exception):
        conn.close()
