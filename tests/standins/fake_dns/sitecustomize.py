"""A DNS failure for tests, loaded by Python at start-up when this folder is on PYTHONPATH.

With FAKE_DNS_HOST=<name> and FAKE_DNS_DOWN=<path>: the name resolves to 127.0.0.1, except while
the file at <path> exists, when looking it up fails as a resolver that cannot answer does
(`socket.gaierror` EAI_AGAIN, "Temporary failure in name resolution"). Every other name is looked
up as usual. Nothing here leaves loopback."""
import os
import socket

_NAME = os.environ.get("FAKE_DNS_HOST")
_DOWN = os.environ.get("FAKE_DNS_DOWN")

if _NAME and _DOWN:
    _real = socket.getaddrinfo

    def _getaddrinfo(host, *args, **kwargs):
        if isinstance(host, bytes):
            host = host.decode()
        if host == _NAME:
            if os.path.exists(_DOWN):
                raise socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")
            host = "127.0.0.1"
        return _real(host, *args, **kwargs)

    socket.getaddrinfo = _getaddrinfo
