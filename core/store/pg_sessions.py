"""The Postgres sessions a process keeps between its stores (core/store/pg.py opens them):
`IdleSessions` hands a closed store's session to the next store on the same server and opens a
run's sessions in the background (`warm`). docs/postgres.md says why, with its sources."""
from __future__ import annotations

import contextlib
import select
import sqlite3
import threading
import time
from collections.abc import Callable
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
