"""Load benchmark: several people clicking through the real dashboard at once.

    .venv/bin/python -m tests.bench.load [--rows 100000] [--sessions 1,4,8] [--seconds 30] [--gc on|off]

Builds a store of `--rows` requests with bench_pages' filler (or reuses the one it built before, in
a cache directory keyed by the sizes and by the source of the filler and the migrations), marks
every result image as measured (a steady state: no background metrics worker competes for the
CPU), starts `streamlit run dashboard/app.py` on a free 127.0.0.1 port in dry run, and drives
real Chromium sessions (Playwright, Debian's `chromium`) through every page of the sidebar without
pause: first one warm-up lap, then for each level of `--sessions` that many sessions at once for
`--seconds`. A page visit is timed from the click on its sidebar link until the page has rendered:
Streamlit's script state is back to "not running", the page's title is on the page, no element is
stale and every image has loaded.

Printed per level, side by side: median and p90 seconds per visit (and the median per page), page
visits, errors, the server's CPU seconds per visit (utime + stime of the streamlit process from
/proc/<pid>/stat, over the clicking window), the CPU of the browsers and of everything else on the
machine, the server's RSS (start / end / peak) and the load average; then the ratio of the server's
CPU per visit at 4 sessions to that at 1 (target: at most 1.5x). `--gc on|off` passes
`--runner.postScriptGC` to streamlit; without it .streamlit/config.toml decides.

Invariants: all traffic stays on 127.0.0.1; every wait is bounded (a visit by --visit-timeout, a
level by its seconds plus fixed margins); the server, anything it spawned and the browser are
stopped on exit, also on Ctrl-C. Exits non-zero when a visit failed.
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import hashlib
import os
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[2]
APP = "dashboard/app.py"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run",
                 # sessions in background tabs/windows must not be throttled: each one is a person
                 "--disable-background-timer-throttling", "--disable-renderer-backgrounding",
                 "--disable-backgrounding-occluded-windows"]
# sidebar link -> the page's st.title: the element whose presence says "this page is on screen"
PAGES = {"Upload": "Upload reference photos", "Generate": "Generate", "Compare": "Compare",
         "History": "History", "Review": "Review", "Leaderboard": "Leaderboard"}
# the sources whose change makes a cached store stale
FILLER_SOURCES = ("tests/bench/bench_pages.py", "tests/bench/bench_history.py", "core/store/db.py")
CLK_TCK = os.sysconf("SC_CLK_TCK")
START_TIMEOUT_S = 90
POLL_MS = 20   # how often a session checks whether its page has rendered: the timing's resolution
RENDERED_JS = """title => {
    const app = document.querySelector('[data-testid="stApp"]');
    if (!app || app.getAttribute('data-test-script-state') !== 'notRunning') return false;
    const main = document.querySelector('[data-testid="stMain"]');
    if (!main || main.querySelector('[data-stale="true"]')) return false;
    if (![...main.querySelectorAll('h1')].some(h => h.textContent.trim() === title)) return false;
    return [...main.querySelectorAll('img')].every(i => i.complete);
}"""


# -- the store ---------------------------------------------------------------------------------

def _store_key(rows: int, big_batch: int) -> str:
    h = hashlib.sha256(f"{rows}/{big_batch}".encode())
    for name in FILLER_SOURCES:
        h.update((ROOT / name).read_bytes())
    return f"load-{rows}-{big_batch}-{h.hexdigest()[:12]}"


def _mark_measured(db_path: Path) -> int:
    """Give every result image plausible fidelity metrics, as after the background worker's pass:
    otherwise the first Leaderboard visit would start a worker measuring 100,000 images on the
    same cores as the server, and the figures would measure that worker."""
    from core.evaluation.metrics import METRICS_VERSION

    con = sqlite3.connect(db_path)
    try:
        with con:
            cur = con.execute(
                "UPDATE result_images SET face_status = 'ok', faces_reference = 1, faces_output = 1, "
                "face_distance = 0.30 + (abs(random()) % 500) / 1000.0, "
                "phash_distance = abs(random()) % 32, ciede2000 = (abs(random()) % 400) / 10.0, "
                "ssim = (abs(random()) % 1000) / 1000.0, metrics_version = ?, "
                "metrics_at = created_at WHERE metrics_at IS NULL", [METRICS_VERSION])
        return cur.rowcount
    finally:
        con.close()


def build_store(cache: Path, rows: int, big_batch: int, *, fresh: bool) -> Path:
    """The data directory of a store with `rows` requests, built once per key; a build that did
    not finish is never reused (it is built under another name and renamed at the end)."""
    target = cache / _store_key(rows, big_batch)
    if target.is_dir() and not fresh:
        print(f"store: reusing {target}")
        return target / "data"
    cache.mkdir(parents=True, exist_ok=True)
    for old in cache.glob(f"load-{rows}-{big_batch}-*"):
        shutil.rmtree(old)
    building = Path(tempfile.mkdtemp(prefix="building-", dir=cache))
    saved = {k: os.environ.get(k) for k in ("DASHBOARD_DATA_DIR", "DASHBOARD_SECRETS", "FAL_KEY",
                                            "SUPABASE_URL", "SUPABASE_KEY")}
    try:
        os.environ.update(DASHBOARD_DATA_DIR=str(building / "data"),
                          DASHBOARD_SECRETS=str(building / "no-secrets.toml"))
        for name in ("FAL_KEY", "SUPABASE_URL", "SUPABASE_KEY"):
            os.environ.pop(name, None)
        from tests.bench.bench_pages import _fill

        t = time.perf_counter()
        _fill(building / "data", rows, big_batch)
        from core.config import load_settings

        n = _mark_measured(load_settings().db_path)
        print(f"store: built in {time.perf_counter() - t:.0f} s ({n} images marked measured)")
        building.rename(target)
    except BaseException:
        shutil.rmtree(building, ignore_errors=True)
        raise
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    return target / "data"


# -- processes -----------------------------------------------------------------------------------

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _cpu_s(pid: int) -> float:
    """utime + stime of a process (all its threads), in seconds; 0 once it is gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = raw.rsplit(")", 1)[1].split()  # the name in parentheses may hold spaces
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def _status_mb(pid: int, key: str) -> float:
    """VmRSS (now) or VmHWM (peak since start) in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _children(pid: int) -> list[int]:
    out: list[int] = []
    with contextlib.suppress(OSError):
        for task in Path(f"/proc/{pid}/task").iterdir():
            with contextlib.suppress(OSError):
                out += [int(c) for c in (task / "children").read_text().split()]
    return out


def _descendants(pid: int) -> list[int]:
    todo, seen = _children(pid), []
    while todo:
        p = todo.pop()
        seen.append(p)
        todo += _children(p)
    return seen


def _machine_busy_s() -> float:
    """CPU seconds spent not idle on all cores since boot (/proc/stat)."""
    f = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = f[3] + f[4]  # idle + iowait
    return (sum(f[:8]) - idle) / CLK_TCK


class Server:
    """`streamlit run dashboard/app.py`, headless in dry run on 127.0.0.1, over `data_dir`."""

    def __init__(self, data_dir: Path, workdir: Path, gc: str | None):
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = workdir / "streamlit.log"
        env = {k: v for k, v in os.environ.items()
               if k not in ("FAL_KEY", "SUPABASE_URL", "SUPABASE_KEY", "SUPABASE_BUCKET")}
        env.update(DASHBOARD_DATA_DIR=str(data_dir), DASHBOARD_SECRETS=str(workdir / "no-secrets.toml"),
                   PYTHONUNBUFFERED="1")
        cmd = [sys.executable, "-m", "streamlit", "run", APP, "--server.port", str(self.port),
               "--server.address", "127.0.0.1", "--server.headless", "true",
               "--browser.gatherUsageStats", "false"]
        if gc is not None:
            cmd += ["--runner.postScriptGC", "true" if gc == "on" else "false"]
        self._log = open(self.log_path, "wb")  # noqa: SIM115 (closed in stop)
        self.proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=self._log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL)
        self.pid = self.proc.pid

    def wait_ready(self) -> float:
        t = time.monotonic()
        while True:
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"{self.url}/_stcore/health", timeout=2).text == "ok":
                    return time.monotonic() - t
            if self.proc.poll() is not None or time.monotonic() - t > START_TIMEOUT_S:
                raise SystemExit("streamlit did not start:\n" + self.log_tail())
            time.sleep(0.2)

    def log_tail(self, n: int = 40) -> str:
        self._log.flush()
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])

    def cpu_s(self) -> float:
        return _cpu_s(self.pid)

    def rss_mb(self) -> float:
        return _status_mb(self.pid, "VmRSS")

    def peak_rss_mb(self) -> float:
        return _status_mb(self.pid, "VmHWM")

    def stop(self) -> None:
        """The processes the server started (a detached metrics worker runs in its own session),
        then the server itself."""
        for child in _descendants(self.pid):
            with contextlib.suppress(OSError):
                os.kill(child, signal.SIGTERM)
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()


# -- sessions ------------------------------------------------------------------------------------

@dataclasses.dataclass
class Visit:
    page: str
    seconds: float
    error: str | None = None


@dataclasses.dataclass
class Level:
    sessions: int
    open_s: float = 0.0
    wall_s: float = 0.0
    visits: list[Visit] = dataclasses.field(default_factory=list)
    server_cpu_s: float = 0.0
    client_cpu_s: float = 0.0
    others_cpu_s: float = 0.0
    rss: list[tuple[float, float]] = dataclasses.field(default_factory=list)  # (t, MB)
    load_end: tuple[float, float, float] = (0.0, 0.0, 0.0)

    @property
    def ok(self) -> list[float]:
        return [v.seconds for v in self.visits if v.error is None]

    @property
    def errors(self) -> list[Visit]:
        return [v for v in self.visits if v.error is not None]


async def _rendered(page, title: str, timeout_s: float) -> None:
    # checked every POLL_MS, not on every animation frame: polling per frame kept each waiting
    # renderer busy and took CPU from the server it waits for
    await page.wait_for_function(RENDERED_JS, arg=title, timeout=timeout_s * 1000, polling=POLL_MS)


async def _open(browser, url: str, n: int, timeout_s: float):
    """A new browser session (its own Streamlit session) on the default page, with a name typed
    in the sidebar (Review needs a rater)."""
    from playwright.async_api import TimeoutError as PlaywrightTimeout

    context = await browser.new_context(viewport={"width": 1400, "height": 1000})
    page = await context.new_page()
    page.set_default_timeout(timeout_s * 1000)
    await page.goto(url)
    await _rendered(page, PAGES["Upload"], timeout_s)
    name = page.get_by_role("textbox", name="Your name")
    await name.fill(f"load {n}")
    await name.press("Enter")
    # the rerun that records the name: seen starting, or over before we looked
    with contextlib.suppress(PlaywrightTimeout):
        await page.wait_for_function(
            "() => document.querySelector('[data-testid=\"stApp\"]')"
            ".getAttribute('data-test-script-state') !== 'notRunning'", timeout=2000, polling=POLL_MS)
    await _rendered(page, PAGES["Upload"], timeout_s)
    return context, page


async def _visit(page, link: str, timeout_s: float) -> Visit:
    title = PAGES[link]
    t = time.perf_counter()
    try:
        await page.get_by_test_id("stSidebarNav").get_by_role("link", name=link, exact=True).click(
            timeout=timeout_s * 1000)
        await _rendered(page, title, timeout_s)
        seconds = time.perf_counter() - t
        if await page.locator('[data-testid="stMain"] [data-testid="stException"]').count():
            text = await page.locator('[data-testid="stException"]').first.inner_text()
            return Visit(link, seconds, f"exception on the page: {text[:300]}")
        return Visit(link, seconds)
    except Exception as e:  # a timeout or a closed page: counted, the session moves on
        return Visit(link, time.perf_counter() - t, f"{type(e).__name__}: {str(e).splitlines()[0][:300]}")


async def _browse(page, start: int, deadline: float, timeout_s: float) -> list[Visit]:
    """Click through the sidebar's pages in order, from the `start`th, until the deadline."""
    links = list(PAGES)
    visits: list[Visit] = []
    i = start
    # Upload is where a session opens: its first visit would be a click on the current page
    if links[i % len(links)] == "Upload":
        i += 1
    while time.monotonic() < deadline:
        visits.append(await _visit(page, links[i % len(links)], timeout_s))
        i += 1
    return visits


