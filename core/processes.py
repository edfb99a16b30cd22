"""Whether a process on this host is alive: the one `/proc` check the runner's ownership rule uses.

Not SQL, so it does not live in the store: `core.store.runner_alive` asks it about a batch's
runner pid when the runner's heartbeat was written on this host.
"""
from __future__ import annotations

import os


def pid_alive(pid: int) -> bool:
    """True when `pid` runs on this host and is not a zombie (killed, not yet reaped)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a killed child nobody has reaped yet still answers kill(0): it is a zombie, not a runner
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            state = f.read().rsplit(b")", 1)[1].split()[0]
        return state not in (b"Z", b"X")
    except (OSError, IndexError):
        return True
