"""Storage backends: local files, and Supabase through the real `supabase` client against the
stand-in over HTTP. What must hold: puts are all-or-nothing, nothing is replaced silently, and
every failure is a StorageError subclass that says what to do and never shows the key."""
from __future__ import annotations

import os

import httpx
import pytest

from core.config import load_settings
from core.redact import redact
from core.errors import (
    BucketNotFound,
    ObjectExists,
    ObjectTooLarge,
    StorageError,
    StoragePermissionError,
    UnsupportedContentType,
)
from core.blobs import (
    JOURNAL_NAME,
    CleanupJournal,
    LocalStorage,
    Storage,
    SupabaseStorage,
    open_storage,
    sweep,
    unique_path,
)
from tests.standins.supabase_fixtures import BUCKET

JPEG = b"\xff\xd8\xff\xe0 not really a jpeg but bytes are bytes \xff\xd9"


def _files_under(root) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def _assert_no_part_of(key: str, text: str) -> None:
    """Neither the key nor any long piece of it (a JWT's payload or signature) is in `text`."""
    assert key not in text
    for piece in key.split("."):
        if len(piece) >= 16:
            assert piece not in text


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
    settings = load_settings()
    storage = open_storage(settings)
    try:
        assert isinstance(storage, SupabaseStorage) and storage.bucket == BUCKET
        assert supabase_env.key not in repr(storage)
        assert storage.journal.path == settings.data_dir / JOURNAL_NAME
    finally:
        storage.close()


def test_unique_paths_never_repeat_and_are_valid_supabase_keys(supabase_storage):
    paths = {unique_path("results/req-1/0", "png") for _ in range(200)}
    assert len(paths) == 200
    for path in list(paths)[:5]:
        assert path.startswith("results/req-1/0-") and path.endswith(".png")
        supabase_storage._check(path)


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
    supabase_storage.put("team/a b (1).jpg", JPEG, "image/jpeg")
    assert supabase_storage.get("team/a b (1).jpg") == JPEG
    assert supabase_storage.exists("team/a b (1).jpg")
    assert not supabase_storage.exists("team/missing.jpg")
    assert httpx.get(supabase_storage.public_url("team/a b (1).jpg")).content == JPEG
    supabase_storage.delete("team/a b (1).jpg")
    supabase_storage.delete("team/a b (1).jpg")
    assert supabase_standin.paths(BUCKET) == []


def test_supabase_refuses_keys_the_server_would_refuse_before_sending(supabase_standin, supabase_storage):
    """Supabase answers InvalidKey for non-ASCII object keys: say so before any request."""
    with pytest.raises(ValueError, match="only ASCII"):
        supabase_storage.put("team/café.jpg", JPEG, "image/jpeg")
    assert supabase_standin.requests == []


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


def test_supabase_key_that_may_not_create_buckets(supabase_standin, insert_only_key):
    with SupabaseStorage(supabase_standin.url, insert_only_key, BUCKET) as storage:
        with pytest.raises(BucketNotFound, match="may not create buckets.*create a public bucket named 'references'"):
            storage.put("team/1.jpg", JPEG, "image/jpeg")
        supabase_standin.add_bucket(BUCKET, public=True)
        storage.put("team/1.jpg", JPEG, "image/jpeg")
    assert supabase_standin.paths(BUCKET) == ["team/1.jpg"]


def test_supabase_anon_key_with_insert_policy_uploads(supabase_standin):
    """The old system's setup: the anon key sees no buckets but an insert policy lets it upload
    into the public bucket; the photo is stored and its public URL works."""
    supabase_standin.add_bucket(BUCKET, public=True)
    supabase_standin.grant("anon", "object.insert")
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


