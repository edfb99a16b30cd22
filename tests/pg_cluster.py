"""A throwaway PostgreSQL cluster for tests and benchmarks: `initdb` into a temporary directory,
`pg_ctl start` on a free loopback port (and a unix socket in that directory), one database
created; stopped and removed on leaving the block, on an error or Ctrl-C too.

    with pg_cluster() as dsn:          # postgresql://postgres@127.0.0.1:PORT/bench
        ...

`initdb` and `pg_ctl` refuse to run as root: as root the server runs as the `postgres` user
(Debian's `postgresql` package creates it) through `runuser`; otherwise as the current user.
The binaries are found under /usr/lib/postgresql/*/bin (the newest), or in $PG_BIN.
Trust authentication on loopback only: the cluster is reachable from this machine alone."""
from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path

from tests.serving import free_port

SUPERUSER = "postgres"


def pg_bin() -> Path:
    """The directory of `initdb`/`pg_ctl`: $PG_BIN, else the newest Debian install."""
    if os.environ.get("PG_BIN"):
        return Path(os.environ["PG_BIN"])
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"),
                   key=lambda p: int(Path(p).parts[-3]) if Path(p).parts[-3].isdigit() else 0)
    if found:
        return Path(found[-1]).parent
    on_path = shutil.which("initdb")
    if on_path:
        return Path(on_path).parent
    raise RuntimeError("no PostgreSQL server binaries: apt-get install postgresql (or set PG_BIN)")


def _runner() -> tuple[list[str], int | None, int | None]:
    """The command prefix that runs a server binary, and the uid/gid to own its directory."""
    if os.geteuid() != 0:
        return [], None, None
    try:
        user = pwd.getpwnam("postgres")
    except KeyError:
        raise RuntimeError("running as root needs a `postgres` user to run the server as") from None
    return ["runuser", "-u", "postgres", "--"], user.pw_uid, user.pw_gid


@contextlib.contextmanager
def pg_cluster(dbname: str = "bench", settings: Mapping[str, str] | None = None,
               locale: str = "C") -> Iterator[str]:
    """Yield the DSN of a fresh database on a fresh cluster (TCP on 127.0.0.1). `settings`
    are extra `postgres -c` options; `locale` is the cluster's (C: byte order, as SQLite's
    default BINARY collation sorts)."""
    bindir = pg_bin()
    prefix, uid, gid = _runner()
    base = Path(tempfile.mkdtemp(prefix="pg-cluster-"))
    data, log = base / "data", base / "server.log"
    started = False

    def run(*args: str) -> None:
        # cwd: the server's user may not be allowed into the caller's working directory
        done = subprocess.run([*prefix, *args], cwd=base, capture_output=True, text=True)
        if done.returncode:
            tail = log.read_text()[-2000:] if log.exists() else ""
            raise RuntimeError(f"{Path(args[0]).name} failed ({done.returncode}): "
                               f"{done.stderr.strip() or done.stdout.strip()}\n{tail}")

    try:
        if uid is not None:
            os.chown(base, uid, gid)
        run(str(bindir / "initdb"), "-D", str(data), "-U", SUPERUSER, "--auth=trust",
            "-E", "UTF8", f"--locale={locale}", "--no-sync")
        port = free_port()
        options = ["-c listen_addresses=127.0.0.1", f"-p {port}", f"-k {base}"]
        options += [f"-c {k}={v}" for k, v in (settings or {}).items()]
        run(str(bindir / "pg_ctl"), "-D", str(data), "-l", str(log), "-w", "-t", "60",
            "-o", " ".join(options), "start")
        started = True
        run(str(bindir / "createdb"), "-h", str(base), "-p", str(port), "-U", SUPERUSER, dbname)
        yield f"postgresql://{SUPERUSER}@127.0.0.1:{port}/{dbname}"
    finally:
        if started:
            try:
                run(str(bindir / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "-t", "30", "stop")
            except RuntimeError:
                with contextlib.suppress(RuntimeError):
                    run(str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(base, ignore_errors=True)
