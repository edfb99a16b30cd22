"""Benchmark: a 200-request batch against the fal stand-in (out of process, 1 s per job).

    .venv/bin/python -m tests.bench.bench_batch [--requests 200] [--concurrency 16] [--latency 1.0]
                                               [--loop-requests 200] [--skip-fal-client]
                                               [--engines sqlite postgres] [--repeat 1]

1. `python -m core batch run PLAN.json --concurrency 16` as a whole process (start-up, planning,
   store writes, image downloads and exit included): wall time as a ratio to the ideal
   ceil(200/16) x 1 s = 13 s (target <= 1.05), CPU time per request, status polls per request.
2. The same payloads sent with the official `fal-client` the obvious way, each in its own process:
   `fal_client.subscribe` in a loop, and the same from a thread pool of 16. (fal-client only
   fetches the result JSON: no image download, no store; that is in its favour.)

The store is created and migrated before step 1 (by `python -m core batch status`, timed on its
own line): a team's batches run on a store that exists, and a blank database is migrated once,
by whichever process opens it first.

With `--engines sqlite postgres` step 1 runs once per engine in turn, each on a fresh store (for
Postgres a database on a throwaway cluster, tests/pg_cluster.py, DATABASE_URL set): both
engines' ratios from one run. With `--repeat N` it does N rounds, the engines alternating in
each (so a slower spell of this shared machine falls on both), and prints each engine's median
ratio and range after them.

The project's modules are byte-compiled first and the measured processes may write bytecode
(PYTHONDONTWRITEBYTECODE is dropped for them): an installed dashboard starts from cached bytecode,
and compiling ~40 modules from source on every start would add 0.1-0.3 s no user pays twice.

The stand-in is started with TCP_NODELAY on its sockets: Python's http.server answers with two
writes (headers, then body), and Nagle's algorithm + the client's delayed ACK then add ~40 ms to
every answer on loopback, an artifact no real fal server has.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from core.config import REPO_ROOT

POSES = ["Standing", "Walking", "Sitting", "Leaning against a wall", "Arms crossed", "Hands in pockets",
         "Over-the-shoulder look", "Running", "Jumping", "Kneeling", "Mirror selfie using iPhone",
         "Looking back", "Crouching"]
LIGHTS = ["Studio", "Golden Hour", "Neon", "Softbox", "Backlit", "Natural Daylight", "Rim light", "Overcast"]
MODELS = ["fal-ai/flux/schnell", "fal-ai/flux-2"]

_STANDIN = "import sys, tests.standins.fal_server as s\nsys.exit(s.main(sys.argv[1:]))"


def _plan_spec(requests: int) -> dict:
    """2 models x 10 poses x 5 lights x seeds (200 requests: 2 seeds); other sizes use takes."""
    if requests % 2:
        raise SystemExit("--requests must be even (two models)")
    variants = requests // 2
    if variants % 50 == 0:
        options = {"pose": POSES[:10], "lighting": LIGHTS[:5]}
        seeds = list(range(1, variants // 50 + 1))
    else:
        options = {"pose": POSES[:1], "extra": [f"take {i}" for i in range(variants)]}
        seeds = [1]
    return {"name": f"bench {requests}", "models": MODELS, "seeds": seeds, "options": options}


def _payloads(spec: dict, requests: int) -> list[tuple[str, dict]]:
    from core.batches.plans import make_plan

    plan = make_plan(spec)
    return [(r.endpoint, dict(r.payload)) for r in plan.requests][:requests]


def _start_standin(latency: float) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen([sys.executable, "-c", _STANDIN, "--port", "0", "--latency", str(latency)],
                            cwd=REPO_ROOT, stdout=subprocess.PIPE, text=True)
    url = proc.stdout.readline().strip()
    if not url.startswith("http://127.0.0.1:"):
        proc.kill()
        raise SystemExit(f"the stand-in did not start (got {url!r})")
    return proc, url


def _load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def _child_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _timed(cmd: list[str], env: dict) -> tuple[float, float, subprocess.CompletedProcess]:
    cpu = _child_cpu()
    start = time.perf_counter()
    done = subprocess.run(cmd, cwd=REPO_ROOT, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(cmd[:6])} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    return wall, _child_cpu() - cpu, done


def _wait_for_metrics_worker(env: dict, timeout: float = 300.0) -> float | None:
    """`batch run` also starts the fidelity metrics worker (a detached process that measures the
    stored results and exits when idle); let it finish so it does not load the next measurement."""
    try:
        from core.evaluation import fidelity
    except ImportError:
        return None
    from core.config import load_settings

    settings = load_settings(env)
    start = time.perf_counter()
    while fidelity.worker_running(settings):
        if time.perf_counter() - start > timeout:
            raise SystemExit("the metrics worker is still running after 5 minutes")
        time.sleep(0.2)
    return time.perf_counter() - start


def _failures(db_path: Path) -> str:
    import sqlite3

    conn = sqlite3.connect(db_path)
    rows = conn.execute("SELECT status, error_type, error_message FROM requests WHERE status != 'completed'").fetchall()
    conn.close()
    return "".join(f"\n  {status} {kind}: {message}" for status, kind, message in rows)


def _breakdown(env: dict[str, str], launched: float, wall: float, concurrency: int) -> str:
    """Where the time went, from the store's timestamps: start-up until the first POST, the
    mean cycle of a slot (submit to the next submit in that slot), and exit after the last job."""
    from datetime import datetime

    from core.config import load_settings
    from core.store import open_store

    def ts(text: str) -> float:
        return datetime.fromisoformat(text).timestamp()

    store = open_store(load_settings(env))
    try:
        conn = store.db.conn
        subs = sorted(ts(r[0]) for r in conn.execute("SELECT submitted_at FROM requests").fetchall())
        last = ts(conn.execute("SELECT max(completed_at) FROM requests").fetchone()[0])
    finally:
        store.close()
    cycles = [b - a for a, b in zip(subs, subs[concurrency:])]
    mean_cycle = sum(cycles) / len(cycles) if cycles else float("nan")
    return (f"start-up to first submit {subs[0] - launched:.2f} s, slot cycle {mean_cycle * 1000:.0f} ms "
            f"(job + detection + next submit), last job stored to exit {launched + wall - last:.2f} s")


def _fal_client_worker(mode: str, url: str, payload_file: str, workers: int) -> None:
    """Runs in its own process: send every payload with fal_client.subscribe."""
    import fal_client
    import fal_client.client

    fal_client.client.RUN_URL_FORMAT = f"{url}/run/"
    fal_client.client.QUEUE_URL_FORMAT = f"{url}/"
    payloads = json.loads(Path(payload_file).read_text())

    def one(item):
        endpoint, payload = item
        return fal_client.subscribe(endpoint, arguments=payload)

    if mode == "loop":
        results = [one(p) for p in payloads]
    else:
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(workers) as pool:
            results = list(pool.map(one, payloads))
    assert all(r.get("images") for r in results)


def _batch_run(args: argparse.Namespace, plan_file: Path, env: dict[str, str], control, ideal: float,
               engine: str) -> float:
    """Step 1 on one engine: `python -m core batch run` as a whole process, timed; its ratio."""
    data = Path(env["DASHBOARD_DATA_DIR"])
    # a team runs batches on a store that exists: the blank database is created and migrated
    # first (once per database, whoever opens it first), timed on its own line
    created, _, _ = _timed([sys.executable, "-m", "core", "batch", "status"], env)
    launched = time.time()
    wall, cpu, done = _timed([sys.executable, "-m", "core", "batch", "run", str(plan_file),
                              "--concurrency", str(args.concurrency), "--quiet"], env)
    stats = control.stats()
    assert f"finished: {args.requests}/{args.requests} done (completed {args.requests})" in done.stdout, \
        done.stdout + (_failures(data / "dashboard.db") if engine == "sqlite" else done.stderr)
    assert stats["submissions"] == args.requests, stats["submissions"]
    polls = stats["requests"].get("status", 0) / args.requests
    print(f"  {engine + ': python -m core batch run':<32}{wall:6.2f} s  ratio {wall / ideal:.3f} (target <= 1.05)  "
          f"CPU {cpu / args.requests * 1000:.1f} ms/request  {polls:.1f} polls/request")
    print("    " + _breakdown(env, launched, wall, args.concurrency))
    print(f"    (before it: the blank store created and migrated by `python -m core batch status`, {created:.2f} s)")
    lingered = _wait_for_metrics_worker(env)
    if lingered is not None:
        print(f"    (the detached metrics worker `batch run` starts measured on for {lingered:.1f} s "
              "after the run; waited for it before going on)")
    return wall / ideal


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--latency", type=float, default=1.0)
    parser.add_argument("--loop-requests", type=int, default=None,
                        help="requests for the sequential fal-client loop (default: all; 200 x 1 s)")
    parser.add_argument("--skip-fal-client", action="store_true")
    parser.add_argument("--engines", nargs="+", choices=("sqlite", "postgres"), default=["sqlite"])
    parser.add_argument("--repeat", type=int, default=1,
                        help="rounds of step 1, the engines alternating in each; the median and range "
                             "of each engine's ratio are printed after them")
    parser.add_argument("--fal-client-worker", nargs=4, metavar=("MODE", "URL", "PAYLOADS", "WORKERS"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.fal_client_worker:
        mode, url, payload_file, workers = args.fal_client_worker
        _fal_client_worker(mode, url, payload_file, int(workers))
        return

    from tests.standins.fal_server import DEFAULT_KEY, StandinControl

    ideal = math.ceil(args.requests / args.concurrency) * args.latency
    standin, url = _start_standin(args.latency)
    tmp = Path(tempfile.mkdtemp(prefix="bench-batch-"))
    try:
        control = StandinControl(url)
        spec = _plan_spec(args.requests)
        payloads = _payloads(spec, args.requests)
        assert len(payloads) == args.requests, len(payloads)
        plan_file = tmp / "plan.json"
        plan_file.write_text(json.dumps(spec))
        env = {**os.environ, "DASHBOARD_DATA_DIR": str(tmp / "data"), "FAL_KEY": DEFAULT_KEY,
               "FAL_QUEUE_URL": url, "FAL_RUN_URL": f"{url}/run", "DASHBOARD_SECRETS": str(tmp / "none.toml")}
        for name in ("SUPABASE_URL", "SUPABASE_KEY", "PYTHONDONTWRITEBYTECODE"):
            env.pop(name, None)
        subprocess.run([sys.executable, "-m", "compileall", "-q", "core", "tests/bench", "tests/standins"],
                       cwd=REPO_ROOT, env=env, check=True, capture_output=True)

        print(f"{args.requests} requests, {args.latency:g} s per job, concurrency {args.concurrency}: "
              f"ideal {ideal:.1f} s (load average {_load()})")
        ratios: dict[str, list[float]] = {engine: [] for engine in args.engines}
        with contextlib.ExitStack() as stack:
            cluster = None
            for round_no in range(args.repeat):
                if args.repeat > 1:
                    print(f" round {round_no + 1} of {args.repeat} (load average {_load()})")
                for engine in args.engines:
                    run_env = {**env, "DASHBOARD_DATA_DIR": str(tmp / f"data-{engine}-{round_no}")}
                    if engine == "postgres":
                        from tests.pg_cluster import pg_cluster
                        from tests.pg_fixtures import fresh_database

                        if cluster is None:
                            cluster = stack.enter_context(pg_cluster("bench_batch"))
                        # each later round on a blank database of its own
                        run_env["DATABASE_URL"] = (cluster if round_no == 0 else
                                                   fresh_database(cluster.rsplit("/", 1)[0], "template0"))
                    control.reset()
                    ratios[engine].append(_batch_run(args, plan_file, run_env, control, ideal, engine))
        if args.repeat > 1:
            import statistics

            for engine, seen in ratios.items():
                print(f"  {engine}: median ratio {statistics.median(seen):.3f} over {len(seen)} rounds "
                      f"(range {min(seen):.3f}-{max(seen):.3f}; target <= 1.05)")

        if args.skip_fal_client:
            return
        payload_file = tmp / "payloads.json"
        for mode, n, workers in (("pool", args.requests, args.concurrency),
                                 ("loop", args.loop_requests or args.requests, 1)):
            control.reset()
            payload_file.write_text(json.dumps(payloads[:n]))
            wall, cpu, _ = _timed([sys.executable, "-m", "tests.bench.bench_batch", "--fal-client-worker",
                                   mode, url, str(payload_file), str(workers)], env)
            stats = control.stats()
            assert stats["submissions"] == n, stats
            ideal_n = math.ceil(n / workers) * args.latency
            label = f"fal-client subscribe, {'thread pool of ' + str(workers) if mode == 'pool' else 'loop'}"
            extra = "" if n == args.requests else f"  ({n} requests; x{args.requests / n:g} = " \
                                                  f"{wall * args.requests / n:.0f} s for {args.requests})"
            print(f"  {label:<32}{wall:7.2f} s  ratio {wall / ideal:.3f} vs {ideal:.0f} s "
                  f"(vs its own ideal {ideal_n:.0f} s: {wall / ideal_n:.3f})  CPU {cpu / n * 1000:.1f} ms/request  "
                  f"{stats['requests'].get('status', 0) / n:.1f} polls/request{extra}")
    finally:
        print(f"  (load average at the end {_load()})")
        standin.terminate()
        standin.wait(10)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