@pytest.mark.parametrize("kind, words", [
    ("not a jwt", "Invalid Compact JWS"),
    ("other project", "signature verification failed"),
    ("expired", '"exp" claim timestamp check failed'),
])
def test_supabase_wrong_key(supabase_standin, kind, words):
    key = {"not a jwt": "sb-wrong-secret-key-0123456789",
           "other project": supabase_standin.make_key("service_role", secret=b"elsewhere"),
           "expired": supabase_standin.make_key("service_role", expires_in=-60)}[kind]
    with SupabaseStorage(supabase_standin.url, key, BUCKET) as storage:
        with pytest.raises(StoragePermissionError, match="Check SUPABASE_KEY") as info:
            storage.put("team/1.jpg", JPEG, "image/jpeg")
    assert words in str(info.value) and "403" in str(info.value)
    _assert_no_part_of(key, str(info.value))


def test_supabase_role_unknown_to_the_database(supabase_standin):
    """A JWT whose role the database lacks makes the real server fail with HTTP 500 DatabaseError."""
    key = supabase_standin.make_key("editor")
    with SupabaseStorage(supabase_standin.url, key, BUCKET) as storage:
        with pytest.raises(StoragePermissionError, match="as the role in SUPABASE_KEY.*DatabaseError"):
            storage.put("team/1.jpg", JPEG, "image/jpeg")


def test_supabase_url_with_an_api_path_says_check_supabase_url(supabase_standin):
    """A URL pasted with /storage/v1 doubles the path: the server's own 404 points at SUPABASE_URL."""
    with SupabaseStorage(supabase_standin.url + "/storage/v1", supabase_standin.key, BUCKET) as storage:
        with pytest.raises(StorageError, match="no such route.*Check SUPABASE_URL"):
            storage.put("team/1.jpg", JPEG, "image/jpeg")


@pytest.mark.parametrize("status, error, expected, advice", [
    ("403", None, StoragePermissionError, "service-role key"),
    ("400", "InvalidRequest", StoragePermissionError, "Check SUPABASE_KEY"),  # no Authorization header
    ("404", "Bucket not found", BucketNotFound, "SUPABASE_BUCKET"),
    ("409", None, ObjectExists, "never replaced silently"),
    ("413", None, ObjectTooLarge, "file size limit"),
    ("415", None, UnsupportedContentType, "allowed MIME types"),
    ("500", None, StorageError, "could not upload"),
])
def test_supabase_upload_errors_map_to_clear_errors(supabase_standin, supabase_storage, status, error,
                                                     expected, advice):
    supabase_standin.add_bucket(BUCKET, public=True)
    message = {"404": "Bucket not found",
               "400": "headers must have required property 'authorization'"}.get(status)
    # a missing bucket is checked again and the upload retried once: fail both tries
    supabase_standin.fail("upload", status, error=error, message=message, times=2 if status == "404" else 1)
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


# -- Supabase: the bucket going away -------------------------------------------------------------

def test_supabase_exists_is_false_when_the_bucket_is_gone(supabase_standin, supabase_storage):
    """No bucket, no object: `exists` must not raise "bucket does not exist" (a later put creates it)."""
    assert supabase_storage.exists("team/1.jpg") is False


def test_supabase_bucket_deleted_while_running_is_created_again(supabase_standin, supabase_storage):
    supabase_storage.put("team/1.jpg", JPEG, "image/jpeg")
    supabase_standin.delete_bucket(BUCKET)
    supabase_storage.put("team/2.jpg", JPEG, "image/jpeg")
    assert supabase_standin.buckets[BUCKET].public
    assert supabase_standin.paths(BUCKET) == ["team/2.jpg"]
    assert httpx.get(supabase_storage.public_url("team/2.jpg")).content == JPEG


def test_supabase_bucket_gone_and_key_may_not_create_it(supabase_standin, insert_only_storage):
    insert_only_storage.put("team/1.jpg", JPEG, "image/jpeg")
    supabase_standin.delete_bucket(BUCKET)
    with pytest.raises(BucketNotFound, match="may not create buckets.*service-role key"):
        insert_only_storage.put("team/2.jpg", JPEG, "image/jpeg")


