"""One way for tests to give a request its result: the runner's own path. The request moves
submitted -> queued as the runner moves it, then `core.batches.record.keep_images` keeps the
images (from a scripted CDN) and `core.batches.record.record_result` writes them and the final
status, exactly as the runner does after fal says COMPLETED.

Every helper that needs "a completed request with stored images" (tests/review_support.py,
the fidelity and Compare tests) goes through `record_result`, so a change in how results are
recorded is made once, in core.
"""
from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from typing import Any

from PIL import Image

from core.batches import record
from core.fal import parse_output
from core.store import Store
from core.values import RequestRecord


class _CDN:
    """fal's CDN for the scripted result: its URLs answer with the given bytes."""

    def __init__(self, files: Mapping[str, tuple[bytes, str]]):
        self.files = files

    def download(self, url: str) -> tuple[bytes, str]:
        return self.files[url]


def record_result(st: Store, storage: Any, request_id: str, images: Sequence[bytes], *,
                  response_extra: Mapping[str, Any] | None = None, inference_s: float | None = 1.0,
                  nsfw: bool = False) -> RequestRecord:
    """Complete `request_id` with `images` (encoded bytes) and fal's response: one entry per image
    with its URL and size, the seed sent and the NSFW flags, updated with `response_extra` (e.g.
    another seed)."""
    rec = st.get_request(request_id)
    st.mark_submitted(rec.id)
    st.mark_queued(rec.id, fal_request_id=f"fal-{rec.id[:8]}", status_url="s", response_url="r",
                   cancel_url="c")
    described, files = [], {}
    for idx, data in enumerate(images):
        with Image.open(io.BytesIO(data)) as img:
            fmt, (width, height) = img.format or "PNG", img.size
        url = f"https://v3.fal.media/files/{rec.id}/{idx}.{fmt.lower()}"
        files[url] = (data, Image.MIME.get(fmt, "image/png"))
        described.append({"url": url, "width": width, "height": height})
    response = {"images": described, "seed": rec.seed, "has_nsfw_concepts": [nsfw] * len(images),
                **(response_extra or {})}
    output = parse_output(response)
    kept = record.keep_images(_CDN(files), storage, rec.id, output)
    record.record_result(st, rec.id, record.Result(output, kept, inference_s))
    return st.get_request(rec.id)
