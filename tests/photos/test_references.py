"""Reference photos end to end, on both backends: upload -> store -> what fal receives.

Must hold: every corpus file ends as expected with a row and an object, or with neither; the
same photo is stored once; a storage or database failure leaves nothing half-written; a data:
URI never reaches the database or a log."""
from __future__ import annotations

import base64
import dataclasses
import hashlib
import io
import json
import logging
import socket
import sqlite3
import subprocess
import sys
import time

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
    check_reachable,
    fal_url,
    payload_url,
    resolve_payload,
    sweep_orphans,
)
from core.store import Store
from core.blobs import JOURNAL_NAME, CleanupJournal, LocalStorage, SupabaseStorage, open_storage
from tests.corpus import BY_NAME, CASES, Accept, build
from tests.standins.supabase_fixtures import BUCKET
from tests.standins.supabase_server import StoredBlob


class Backend:
    """A storage under test plus a way to see every object it holds."""

    def __init__(self, kind, storage, objects, standin=None):
        self.kind, self.storage, self.objects, self.standin = kind, storage, objects, standin


@pytest.fixture(params=["local", "supabase"])
def backend(request, settings):
    if request.param == "local":
        root = settings.images_dir
        storage = LocalStorage(root, journal=CleanupJournal(settings.data_dir / JOURNAL_NAME))
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


# -- a known photo whose bucket went away (dedupe path) ------------------------------------------

@pytest.mark.parametrize("process", ["same process", "new process"])
def test_known_photo_readded_after_its_bucket_was_deleted_creates_the_bucket(
        supabase_standin, supabase_storage, st, settings, process):
    """The dedupe path must reach bucket creation: the photo is stored again (public) instead of
    "bucket does not exist: create it" although the key may create it."""
    first = add_reference(st, supabase_storage, build("webp"), settings=settings)
    supabase_standin.delete_bucket(BUCKET)
    storage = supabase_storage
    if process == "new process":
        storage = SupabaseStorage(supabase_standin.url, supabase_standin.key, BUCKET,
                                  journal=supabase_storage.journal)
    try:
        again = add_reference(st, storage, build("webp"), settings=settings)
    finally:
        if storage is not supabase_storage:
            storage.close()
    assert again.existing and again.id == first.id
    assert "stored file was missing: stored again" in again.notes
    assert supabase_standin.buckets[BUCKET].public
    assert supabase_standin.paths(BUCKET) == [again.storage_path] != [first.storage_path]
    assert httpx.get(again.public_url).status_code == 200
    assert st.get_reference(first.id).public_url == again.public_url


def test_known_photo_readded_after_supabase_bucket_changed(supabase_standin, supabase_storage, st, settings):
    first = add_reference(st, supabase_storage, build("webp"), settings=settings)
    with SupabaseStorage(supabase_standin.url, supabase_standin.key, "photos-2") as other:
        again = add_reference(st, other, build("webp"), settings=settings)
    assert again.id == first.id and supabase_standin.paths("photos-2") == [again.storage_path]
    assert "/object/public/photos-2/" in again.public_url
    assert httpx.get(again.public_url).content == supabase_standin.object("photos-2", again.storage_path).data


# -- a key that may insert but not update or delete ----------------------------------------------

def test_insert_only_key_stores_and_restores_without_any_upsert(supabase_standin, insert_only_storage,
                                                                 st, settings):
    first = add_reference(st, insert_only_storage, build("webp"), settings=settings)
    supabase_standin.objects.pop((BUCKET, first.storage_path))         # the file went missing
    again = add_reference(st, insert_only_storage, build("webp"), settings=settings)
    assert again.existing and "stored file was missing: stored again" in again.notes
    assert again.storage_path != first.storage_path
    assert again.storage_path.startswith(f"team/{first.id}-") and again.storage_path.endswith(".jpg")
    uploads = [r for r in supabase_standin.requests if r.op == "upload"]
    assert len(uploads) == 2 and all(r.headers["x-upsert"] == "false" for r in uploads)
    _check_fal_receives_the_photo(again, insert_only_storage, "supabase", supabase_standin)