# -- Supabase: a key that may insert but not update or delete ------------------------------------

def test_insert_only_key_stores_new_paths(supabase_standin, insert_only_storage):
    obj = insert_only_storage.put(unique_path("team/abc", "jpg"), JPEG, "image/jpeg")
    assert httpx.get(obj.public_url).content == JPEG
    assert insert_only_storage.exists(obj.path)   # info works on a public bucket without select


def test_insert_only_key_overwrite_is_refused_with_what_to_do(supabase_standin, insert_only_storage):
    insert_only_storage.put("team/1.jpg", JPEG, "image/jpeg")
    with pytest.raises(StoragePermissionError, match="may not replace team/1.jpg.*SELECT, INSERT and UPDATE storage policies"):
        insert_only_storage.put("team/1.jpg", b"new", "image/jpeg", overwrite=True)
    assert supabase_standin.object(BUCKET, "team/1.jpg").data == JPEG


def test_insert_only_key_delete_is_refused_and_journaled(supabase_standin, insert_only_storage,
                                                         cleanup_journal):
    """Supabase answers 200 [] and keeps the object: the adapter notices, says so and journals it."""
    insert_only_storage.put("team/1.jpg", JPEG, "image/jpeg")
    with pytest.raises(StoragePermissionError, match="no DELETE storage policy.*reference cleanup") as info:
        insert_only_storage.delete("team/1.jpg")
    assert str(cleanup_journal.path) in str(info.value)
    assert [(e.path, e.kind) for e in cleanup_journal.pending()] == [("team/1.jpg", "delete")]
    assert supabase_standin.paths(BUCKET) == ["team/1.jpg"]


def test_insert_only_key_delete_of_a_missing_object_is_fine(supabase_standin, insert_only_storage,
                                                            cleanup_journal):
    insert_only_storage.delete("team/never.jpg")
    assert cleanup_journal.pending() == []


def test_insert_only_lost_answer_journals_the_orphan_and_a_later_sweep_removes_it(
        supabase_standin, insert_only_storage, supabase_storage, cleanup_journal):
    """The upload landed but its answer was lost; the clean-up delete is a silent no-op for this
    key. The object is journaled; a retry to the same path would get 409, a unique path works;
    a sweep with a key that may delete removes the orphan."""
    supabase_standin.drop("upload")
    with pytest.raises(StorageError, match="cannot reach Supabase Storage"):
        insert_only_storage.put("team/1.jpg", JPEG, "image/jpeg")
    assert supabase_standin.paths(BUCKET) == ["team/1.jpg"]
    (entry,) = cleanup_journal.pending()
    assert (entry.path, entry.kind, entry.location) == ("team/1.jpg", "delete", insert_only_storage.location)
    assert "may not delete" in entry.reason
    with pytest.raises(ObjectExists):
        insert_only_storage.put("team/1.jpg", JPEG, "image/jpeg")
    insert_only_storage.put(unique_path("team/1", "jpg"), JPEG, "image/jpeg")

    still = sweep(insert_only_storage)        # the same key: refused again, kept for later
    assert still.deleted == () and [e.path for e in still.left] == ["team/1.jpg"]
    done = sweep(supabase_storage)            # the service-role key (same bucket, same journal)
    assert done.deleted == ("team/1.jpg",) and done.left == ()
    assert "team/1.jpg" not in supabase_standin.paths(BUCKET)
    assert cleanup_journal.pending() == [] and not cleanup_journal.path.exists()


# -- cleanup journal -----------------------------------------------------------------------------

