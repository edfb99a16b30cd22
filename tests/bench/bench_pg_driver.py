"""Benchmark for issue 19: which Postgres driver/query layer for the store (psycopg 3 with plain
SQL, or SQLAlchemy Core), measured beside today's SQLite on the same data.

    .venv/bin/python -m tests.bench.bench_pg_driver [--rows 100000] [--runs 7]

Starts a throwaway PostgreSQL cluster (tests/pg_cluster.py: as `postgres` when run as root) and a
SQLite file in one temp directory on the same disk, creates on both the same `requests` table
(27 of the project's columns, core/store/_schema.py, SQLite's REAL as `double precision`, INTEGER
as `bigint`), the same 11 indexes and the same two UPDATE triggers (batch_stamps, export_lines),
fills `--rows` rows (payload_json ~500 B, response_json ~1 KB on completed rows, 50 batches,
6 endpoints, every status; groups of 6 share a created_at, as a planned batch does), then times:

  a) a History page (SELECT * ... LIMIT 50 OFFSET 1000, rows as dicts) and its count;
     a') the same through a Core select() construct (built on every call, as app code does);
  b) `request_costs`: 7 columns of every row into named tuples;
  c) the export: every row's CSV columns (payload_json included) in chunks of 2,000
     (SQLite: fetchmany; psycopg: a named server-side cursor; SQLAlchemy: stream_results,
     a named cursor too, read with partitions(2000));
  d) 1,000 UPDATEs by primary key (the runner's status writes): each in its own transaction;
     all in one; all in one through executemany (psycopg pipelines it); and each in its own
     transaction with `synchronous_commit = off` (Postgres only: SQLite's WAL + synchronous=NORMAL,
     as the project runs it, does not fsync per commit either; Postgres's default does);
  e) connect + first query, in a process that has imported the driver (SQLAlchemy: create_engine
     too, its dialect set-up runs on the first connect).

Engines: SQLite via the stdlib sqlite3 with the project's PRAGMAs, autocommit + BEGIN IMMEDIATE;
psycopg 3 on one connection, autocommit with `conn.transaction()` for writes (the same shape as the
store's), server-side parameters, never prepared (`prepare_threshold=None`, what a transaction
pooler such as Supabase's port 6543 needs) and prepared on first use (`prepare_threshold=0`; the
default, 5, reaches the same state after five executions); SQLAlchemy Core 2 over the same psycopg
(`postgresql+psycopg`), text() with :named parameters, its default autobegin (a read ends with a
rollback), `with conn.begin()` for writes. The SQL is written once with `?` and translated.

Each engine and case runs in a fresh process (so peak RSS, VmHWM, is that case's and
the import cost shows apart), one warm-up run excluded, then median and best of `--runs`; every
engine's results are checked to be the same rows. Postgres gets VACUUM ANALYZE after the bulk
load (statistics and the visibility map for index-only counts; autovacuum would get there later);
SQLite gets no ANALYZE, as the project's store runs none. Loopback TCP with trust authentication:
a hosted Postgres adds network round trips, TLS and SCRAM to every figure, most to (d) and (e).
The machine is shared: the load average is printed beside every row; compare within one run.
"""
from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import os
import random
import re
import resource
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections import namedtuple
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
ENDPOINTS = ("fal-ai/flux/dev", "fal-ai/flux-pro/v1.1-ultra", "fal-ai/recraft-v3", "fal-ai/ideogram/v2",
             "fal-ai/stable-diffusion-v35-large", "fal-ai/flux/schnell")
STATUSES = (("completed", 70), ("failed", 9), ("cancelled", 5), ("planned", 6), ("dry_run", 4),
            ("queued", 3), ("running", 2), ("in_doubt", 1))
WORDS = ("portrait of a woman in soft window light, 85mm, shallow depth of field, freckles, linen shirt, "
         "golden hour, rim light, studio backdrop, film grain, natural skin texture, candid smile, "
         "overcast street, neon reflections, rain, wide angle, cinematic colour grade, editorial").split()
