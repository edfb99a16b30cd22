"""The columnar export writes the same file as the former row-by-row export (tests/export/_legacy.py):
same columns, same neutralised cells, same numbers, byte for byte, on a fixture that holds every
kind of cell a user has: formula-like text in every text column, plain numbers typed as text,
awkward floats, nulls, booleans, several images per request, data: URIs slipped in by hand,
reference ids, metrics, ties on created_at, and the history filters."""
from __future__ import annotations

import csv
import io

import pytest

from core import export
from core.values import HistoryFilter
from core.catalog.payloads import canonical_json
from tests.export._legacy import legacy_csv_bytes

SCHNELL = "fal-ai/flux/schnell"
EDIT = "fal-ai/flux-2/lora/edit"
TRICKY_TEXT = ["=1+1", "+SUM(A1)", "-cmd|' /C calc'!A0", "@x", "\tTab", "\rCR", "-5", "+0.25", "-.5", "-5.",
               "-", "+", "-٣", "-1e5", "Ünïcode, \"quoted\"\nnew line", "", " =spaced", "plain"]
FLOATS = [0.042, 0.1 + 0.2, 1e-05, 1e16, 123456.789, -1.5, 0.0, 3.0, None, -0.0, 1e15, 2.5e-4, float("inf")]


@pytest.fixture
def fixture_store(st):
    """About 40 requests covering the awkward cases, some sharing one created_at (ties)."""
    rows = []
    for i in range(40):
        text = TRICKY_TEXT[i % len(TRICKY_TEXT)]
        options = {"subject": text, "pose": "Standing", "lighting": TRICKY_TEXT[(i + 3) % len(TRICKY_TEXT)],
                   "extra": "-7" if i % 5 == 0 else None}
        if i % 7 == 0:
            options["angle"] = "Low angle"
        rec = st.record_request(endpoint=EDIT if i % 2 else SCHNELL,
                                payload={"prompt": text or "p", "seed": i, "image_urls": ["reference://r1"]},
                                options={k: v for k, v in options.items() if v is not None},
                                prompt=text, seed=-i if i % 4 == 0 else 2**31 + i,
                                estimated_cost=FLOATS[i % len(FLOATS)])
        rows.append(rec)
        if i % 6 == 5:
            st.mark_failed(rec.id, error_type="validation", error_message=TRICKY_TEXT[(i + 1) % len(TRICKY_TEXT)])
            continue
        if i % 6 == 4:
            continue  # still planned: no image, no times
        st.mark_submitted(rec.id)
        st.mark_queued(rec.id, fal_request_id=f"fal-{i}", status_url=None, response_url=None, cancel_url=None)
        for idx in range(i % 4):
            st.add_result_image(rec.id, idx=idx, fal_url=f"https://v3.fal.media/{i}/{idx}.png",
                                storage_backend="local", storage_path=f"results/{rec.id}/{idx}.png",
                                sha256=f"{idx}" * 64, width=1024 + idx, height=768, content_type="image/png",
                                size_bytes=1000 + i, nsfw=[None, False, True][idx % 3])
        st.mark_completed(rec.id, response={"images": []}, inference_time_s=FLOATS[(i + 2) % len(FLOATS)])
    db = st.db
    # by hand, what the writers never produce but older rows may hold
    db.execute("UPDATE requests SET reference_ids = ? WHERE id = ?", ['["abc","def"]', rows[1].id])
    db.execute("UPDATE requests SET reference_ids = '' WHERE id = ?", [rows[2].id])
    db.execute("UPDATE requests SET options_json = NULL WHERE id = ?", [rows[3].id])
    db.execute("UPDATE requests SET options_json = '' WHERE id = ?", [rows[9].id])
    db.execute("UPDATE requests SET dry_run = NULL, http_status = 422, queue_time_s = ?, total_time_s = ? "
               "WHERE id = ?", [0.1 + 0.7, 2.675, rows[6].id])
    db.execute("UPDATE requests SET payload_json = ? WHERE id = ?",
               [canonical_json({"prompt": "p", "image_urls": ["data:image/png;base64," + "A" * 400]}), rows[7].id])
    db.execute("UPDATE result_images SET fal_url = ? WHERE request_id = ?",
               ["data:image/jpeg;base64," + "B" * 400, rows[7].id])
    db.execute("UPDATE result_images SET fal_url = ? WHERE request_id = ? AND idx = 0",
               ["see data:image/jpeg;base64," + "C" * 400 + " inline", rows[3].id])
    db.execute("UPDATE result_images SET face_status = 'ok', face_distance = ?, phash_distance = 12, "
               "ciede2000 = 7.5, ssim = 0.62, check_flags = 'seed_mismatch size_mismatch', "
               "metrics_at = '2026-11-24' WHERE request_id = ?", [0.1 + 0.2, rows[15].id])
    db.execute("UPDATE result_images SET face_status = '=bad', check_flags = '' WHERE request_id = ?",
               [rows[13].id])
    # cells the store writes itself, given what would need quoting or guarding (or only look so)
    db.execute("UPDATE requests SET fal_request_id = ? WHERE id = ?", ['-1,"x"', rows[8].id])
    db.execute("UPDATE requests SET error_type = ? WHERE id = ?", ["a|-b", rows[10].id])
    db.execute("UPDATE requests SET image_size = ? WHERE id = ?", ["@big\nsize", rows[12].id])
    db.execute("UPDATE result_images SET content_type = ? WHERE request_id = ?", ['image/png; q="1"', rows[14].id])
    # ties on created_at: the order falls back to the id, newest first
    db.execute("UPDATE requests SET created_at = ? WHERE id IN (?, ?, ?)",
               [rows[20].created_at, rows[21].id, rows[22].id, rows[23].id])
    db.execute("UPDATE requests SET rerun_of = ? WHERE id = ?", [rows[0].id, rows[30].id])
    return st, rows


