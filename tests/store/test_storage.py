"""Storage backends: local files, and Supabase through the real `supabase` client against the
stand-in over HTTP. What must hold: puts are all-or-nothing, nothing is replaced silently, and
every failure is a StorageError subclass that says what to do and never shows the key."""
from __future__ import annotations

import os

import httpx
import pytest

from core.config import load_settings
from core.errors import (
    BucketNotFound,
    ObjectExists,
    ObjectTooLarge,
    StorageError,
    StoragePermissionError,
    UnsupportedContentType,
)
from core.store.blobs import LocalStorage, Storage, SupabaseStorage, open_storage
from tests.standins.supabase_fixtures import BUCKET

JPEG = b"\xff\xd8\xff\xe0 not really a jpeg but bytes are bytes \xff\xd9"


def _files_under(root) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


# -- local ---------------------------------------------------------------------------------------

def test_local_round_trip(tmp_path):
    storage = LocalStorage(tmp_path / "images")
    assert isinstance(storage, Storage)
    obj = storage.put("team/abc.jpg", JPEG, "image/jpeg")
    assert (obj.backend, obj.path, obj.content_type, obj.size, obj.public_url) == (
        "local", "team/abc.jpg", "image/jpeg", len(JPEG), None)
    assert storage.get("team/abc.jpg") == JPEG
    assert storage.exists("team/abc.jpg") and not storage.exists("team/other.jpg")
    assert _files_under(tmp_path / "images") == ["team/abc.jpg"]  # no temp file left behind
    storage.delete("team/abc.jpg")
    storage.delete("team/abc.jpg")  # deleting twice is fine
    assert not storage.exists("team/abc.jpg")


def test_local_put_never_replaces_silently(tmp_path):
    storage = LocalStorage(tmp_path)
    storage.put("a/b.jpg", JPEG, "image/jpeg")
    with pytest.raises(ObjectExists, match="never replaced silently"):
        storage.put("a/b.jpg", b"other", "image/jpeg")
    assert storage.get("a/b.jpg") == JPEG
    storage.put("a/b.jpg", b"other", "image/jpeg", overwrite=True)
    assert storage.get("a/b.jpg") == b"other"
    assert _files_under(tmp_path) == ["a/b.jpg"]


def test_local_failed_put_leaves_nothing(tmp_path, monkeypatch):
    """A write that fails midway (disk full) leaves neither the object nor a temp file."""
    storage = LocalStorage(tmp_path)

    def disk_full(*a, **k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "link", disk_full)
    with pytest.raises(StorageError, match="No space left on device.*free disk space"):
        storage.put("team/x.jpg", JPEG, "image/jpeg")
    assert _files_under(tmp_path) == []


def test_local_missing_object_says_what_happened(tmp_path):
    with pytest.raises(StorageError, match="no stored object team/gone.jpg.*DASHBOARD_DATA_DIR"):
        LocalStorage(tmp_path).get("team/gone.jpg")


@pytest.mark.parametrize("path", ["", "/abs.jpg", "../up.jpg", "a/../b.jpg", "a//b.jpg", "a/./b.jpg", "a\\b.jpg"])
def test_paths_must_be_plain_relative(tmp_path, path):
    with pytest.raises(ValueError):
        LocalStorage(tmp_path).put(path, JPEG, "image/jpeg")
    assert _files_under(tmp_path) == []


def test_open_storage_is_local_without_supabase_settings(settings):
    storage = open_storage(settings)
    assert isinstance(storage, LocalStorage) and storage.root == settings.images_dir


def test_open_storage_is_supabase_when_url_and_key_are_set(supabase_env):
    storage = open_storage(load_settings())
    try:
        assert isinstance(storage, SupabaseStorage) and storage.bucket == BUCKET
        assert supabase_env.key not in repr(storage)
    finally:
        storage.close()


# -- Supabase: happy path ------------------------------------------------------------------------

