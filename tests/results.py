"""One way for tests to give a request its result, in the order the runner records one: the
image bytes into storage, then submitted -> queued -> each result image row -> completed.

Every helper that needs "a completed request with stored images" (tests/review_support.py,
the fidelity and Compare tests) goes through `record_result`, so a change in how results are
recorded is made once.
"""
from __future__ import annotations

import hashlib
import io
from collections.abc import Mapping, Sequence
from typing import Any

from PIL import Image

from core.store import RequestRecord, Store


def record_result(st: Store, storage: Any, request_id: str, images: Sequence[bytes], *,
                  response_extra: Mapping[str, Any] | None = None, inference_s: float | None = 1.0,
                  nsfw: bool = False) -> RequestRecord:
    """Complete `request_id` with `images` (encoded bytes, stored at results/<id>/<idx>.<ext>) and
    fal's response: one entry per image with its URL and size, the seed sent and the NSFW flags,
    updated with `response_extra` (e.g. another seed)."""
    rec = st.get_request(request_id)
    st.mark_submitted(rec.id)
    st.mark_queued(rec.id, fal_request_id=f"fal-{rec.id[:8]}", status_url="s", response_url="r",
                   cancel_url="c")
    described = []
    for idx, data in enumerate(images):
        with Image.open(io.BytesIO(data)) as img:
            fmt, (width, height) = img.format or "PNG", img.size
        content_type = Image.MIME.get(fmt, "image/png")
        path = f"results/{rec.id}/{idx}.{fmt.lower()}"
        stored = storage.put(path, data, content_type, overwrite=True)
        url = f"https://v3.fal.media/files/{rec.id}/{idx}.{fmt.lower()}"
        st.add_result_image(rec.id, idx=idx, fal_url=url, storage_backend=stored.backend,
                            storage_path=stored.path, sha256=hashlib.sha256(data).hexdigest(),
                            width=width, height=height, content_type=content_type,
                            size_bytes=len(data), nsfw=nsfw)
        described.append({"url": url, "width": width, "height": height})
    response = {"images": described, "seed": rec.seed, "has_nsfw_concepts": [nsfw] * len(images),
                **(response_extra or {})}
    st.mark_completed(rec.id, response=response, inference_time_s=inference_s)
    return st.get_request(rec.id)