def test_journal_survives_a_torn_line_and_keeps_other_storages_entries(tmp_path):
    journal = CleanupJournal(tmp_path / JOURNAL_NAME)
    a = journal.add("local:/a", "x.jpg", "delete", reason="test")
    journal.add("local:/b", "y.jpg", "delete")
    with open(journal.path, "a") as f:
        f.write('{"id": "torn", "at": 1')   # a crash in the middle of a write
    assert [e.path for e in journal.pending("local:/a")] == ["x.jpg"]
    journal.resolve(a)
    journal.compact()
    assert [e.path for e in journal.pending()] == ["y.jpg"]


def test_unconfirmed_entries_wait_for_the_grace_period_and_ask_who_names_them(tmp_path):
    storage = LocalStorage(tmp_path / "images", journal=CleanupJournal(tmp_path / JOURNAL_NAME))
    for name, tag in (("named.jpg", "reference"), ("orphan.jpg", "reference"), ("other.jpg", "result")):
        storage.put(f"team/{name}", JPEG, "image/jpeg")
        storage.journal.add(storage.location, f"team/{name}", "unconfirmed", tag=tag)
    is_named = {"reference": lambda path: path == "team/named.jpg"}
    early = sweep(storage, is_named=is_named)
    assert early.deleted == () and len(early.left) == 3
    report = sweep(storage, is_named=is_named, grace_s=0)
    assert report.deleted == ("team/orphan.jpg",) and report.kept == ("team/named.jpg",)
    assert [e.tag for e in report.left] == ["result"]        # no predicate for its tag: left alone
    assert _files_under(tmp_path / "images") == ["team/named.jpg", "team/other.jpg"]


def test_local_delete_failure_is_journaled(tmp_path, monkeypatch):
    storage = LocalStorage(tmp_path / "images", journal=CleanupJournal(tmp_path / JOURNAL_NAME))
    storage.put("team/a.jpg", JPEG, "image/jpeg")

    def busy(self, missing_ok=False):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr("pathlib.Path.unlink", busy)
    with pytest.raises(StorageError, match="Permission denied.*recorded in .*reference cleanup"):
        storage.delete("team/a.jpg")
    monkeypatch.undo()
    assert [e.path for e in storage.journal.pending(storage.location)] == ["team/a.jpg"]
    assert sweep(storage).deleted == ("team/a.jpg",)


# -- masking -------------------------------------------------------------------------------------

@pytest.mark.parametrize("setup", ["wrong key", "no permission", "missing bucket", "server error"])
def test_an_echoed_key_never_appears_in_a_message(supabase_standin, setup):
    """The server may repeat the Authorization/apikey headers in its error text; our messages
    (and the JWT's payload and signature on their own) must never show them."""
    supabase_standin.echo_credentials = True
    key = {"wrong key": supabase_standin.make_key("service_role", secret=b"elsewhere"),
           "no permission": supabase_standin.make_key("authenticated"),
           "missing bucket": supabase_standin.key,
           "server error": supabase_standin.key}[setup]
    if setup == "no permission":
        supabase_standin.add_bucket(BUCKET, public=True)
    if setup == "server error":
        supabase_standin.add_bucket(BUCKET, public=True)
        supabase_standin.fail("upload", "500")
    with SupabaseStorage(supabase_standin.url, key, BUCKET, create_bucket=setup != "missing bucket") as storage:
        with pytest.raises(StorageError) as info:
            storage.put("team/1.jpg", JPEG, "image/jpeg")
    text = str(info.value)
    if setup != "missing bucket":
        assert "authorization: Bearer ***" in text       # the echo happened, and was masked
    _assert_no_part_of(key, text)


def test_redact_hides_the_supabase_key_and_its_pieces():
    key = "eyJhbGciOiJIUzI1NiJ9.eyJyb2xlIjoic2VydmljZV9yb2xlIn0.c2lnbmF0dXJlLXNpZ25hdHVyZQ"
    text = f"bad {key} / payload {key.split('.')[1]} / sig {key.split('.')[2]}"
    masked = redact(text, [key])
    _assert_no_part_of(key, masked)
    assert masked.startswith("bad ***")