def test_insert_only_key_database_failure_leaves_a_journaled_object_a_sweep_removes(
        supabase_standin, insert_only_storage, supabase_storage, st, settings, monkeypatch):
    """The row cannot be written and this key may not delete: the object stays, journaled; a
    later sweep with a key that may delete removes it."""
    monkeypatch.setattr(Store, "_insert", lambda self, table, row: (_ for _ in ()).throw(
        sqlite3.OperationalError("database is locked")))
    with pytest.raises(StoreError, match="database is locked"):
        add_reference(st, insert_only_storage, build("webp"), settings=settings)
    (orphan,) = supabase_standin.paths(BUCKET)
    (entry,) = insert_only_storage.journal.pending()
    assert (entry.path, entry.kind, entry.tag) == (orphan, "unconfirmed", "reference")
    assert sweep_orphans(st, insert_only_storage, grace_s=0).left    # refused again: kept
    report = sweep_orphans(st, supabase_storage, grace_s=0)
    assert report.deleted == (orphan,) and supabase_standin.paths(BUCKET) == []


def test_insert_only_key_lost_answer_then_retry_stores_once_and_journals_the_orphan(
        supabase_standin, insert_only_storage, supabase_storage, st, settings):
    supabase_standin.drop("upload")
    with pytest.raises(StorageError, match="cannot reach Supabase Storage"):
        add_reference(st, insert_only_storage, build("webp"), settings=settings)
    assert _rows(st) == []
    (orphan,) = supabase_standin.paths(BUCKET)
    ref = add_reference(st, insert_only_storage, build("webp"), settings=settings)   # the user retries
    assert ref.storage_path != orphan and sorted(supabase_standin.paths(BUCKET)) == sorted([orphan, ref.storage_path])
    assert [e.path for e in insert_only_storage.journal.pending()] == [orphan]
    assert sweep_orphans(st, supabase_storage).deleted == (orphan,)
    assert supabase_standin.paths(BUCKET) == [ref.storage_path]


# -- a process that dies between writing the object and its row ----------------------------------

DIE_BETWEEN = """
import os, sys
from core.config import load_settings
from core.photos import references
from core.store import Store, open_store
from core.blobs import open_storage

Store.insert_reference = lambda self, ref: os._exit(9)   # killed right after the object was written
settings = load_settings()
settings.ensure_dirs()
references.add_reference(open_store(settings), open_storage(settings),
                         open(sys.argv[1], "rb").read(), settings=settings)
"""


@pytest.fixture(params=["local", "supabase"])
def configured(request, settings):
    """(settings, a way to list stored objects) for the backend the environment selects."""
    if request.param == "local":
        root = settings.images_dir
        return lambda: sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())
    standin = request.getfixturevalue("supabase_env")
    return lambda: standin.paths(BUCKET)


