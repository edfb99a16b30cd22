"""The store's schema comes from named migrations, blank -> latest, and is idempotent."""
from core.store import db


def test_blank_to_latest_applies_every_migration_once(tmp_path):
    path = tmp_path / "store.db"
    d = db.connect(path)
    applied = [m.name for m in db.MIGRATIONS.applied(d)]
    assert applied == [m.name for m in db.MIGRATIONS._migrations]
    assert {"reference_photos", "batches", "groups", "requests", "result_images"} <= set(d.table_names())
    assert d.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    # a second connection applies nothing again
    d2 = db.connect(path)
    assert [m.name for m in db.MIGRATIONS.applied(d2)] == applied


def test_processes_opening_a_fresh_store_at_once_never_see_database_locked(tmp_path):
    """Two runners (or a runner and the dashboard) may open a new data dir at the same moment:
    switching to WAL and migrating must be serialised, not fail with "database is locked"."""
    import subprocess
    import sys

    code = ("import sys; from core.store import db; d = db.connect(sys.argv[1]); "
            "print(len(db.MIGRATIONS.applied(d)))")
    for attempt in range(4):
        path = tmp_path / f"fresh{attempt}" / "dashboard.db"
        procs = [subprocess.Popen([sys.executable, "-c", code, str(path)], stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True) for _ in range(4)]
        results = [p.communicate(timeout=60) for p in procs]
        for p, (out, err) in zip(procs, results):
            assert p.returncode == 0, err
            assert int(out) == len(db.MIGRATIONS._migrations)
