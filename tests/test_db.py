"""The store's schema comes from named migrations, blank -> latest, and is idempotent."""
from core import db


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