def test_death_between_object_and_row_is_cleaned_up_by_a_later_run(configured, st, tmp_path):
    from core.config import load_settings

    photo = tmp_path / "p.webp"
    photo.write_bytes(build("webp"))
    done = subprocess.run([sys.executable, "-c", DIE_BETWEEN, str(photo)], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 9, done.stderr
    (orphan,) = configured()
    assert _rows(st) == []
    settings = load_settings()
    storage = open_storage(settings)
    try:
        assert sweep_orphans(st, storage).left and configured() == [orphan]   # maybe still uploading
        # time passes: the entry is older than the grace period
        lines = [json.loads(line) for line in storage.journal.path.read_text().splitlines()]
        storage.journal.path.write_text("".join(json.dumps({**r, "at": r["at"] - 3600}) + "\n" for r in lines))
        # the next upload of a later run settles it before storing its own photo
        ref = add_reference(st, storage, build("heic"), settings=settings)
    finally:
        getattr(storage, "close", lambda: None)()
    assert configured() == [ref.storage_path]
    assert storage.journal.pending() == []


def test_orphan_sweep_keeps_objects_whose_row_exists(backend, st, settings):
    """A process that died after the row but before resolving its journal entry lost nothing."""
    ref = add_reference(st, backend.storage, build("webp"), settings=settings)
    backend.storage.journal.add(backend.storage.location, ref.storage_path, "unconfirmed", tag="reference")
    report = sweep_orphans(st, backend.storage, grace_s=0)
    assert report.kept == (ref.storage_path,) and report.deleted == ()
    assert backend.objects() == [ref.storage_path]


# -- can fal see it? -----------------------------------------------------------------------------

def test_reachable_public_photo_passes_with_one_small_anonymous_get(supabase_standin, supabase_storage,
                                                                   st, settings):
    ref = add_reference(st, supabase_storage, build("webp"), settings=settings)
    before = len(supabase_standin.requests)
    check_reachable(ref, supabase_storage)
    (probe,) = supabase_standin.requests[before:]
    assert probe.op == "public" and probe.method == "GET"
    assert "authorization" not in probe.headers and probe.headers["range"] == "bytes=0-63"


def test_reachable_local_photo_needs_its_file(st, settings):
    storage = LocalStorage(settings.images_dir)
    ref = add_reference(st, storage, build("webp"), settings=settings)
    check_reachable(ref, storage)
    storage.delete(ref.storage_path)
    with pytest.raises(StorageError, match=f"reference photo .*{ref.id}.*is missing: upload the photo again"):
        check_reachable(ref, storage)


def test_bucket_switched_to_private_is_refused_before_sending(supabase_standin, supabase_storage, st, settings):
    ref = add_reference(st, supabase_storage, build("webp"), filename="face.webp", settings=settings)
    supabase_standin.buckets[BUCKET].public = False
    with pytest.raises(StorageError) as info:
        check_reachable(ref, supabase_storage)
    text = str(info.value)
    assert f"reference photo face.webp ({ref.id})" in text
    assert "bucket 'references' is private or gone" in text and "Make the bucket public" in text


def test_missing_object_is_refused_before_sending(supabase_standin, supabase_storage, st, settings):
    ref = add_reference(st, supabase_storage, build("webp"), settings=settings)
    supabase_standin.objects.pop((BUCKET, ref.storage_path))
    with pytest.raises(StorageError, match="stored file is missing from bucket 'references'.*Upload the photo again"):
        check_reachable(ref, supabase_storage)


@pytest.mark.parametrize("content_type, data", [("text/html", b"<html>login</html>"),
                                                 ("image/jpeg", b"<html>not really</html>")])
def test_non_image_answer_is_refused_before_sending(supabase_standin, supabase_storage, st, settings,
                                                    content_type, data):
    ref = add_reference(st, supabase_storage, build("webp"), settings=settings)
    supabase_standin.objects[(BUCKET, ref.storage_path)] = StoredBlob(data, content_type, "no-cache")
    with pytest.raises(StorageError, match=f"answers {content_type}, not an image"):
        check_reachable(ref, supabase_storage)


def test_unreachable_or_silent_server_is_refused_within_the_timeout(supabase_standin, supabase_storage,
                                                                   st, settings):
    ref = add_reference(st, supabase_storage, build("webp"), settings=settings)
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(1)          # accepts the connection, never answers
    port = silent.getsockname()[1]
    hanging = dataclasses.replace(ref, public_url=f"http://127.0.0.1:{port}/x.jpg")
    started = time.monotonic()
    try:
        with pytest.raises(StorageError, match="did not answer \\(ReadTimeout\\).*Nothing was sent"):
            check_reachable(hanging, supabase_storage, timeout=0.3)
    finally:
        silent.close()
    assert time.monotonic() - started < 3
    supabase_standin.stop()
    with pytest.raises(StorageError, match="did not answer \\(ConnectError\\)"):
        check_reachable(ref, supabase_storage)


def test_reference_in_the_other_backend_is_refused(supabase_storage, st, settings):
    ref = add_reference(st, LocalStorage(settings.images_dir), build("webp"), settings=settings)
    with pytest.raises(StorageError, match="stored in local storage but the dashboard now uses supabase"):
        check_reachable(ref, supabase_storage)


def test_unwritable_journal_refuses_before_storing_anything(backend, st, settings, monkeypatch):
    def read_only(self, record):
        raise OSError(30, "Read-only file system")

    monkeypatch.setattr(CleanupJournal, "_append", read_only)
    with pytest.raises(StorageError, match="cleanup journal .*Read-only file system.*Nothing was stored"):
        add_reference(st, backend.storage, build("webp"), settings=settings)
    assert _rows(st) == [] and backend.objects() == []