BATCHES = 50
# (name, SQLite type, Postgres type): the project's columns, a representative 27
COLUMNS = (
    ("id", "TEXT PRIMARY KEY", "text PRIMARY KEY"), ("batch_id", "TEXT", "text"), ("group_id", "TEXT", "text"),
    ("endpoint", "TEXT NOT NULL", "text NOT NULL"), ("prompt", "TEXT", "text"), ("options_json", "TEXT", "text"),
    ("seed", "INTEGER", "bigint"), ("image_size", "TEXT", "text"), ("payload_json", "TEXT NOT NULL", "text NOT NULL"),
    ("payload_hash", "TEXT NOT NULL", "text NOT NULL"), ("status", "TEXT NOT NULL", "text NOT NULL"),
    ("dry_run", "INTEGER DEFAULT 0", "bigint DEFAULT 0"), ("fal_request_id", "TEXT", "text"),
    ("created_at", "TEXT NOT NULL", "text NOT NULL"), ("submitted_at", "TEXT", "text"), ("completed_at", "TEXT", "text"),
    ("queue_time_s", "REAL", "double precision"), ("inference_time_s", "REAL", "double precision"),
    ("total_time_s", "REAL", "double precision"), ("http_status", "INTEGER", "bigint"),
    ("error_message", "TEXT", "text"), ("estimated_cost", "REAL", "double precision"),
    ("response_json", "TEXT", "text"), ("created_by", "TEXT", "text"), ("attempts", "INTEGER DEFAULT 0", "bigint DEFAULT 0"),
    ("contender_id", "TEXT", "text"), ("billed_cost", "REAL", "double precision"),
)
NAMES = [c[0] for c in COLUMNS]
INDEXES = (("batch_id", "status"), ("endpoint", "created_at"), ("status", "created_at"), ("created_at",),
           ("group_id",), ("fal_request_id",), ("submitted_at",), ("batch_id", "created_at"),
           ("created_at", "id", "contender_id"), ("completed_at",), ("batch_id", "contender_id"))
SQLITE_TRIGGERS = (
    "CREATE TRIGGER stamp_requests_update AFTER UPDATE ON requests BEGIN INSERT INTO batch_stamps (batch_id, stamp) "
    "VALUES (coalesce(OLD.batch_id, ''), 1) ON CONFLICT (batch_id) DO UPDATE SET stamp = stamp + 1; "
    "INSERT INTO batch_stamps (batch_id, stamp) VALUES (coalesce(NEW.batch_id, ''), 1) "
    "ON CONFLICT (batch_id) DO UPDATE SET stamp = stamp + 1; END",
    "CREATE TRIGGER export_lines_requests_update AFTER UPDATE ON requests BEGIN "
    "DELETE FROM export_lines WHERE request_id = OLD.id OR request_id = NEW.id; END",
)
# Postgres: a trigger calls a function; `stamp + 1` must name its table (ambiguous with EXCLUDED)
PG_TRIGGERS = (
    "CREATE FUNCTION requests_updated() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
    "INSERT INTO batch_stamps (batch_id, stamp) VALUES (coalesce(OLD.batch_id, ''), 1) "
    "ON CONFLICT (batch_id) DO UPDATE SET stamp = batch_stamps.stamp + 1; "
    "INSERT INTO batch_stamps (batch_id, stamp) VALUES (coalesce(NEW.batch_id, ''), 1) "
    "ON CONFLICT (batch_id) DO UPDATE SET stamp = batch_stamps.stamp + 1; "
    "DELETE FROM export_lines WHERE request_id = OLD.id OR request_id = NEW.id; RETURN NULL; END $$",
    "CREATE TRIGGER requests_updated AFTER UPDATE ON requests FOR EACH ROW EXECUTE FUNCTION requests_updated()",
)
SIDE_TABLES = ("CREATE TABLE batch_stamps (batch_id TEXT PRIMARY KEY, stamp INTEGER NOT NULL)",
               "CREATE TABLE export_lines (request_id TEXT NOT NULL, idx INTEGER NOT NULL, version TEXT NOT NULL, "
               "head TEXT NOT NULL, tail TEXT NOT NULL, PRIMARY KEY (request_id, version, idx))")