def _cells(data: bytes, drop: tuple[str, ...] = ()) -> list[list[str]]:
    """The CSV's rows of cells, without the columns named in `drop` (or starting `param_`)."""
    rows = list(csv.reader(io.StringIO(data.decode("utf-8-sig"), newline="")))
    keep = [i for i, name in enumerate(rows[0]) if name not in drop and not name.startswith("param_")]
    return [[row[i] for i in keep] for row in rows]


@pytest.mark.parametrize("flt", [
    HistoryFilter(),
    HistoryFilter(endpoint=EDIT),
    HistoryFilter(status="completed"),
    HistoryFilter(status="failed"),
    HistoryFilter(text="sum"),
    HistoryFilter(text="nothing matches this"),
], ids=["all", "endpoint", "completed", "failed", "text", "empty"])
@pytest.mark.parametrize("lines", ["stored", "built"])
def test_the_columnar_export_writes_the_same_cells_as_the_former_one(fixture_store, tmp_path, flt, lines):
    """Cell for cell the former export, plus the contender columns it did not have (checked in
    tests/evaluation/test_contenders_compared.py); the same bytes on every path out, whether the
    final requests' lines are read as the store keeps them or built from the cells."""
    st, _ = fixture_store

    def ready() -> None:
        if lines == "stored":
            st.refresh_export_lines()
            assert st.refresh_export_lines() == 0
        else:
            st.db.execute("DELETE FROM export_lines")

    expected = legacy_csv_bytes(st, flt, chunk_size=7)
    ready()
    result = export.to_csv(st, tmp_path / "new.csv", flt, chunk_size=5)
    written = (tmp_path / "new.csv").read_bytes()
    assert _cells(written, drop=("contender_id", "contender")) == _cells(expected)
    assert written.startswith(b"\xef\xbb\xbf") and b"\r\n" in written
    ready()
    assert export.to_csv_bytes(st, flt) == written
    ready()
    assert b"".join(t.encode() for t in export.iter_csv(st, flt, chunk_size=3)) == written
    assert result.rows == len(_cells(expected)) - 1


def test_the_fixture_exercises_what_the_comparison_is_for(fixture_store, tmp_path):
    """The byte comparison only means something if the fixture has the cases: neutralised cells,
    plain numbers kept, abbreviated data: URIs, several images, empty image cells, metrics."""
    st, rows = fixture_store
    text = export.to_csv_bytes(st).decode("utf-8-sig")
    for cell in ("'=1+1", "'+SUM(A1)", "'-cmd|", "'@x", "'\tTab", ",-٣,", ",-5,", ",+0.25,", "'=bad",
                 "base64,…(", "0.30000000000000004", "1e-05", "1e+16", "True", "False", "abc def",
                 "seed_mismatch size_mismatch", "'-1,\"\"x\"\"", "a|-b", "'@big\nsize", "q=\"\"1\"\"", "inf"):
        assert cell in text, cell
    assert "AAAA" not in text and "BBBB" not in text and "CCCC" not in text
    result = export.to_csv(st, tmp_path / "x.csv")
    assert result.requests == len(rows)