async def _sample_rss(server: Server, out: list[tuple[float, float]], t0: float, every: float) -> None:
    while True:
        with contextlib.suppress(OSError):
            out.append((time.monotonic() - t0, server.rss_mb()))
        await asyncio.sleep(every)


async def run_level(browser, server: Server, n: int, seconds: float, timeout_s: float) -> Level:
    level = Level(n)
    t = time.monotonic()
    try:
        opened = await asyncio.wait_for(
            asyncio.gather(*(_open(browser, server.url, i, timeout_s) for i in range(n))),
            timeout=timeout_s * 2)
    except Exception as e:  # nothing to measure without the sessions: say why and stop
        raise SystemExit(f"could not open {n} session(s) within {timeout_s:g} s each: "
                         f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}") from None
    level.open_s = time.monotonic() - t
    me = os.getpid()
    server_pids = {server.pid, *_descendants(server.pid)}

    def clients() -> float:
        return sum(_cpu_s(p) for p in _descendants(me) if p not in server_pids)

    t0 = time.monotonic()
    cpu0, client0, busy0 = server.cpu_s(), clients() + _cpu_s(me), _machine_busy_s()
    sampler = asyncio.create_task(_sample_rss(server, level.rss, t0, max(1.0, seconds / 60)))
    try:
        per_session = await asyncio.wait_for(
            asyncio.gather(*(_browse(page, i, t0 + seconds, timeout_s) for i, (_, page) in enumerate(opened))),
            timeout=seconds + timeout_s + 30)
    finally:
        sampler.cancel()
    level.wall_s = time.monotonic() - t0
    level.server_cpu_s = server.cpu_s() - cpu0
    level.client_cpu_s = clients() + _cpu_s(me) - client0
    level.others_cpu_s = max(0.0, _machine_busy_s() - busy0 - level.server_cpu_s - level.client_cpu_s)
    level.rss.append((level.wall_s, server.rss_mb()))
    level.load_end = os.getloadavg()
    level.visits = [v for visits in per_session for v in visits]
    for context, _ in opened:
        await context.close()
    return level


