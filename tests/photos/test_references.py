"""Reference photos end to end, on both backends: upload -> store -> what fal receives.

Must hold: every corpus file ends as expected with a row and an object, or with neither; the
same photo is stored once; a storage or database failure leaves nothing half-written; a data:
URI never reaches the database or a log."""
from __future__ import annotations

import base64
import hashlib
import io
import logging
import sqlite3

import httpx
import pytest
from PIL import Image

from core.errors import (
    ObjectTooLarge,
    StorageError,
    StoragePermissionError,
    StoreError,
    UnsupportedContentType,
    UploadRejected,
)
from core.catalog.payloads import reference_token
from core.photos.references import (
    add_reference,
    fal_url,
    payload_url,
    resolve_payload,
)
from core.store import Store
from core.store.blobs import LocalStorage
from tests.corpus import BY_NAME, CASES, Accept, build
from tests.standins.supabase_fixtures import BUCKET


class Backend:
    """A storage under test plus a way to see every object it holds."""

    def __init__(self, kind, storage, objects, standin=None):
        self.kind, self.storage, self.objects, self.standin = kind, storage, objects, standin


@pytest.fixture(params=["local", "supabase"])
def backend(request, settings):
    if request.param == "local":
        root = settings.images_dir
        storage = LocalStorage(root)
        return Backend("local", storage, lambda: sorted(
            str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()) if root.exists() else [])
    standin = request.getfixturevalue("supabase_standin")
    storage = request.getfixturevalue("supabase_storage")
    return Backend("supabase", storage, lambda: standin.paths(BUCKET), standin)


def _rows(st) -> list[dict]:
    return list(st.db.query("select * from reference_photos"))


def _check_fal_receives_the_photo(ref, storage, kind, standin=None):
    url = fal_url(ref, storage)
    if kind == "supabase":
        assert url.startswith(f"{standin.url}/storage/v1/object/public/{BUCKET}/")
        response = httpx.get(url)   # what fal does: a plain GET, no credentials
        assert response.status_code == 200
        assert response.headers["content-type"] == ref.content_type
        data = response.content
    else:
        prefix = f"data:{ref.content_type};base64,"
        assert url.startswith(prefix)
        data = base64.b64decode(url[len(prefix):], validate=True)
    assert hashlib.sha256(data).hexdigest() == ref.sha256
    assert len(data) == ref.size_bytes
    return data


# -- the corpus, through storage -----------------------------------------------------------------

@pytest.mark.parametrize("name", [c.name for c in CASES])
def test_corpus_file_through_add_reference(name, backend, st, settings):
    """Accepted: one row, one object, and fal receives exactly the stored bytes, free of metadata.
    Refused: the reason the checks give, and no row and no object."""
    case = BY_NAME[name]
    if isinstance(case.expect, Accept):
        ref = add_reference(st, backend.storage, build(name), filename=case.filename, role="face",
                            settings=settings)
        assert (ref.width, ref.height) == case.expect.size and ref.content_type == case.expect.content_type
        assert not ref.existing
        assert [r["id"] for r in _rows(st)] == [ref.id]
        assert backend.objects() == [ref.storage_path]
        assert ref.storage_path == f"team/{ref.id}.{'png' if ref.content_type == 'image/png' else 'jpg'}"
        data = _check_fal_receives_the_photo(ref, backend.storage, backend.kind, backend.standin)
        stored = Image.open(io.BytesIO(data))
        assert not stored.getexif() and "icc_profile" not in stored.info
    else:
        with pytest.raises(UploadRejected) as info:
            add_reference(st, backend.storage, build(name), filename=case.filename, settings=settings)
        assert info.value.reason == case.expect.reason
        assert _rows(st) == []
        assert backend.objects() == []


def test_selfie_gps_never_reaches_storage(backend, st, settings):
    ref = add_reference(st, backend.storage, build("exif_selfie_gps"), filename="IMG_0001.JPG",
                        role="face", settings=settings)
    data = backend.storage.get(ref.storage_path)
    im = Image.open(io.BytesIO(data))
    assert im.size == (900, 1200)
    assert not im.getexif() and not im.getexif().get_ifd(0x8825)
    assert b"Exif" not in data and b"iPhone" not in data


def test_same_photo_twice_is_stored_once(backend, st, settings):
    first = add_reference(st, backend.storage, build("jpeg_named_png"), filename="a.png", settings=settings)
    again = add_reference(st, backend.storage, build("jpeg_named_png"), filename="copy.jpg", role="face",
                          owner="someone else", settings=settings)
    assert again.existing and not first.existing
    assert (again.id, again.sha256, again.storage_path, again.role) == (
        first.id, first.sha256, first.storage_path, first.role)
    assert len(_rows(st)) == 1 and backend.objects() == [first.storage_path]