PAGE_SQL = ("SELECT * FROM requests WHERE endpoint = ? AND status = ? "
            "ORDER BY created_at DESC, id DESC LIMIT ? OFFSET ?")
COUNT_SQL = "SELECT count(*) FROM requests WHERE endpoint = ? AND status = ?"
PAGE_ARGS = (ENDPOINTS[0], "completed", 50, 1000)
# the store orders by (created_at, rowid); Postgres has no rowid, so both order by id here
COSTS_SQL = ("SELECT id, endpoint, status, queue_time_s, inference_time_s, total_time_s, estimated_cost "
             "FROM requests ORDER BY created_at, id")
EXPORT_SQL = ("SELECT id, batch_id, endpoint, status, created_at, completed_at, prompt, seed, image_size, "
              "queue_time_s, inference_time_s, total_time_s, estimated_cost, error_message, created_by, "
              "contender_id, payload_json FROM requests ORDER BY created_at DESC, id DESC")
UPDATE_SQL = "UPDATE requests SET status = ?, completed_at = ?, total_time_s = ? WHERE id = ?"
FIRST_SQL = "SELECT count(*) FROM requests WHERE batch_id = ?"
CHUNK = 2000
Cost = namedtuple("Cost", "id endpoint status queue_time_s inference_time_s total_time_s estimated_cost")


def row_id(i: int) -> str:
    return hashlib.md5(f"request-{i}".encode()).hexdigest()   # 32 hex digits, like new_id()


def make_row(i: int, n: int) -> tuple:
    """Row `i` of `n`, the same on every call (its own seeded generator)."""
    rnd = random.Random(i)
    group, endpoint = divmod(i, len(ENDPOINTS))
    batch = min(BATCHES - 1, i * BATCHES // n)
    created = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc) + dt.timedelta(seconds=group * 97)
    status = rnd.choices([s for s, _ in STATUSES], [w for _, w in STATUSES])[0]
    prompt = " ".join(rnd.choice(WORDS) for _ in range(rnd.randint(30, 45)))
    seed, size = rnd.getrandbits(31), rnd.choice(("square_hd", "portrait_16_9", "landscape_4_3"))
    options = json.dumps({"num_inference_steps": 28, "guidance_scale": 3.5})
    payload = json.dumps({"prompt": prompt, "image_size": size, "seed": seed, "num_images": 1,
                          "num_inference_steps": 28, "guidance_scale": 3.5, "enable_safety_checker": False,
                          "output_format": "png", "sync_mode": False,
                          "image_url": f"https://refs.example.supabase.co/storage/v1/object/sign/references/"
                                       f"{rnd.getrandbits(128):032x}.jpg"})
    done = status in ("completed", "failed")
    q, inf = (round(rnd.uniform(0.1, 30), 3), round(rnd.uniform(1, 20), 3)) if done else (None, None)
    stamp = lambda s: (created + dt.timedelta(seconds=s)).isoformat(timespec="microseconds")  # noqa: E731
    response = None
    if status == "completed":
        files = [{"url": f"https://v3.fal.media/files/{rnd.choice(WORDS)}/{rnd.getrandbits(96):024x}.png",
                  "width": 1024, "height": 1024, "content_type": "image/png", "file_size": rnd.randint(10**5, 10**6)}
                 for _ in range(3)]
        response = json.dumps({"images": files, "timings": {"inference": inf}, "seed": seed,
                               "has_nsfw_concepts": [False] * 3, "prompt": prompt,
                               "request_id": f"{rnd.getrandbits(128):032x}"})
    return (row_id(i), f"batch-{batch:02d}", f"group-{group}", ENDPOINTS[endpoint], prompt, options, seed, size,
            payload, hashlib.sha256(payload.encode()).hexdigest(), status, int(status == "dry_run"),
            f"{rnd.getrandbits(128):032x}" if done else None, stamp(0), stamp(1) if done else None,
            stamp(2 + q + inf) if done else None, q, inf, (q + inf + 0.4) if done else None,
            200 if status == "completed" else (500 if status == "failed" else None),
            "fal answered 500: internal error" if status == "failed" else None,
            round(rnd.uniform(0.003, 0.06), 4), response, rnd.choice(("ana", "ben", "chloe", None)), int(done),
            f"{endpoint:02d}{'0' * 30}", None)


