"""Measuring: one stored result image checked (core/evaluation/checks.py) and measured against the
FIRST reference photo of its group (`core.evaluation.metrics.measure`: face distance, phash
distance, CIEDE2000; SSIM only for edit endpoints, whose outputs keep the reference's framing).

Invariants:
- Every attempt gives a complete `ImageMetrics` with `metrics_at` set, also when it failed
  (`metrics_error` says why, face_status "error"): a pass never loops on a bad image. A group
  without a reference photo records face_status "no_reference"; a face that is not found is a
  status ("no_face_output"...), never an error.
- `measure_row` reads no store and writes nothing: it also runs in the pool's processes, which get
  a row and a reference's location (`RefLocation`) and return the outcome. Only `measure_image`
  stores, through `Store.save_image_metrics`.
- Each process prepares a reference once (`References`, a few at most: a batch shares its
  references), so the numbers do not depend on which process measured.
- Deterministic: the same stored bytes and reference give the same numbers (`core.evaluation.metrics`).
- Cheap to import: numpy, PIL and dlib are imported when the first image is measured.
"""
from __future__ import annotations

import io
import logging
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from core.blobs.storage import Storage
from core.catalog import registry
from core.errors import DashboardError, MetricsError, StorageError, StoreError
from core.evaluation import checks
from core.store import ImageToMeasure, Store
from core.values import ImageMetrics, now

log = logging.getLogger(__name__)

REFERENCE_CACHE = 8


@dataclass(frozen=True)
class RefLocation:
    """Where a reference photo's bytes are, as the store said (or why it could not say)."""
    reference_id: str
    backend: str | None = None
    path: str | None = None
    error: str | None = None


def locate(store: Store, reference_id: str) -> RefLocation:
    """Where the store says a reference photo is; an unknown one is a location with its error."""
    try:
        ref = store.get_reference(reference_id)
    except DashboardError as e:
        return RefLocation(reference_id, error=str(e))
    return RefLocation(reference_id, ref.storage_backend, ref.storage_path)


class References:
    """Prepared reference photos (`metrics.prepare_reference`: decoded, face descriptor, hashes) by
    id, a few at most: a batch shares its references, so each is read and prepared once per process."""

    def __init__(self, storage: Storage):
        self.storage = storage
        self._cache: OrderedDict[str, Any] = OrderedDict()

    def get(self, where: RefLocation) -> Any:
        from core.evaluation import metrics  # numpy, PIL and dlib: only once something is measured

        if where.reference_id in self._cache:
            self._cache.move_to_end(where.reference_id)
            return self._cache[where.reference_id]
        if where.error is not None:
            raise StoreError(where.error)
        if where.backend != self.storage.backend:
            raise StorageError(f"reference photo {where.reference_id} is stored in {where.backend}, "
                               f"but this process uses {self.storage.backend} storage")
        assert where.path is not None
        prepared = metrics.prepare_reference(decode_image(self.storage.get(where.path)))
        self._cache[where.reference_id] = prepared
        if len(self._cache) > REFERENCE_CACHE:
            self._cache.popitem(last=False)
        return prepared


def decode_image(data: bytes) -> Any:
    """The image in `data`, EXIF orientation applied; MetricsError when it cannot be decoded."""
    from PIL import Image, ImageOps

    try:
        img = Image.open(io.BytesIO(data))
        img.load()
    except (OSError, ValueError, Image.DecompressionBombError) as e:
        raise MetricsError(f"the image could not be decoded ({e})") from e
    return ImageOps.exif_transpose(img)


def short_error(e: BaseException) -> str:
    """The first line of an error, at most 300 characters: what a row's `metrics_error` keeps."""
    return str(e).splitlines()[0][:300] if str(e) else type(e).__name__


def measure_image(store: Store, storage: Storage, image_id: str, *,
                  refs: References | None = None) -> ImageMetrics:
    """Check and measure one stored result image now, store the outcome, and return it.

    Raises StoreError for an unknown id; every other failure is recorded on the row.
    """
    row = store.image_to_measure(image_id)
    where = locate(store, row.reference_ids[0]) if row.reference_ids else None
    return store.save_image_metrics(measure_row(row, where, storage, refs or References(storage)))


def measure_row(row: ImageToMeasure, where: RefLocation | None, storage: Storage, refs: References,
                 *, failure: str | None = None) -> ImageMetrics:
    """The outcome of checking and measuring one image, not yet stored; no SQL (it also runs in
    the pool's processes). With `failure`, the metrics are not attempted and that error is recorded
    (the response checks still are)."""
    from core.evaluation import metrics  # numpy, PIL and dlib: only once something is measured

    payload = row.payload
    reported, seed_returned = checks.reported(row.response, row.idx)
    seed_sent = checks.sent_seed(payload, row.seed)

    output = None
    error: str | None = None
    try:
        if row.storage_backend != storage.backend or not row.storage_path:
            raise StoreError(f"the output is stored in {row.storage_backend or 'no'} storage, "
                             f"not reachable from {storage.backend} storage")
        output = decode_image(storage.get(row.storage_path))
    except DashboardError as e:
        error = f"output image: {short_error(e)}"
    pixels = output.size if output is not None else None
    check = checks.check_response(requested=checks.requested_size(row.endpoint, payload), reported=reported,
                           pixels=pixels, seed_sent=seed_sent, seed_returned=seed_returned,
                           nsfw=row.nsfw, readable=output is not None)

    reference_id = where.reference_id if where else None
    values: dict[str, Any] = dict.fromkeys(("face_distance", "faces_reference", "faces_output",
                                            "phash_distance", "ciede2000", "ssim"))
    face_status = "error"
    if output is not None and failure is not None:
        error = failure
    elif output is not None:
        if where is None:
            face_status = "no_reference"
        else:
            try:
                reference = refs.get(where)
                try:
                    edit = registry.get_endpoint(row.endpoint).mode == "edit"
                except DashboardError:
                    edit = False
                fid = metrics.measure(reference, output, same_framing=edit)
            except DashboardError as e:
                error = f"reference {reference_id}: {short_error(e)}"
            except Exception as e:  # noqa: BLE001 - one odd image must not stall every later one
                log.exception("measuring result image %s failed", row.image_id)
                error = f"measuring failed: {e!r}"
            else:
                face_status = fid.face.status
                values.update(face_distance=fid.face.distance, faces_reference=fid.face.faces_reference,
                              faces_output=fid.face.faces_output, phash_distance=fid.phash_distance,
                              ciede2000=fid.ciede2000, ssim=fid.ssim)
                if fid.face.detail:
                    error = fid.face.detail
    stamp = now()
    return ImageMetrics(
        image_id=row.image_id, request_id=row.request_id, **values,
        face_status=face_status, metrics_reference_id=reference_id,
        metrics_version=metrics.METRICS_VERSION, metrics_at=stamp, metrics_error=error,
        requested_width=check.requested[0] if check.requested else None,
        requested_height=check.requested[1] if check.requested else None,
        pixel_width=pixels[0] if pixels else None, pixel_height=pixels[1] if pixels else None,
        seed_sent=check.seed_sent, seed_returned=check.seed_returned,
        check_flags=check.flags, checked_at=stamp,
    )
