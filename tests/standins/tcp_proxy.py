"""A TCP proxy on 127.0.0.1 in front of a stand-in, for faults below HTTP.

    proxy = TcpProxy(("127.0.0.1", standin_port)).start()
    proxy.url                 # http://127.0.0.1:<port>: point FAL_QUEUE_URL here
    proxy.refuse(30)          # for 30 s nothing listens: every connect is refused (ECONNREFUSED)
    proxy.delay = 0.4         # each chunk from the client waits 0.4 s before it goes on (slow POSTs)
    proxy.stop()

Out of process: `python -m tests.standins.tcp_proxy --to 127.0.0.1:PORT [--delay S]` prints its URL
on its first stdout line; SIGUSR1 makes it refuse connections for `--refuse-for` seconds.

What it guarantees: bytes pass unchanged both ways; while refusing, the listening socket is closed
(a connect gets RST from the kernel, as from a host whose server is down) and connections already
open are cut; afterwards it listens again on the same port.
"""
from __future__ import annotations

import argparse
import contextlib
import signal
import socket
import sys
import threading
import time


class TcpProxy:
    def __init__(self, upstream: tuple[str, int], *, port: int = 0, delay: float = 0.0):
        self.upstream = upstream
        self.delay = delay
        self._port = port
        self._listener: socket.socket | None = None
        self._lock = threading.Lock()
        self._open: set[socket.socket] = set()
        self._refuse_until = 0.0
        self._stopped = threading.Event()
        self._thread: threading.Thread | None = None
        self.connections = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._port}"

    def start(self) -> TcpProxy:
        self._listen()
        self._thread = threading.Thread(target=self._serve, name="tcp-proxy", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopped.set()
        self._close_listener()
        self._cut_all()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> TcpProxy:
        return self.start() if self._thread is None else self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def refuse(self, seconds: float) -> None:
        """Refuse every connection for `seconds` (and cut the open ones), then listen again."""
        with self._lock:
            self._refuse_until = time.monotonic() + seconds
        self._close_listener()
        self._cut_all()

    @property
    def refusing(self) -> bool:
        return time.monotonic() < self._refuse_until

    # --- inside ---------------------------------------------------------------------------------

    def _listen(self) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", self._port))
        sock.listen(1024)
        sock.settimeout(0.05)
        self._port = sock.getsockname()[1]
        with self._lock:
            self._listener = sock

    def _close_listener(self) -> None:
        with self._lock:
            sock, self._listener = self._listener, None
        if sock is not None:
            # shutdown first: it stops the listening at once, even while the serving thread is
            # still inside accept() on it (a bare close would wait for that call to return)
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(OSError):
                sock.close()

    def _cut_all(self) -> None:
        with self._lock:
            sockets, self._open = list(self._open), set()
        for s in sockets:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(OSError):
                s.close()

    def _serve(self) -> None:
        while not self._stopped.is_set():
            with self._lock:
                listener = self._listener
            if listener is None:
                if self.refusing:
                    time.sleep(0.02)
                    continue
                try:
                    self._listen()
                except OSError:   # the port is briefly busy: try again
                    time.sleep(0.05)
                continue
            try:
                client, _ = listener.accept()
            except (TimeoutError, socket.timeout):
                continue
            except OSError:
                continue
            self.connections += 1
            threading.Thread(target=self._pair, args=(client,), daemon=True).start()

    def _pair(self, client: socket.socket) -> None:
        try:
            server = socket.create_connection(self.upstream, timeout=10)
        except OSError:
            with contextlib.suppress(OSError):
                client.close()
            return
        client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        server.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        server.settimeout(None)
        with self._lock:
            self._open.update((client, server))
        threading.Thread(target=self._pump, args=(server, client, False), daemon=True).start()
        self._pump(client, server, True)

    def _pump(self, src: socket.socket, dst: socket.socket, from_client: bool) -> None:
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                if from_client and self.delay:
                    time.sleep(self.delay)
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
                with contextlib.suppress(OSError):
                    s.close()
            with self._lock:
                self._open.discard(src)
                self._open.discard(dst)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="TCP proxy on 127.0.0.1 (prints its URL first)")
    parser.add_argument("--to", required=True, help="HOST:PORT of the upstream")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--delay", type=float, default=0.0)
    parser.add_argument("--refuse-for", type=float, default=10.0)
    args = parser.parse_args(argv)
    host, _, port = args.to.rpartition(":")
    proxy = TcpProxy((host, int(port)), port=args.port, delay=args.delay).start()
    print(proxy.url, flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGUSR1, lambda *_: proxy.refuse(args.refuse_for))
    with contextlib.suppress(KeyboardInterrupt):
        stop.wait()
    proxy.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
