"""Helpers for tests that start a real server: a free loopback port, a stop that never leaves a
process behind, a stand-in's HTTP server in a thread (and, run as a script, until SIGTERM), and
`streamlit run` started and waited for until it answers its health check."""
from __future__ import annotations

import signal
import socket
import subprocess
import threading
import time
from http.server import ThreadingHTTPServer
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stop(proc: subprocess.Popen) -> None:
    """SIGTERM, then SIGKILL after 10 s: the process is gone when this returns."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def serve_in_thread(handler: type, *, port: int = 0, name: str) -> tuple[ThreadingHTTPServer, threading.Thread]:
    """A stand-in's ThreadingHTTPServer on 127.0.0.1, serving in a daemon thread. A short poll
    interval: `shutdown()` waits for one poll, once per test."""
    server = ThreadingHTTPServer(("127.0.0.1", port), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, name=name, daemon=True)
    thread.start()
    return server, thread


def shut(server: ThreadingHTTPServer | None, thread: threading.Thread | None) -> None:
    """Stop what `serve_in_thread` started (either may be None: never started)."""
    if server is not None:
        server.shutdown()
        server.server_close()
    if thread is not None:
        thread.join(timeout=5)


def serve_until_terminated(standin) -> int:
    """A stand-in run as a script: start it, print its URL as the first line, serve until SIGTERM
    or Ctrl-C, stop it."""
    standin.start()
    print(standin.url, flush=True)
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    try:
        done.wait()
    except KeyboardInterrupt:
        pass
    standin.stop()
    return 0


def start_streamlit(argv: list[str], *, cwd: Path, env: dict[str, str], port: int, log: Path,
                    timeout_s: float = 60) -> subprocess.Popen:
    """`argv` (a `streamlit run` or `scripts/run`), its output appended to `log`, returned once
    /_stcore/health answers "ok"; if it exits or never answers, it is stopped and the assertion
    carries its log."""
    import httpx

    with log.open("ab") as out:   # the child keeps its own copy of the descriptor
        proc = subprocess.Popen(argv, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/_stcore/health", timeout=1).text == "ok":
                return proc
        except httpx.TransportError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            stop(proc)
            raise AssertionError("the dashboard did not start:\n" + log.read_text())
        time.sleep(0.1)
