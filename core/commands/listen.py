"""`listen-address`: the address the dashboard's server binds, from DASHBOARD_LISTEN_ON_ALL_INTERFACES.

    python -m core listen-address      prints 127.0.0.1 (the default) or 0.0.0.0

`scripts/run` passes it to `streamlit run --server.address`, so the environment and
.streamlit/secrets.toml count the same way as for every other setting, and a bad value is one
"error: ..." line (exit 2) before anything listens.
"""
from __future__ import annotations

from typing import Any


def register(subparsers: Any) -> None:
    cmd = subparsers.add_parser(
        "listen-address", help="print the address the dashboard listens on (127.0.0.1 or 0.0.0.0)",
        description="Print 127.0.0.1 (this machine only, the default) or, with "
                    "DASHBOARD_LISTEN_ON_ALL_INTERFACES on, 0.0.0.0 (every interface).")
    cmd.set_defaults(func=_listen_address)


def _listen_address(args: Any) -> int:
    from core.config import load_settings

    print(load_settings().listen_address)
    return 0
