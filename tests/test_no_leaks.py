"""What users rely on across modules: after a live batch that sent a local reference photo as a
data: URI, and a job whose error echoed that URI, neither the fal key nor any base64 image data
is anywhere in the database file or the CSV export (only abbreviated forms and reference ids)."""
from __future__ import annotations

import base64
import io
import re

from PIL import Image

from core.store import open_store
from core import export
from core.batches import service
from core.batches import schedule
from core.values import HistoryFilter
from core.config import load_settings
from core.blobs import open_storage
from tests.standins.fal_fixtures import DEFAULT_KEY

_BASE64_RUN = re.compile(r"base64,[A-Za-z0-9+/]{64,}")


def _photo() -> bytes:
    buf = io.BytesIO()
    Image.effect_noise((640, 800), 60).convert("RGB").save(buf, "JPEG")
    return buf.getvalue()


def test_key_and_data_uris_never_reach_the_database_or_the_export(fal_standin, tmp_path):
    settings = load_settings()
    settings.ensure_dirs()
    d = open_store(settings)
    (tmp_path / "face.jpg").write_bytes(_photo())
    spec = {"name": "leaks", "references": ["face.jpg"], "options": {"pose": ["Standing", "Walking"]},
            "models": ["fal-ai/flux/schnell", "fal-ai/flux-2/lora/edit"], "seeds": [7]}
    plan = service.plan_batch(spec, store=d, storage=open_storage(settings), base_dir=tmp_path)
    batch = d.create_batch(plan.new_batch(), dry_run=settings.dry_run)
    echoed = "data:image/jpeg;base64," + base64.b64encode(_photo()).decode()
    fal_standin.inject("submit", "422", times=1, detail=f"could not read image_urls[0]: {echoed}")

    report = schedule.run_batch(batch.id, settings=settings, concurrency=2)
    assert report.finished
    reqs = d.batch_requests(batch.id)
    assert sorted(r.status for r in reqs) == ["completed", "completed", "completed", "failed"]
    # the edit model really received a data: URI of the stored photo
    sent = [b for b in fal_standin.received if "image_urls" in b.get("body", b)]
    assert sent, "the stand-in saw no edit request"

    dump = "\n".join(d.db.conn.iterdump())
    csv_text = export.to_csv_bytes(d, HistoryFilter(batch_id=batch.id)).decode("utf-8-sig")
    d.close()
    for where, text in (("database", dump), ("CSV export", csv_text)):
        assert DEFAULT_KEY not in text, f"the fal key is in the {where}"
        assert not _BASE64_RUN.search(text), f"base64 image data is in the {where}"
    failed = next(r for r in reqs if r.status == "failed")
    assert "data:image/jpeg;base64,…(" in failed.error_message
