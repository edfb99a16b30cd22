"""The TLS context every fal client of this process shares, built once (its CA bundle is ~0.1 s of
C code), and `warm_tls()`, which starts building it in a thread so that a runner's first POST does
not wait for it (OpenSSL releases the interpreter lock, so it runs beside the caller's Python).

Invariant: a process that ends at once (a command refused in one line) waits for that build at
exit: the interpreter must not finalise while the thread is inside OpenSSL, which crashed such a
process (SIGSEGV) after its one line was printed.
"""
from __future__ import annotations

import atexit
import ssl
import threading

from core._imports import hidden

with hidden("click"):   # httpx's command-line client, unused (core/_imports.py)
    import httpx


_TLS_LOCK = threading.Lock()
_TLS: list[ssl.SSLContext] = []


def tls_context() -> ssl.SSLContext:
    """httpx's default TLS context (certifi's CAs, or SSL_CERT_FILE / SSL_CERT_DIR), built once."""
    with _TLS_LOCK:
        if not _TLS:
            _TLS.append(httpx.create_ssl_context())
        return _TLS[0]


def warm_tls() -> None:
    """Build `tls_context()` in the background; a failure is raised again by the next caller."""
    def build() -> None:
        try:
            tls_context()
        except Exception:  # noqa: BLE001 - tls_context() raises it again where it is used
            pass

    thread = threading.Thread(target=build, name="tls-context", daemon=True)
    with _TLS_LOCK:
        if not _WARMING:
            atexit.register(_join_warm_up)
        _WARMING.append(thread)
    thread.start()


_WARMING: list[threading.Thread] = []   # warm-up threads, joined at exit


def _join_warm_up() -> None:
    for thread in list(_WARMING):
        thread.join(timeout=10)
