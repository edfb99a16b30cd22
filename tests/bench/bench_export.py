"""Benchmark: `python -m core export` as a whole process against a hand-written pandas dump.

    .venv/bin/python -m tests.bench.bench_export [--rows 50000 100000] [--runs 3] [--baseline DIR]
        [--engines sqlite postgres]

For each size, seeds a fresh data directory (tests/bench/bench_history.seed: realistic prompts and
payloads, one result image per completed request, a formula-like error message on every failed
request) and stores the export lines of its final requests (what the store's write methods do as
each request becomes final; the seed bypasses them), then runs, alternating so both meet the same load, `--runs` times each:
- the export: `python -m core export --out FILE.csv`, the command a user runs;
- the floor: the one line of pandas a user would write by hand,
  `pd.read_sql("SELECT * FROM requests", sqlite3.connect(db)).to_csv(out)`, in its own process.
With `--baseline DIR` (another checkout, e.g. `git worktree add /tmp/base main`), the export of
that code runs too, in the same alternation on the same store: before and after in one run.
Prints the wall time (median and best), the CPU time (user + system, median) and the peak
resident memory of each process, and the machine's load average before and after (the machine
is shared: compare within one run only).
Targets: at 50,000 requests the export no slower than the pandas dump and at most 300 MB; at
100,000 under 2 s.

With `--engines ... postgres` the same store is also moved into Postgres (a throwaway cluster,
tests/pg_cluster.py, by `python -m core store copy`, timed), its export lines stored there, and
the export runs with DATABASE_URL set against the pandas dump a user would write for Postgres,
`pd.read_sql("SELECT * FROM requests", sqlalchemy.create_engine(url)).to_csv(out)`: both engines'
figures from one run.
"""
from __future__ import annotations

import argparse
import filecmp
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PANDAS_DUMP = ("import sqlite3, sys, pandas as pd; "
               "pd.read_sql('SELECT * FROM requests', sqlite3.connect(sys.argv[1])).to_csv(sys.argv[2])")
PANDAS_DUMP_PG = ("import sys, pandas as pd, sqlalchemy; "
                  "pd.read_sql('SELECT * FROM requests', sqlalchemy.create_engine("
                  "sys.argv[1].replace('postgresql://', 'postgresql+psycopg://', 1))).to_csv(sys.argv[2])")
PG_LINES = ("import sys, time; from core.store import open_store; d = open_store(sys.argv[1]); "
            "t = time.perf_counter(); d.refresh_export_lines(); print(f'{time.perf_counter() - t:.1f}')")


