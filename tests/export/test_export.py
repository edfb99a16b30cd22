"""CSV export: one row per request and image, options as columns, spreadsheet-safe cells, UTF-8
with BOM, no data: URIs, the history filters, streamed in chunks."""
from __future__ import annotations

import csv
import io

import pytest

from core import export
from core import store
from core.values import HistoryFilter
from core.catalog.payloads import canonical_json

SCHNELL = "fal-ai/flux/schnell"
EDIT = "fal-ai/flux-2/lora/edit"


@pytest.fixture
def d(st):
    return st


def _read(path) -> tuple[bytes, list[dict[str, str]]]:
    raw = path.read_bytes()
    text = raw.decode("utf-8-sig")
    return raw, list(csv.DictReader(io.StringIO(text, newline="")))


def _completed(d, *, images=2, prompt="A Woman model, photorealistic", options=None, endpoint=EDIT):
    rec = d.record_request(endpoint=endpoint, payload={"prompt": prompt, "seed": 5},
                               options=options or {"subject": "Woman", "pose": "Standing"}, seed=5,
                               estimated_cost=0.042)
    d.mark_submitted(rec.id)
    d.mark_queued(rec.id, fal_request_id="fal-" + rec.id[:6], status_url=None, response_url=None,
                      cancel_url=None)
    for i in range(images):
        d.add_result_image(rec.id, idx=i, fal_url=f"https://v3.fal.media/{i}.png", storage_backend="local",
                               storage_path=f"results/{rec.id}/{i}.png", sha256=str(i) * 64, width=1024,
                               height=768, content_type="image/png", size_bytes=1000 + i, nsfw=bool(i))
    d.mark_completed(rec.id, response={"images": []}, inference_time_s=1.25)
    return d.get_request(rec.id)


def test_one_row_per_image_and_options_as_columns(d, tmp_path):
    done = _completed(d, images=2)
    failed = d.record_request(endpoint=SCHNELL, payload={"prompt": "p"}, options={"lighting": "Studio"})
    d.mark_failed(failed.id, error_type="validation", error_message="image_size: bad")
    result = export.to_csv(d, tmp_path / "h.csv")
    assert (result.requests, result.rows) == (2, 3)
    raw, rows = _read(tmp_path / "h.csv")
    assert raw.startswith(b"\xef\xbb\xbf")                        # BOM: Excel reads UTF-8
    assert list(rows[0].keys()) == list(export.COLUMNS)
    mine = [r for r in rows if r["request_id"] == done.id]
    assert [r["image_idx"] for r in mine] == ["0", "1"]
    assert {r["prompt"] for r in mine} == {done.prompt}           # request columns repeated
    assert [r["image_nsfw"] for r in mine] == ["False", "True"]
    assert mine[0]["subject"] == "Woman" and mine[0]["pose"] == "Standing" and mine[0]["lighting"] == ""
    assert mine[0]["payload_hash"] == done.payload_hash and mine[0]["estimated_cost"] == "0.042"
    assert mine[0]["inference_time_s"] == "1.25" and mine[0]["seed"] == "5" and mine[0]["http_status"] == "200"
    (f,) = [r for r in rows if r["request_id"] == failed.id]
    assert (f["status"], f["error_type"], f["image_idx"], f["lighting"]) == ("failed", "validation", "", "Studio")


def test_formula_cells_are_neutralised_and_numbers_kept(d, tmp_path):
    """Text a spreadsheet would run as a formula gets a leading quote; real numbers stay numbers."""
    evil = {"subject": "=HYPERLINK(\"http://x\",\"y\")", "pose": "+1+1", "style": "-2+3", "lighting": "@SUM(A1)",
            "angle": "\tTab", "extra": "\rCR", "purpose": "-5"}
    rec = d.record_request(endpoint=SCHNELL, payload={"prompt": "=1+1"}, options=evil,
                               prompt="=1+1", seed=-3)
    d.mark_failed(rec.id, error_type="x", error_message="-cmd|' /C calc'!A0")
    d.db.execute("UPDATE requests SET queue_time_s = -1.5, estimated_cost = -0.25 WHERE id = ?", [rec.id])
    export.to_csv(d, tmp_path / "e.csv")
    _, (row,) = _read(tmp_path / "e.csv")
    assert row["subject"] == "'=HYPERLINK(\"http://x\",\"y\")"
    assert row["pose"] == "'+1+1" and row["style"] == "'-2+3" and row["lighting"] == "'@SUM(A1)"
    assert row["angle"] == "'\tTab" and row["extra"] == "'\rCR"
    assert row["prompt"] == "'=1+1" and row["error_message"] == "'-cmd|' /C calc'!A0"
    assert row["purpose"] == "-5"                                  # plain number typed as text: harmless
    assert (row["seed"], row["queue_time_s"], row["estimated_cost"]) == ("-3", "-1.5", "-0.25")


