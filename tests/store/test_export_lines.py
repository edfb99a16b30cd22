"""The stored export lines (`export_lines`, core/store/history.py): each final request's CSV text,
kept ready so an export only concatenates. What must hold: a stored line never outlives the cells
it was made from, whoever writes them (a store method, another process, SQL by hand); the store's
write methods store the lines when a request becomes final; lines of another format are never
used. The oracle is the same export built from the cells (no stored line at all)."""
from __future__ import annotations

import re

import pytest

from core import export
from core import values
from core.values import HistoryFilter, ImageMetrics
from core.store.history import _CELLS, EXPORT_LINES_VERSION


def _built(st) -> bytes:
    """The export with every line built from the cells."""
    st.db.execute("DELETE FROM export_lines")
    return export.to_csv_bytes(st)


def _lines(st, request_id: str) -> list[tuple]:
    return st.db.execute("SELECT idx, version FROM export_lines WHERE request_id = ? ORDER BY idx",
                         [request_id]).fetchall()


def _final_with_image(st, prompt: str = "a prompt"):
    rec = st.record_request(endpoint="fal-ai/flux/schnell", payload={"prompt": prompt, "seed": 1},
                            options={"subject": "Woman", "pose": "Standing"}, prompt=prompt, seed=1,
                            estimated_cost=0.003)
    st.mark_submitted(rec.id)
    st.mark_queued(rec.id, fal_request_id="fal-1", status_url=None, response_url=None, cancel_url=None)
    st.add_result_image(rec.id, idx=0, fal_url="https://v3.fal.media/x.png", storage_backend="local",
                        storage_path=f"results/{rec.id}/0.png", sha256="0" * 64, width=1024, height=768,
                        content_type="image/png", size_bytes=1000, nsfw=False)
    st.mark_completed(rec.id, response={"images": []}, inference_time_s=1.25)
    return rec


def test_the_write_methods_store_the_lines_when_a_request_becomes_final(st):
    """Planned, sent, running: nothing stored (it changes); completed, failed, cancelled, dry run:
    stored, at the current version, equal to the lines built from the cells."""
    rec = st.record_request(endpoint="fal-ai/flux/schnell", payload={"prompt": "p"}, prompt="p")
    st.mark_submitted(rec.id)
    st.mark_queued(rec.id, fal_request_id="f", status_url=None, response_url=None, cancel_url=None)
    st.add_result_image(rec.id, idx=0, fal_url="u", storage_backend="local", storage_path="p", sha256=None,
                        width=1, height=1, content_type="image/png", size_bytes=1, nsfw=None)
    assert _lines(st, rec.id) == []
    st.mark_completed(rec.id, response={})
    assert _lines(st, rec.id) == [(0, EXPORT_LINES_VERSION)]
    failed = st.record_request(endpoint="fal-ai/flux/schnell", payload={"prompt": "q"}, prompt="q")
    st.mark_failed(failed.id, error_type="validation", error_message="=bad")
    cancelled = st.record_request(endpoint="fal-ai/flux/schnell", payload={"prompt": "r"}, prompt="r")
    st.mark_cancelled(cancelled.id)
    dry = st.record_request(endpoint="fal-ai/flux/schnell", payload={"prompt": "s"}, prompt="s", dry_run=True)
    st.mark_dry_run(dry.id)
    for r in (failed, cancelled, dry):
        assert _lines(st, r.id) == [(-1, EXPORT_LINES_VERSION)]
    stored = export.to_csv_bytes(st)
    assert b"'=bad" in stored
    assert stored == _built(st)


def test_a_second_image_and_new_metrics_replace_the_stored_lines(st):
    """Images written after the request is final (a resumed download, the metrics pass) are in
    the export at once: the lines are rewritten, not left as they were."""
    rec = _final_with_image(st)
    st.add_result_image(rec.id, idx=1, fal_url="https://v3.fal.media/y.png", storage_backend="local",
                        storage_path="results/y.png", sha256="1" * 64, width=512, height=512,
                        content_type="image/png", size_bytes=2000, nsfw=True)
    assert [idx for idx, _ in _lines(st, rec.id)] == [0, 1]
    image_id = st.result_images([rec.id])[rec.id][0].id
    st.save_image_metrics(ImageMetrics(image_id, rec.id, face_status="ok", face_distance=0.1 + 0.2,
                                       ssim=0.5, check_flags=("seed_mismatch",), metrics_at="2026-11-30"))
    assert len(_lines(st, rec.id)) == 2
    stored = export.to_csv_bytes(st)
    assert b"0.30000000000000004" in stored and b"seed_mismatch" in stored and b"512" in stored
    assert stored == _built(st)


def _exported_columns(alias: str) -> list[str]:
    return sorted({m for _, expr, _ in _CELLS for m in re.findall(rf"\b{alias}\.(\w+)", expr)})


def _new_value(table: str, column: str, kind: str):
    if column in ("options_json",):
        return '{"subject":"=changed","pose":"Sitting"}'
    if column == "payload_json":
        return '{"prompt":"changed, with a comma"}'
    if column == "reference_ids":
        return '["changed1","changed2"]'
    if column == "idx":
        return 7
    return {"INTEGER": 424242, "REAL": 0.1 + 0.7}.get(kind, f"-changed {column}")


_REFERENCES = {"batch_id", "group_id", "rerun_of"}