def update_ids(n: int) -> list[str]:
    """1,000 completed requests spread over the table (the UPDATEs keep them completed)."""
    found = [i for i in range(0, n, 7) if make_row(i, n)[10] == "completed"]
    return [row_id(i) for i in found[:: max(1, len(found) // 1000)][:1000]]


def qmark(sql: str, style: str) -> str:
    """The store's `?` SQL in a driver's style: psycopg's %s, SQLAlchemy text()'s :p0..."""
    if style == "qmark":
        return sql
    if style == "format":
        return sql.replace("%", "%%").replace("?", "%s")
    count = iter(range(sql.count("?")))
    return re.sub(r"\?", lambda m: f":p{next(count)}", sql)


def named(args) -> dict:
    return {f"p{k}": v for k, v in enumerate(args)}


# ---------------------------------------------------------------- set-up (in the parent process)

def load(dsn: str, sqlite_path: Path, n: int) -> dict[str, float]:
    import psycopg
    took = {}
    lite = sqlite3.connect(sqlite_path, isolation_level=None)
    lite.execute("PRAGMA journal_mode = WAL")
    lite.execute("PRAGMA synchronous = NORMAL")
    lite.execute(f"CREATE TABLE requests ({', '.join(f'{c} {t}' for c, t, _ in COLUMNS)})")
    pg = psycopg.connect(dsn, autocommit=True)
    pg.execute(f"CREATE TABLE requests ({', '.join(f'{c} {t}' for c, _, t in COLUMNS)})")
    for sql in SIDE_TABLES:
        lite.execute(sql)
        pg.execute(sql)
    gen = sqlite_s = pg_s = 0.0
    insert = f"INSERT INTO requests VALUES ({', '.join('?' * len(COLUMNS))})"
    for start in range(0, n, 5000):
        t = time.perf_counter()
        chunk = [make_row(i, n) for i in range(start, min(n, start + 5000))]
        gen += time.perf_counter() - t
        t = time.perf_counter()
        lite.execute("BEGIN IMMEDIATE")
        lite.executemany(insert, chunk)
        lite.execute("COMMIT")
        sqlite_s += time.perf_counter() - t
        t = time.perf_counter()
        with pg.cursor() as cur, cur.copy(f"COPY requests ({', '.join(NAMES)}) FROM STDIN") as copy:
            for row in chunk:
                copy.write_row(row)
        pg_s += time.perf_counter() - t
    took["generate rows"] = gen
    took["SQLite INSERT (executemany)"], took["Postgres COPY"] = sqlite_s, pg_s
    for engine, conn in (("SQLite", lite), ("Postgres", pg)):
        t = time.perf_counter()
        for cols in INDEXES:
            conn.execute(f"CREATE INDEX idx_requests_{'_'.join(cols)} ON requests ({', '.join(cols)})")
        for sql in SQLITE_TRIGGERS if conn is lite else PG_TRIGGERS:
            conn.execute(sql)
        took[f"{engine} indexes + triggers"] = time.perf_counter() - t
    t = time.perf_counter()
    pg.execute("VACUUM ANALYZE requests")
    took["Postgres VACUUM ANALYZE"] = time.perf_counter() - t
    lite.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    took["plans"] = {
        "SQLite": [" / ".join(r[3] for r in lite.execute(f"EXPLAIN QUERY PLAN {sql}", args))
                   for sql, args in ((PAGE_SQL, PAGE_ARGS), (COUNT_SQL, PAGE_ARGS[:2]))],
        "Postgres": [" / ".join(r[0].strip().removeprefix("->  ") for r in pg.execute(
            f"EXPLAIN (COSTS OFF) {qmark(sql, 'format')}", args)) for sql, args in
            ((PAGE_SQL, PAGE_ARGS), (COUNT_SQL, PAGE_ARGS[:2]))]}
    took["sizes"] = (sqlite_path.stat().st_size / 2**20,
                     pg.execute("SELECT pg_total_relation_size('requests')").fetchone()[0] / 2**20,
                     *pg.execute("SELECT avg(length(payload_json)), avg(length(response_json)) FROM requests").fetchone())
    lite.close()
    pg.close()
    return took


# ---------------------------------------------------------------- the cases (in a worker process)

class Engine:
    """One engine's way of running the store's `?` SQL."""

    def __init__(self, kind: str, dsn: str, sqlite_path: str):
        self.kind, self.dsn, self.sqlite_path = kind, dsn, sqlite_path
        t = time.perf_counter()
        if kind == "sqlite":
            self.style = "qmark"
        elif kind.startswith("psycopg"):
            import psycopg  # noqa: F401
            self.style = "format"
        else:
            import sqlalchemy  # noqa: F401
            self.style = "named"
        self.import_s = time.perf_counter() - t
        self.sql = {name: qmark(sql, self.style) for name, sql in globals().items() if name.endswith("_SQL")}
        self.conn = None

    def connect(self):
        if self.kind == "sqlite":   # as core/store/db.py opens the file
            conn = sqlite3.connect(self.sqlite_path, timeout=30, check_same_thread=False, isolation_level=None)
            for pragma in ("busy_timeout = 30000", "journal_mode = WAL", "recursive_triggers = on",
                           "synchronous = NORMAL", "foreign_keys = ON"):
                conn.execute(f"PRAGMA {pragma}")
            return conn
        if self.kind.startswith("psycopg"):
            import psycopg
            conn = psycopg.connect(self.dsn, autocommit=True)
            conn.prepare_threshold = 0 if self.kind == "psycopg-prep" else None
            return conn
        import sqlalchemy
        self.sa_engine = sqlalchemy.create_engine(self.dsn.replace("postgresql://", "postgresql+psycopg://"))
        return self.sa_engine.connect()

    def close(self, conn):
        conn.close()
        if self.kind == "sa-text":
            self.sa_engine.dispose()

    def rows(self, conn, name: str, args=()):
        """(column names, an iterator of tuples) of one statement."""
        if self.kind == "sa-text":
            from sqlalchemy import text
            result = conn.execute(text(self.sql[name]), named(args))
            return list(result.keys()), result
        cur = conn.execute(self.sql[name], args)
        return [d[0] for d in cur.description], cur

    def end_read(self, conn):
        if self.kind == "sa-text":
            conn.rollback()

    def transaction(self, conn):
        if self.kind == "sqlite":
            return _SqliteTransaction(conn)
        return conn.transaction() if self.kind.startswith("psycopg") else conn.begin()

    def write(self, conn, name: str, args):
        if self.kind == "sa-text":
            from sqlalchemy import text
            conn.execute(text(self.sql[name]), named(args))
        else:
            conn.execute(self.sql[name], args)

    def write_many(self, conn, name: str, many):
        if self.kind == "sa-text":
            from sqlalchemy import text
            conn.execute(text(self.sql[name]), [named(a) for a in many])
        elif self.kind == "sqlite":
            conn.executemany(self.sql[name], many)
        else:
            with conn.cursor() as cur:
                cur.executemany(self.sql[name], many)


class _SqliteTransaction:
    def __init__(self, conn):
        self.conn = conn

    def __enter__(self):
        self.conn.execute("BEGIN IMMEDIATE")

    def __exit__(self, kind, *_):
        self.conn.execute("ROLLBACK" if kind else "COMMIT")


def case_page(e: Engine, conn):
    keys, rows = e.rows(conn, "PAGE_SQL", PAGE_ARGS)
    page = [dict(zip(keys, row)) for row in rows]   # as the store's _rows
    total = next(iter(e.rows(conn, "COUNT_SQL", PAGE_ARGS[:2])[1]))[0]
    e.end_read(conn)
    return [r["id"] for r in page], total


def case_page_core(e: Engine, conn):
    from sqlalchemy import func, select
    t = _core_table()
    where = (t.c.endpoint == PAGE_ARGS[0], t.c.status == PAGE_ARGS[1])
    result = conn.execute(select(t).where(*where).order_by(t.c.created_at.desc(), t.c.id.desc())
                          .limit(PAGE_ARGS[2]).offset(PAGE_ARGS[3]))
    keys = list(result.keys())
    page = [dict(zip(keys, row)) for row in result]
    total = conn.execute(select(func.count()).select_from(t).where(*where)).scalar_one()
    conn.rollback()
    return [r["id"] for r in page], total


_TABLE = []


def _core_table():
    if not _TABLE:
        from sqlalchemy import BigInteger, Column, Float, MetaData, Table, Text
        types = {"text": Text, "bigint": BigInteger, "double precision": Float}
        _TABLE.append(Table("requests", MetaData(), *(
            Column(c, types[" ".join(t.split()[:2]) if t.startswith("double") else t.split()[0]](),
                   primary_key=c == "id") for c, _, t in COLUMNS)))
    return _TABLE[0]


def case_costs(e: Engine, conn):
    costs = [Cost._make(row) for row in e.rows(conn, "COSTS_SQL")[1]]
    e.end_read(conn)
    return len(costs), round(sum(c.estimated_cost for c in costs), 4), costs[-1].id


def case_export(e: Engine, conn):
    n, size, last = 0, 0, None
    if e.kind == "sqlite":
        cur = conn.execute(EXPORT_SQL)
        chunks = iter(lambda: cur.fetchmany(CHUNK), [])
        for chunk in chunks:
            n, size, last = n + len(chunk), size + sum(len(r[16]) for r in chunk), chunk[-1][0]
        return n, size, last
    if e.kind.startswith("psycopg"):
        with conn.transaction(), conn.cursor(name="export") as cur:
            cur.itersize = CHUNK
            cur.execute(e.sql["EXPORT_SQL"])
            while chunk := cur.fetchmany(CHUNK):
                n, size, last = n + len(chunk), size + sum(len(r[16]) for r in chunk), chunk[-1][0]
        return n, size, last
    from sqlalchemy import text
    # stream_results: a named cursor; partitions(CHUNK) fetches CHUNK at a time. (With the
    # `yield_per` execution option instead, SQLAlchemy 2.1.9's partitions() gave all rows at once.)
    result = conn.execute(text(e.sql["EXPORT_SQL"]), execution_options={"stream_results": True})
    for chunk in result.partitions(CHUNK):
        n, size, last = n + len(chunk), size + sum(len(r[16]) for r in chunk), chunk[-1][0]
    conn.rollback()
    return n, size, last


def _updates(e: Engine, run: int):
    stamp = dt.datetime(2026, 6, 1, tzinfo=dt.timezone.utc) + dt.timedelta(minutes=run)
    return [("completed", stamp.isoformat(timespec="microseconds"), 10.0 + k / 1000 + run, rid)
            for k, rid in enumerate(e.update_ids)]


def case_update_each(e: Engine, conn, run: int = 0):
    for args in _updates(e, run):
        with e.transaction(conn):
            e.write(conn, "UPDATE_SQL", args)
    return len(e.update_ids)


def case_update_one(e: Engine, conn, run: int = 0):
    with e.transaction(conn):
        for args in _updates(e, run):
            e.write(conn, "UPDATE_SQL", args)
    return len(e.update_ids)


def case_update_many(e: Engine, conn, run: int = 0):
    with e.transaction(conn):
        e.write_many(conn, "UPDATE_SQL", _updates(e, run))
    return len(e.update_ids)


def case_connect(e: Engine, _conn):
    conn = e.connect()
    count = next(iter(e.rows(conn, "FIRST_SQL", ("batch-07",))[1]))[0]
    e.close(conn)
    return count


CASES = {   # name -> (label, function, engines it runs on)
    "page": ("a) History page + count", case_page, "all"),
    "page_core": ("a') same, Core select()", case_page_core, ("sa-text",)),
    "costs": ("b) request_costs, all rows", case_costs, "all"),
    "export": (f"c) export stream, {CHUNK}/chunk", case_export, "all"),
    "update_each": ("d1) 1000 UPDATEs, 1 txn each", case_update_each, "all"),
    "update_async": ("d2) d1, synchronous_commit=off", case_update_each, ("psycopg", "psycopg-prep", "sa-text")),
    "update_one": ("d3) 1000 UPDATEs, 1 txn", case_update_one, "all"),
    "update_many": ("d4) d3 as executemany", case_update_many, "all"),
    "connect": ("e) connect + first query", case_connect, "all"),
}
ENGINES = {"sqlite": "SQLite", "psycopg": "psycopg", "psycopg-prep": "psycopg prep.", "sa-text": "SQLAlchemy"}


def peak_rss_kb() -> int:
    """This process's peak RSS: VmHWM, since getrusage's ru_maxrss in a child started by
    subprocess counts the parent's RSS from before the exec."""
    try:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))
    except (OSError, StopIteration):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def worker(kind: str, case: str, dsn: str, sqlite_path: str, runs: int, n: int) -> None:
    e = Engine(kind, dsn, sqlite_path)
    e.update_ids = update_ids(n) if case.startswith("update") else []
    conn = None if case == "connect" else e.connect()
    if case == "update_async":
        if kind == "sa-text":
            from sqlalchemy import text
            conn.execute(text("SET synchronous_commit = off"))
            conn.commit()
        else:
            conn.execute("SET synchronous_commit = off")
    base_kb = peak_rss_kb()
    fn = CASES[case][1]
    writes = case.startswith("update")
    check = fn(e, conn, 0) if writes else fn(e, conn)   # warm-up, not counted
    times = []
    for run in range(1, runs + 1):
        t = time.perf_counter()
        got = fn(e, conn, run) if writes else fn(e, conn)
        times.append(time.perf_counter() - t)
        assert got == check, (kind, case, "gave different results between runs")
    print(json.dumps({"times": times, "check": repr(check), "import_s": e.import_s, "base_kb": base_kb,
                      "peak_kb": peak_rss_kb()}))


# ---------------------------------------------------------------- the table (in the parent)

def run_worker(kind: str, case: str, dsn: str, sqlite_path: Path, runs: int, n: int) -> dict:
    done = subprocess.run([sys.executable, "-m", "tests.bench.bench_pg_driver", "--worker", kind, case,
                           "--dsn", dsn, "--sqlite", str(sqlite_path), "--runs", str(runs), "--rows", str(n)],
                          cwd=ROOT, capture_output=True, text=True, timeout=1800)
    if done.returncode:
        raise RuntimeError(f"{kind} {case} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f}" if seconds < 10 else f"{seconds * 1000:.0f}"


def measure(dsn: str, sqlite_path: Path, runs: int, n: int) -> None:
    width = 17
    print(f"\n{'case (ms: median / best of ' + str(runs) + ')':<33}" + "".join(f"{v:>{width}}" for v in ENGINES.values())
          + "   load1")
    imports, peaks, sa_page = {k: [] for k in ENGINES}, {k: {} for k in ENGINES}, None
    for case, (label, _, engines) in CASES.items():
        load1 = os.getloadavg()[0]
        cells, checks = [], {}
        for kind in ENGINES:
            if engines != "all" and kind not in engines:
                cells.append("–")
                continue
            got = run_worker(kind, case, dsn, sqlite_path, runs, n)
            checks[kind] = got["check"]
            imports[kind].append(got["import_s"])
            peaks[kind][case] = (got["peak_kb"] / 1024, (got["peak_kb"] - got["base_kb"]) / 1024)
            cells.append(f"{ms(statistics.median(got['times']))} / {ms(min(got['times']))}")
        if case == "page":
            sa_page = checks["sa-text"]
        elif case == "page_core":   # Core's select() must give the page text() gave
            checks = {"text()": sa_page, "select()": checks["sa-text"]}
        if len(set(checks.values())) > 1:
            print(f"  !! {case}: engines disagree: {checks}")
        print(f"{label:<33}" + "".join(f"{c:>{width}}" for c in cells) + f"   {load1:.2f}", flush=True)
    print(f"{'import driver (median, ms)':<33}" + "".join(
        f"{ms(statistics.median(imports[k])) if imports[k] else '':>{width}}" for k in ENGINES))
    for case, label in (("costs", "b) peak RSS MB (+ over connect)"), ("export", "c) peak RSS MB (+ over connect)")):
        print(f"{label:<33}" + "".join(f"{'%.0f (+%.0f)' % peaks[k][case]:>{width}}" for k in ENGINES))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--worker", nargs=2, metavar=("ENGINE", "CASE"), help=argparse.SUPPRESS)
    parser.add_argument("--dsn", help=argparse.SUPPRESS)
    parser.add_argument("--sqlite", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(*args.worker, args.dsn, args.sqlite, args.runs, args.rows)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))   # so the cluster is stopped and removed
    import psycopg
    import sqlalchemy

    from tests.pg_cluster import pg_cluster
    print(f"bench_pg_driver: {args.rows:,} rows; Python {sys.version.split()[0]}, SQLite {sqlite3.sqlite_version}, "
          f"psycopg {psycopg.__version__} (libpq {psycopg.pq.version() // 10000}, {psycopg.pq.__impl__}), "
          f"SQLAlchemy {sqlalchemy.__version__}; {os.cpu_count()} cores")
    with tempfile.TemporaryDirectory(prefix="bench-pg-driver-") as tmp, pg_cluster() as dsn:
        with psycopg.connect(dsn) as c:
            print(c.execute("SELECT version()").fetchone()[0].split(" on ")[0] + ", settings: " + ", ".join(
                f"{k}={c.execute(f'SHOW {k}').fetchone()[0]}" for k in
                ("shared_buffers", "work_mem", "synchronous_commit", "fsync", "lc_collate")))
        sqlite_path = Path(tmp) / "store.db"
        took = load(dsn, sqlite_path, args.rows)
        lite_mb, pg_mb, payload, response = took.pop("sizes")
        for engine, (page, count) in took.pop("plans").items():
            print(f"plan, {engine}: page: {page}; count: {count}")
        print(f"load: " + ", ".join(f"{k} {v:.1f} s" for k, v in took.items()))
        print(f"data: payload_json {payload:.0f} B, response_json {response:.0f} B on average; SQLite file "
              f"{lite_mb:.0f} MB, Postgres requests + indexes + TOAST {pg_mb:.0f} MB")
        before = os.getloadavg()
        print("load average before: %.2f %.2f %.2f" % before)
        measure(dsn, sqlite_path, args.runs, args.rows)
        print("load average after:  %.2f %.2f %.2f" % os.getloadavg())


if __name__ == "__main__":
    main()