def test_supabase_put_creates_public_bucket_and_sends_what_supabase_needs(supabase_standin, supabase_storage):
    obj = supabase_storage.put("team/abc.jpg", JPEG, "image/jpeg")
    bucket = supabase_standin.buckets[BUCKET]
    assert bucket.public
    blob = supabase_standin.object(BUCKET, "team/abc.jpg")
    assert blob.data == JPEG and blob.content_type == "image/jpeg"
    upload = [r for r in supabase_standin.requests if r.op == "upload"][-1]
    assert upload.headers["x-upsert"] == "false"
    assert upload.headers["authorization"] == f"Bearer {supabase_standin.key}"
    assert upload.headers["apikey"] == supabase_standin.key
    assert upload.form["file.content-type"] == "image/jpeg"
    assert upload.form["cacheControl"] == "31536000"
    assert (obj.backend, obj.path, obj.size) == ("supabase", "team/abc.jpg", len(JPEG))
    assert obj.public_url == f"{supabase_standin.url}/storage/v1/object/public/{BUCKET}/team/abc.jpg"


def test_supabase_public_url_serves_the_bytes_without_auth(supabase_storage):
    obj = supabase_storage.put("team/abc.jpg", JPEG, "image/jpeg")
    response = httpx.get(obj.public_url)
    assert response.status_code == 200
    assert response.content == JPEG
    assert response.headers["content-type"] == "image/jpeg"


def test_supabase_get_exists_delete(supabase_standin, supabase_storage):
    supabase_storage.put("team/a b é.jpg", JPEG, "image/jpeg")
    assert supabase_storage.get("team/a b é.jpg") == JPEG
    assert supabase_storage.exists("team/a b é.jpg")
    assert not supabase_storage.exists("team/missing.jpg")
    assert httpx.get(supabase_storage.public_url("team/a b é.jpg")).content == JPEG
    supabase_storage.delete("team/a b é.jpg")
    supabase_storage.delete("team/a b é.jpg")
    assert supabase_standin.paths(BUCKET) == []


def test_supabase_bucket_is_checked_once(supabase_standin, supabase_storage):
    supabase_storage.put("team/1.jpg", JPEG, "image/jpeg")
    supabase_storage.put("team/2.jpg", JPEG, "image/jpeg")
    assert supabase_standin.ops().count("get_bucket") == 2   # missing, then after creating it
    assert supabase_standin.ops().count("create_bucket") == 1


def test_supabase_uses_an_existing_public_bucket(supabase_standin, supabase_storage):
    supabase_standin.add_bucket(BUCKET, public=True)
    supabase_storage.put("team/1.jpg", JPEG, "image/jpeg")
    assert "create_bucket" not in supabase_standin.ops()


def test_supabase_bucket_created_meanwhile_is_fine(supabase_standin, supabase_storage):
    """Two processes race to create the bucket: the loser's "409" BucketAlreadyExists is not an error."""
    supabase_standin.add_bucket(BUCKET, public=True)
    supabase_standin.fail("get_bucket", "404", error="Bucket not found", message="Bucket not found")
    supabase_storage.put("team/1.jpg", JPEG, "image/jpeg")
    assert supabase_standin.ops()[:3] == ["get_bucket", "create_bucket", "get_bucket"]
    assert supabase_standin.paths(BUCKET) == ["team/1.jpg"]


def test_supabase_overwrite_sends_upsert_true(supabase_standin, supabase_storage):
    supabase_storage.put("team/1.jpg", JPEG, "image/jpeg")
    supabase_storage.put("team/1.jpg", b"new", "image/png", overwrite=True)
    assert supabase_standin.requests[-1].headers["x-upsert"] == "true"
    assert supabase_standin.object(BUCKET, "team/1.jpg").content_type == "image/png"


# -- Supabase: failures --------------------------------------------------------------------------

def test_supabase_private_bucket_is_refused_with_advice(supabase_standin, supabase_storage):
    supabase_standin.add_bucket(BUCKET, public=False)
    with pytest.raises(StorageError, match="is private.*make the bucket public"):
        supabase_storage.put("team/1.jpg", JPEG, "image/jpeg")
    assert supabase_standin.paths(BUCKET) == []


def test_supabase_missing_bucket_without_create(supabase_standin):
    with SupabaseStorage(supabase_standin.url, supabase_standin.key, "nope", create_bucket=False) as storage:
        with pytest.raises(BucketNotFound, match="'nope' does not exist.*SUPABASE_BUCKET"):
            storage.put("team/1.jpg", JPEG, "image/jpeg")


