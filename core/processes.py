"""Detached worker processes: the batch runner and the metrics worker, started the same way.

Why it lives here: pages and the command line both start them (through `core.batches.service`
and `core.evaluation.fidelity`), and both kinds must outlive the caller. A detached process has
its own session (closing the browser tab or restarting the page process does not stop it), reads
nothing from stdin, and writes its output to one log under `<data dir>/logs/`. Its state (progress,
why it stopped) is read from the store, never parsed from that log.
"""
from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

from core.config import REPO_ROOT, Settings


def pid_alive(pid: int) -> bool:
    """Whether process `pid` runs on this host; a zombie nobody reaped yet counts as dead."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            state = f.read().rsplit(b")", 1)[1].split()[0]
        return state not in (b"Z", b"X")
    except (OSError, IndexError):
        return True


def log_path(settings: Settings, name: str) -> Path:
    """`<data dir>/logs/<name>.log`: where a detached process of that name writes."""
    return settings.data_dir / "logs" / f"{name}.log"


def spawn(settings: Settings, args: list[str], *, log_name: str, as_person: str | None = None) -> int:
    """Start `python -m core <args>` detached, with the same data directory; returns its pid.
    `as_person`: who the command acts as (DASHBOARD_USER), whose role it needs with sign-in on.

    A thread reaps it when it ends, so a finished worker does not linger as a zombie of a
    long-lived page process."""
    path = log_path(settings, log_name)
    path.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "DASHBOARD_DATA_DIR": str(settings.data_dir)}
    if as_person:
        env["DASHBOARD_USER"] = as_person
    with open(path, "ab") as out:
        proc = subprocess.Popen([sys.executable, "-m", "core", *args], cwd=str(REPO_ROOT),
                                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                env=env, start_new_session=True)
    threading.Thread(target=proc.wait, name=f"reap-{proc.pid}", daemon=True).start()
    return proc.pid