def test_same_pixels_with_different_metadata_dedupe(backend, st, settings):
    """Metadata is stripped before hashing: the same picture with other EXIF is the same reference."""
    im = Image.new("RGB", (400, 300), (90, 120, 30))
    plain, tagged = io.BytesIO(), io.BytesIO()
    im.save(plain, "PNG")
    exif = Image.Exif()
    exif[0x010F] = "Canon"
    im.save(tagged, "PNG", exif=exif)
    a = add_reference(st, backend.storage, plain.getvalue(), settings=settings)
    b = add_reference(st, backend.storage, tagged.getvalue(), settings=settings)
    assert b.existing and b.id == a.id


@pytest.mark.parametrize("status, error", [("413", ObjectTooLarge), ("415", UnsupportedContentType),
                                           ("403", StoragePermissionError)])
def test_storage_failure_leaves_no_row_and_no_object(supabase_standin, supabase_storage, st, settings,
                                                     status, error):
    supabase_standin.add_bucket(BUCKET, public=True)
    supabase_standin.fail("upload", status)
    with pytest.raises(error):
        add_reference(st, supabase_storage, build("heic"), filename="IMG.HEIC", settings=settings)
    assert _rows(st) == [] and supabase_standin.paths(BUCKET) == []
    # and the next try works
    ref = add_reference(st, supabase_storage, build("heic"), filename="IMG.HEIC", settings=settings)
    assert supabase_standin.paths(BUCKET) == [ref.storage_path]


def test_real_bucket_limits_refuse_cleanly(supabase_standin, supabase_storage, st, settings):
    supabase_standin.add_bucket(BUCKET, public=True, allowed_mime_types=["image/jpeg"], file_size_limit=20_000)
    with pytest.raises(UnsupportedContentType, match="image/png"):
        add_reference(st, supabase_storage, build("rgba_png"), settings=settings)
    with pytest.raises(ObjectTooLarge):
        add_reference(st, supabase_storage, build("large_4000x3000"), settings=settings)
    assert _rows(st) == [] and supabase_standin.paths(BUCKET) == []


def test_database_failure_removes_the_stored_object(backend, st, settings, monkeypatch):
    def locked(self, *a, **k):
        raise sqlite3.OperationalError("database is locked")

    monkeypatch.setattr(Store, "_insert", locked)
    with pytest.raises(StoreError, match="database is locked.*nothing was kept"):
        add_reference(st, backend.storage, build("webp"), settings=settings)
    assert backend.objects() == []


def test_concurrent_upload_of_the_same_photo_keeps_one(backend, st, settings, monkeypatch):
    """Another process inserted the same photo between our lookup and our insert: its row wins,
    our object is deleted, and we get its reference back."""
    winner = add_reference(st, backend.storage, build("webp"), settings=settings)
    real_lookup = Store.reference_by_sha
    calls = []

    def stale_lookup(self, sha):
        calls.append(sha)
        return None if len(calls) == 1 else real_lookup(self, sha)

    monkeypatch.setattr(Store, "reference_by_sha", stale_lookup)
    ref = add_reference(st, backend.storage, build("webp"), settings=settings)
    assert ref.existing and ref.id == winner.id
    assert len(_rows(st)) == 1 and backend.objects() == [winner.storage_path]


def test_invalid_role_is_refused_before_anything_is_stored(backend, st, settings):
    with pytest.raises(UploadRejected, match="role 'hero' is not one of face, product, background, other"):
        add_reference(st, backend.storage, build("webp"), role="hero", settings=settings)
    assert _rows(st) == [] and backend.objects() == []


def test_owner_becomes_a_safe_folder(backend, st, settings):
    ref = add_reference(st, backend.storage, build("webp"), owner="Alice Smith / Design", created_by="alice",
                        settings=settings)
    assert ref.storage_path == f"alice-smith-design/{ref.id}.jpg"
    assert (ref.owner, ref.created_by) == ("Alice Smith / Design", "alice")


def test_settings_limits_apply(backend, st, settings):
    import dataclasses

    small = dataclasses.replace(settings, max_long_edge=512, max_upload_bytes=10_000_000)
    ref = add_reference(st, backend.storage, build("large_4000x3000"), settings=small)
    assert (ref.width, ref.height) == (512, 384)
    tiny = dataclasses.replace(settings, max_upload_bytes=len(build("webp")) - 1)
    with pytest.raises(UploadRejected) as info:
        add_reference(st, backend.storage, build("webp"), settings=tiny)
    assert info.value.reason == "too_large"


# -- lookups -------------------------------------------------------------------------------------