def test_supabase_key_that_may_not_create_buckets(supabase_standin):
    supabase_standin.add_key("user-key", "authenticated")  # may write objects, not buckets
    with SupabaseStorage(supabase_standin.url, "user-key", BUCKET) as storage:
        with pytest.raises(BucketNotFound, match="may not create buckets.*create a public bucket named 'references'"):
            storage.put("team/1.jpg", JPEG, "image/jpeg")
        supabase_standin.add_bucket(BUCKET, public=True)
        storage.put("team/1.jpg", JPEG, "image/jpeg")
    assert supabase_standin.paths(BUCKET) == ["team/1.jpg"]


def test_supabase_anon_key_with_insert_policy_uploads(supabase_standin):
    """The old system's setup: the anon key sees no buckets but an insert policy lets it upload
    into the public bucket; the photo is stored and its public URL works."""
    supabase_standin.add_bucket(BUCKET, public=True)
    supabase_standin.permissions["anon"] = {"write"}
    with SupabaseStorage(supabase_standin.url, supabase_standin.anon_key, BUCKET) as storage:
        obj = storage.put("team/1.jpg", JPEG, "image/jpeg")
    assert httpx.get(obj.public_url).content == JPEG
    assert supabase_standin.ops()[:3] == ["get_bucket", "create_bucket", "upload"]


def test_supabase_anon_key_cannot_write(supabase_standin):
    """The anon key without policies is refused by row-level security ("403"): the message
    points at the service-role key and never shows the key."""
    supabase_standin.add_bucket(BUCKET, public=True)
    with SupabaseStorage(supabase_standin.url, supabase_standin.anon_key, BUCKET) as storage:
        with pytest.raises(StoragePermissionError) as info:
            storage.put("team/1.jpg", JPEG, "image/jpeg")
    assert "403" in str(info.value) and "service-role key" in str(info.value)
    assert supabase_standin.anon_key not in str(info.value)
    assert supabase_standin.paths(BUCKET) == []


def test_supabase_wrong_key(supabase_standin):
    with SupabaseStorage(supabase_standin.url, "sb-wrong-secret-key", BUCKET) as storage:
        with pytest.raises(StoragePermissionError, match="InvalidJWT.*Check SUPABASE_KEY") as info:
            storage.put("team/1.jpg", JPEG, "image/jpeg")
    assert "sb-wrong-secret-key" not in str(info.value)


@pytest.mark.parametrize("status, error, expected, advice", [
    ("403", None, StoragePermissionError, "service-role key"),
    ("400", "Error", StoragePermissionError, "Check SUPABASE_KEY"),   # no Authorization header
    ("404", "Bucket not found", BucketNotFound, "SUPABASE_BUCKET"),
    ("409", None, ObjectExists, "never replaced silently"),
    ("413", None, ObjectTooLarge, "file size limit"),
    ("415", None, UnsupportedContentType, "allowed MIME types"),
    ("500", None, StorageError, "could not upload"),
])
def test_supabase_upload_errors_map_to_clear_errors(supabase_standin, supabase_storage, status, error,
                                                     expected, advice):
    supabase_standin.add_bucket(BUCKET, public=True)
    supabase_standin.fail("upload", status, error=error,
                          message="Bucket not found" if status == "404" else None)
    with pytest.raises(expected) as info:
        supabase_storage.put("team/1.jpg", JPEG, "image/jpeg")
    assert type(info.value) is expected
    assert advice in str(info.value)
    assert supabase_standin.key not in str(info.value)
    assert supabase_standin.paths(BUCKET) == []


def test_supabase_bucket_size_limit_is_enforced(supabase_standin, supabase_storage):
    supabase_standin.add_bucket(BUCKET, public=True, file_size_limit=10)
    with pytest.raises(ObjectTooLarge, match="file size limit"):
        supabase_storage.put("team/1.jpg", JPEG, "image/jpeg")
    assert supabase_standin.paths(BUCKET) == []