async def warm_up(browser, server: Server, timeout_s: float) -> list[Visit]:
    """One lap by one session over cold caches: not counted in the levels."""
    try:
        context, page = await _open(browser, server.url, 0, timeout_s)
    except Exception as e:
        raise SystemExit(f"could not open a session within {timeout_s:g} s: "
                         f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}") from None
    try:
        return [await _visit(page, link, timeout_s) for link in [*list(PAGES)[1:], "Upload"]]
    finally:
        await context.close()


# -- report --------------------------------------------------------------------------------------

def _pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))]


def _row(label: str, cells: list[str]) -> str:
    return f"  {label:<34}" + "".join(f"{c:>16}" for c in cells)


def report(levels: list[Level], server: Server, seconds: float) -> None:
    print()
    print(_row("sessions at once", [str(lv.sessions) for lv in levels]))
    print(_row("opening them all (s)", [f"{lv.open_s:.1f}" for lv in levels]))
    print(_row("clicking window (s)", [f"{lv.wall_s:.1f}" for lv in levels]))
    print(_row("page visits", [str(len(lv.ok)) for lv in levels]))
    print(_row("errors", [str(len(lv.errors)) for lv in levels]))
    print(_row("median per visit (s)", [f"{statistics.median(lv.ok):.2f}" if lv.ok else "-" for lv in levels]))
    print(_row("p90 per visit (s)", [f"{_pct(lv.ok, 0.9):.2f}" for lv in levels]))
    for link in PAGES:
        cells = []
        for lv in levels:
            mine = [v.seconds for v in lv.visits if v.page == link and v.error is None]
            cells.append(f"{statistics.median(mine):.2f} / {_pct(mine, 0.9):.2f}" if mine else "-")
        print(_row(f"  {link}: median / p90 (s)", cells))
    per = [lv.server_cpu_s / len(lv.ok) if lv.ok else float("nan") for lv in levels]
    print(_row("server CPU per visit (s)", [f"{p:.3f}" for p in per]))
    print(_row("server CPU (cores busy)", [f"{lv.server_cpu_s / lv.wall_s:.2f}" for lv in levels]))
    print(_row("browsers + driver CPU per visit (s)",
               [f"{lv.client_cpu_s / len(lv.ok):.3f}" if lv.ok else "-" for lv in levels]))
    print(_row("browsers + driver CPU (cores busy)", [f"{lv.client_cpu_s / lv.wall_s:.2f}" for lv in levels]))
    print(_row("other processes (cores busy)", [f"{lv.others_cpu_s / lv.wall_s:.2f}" for lv in levels]))
    print(_row("server RSS MB start / end / max", [
        f"{lv.rss[0][1]:.0f}/{lv.rss[-1][1]:.0f}/{max(m for _, m in lv.rss):.0f}" for lv in levels]))
    print(_row("load average 1/5 min at end", [f"{lv.load_end[0]:.2f} / {lv.load_end[1]:.2f}" for lv in levels]))
    if seconds >= 120:  # a long run: how memory moved along the way
        for lv in levels:
            step = max(1, len(lv.rss) // 10)
            trail = ", ".join(f"{t / 60:.0f} min {m:.0f}" for t, m in lv.rss[::step] + lv.rss[-1:])
            print(f"  server RSS MB over the {lv.sessions}-session level: {trail}")
    print(f"  server peak RSS since start (VmHWM): {server.peak_rss_mb():.0f} MB")
    by_n = {lv.sessions: p for lv, p in zip(levels, per)}
    if 1 in by_n and 4 in by_n:
        ratio = by_n[4] / by_n[1]
        verdict = "within" if ratio <= 1.5 else "OVER"
        print(f"server CPU per visit, 4 sessions / 1 session: {ratio:.2f}x ({verdict} the 1.5x target)")
    for lv in levels:
        for v in lv.errors[:5]:
            print(f"  error ({lv.sessions} sessions, {v.page}): {v.error}")


# -- main ----------------------------------------------------------------------------------------

def _default_cache() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "fal-dashboard-bench"


async def _drive(server: Server, args: argparse.Namespace, chromium: str) -> list[Level]:
    from playwright.async_api import async_playwright

    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        try:
            t = time.monotonic()
            lap = await warm_up(browser, server, args.visit_timeout)
            print(f"warm-up lap, one session, cold caches ({time.monotonic() - t:.1f} s): "
                  + ", ".join(f"{v.page} {v.seconds:.2f} s" + (" (error)" if v.error else "") for v in lap))
            levels = []
            for n in args.sessions:
                print(f"{n} session(s) for {args.seconds:g} s ... (load average {os.getloadavg()[0]:.2f})",
                      flush=True)
                levels.append(await run_level(browser, server, n, args.seconds, args.visit_timeout))
            return levels
        finally:
            await browser.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=100_000, help="requests in the store")
    parser.add_argument("--big-batch", type=int, default=4000, help="requests in the newest batch")
    parser.add_argument("--sessions", default="1,4,8", help="comma-separated levels of concurrent sessions")
    parser.add_argument("--seconds", type=float, default=30.0, help="clicking time per level")
    parser.add_argument("--gc", choices=("on", "off"), default=None,
                        help="runner.postScriptGC for the server (default: .streamlit/config.toml)")
    parser.add_argument("--visit-timeout", type=float, default=60.0, help="longest wait for one page")
    parser.add_argument("--cache", type=Path, default=_default_cache(), help="where built stores are kept")
    parser.add_argument("--fresh", action="store_true", help="rebuild the store even if one is cached")
    args = parser.parse_args(argv)
    try:
        args.sessions = [int(n) for n in args.sessions.split(",")]
        if not args.sessions or min(args.sessions) < 1:
            raise ValueError
    except ValueError:
        parser.error(f"--sessions wants positive integers separated by commas, got {args.sessions!r}")
    chromium = shutil.which("chromium")
    if chromium is None:
        parser.error("chromium is not installed: apt-get install -y chromium (Debian's; Playwright "
                     "cannot download its own here)")

    data_dir = build_store(args.cache, args.rows, args.big_batch, fresh=args.fresh)
    with tempfile.TemporaryDirectory(prefix="load-") as tmp:
        server = Server(data_dir, Path(tmp), args.gc)
        try:
            started = server.wait_ready()
            gc = f"--runner.postScriptGC {args.gc}" if args.gc else "from .streamlit/config.toml"
            print(f"server pid {server.pid} at {server.url} ready in {started:.1f} s; postScriptGC {gc}; "
                  f"{os.cpu_count()} cores; load average {'/'.join(f'{x:.2f}' for x in os.getloadavg())}; "
                  f"RSS {server.rss_mb():.0f} MB")
            levels = asyncio.run(_drive(server, args, chromium))
            print(f"load: {args.rows:,} requests (newest batch {args.big_batch:,}), "
                  f"{args.seconds:g} s per level, postScriptGC {gc}")
            report(levels, server, args.seconds)
        except BaseException as e:
            if not isinstance(e, KeyboardInterrupt):
                print("streamlit log (tail):\n" + server.log_tail(), file=sys.stderr)
            raise
        finally:
            server.stop()
    return 1 if any(lv.errors for lv in levels) else 0


if __name__ == "__main__":
    sys.exit(main())