def _run(argv: list[str], env: dict[str, str], cwd: Path = ROOT) -> tuple[float, float, float]:
    """Wall seconds, peak RSS (MB) and CPU seconds of one child process."""
    t = time.perf_counter()
    proc = subprocess.Popen(argv, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.perf_counter() - t
    proc.returncode = os.waitstatus_to_exitcode(status)
    err = proc.stderr.read().decode() if proc.stderr else ""
    proc.stderr and proc.stderr.close()
    if proc.returncode:
        raise SystemExit(f"{' '.join(argv)} failed ({proc.returncode}): {err}")
    return elapsed, usage.ru_maxrss / 1024, usage.ru_utime + usage.ru_stime


def _load() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


SEED = """
import sys, time
from core.store import open_store
from tests.bench.bench_history import seed
d = open_store(sys.argv[1])
t = time.perf_counter()
seed(d, int(sys.argv[2]))
seeded = time.perf_counter() - t
# the seed inserts rows directly; the store's write methods store each final request's export
# lines as it becomes final: write them, as those methods would have (timed apart)
t = time.perf_counter()
d.refresh_export_lines()
print(f"{seeded:.1f} {time.perf_counter() - t:.1f}")
d.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
d.close()
"""


def bench(rows: int, runs: int, baseline: Path | None = None, pg_server: str | None = None) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        data.mkdir()
        db_path = data / "dashboard.db"
        # seeded in a child: a child's peak RSS counts its parent's at fork, so the parent stays small
        seeded, lines = subprocess.run([sys.executable, "-c", SEED, str(db_path), str(rows)], cwd=ROOT,
                                       check=True, capture_output=True, text=True).stdout.split()
        print(f"\n{rows} requests seeded in {seeded} s, their export lines stored in {lines} s "
              f"({db_path.stat().st_size / 1e6:.0f} MB); load average {_load()}")
        env = {**os.environ, "DASHBOARD_DATA_DIR": str(data), "DASHBOARD_SECRETS": str(Path(tmp) / "none.toml")}
        for name in ("FAL_KEY", "SUPABASE_URL", "SUPABASE_KEY"):
            env.pop(name, None)
        cases = {
            "python -m core export": ([sys.executable, "-m", "core", "export", "--out", str(Path(tmp) / "e.csv")],
                                      ROOT, Path(tmp) / "e.csv"),
            "pandas read_sql + to_csv": ([sys.executable, "-c", PANDAS_DUMP, str(db_path), str(Path(tmp) / "p.csv")],
                                         ROOT, Path(tmp) / "p.csv"),
        }
        if baseline is not None:
            cases["baseline: core export"] = (
                [sys.executable, "-m", "core", "export", "--out", str(Path(tmp) / "b.csv")],
                baseline, Path(tmp) / "b.csv")
        envs = {name: env for name in cases}
        if pg_server is not None:
            url = _pg_copy(pg_server, rows, db_path, env)
            pg_env = {**env, "DATABASE_URL": url}
            cases["postgres: core export"] = (
                [sys.executable, "-m", "core", "export", "--out", str(Path(tmp) / "pe.csv")], ROOT, Path(tmp) / "pe.csv")
            cases["postgres: pandas dump"] = (
                [sys.executable, "-c", PANDAS_DUMP_PG, url, str(Path(tmp) / "pp.csv")], ROOT, Path(tmp) / "pp.csv")
            envs.update({"postgres: core export": pg_env, "postgres: pandas dump": pg_env})
        results: dict[str, list[tuple[float, float, float]]] = {name: [] for name in cases}
        for _ in range(runs):
            for name, (argv, cwd, _) in cases.items():
                results[name].append(_run(argv, envs[name], cwd))
        print(f"  {'whole process':<26} {'median':>8} {'best':>8} {'CPU':>7} {'peak RSS':>9} {'file':>7}")
        for name, got in results.items():
            times = [t for t, _, _ in got]
            print(f"  {name:<26} {statistics.median(times):7.2f}s {min(times):7.2f}s "
                  f"{statistics.median(c for _, _, c in got):6.2f}s "
                  f"{max(m for _, m, _ in got):7.0f}MB {cases[name][2].stat().st_size / 1e6:5.0f}MB")
        if baseline is not None:
            # compared in small reads: a child's peak RSS counts its parent's at fork
            same = filecmp.cmp(Path(tmp) / "b.csv", Path(tmp) / "e.csv", shallow=False)
            print(f"  baseline and export files identical: {same}")
        ratio = statistics.median(t for t, _, _ in results["python -m core export"]) / \
            statistics.median(t for t, _, _ in results["pandas read_sql + to_csv"])
        print(f"  export / pandas dump (medians): {ratio:.2f}x; load average after {_load()}")
        if pg_server is not None:
            same = filecmp.cmp(Path(tmp) / "pe.csv", Path(tmp) / "e.csv", shallow=False)
            ratio = statistics.median(t for t, _, _ in results["postgres: core export"]) / \
                statistics.median(t for t, _, _ in results["postgres: pandas dump"])
            print(f"  postgres: export / pandas dump (medians): {ratio:.2f}x; the two engines' files "
                  f"identical: {same}")


def _pg_copy(server: str, rows: int, db_path: Path, env: dict[str, str]) -> str:
    """A database on `server` holding the seeded store: `store copy` (timed), then its export lines."""
    import psycopg

    name = f"bench_export_{rows}"
    with psycopg.connect(f"{server}/postgres", autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
        conn.execute(f'CREATE DATABASE "{name}"')
    url = f"{server}/{name}"
    t = time.perf_counter()
    subprocess.run([sys.executable, "-m", "core", "store", "copy", "--to", url, "--from", str(db_path)],
                   cwd=ROOT, env=env, check=True, capture_output=True, text=True)
    copied = time.perf_counter() - t
    lines = subprocess.run([sys.executable, "-c", PG_LINES, url], cwd=ROOT, env=env, check=True,
                           capture_output=True, text=True).stdout.strip()
    print(f"  copied into Postgres by `store copy` in {copied:.1f} s, its export lines stored in {lines} s")
    return url


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, nargs="+", default=[50_000, 100_000])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--baseline", type=Path, default=None, metavar="DIR",
                        help="another checkout whose `python -m core export` runs alongside")
    parser.add_argument("--engines", nargs="+", choices=("sqlite", "postgres"), default=["sqlite"])
    args = parser.parse_args()
    if "postgres" not in args.engines:
        for rows in args.rows:
            bench(rows, args.runs, args.baseline)
        return
    from tests.pg_cluster import pg_cluster

    with pg_cluster("bench") as dsn:
        for rows in args.rows:
            bench(rows, args.runs, args.baseline, pg_server=dsn.rsplit("/", 1)[0])


if __name__ == "__main__":
    main()