def test_supabase_bucket_mime_restriction_is_enforced(supabase_standin, supabase_storage):
    supabase_standin.add_bucket(BUCKET, public=True, allowed_mime_types=["image/png"])
    with pytest.raises(UnsupportedContentType, match="does not accept image/jpeg"):
        supabase_storage.put("team/1.jpg", JPEG, "image/jpeg")
    supabase_storage.put("team/1.png", b"png", "image/png")
    assert supabase_standin.paths(BUCKET) == ["team/1.png"]


def test_supabase_duplicate_path_keeps_the_original(supabase_standin, supabase_storage):
    supabase_storage.put("team/1.jpg", JPEG, "image/jpeg")
    with pytest.raises(ObjectExists):
        supabase_storage.put("team/1.jpg", b"other", "image/jpeg")
    assert supabase_standin.object(BUCKET, "team/1.jpg").data == JPEG


def test_supabase_lost_answer_leaves_no_object(supabase_standin, supabase_storage):
    """The server stored the upload but the answer never arrived: the object is removed again."""
    supabase_standin.add_bucket(BUCKET, public=True)
    supabase_standin.drop("upload")
    with pytest.raises(StorageError, match="cannot reach Supabase Storage"):
        supabase_storage.put("team/1.jpg", JPEG, "image/jpeg")
    assert supabase_standin.ops()[-2:] == ["upload", "remove"]
    assert supabase_standin.paths(BUCKET) == []


def test_supabase_missing_object(supabase_standin, supabase_storage):
    supabase_standin.add_bucket(BUCKET, public=True)
    with pytest.raises(StorageError, match="no object team/gone.jpg"):
        supabase_storage.get("team/gone.jpg")


def test_supabase_unreachable():
    with SupabaseStorage("http://127.0.0.1:9", "some-key", BUCKET, timeout=5) as storage:
        with pytest.raises(StorageError, match="cannot reach Supabase Storage at http://127.0.0.1:9.*SUPABASE_URL"):
            storage.put("team/1.jpg", JPEG, "image/jpeg")


# -- the stand-in itself speaks the documented protocol -------------------------------------------

def test_standin_requires_authorization(supabase_standin):
    response = httpx.get(f"{supabase_standin.url}/storage/v1/bucket")
    assert response.status_code == 400
    assert response.json()["statusCode"] == "400" and response.json()["error"] == "Error"


def test_standin_public_url_answers_400_for_private_or_missing(supabase_standin):
    supabase_standin.add_bucket("private", public=False)
    supabase_standin.add_bucket("open", public=True)
    with SupabaseStorage(supabase_standin.url, supabase_standin.key, "private") as storage:
        storage._files.upload("a.jpg", JPEG, {"content-type": "image/jpeg"})
        private_url = storage.public_url("a.jpg")
    for url in (private_url, f"{supabase_standin.url}/storage/v1/object/public/open/missing.jpg"):
        response = httpx.get(url)
        assert response.status_code == 400 and response.json()["statusCode"] == "404"


def test_standin_list_remove_and_signed_urls(supabase_standin, supabase_storage):
    for path in ("team/a.jpg", "team/b.jpg", "team/sub/c.jpg", "other/d.jpg"):
        supabase_storage.put(path, JPEG, "image/jpeg")
    files = supabase_storage._files
    top = files.list()
    assert [(r["name"], r["id"]) for r in top] == [("other", None), ("team", None)]
    team = files.list("team")
    assert [r["name"] for r in team] == ["a.jpg", "b.jpg", "sub"]
    assert team[0]["metadata"]["mimetype"] == "image/jpeg" and team[2]["id"] is None
    signed = files.create_signed_url("team/a.jpg", 60)["signedURL"]
    assert httpx.get(signed).content == JPEG
    assert httpx.get(signed.replace("token=", "token=1")).status_code == 400
    removed = files.remove(["team/a.jpg", "team/nope.jpg"])
    assert [r["name"] for r in removed] == ["team/a.jpg"]
    assert files.remove(["team/a.jpg"]) == []


def test_standin_default_content_type_is_text_plain(supabase_standin, supabase_storage):
    """The pitfall the adapter avoids: without a content-type option Supabase stores text/plain."""
    supabase_storage.ensure_bucket()
    supabase_storage._files.upload("team/raw.jpg", JPEG)
    assert supabase_standin.object(BUCKET, "team/raw.jpg").content_type.startswith("text/plain")