def test_no_data_uri_leaves_in_the_csv(d, tmp_path):
    rec = d.record_request(endpoint=EDIT, payload={"prompt": "p", "image_urls": ["reference://abc"]})
    # rows written by hand (older code, sync_mode results) must still come out abbreviated
    d.db.execute("UPDATE requests SET payload_json = ? WHERE id = ?",
              [canonical_json({"prompt": "p", "image_urls": ["data:image/png;base64," + "A" * 4000]}), rec.id])
    d.add_result_image(rec.id, idx=0, fal_url="data:image/jpeg;base64," + "B" * 4000,
                           storage_backend="local", storage_path="results/x/0.jpg", sha256="0" * 64,
                           width=1, height=1, content_type="image/jpeg", size_bytes=3000, nsfw=None)
    export.to_csv(d, tmp_path / "d.csv")
    raw, (row,) = _read(tmp_path / "d.csv")
    assert b"AAAAAAAA" not in raw and b"BBBBBBBB" not in raw
    assert "data:image/png;base64,…(3000 bytes" in row["payload"]
    assert row["image_fal_url"].startswith("data:image/jpeg;base64,…(")


def test_filters_match_the_history_page(d, tmp_path):
    a = _completed(d, images=1, endpoint=EDIT)
    b = _completed(d, images=0, endpoint=SCHNELL, prompt="Golden hour portrait")
    f = HistoryFilter(endpoint=SCHNELL)
    export.to_csv(d, tmp_path / "f.csv", f)
    _, rows = _read(tmp_path / "f.csv")
    assert [r["request_id"] for r in rows] == [b.id]
    export.to_csv(d, tmp_path / "t.csv", HistoryFilter(text="golden"))
    assert [r["request_id"] for r in _read(tmp_path / "t.csv")[1]] == [b.id]
    export.to_csv(d, tmp_path / "s.csv", HistoryFilter(status="failed"))
    raw, rows = _read(tmp_path / "s.csv")
    assert rows == [] and raw.decode("utf-8-sig").startswith("request_id,")   # header only
    assert a.id != b.id


def test_chunked_export_equals_a_single_chunk(d, tmp_path):
    """Streaming in small chunks writes BOM and header once and the same rows in the same order."""
    for i in range(7):
        _completed(d, images=i % 3, prompt=f"p{i}")
    small = tmp_path / "small.csv"
    big = tmp_path / "big.csv"
    r1 = export.to_csv(d, small, chunk_size=2)
    r2 = export.to_csv(d, big, chunk_size=1000)
    assert small.read_bytes() == big.read_bytes()
    assert small.read_bytes().count(b"\xef\xbb\xbf") == 1
    assert (r1.requests, r1.rows) == (r2.requests, r2.rows) == (7, 9)  # 0,1,2,0,1,2,0 images


def test_a_failed_export_leaves_no_file(d, tmp_path, monkeypatch):
    _completed(d)

    def boom(*a, **k):
        raise RuntimeError("disk full")
        yield  # pragma: no cover

    monkeypatch.setattr(store.Store, "iter_history_csv", boom)
    with pytest.raises(RuntimeError):
        export.to_csv(d, tmp_path / "x.csv")
    assert list(tmp_path.glob("x.csv*")) == []


def test_history_export_carries_each_images_fidelity_and_checks(d, tmp_path):
    """Metrics are 'shown on Compare and History; exported': the history CSV has them per image
    (empty while still pending)."""
    done = _completed(d, images=2)
    d.db.execute("UPDATE result_images SET face_status = 'ok', face_distance = 0.31, phash_distance = 12, "
              "ciede2000 = 7.5, ssim = 0.62, check_flags = 'seed_mismatch', metrics_at = '2026-11-24' "
              "WHERE request_id = ? AND idx = 0", [done.id])
    export.to_csv(d, tmp_path / "m.csv")
    _, rows = _read(tmp_path / "m.csv")
    measured, pending = sorted((r for r in rows if r["request_id"] == done.id), key=lambda r: r["image_idx"])
    assert (measured["image_face_status"], measured["image_face_distance"], measured["image_phash_distance"],
            measured["image_ciede2000"], measured["image_ssim"], measured["image_check_flags"]) == \
        ("ok", "0.31", "12", "7.5", "0.62", "seed_mismatch")
    assert pending["image_face_distance"] == "" and pending["image_metrics_at"] == ""