def test_get_list_archive(backend, st, settings):
    a = add_reference(st, backend.storage, build("webp"), role="product", settings=settings)
    b = add_reference(st, backend.storage, build("heic"), role="face", settings=settings)
    assert st.get_reference(a.id) == a
    assert [r.id for r in st.list_references()] == [b.id, a.id]          # newest first
    assert [r.id for r in st.list_references(limit=1, offset=1)] == [a.id]
    st.archive_reference(a.id)
    st.archive_reference(a.id)                                          # idempotent
    assert [r.id for r in st.list_references()] == [b.id]
    assert [r.id for r in st.list_references(include_archived=True)] == [b.id, a.id]
    assert st.get_reference(a.id).archived_at is not None
    again = add_reference(st, backend.storage, build("webp"), settings=settings)
    assert again.existing and again.archived_at is None and "was archived: restored" in again.notes


def test_unknown_reference_is_a_store_error(st):
    with pytest.raises(StoreError, match="no reference photo with id 'nope'"):
        st.get_reference("nope")
    with pytest.raises(StoreError):
        st.archive_reference("nope")


def test_missing_object_is_stored_again_on_reupload(backend, st, settings):
    ref = add_reference(st, backend.storage, build("webp"), settings=settings)
    backend.storage.delete(ref.storage_path)
    again = add_reference(st, backend.storage, build("webp"), settings=settings)
    assert again.existing and "stored file was missing: stored again" in again.notes
    assert backend.objects() == [again.storage_path]
    _check_fal_receives_the_photo(again, backend.storage, backend.kind, backend.standin)


def test_switching_backend_moves_on_reupload(settings, st, supabase_standin, supabase_storage):
    local = LocalStorage(settings.images_dir)
    ref = add_reference(st, local, build("webp"), settings=settings)
    with pytest.raises(StorageError, match="stored in local storage but the dashboard now uses supabase"):
        fal_url(ref, supabase_storage)
    moved = add_reference(st, supabase_storage, build("webp"), settings=settings)
    assert moved.id == ref.id and moved.storage_backend == "supabase" and moved.public_url
    assert supabase_standin.paths(BUCKET) == [moved.storage_path]
    assert st.get_reference(ref.id).storage_backend == "supabase"


# -- what payloads carry, what fal receives ------------------------------------------------------

def test_payload_url_is_token_for_local_and_public_url_for_supabase(backend, st, settings):
    ref = add_reference(st, backend.storage, build("webp"), settings=settings)
    if backend.kind == "local":
        assert payload_url(ref) == reference_token(ref.id) == f"reference://{ref.id}"
    else:
        assert payload_url(ref) == ref.public_url == backend.storage.public_url(ref.storage_path)


def test_resolve_payload_replaces_every_token_and_nothing_else(backend, st, settings):
    a = add_reference(st, backend.storage, build("webp"), settings=settings)
    b = add_reference(st, backend.storage, build("rgba_png"), settings=settings)
    payload = {"prompt": "keep reference://abc inside text as it is",
               "image_urls": [payload_url(a), payload_url(b), "https://example.com/x.jpg"],
               "nested": {"also": [reference_token(a.id)]}, "seed": 7}
    resolved = resolve_payload(payload, st, backend.storage)
    assert resolved["image_urls"] == [fal_url(a, backend.storage), fal_url(b, backend.storage),
                                      "https://example.com/x.jpg"]
    assert resolved["nested"]["also"] == [fal_url(a, backend.storage)]
    assert resolved["seed"] == 7 and resolved["prompt"] == payload["prompt"]
    assert payload["nested"]["also"] == [reference_token(a.id)]        # the original is untouched
    if backend.kind == "local":
        assert resolved["image_urls"][1].startswith("data:image/png;base64,")
    with pytest.raises(StoreError):
        resolve_payload({"image_urls": ["reference://missing"]}, st, backend.storage)


def test_tampered_local_file_is_not_sent(st, settings):
    storage = LocalStorage(settings.images_dir)
    ref = add_reference(st, storage, build("webp"), settings=settings)
    (settings.images_dir / ref.storage_path).write_bytes(b"something else")
    with pytest.raises(StorageError, match="has changed since upload"):
        fal_url(ref, storage)


def test_data_uri_is_never_stored_or_logged(st, settings, caplog):
    storage = LocalStorage(settings.images_dir)
    caplog.set_level(logging.DEBUG)
    ref = add_reference(st, storage, build("exif_selfie_gps"), settings=settings)
    resolved = resolve_payload({"image_urls": [payload_url(ref)]}, st, storage)
    assert resolved["image_urls"][0].startswith("data:")
    dump = "\n".join(st.db.conn.iterdump())
    assert "data:" not in dump and "base64" not in dump
    assert ref.id in caplog.text and "base64" not in caplog.text