@pytest.mark.parametrize("table,alias", [("requests", "r"), ("result_images", "i")])
def test_a_cell_written_by_hand_is_never_exported_from_a_stale_line(st, table, alias):
    """Every column the export reads, changed by SQL outside the store's methods (another tool,
    a migration): the export shows the new value, byte for byte as if built from the cells. The
    triggers drop the stored lines; a column added to the export is covered here automatically."""
    types = {c.name: c.type for c in st.db[table].columns}
    columns = _exported_columns(alias)
    assert len(columns) >= (20 if table == "requests" else 15)
    for column in columns:
        if column == "id":
            continue   # the key: changing it is a new row, covered by the rows below
        rec = _final_with_image(st, prompt=f"prompt for {column}")
        assert _lines(st, rec.id), column
        before = export.to_csv_bytes(st)
        key = "id" if table == "requests" else "request_id"
        if st.engine == "postgres" and column in _REFERENCES:
            continue   # Postgres always checks a reference (SQLite's are switched off below)
        if st.engine == "sqlite":
            st.db.execute("PRAGMA foreign_keys = OFF")   # by hand: batch_id and the like to any text
        st.db.execute(f"UPDATE {table} SET {column} = ? WHERE {key} = ?",
                      [_new_value(table, column, types[column]), rec.id])
        if st.engine == "sqlite":
            st.db.execute("PRAGMA foreign_keys = ON")
        after = export.to_csv_bytes(st)
        assert after != before, column
        assert after == _built(st), column


def test_rows_inserted_or_deleted_by_hand_are_exported_as_they_are(st):
    rec = _final_with_image(st)
    st.db.execute("INSERT INTO result_images (id, request_id, idx, fal_url, created_at) VALUES (?, ?, 3, ?, ?)",
                  [values.new_id(), rec.id, "https://by.hand/3.png", values.now()])
    text = export.to_csv_bytes(st)
    assert b"https://by.hand/3.png" in text and text == _built(st)
    st.db.execute("DELETE FROM result_images WHERE request_id = ?", [rec.id])
    text = export.to_csv_bytes(st)
    assert b"v3.fal.media" not in text and text == _built(st)
    st.db.execute("DELETE FROM requests WHERE id = ?", [rec.id])
    assert st.db.execute("SELECT count(*) FROM export_lines").fetchone()[0] == 0


def test_lines_of_another_format_are_never_used_and_are_rewritten(st):
    """A change of the format (a new version) makes every stored line stale: the export builds
    those rows, then stores them at the current version for the next one."""
    rec = _final_with_image(st)
    st.db.execute("UPDATE export_lines SET version = 'older', head = 'GARBAGE', tail = 'GARBAGE'")
    text = export.to_csv_bytes(st)
    assert b"GARBAGE" not in text and rec.id.encode() in text
    assert _lines(st, rec.id) == [(0, EXPORT_LINES_VERSION)]
    assert text == _built(st)


def test_requests_written_without_lines_are_stored_by_the_export_or_refresh(st):
    """Final requests that never got their lines (written by hand, or before the lines existed)
    are built by the export and stored after it; `refresh_export_lines()` stores them all."""
    a, b = _final_with_image(st, "a"), _final_with_image(st, "b")
    st.db.execute("DELETE FROM export_lines")
    text = export.to_csv_bytes(st)
    assert _lines(st, a.id) and _lines(st, b.id)
    assert export.to_csv_bytes(st) == text
    st.db.execute("DELETE FROM export_lines")
    assert st.refresh_export_lines() == 2
    assert st.refresh_export_lines() == 0
    assert export.to_csv_bytes(st, HistoryFilter(text="a")) == export.to_csv_bytes(st, HistoryFilter(text="a"))


def test_an_upgraded_store_opens_at_once_and_its_first_export_stores_the_lines(settings):
    """A store from before the lines existed: opening it writes no line (the migration would hold
    the file lock for tens of seconds on a big store); the first export builds the final
    requests' lines, the same file as a store that had them, and keeps them for the next."""
    from core.store import open_store

    st = open_store(settings)
    rec = _final_with_image(st)
    pending = st.record_request(endpoint="fal-ai/flux/schnell", payload={"prompt": "p"}, prompt="p")
    expected = export.to_csv_bytes(st)
    st.db.execute("DROP TABLE export_lines")
    triggers = ("SELECT name FROM sqlite_master WHERE type = 'trigger'" if st.engine == "sqlite"
                else "SELECT tgname FROM pg_trigger WHERE NOT tgisinternal")
    for (name,) in [r for r in st.db.execute(triggers).fetchall() if r[0].startswith("export_lines_")]:
        st.db.execute(f"DROP TRIGGER {name}")
    st.db.execute("DELETE FROM _sqlite_migrations WHERE name = 'm017_export_lines'")
    st.close()
    again = open_store(settings)
    try:
        assert _lines(again, rec.id) == []
        assert export.to_csv_bytes(again) == expected
        assert _lines(again, rec.id) == [(0, EXPORT_LINES_VERSION)]
        assert _lines(again, pending.id) == []
    finally:
        again.close()


def test_a_refused_line_write_never_fails_the_write_that_made_the_request_final(st, monkeypatch):
    """The lines are a cache: when SQLite refuses them (a lock held too long, a full disk), the
    request is still completed, and the export builds its lines (then stores them)."""
    import sqlite3

    from core.store import history

    def refuse(db, request_ids):
        raise sqlite3.OperationalError("database is locked")

    monkeypatch.setattr(history, "write_export_lines", refuse)
    rec = _final_with_image(st)
    assert st.get_request(rec.id).status == "completed" and _lines(st, rec.id) == []
    text = export.to_csv_bytes(st)       # the refill after it is refused too: still a whole file
    assert rec.id.encode() in text
    monkeypatch.undo()
    assert export.to_csv_bytes(st) == text and _lines(st, rec.id)
