"""The Supabase Storage stand-in answers what the real server answers (docs/supabase-storage.md).

The adapter's tests are only as good as this stand-in: each test here pins one behaviour of the
real server, over real HTTP, mostly as raw requests (what goes over the wire), and through the
`supabase` client where the client's reading of the answer matters.
"""
from __future__ import annotations

import email.utils

import httpx
import pytest
from storage3.exceptions import StorageApiError
from supabase import create_client
from supabase.lib.client_options import SyncClientOptions

from tests.standins.supabase_server import INSERT_ONLY

JPEG = b"\xff\xd8\xff\xe0" + bytes(range(200)) + b"\xff\xd9"


@pytest.fixture
def api(supabase_standin):
    """Raw calls to /storage/v1 with a key (service role unless `key=` is given; None: no auth)."""
    http = httpx.Client(base_url=f"{supabase_standin.url}/storage/v1", timeout=10)

    def call(method: str, path: str, *, key: str | None = supabase_standin.key, **kw) -> httpx.Response:
        headers = dict(kw.pop("headers", {}))
        if key is not None:
            headers.update({"authorization": f"Bearer {key}", "apikey": key})
        return http.request(method, path, headers=headers, **kw)

    yield call
    http.close()


@pytest.fixture
def files(supabase_standin):
    """`from_(b)` of the real client, for any key: files(key)("bucket")."""
    clients: list[httpx.Client] = []

    def make(key: str = supabase_standin.key):
        http = httpx.Client(timeout=10)
        clients.append(http)
        client = create_client(supabase_standin.url, key, options=SyncClientOptions(httpx_client=http))
        return client.storage.from_

    yield make
    for c in clients:
        c.close()


def _upload(api, bucket: str, path: str, data: bytes = JPEG, content_type: str = "image/jpeg", *,
            key=None, upsert: bool = False, cache: str = "3600") -> httpx.Response:
    kw = {} if key is None else {"key": key}
    return api("POST", f"/object/{bucket}/{path}", files={"file": ("x", data, content_type)},
               data={"cacheControl": cache}, headers={"x-upsert": "true" if upsert else "false"}, **kw)


def _error(response: httpx.Response) -> tuple[int, str, str, str]:
    body = response.json()
    return response.status_code, body["statusCode"], body["error"], body.get("code")


# -- keys and roles ------------------------------------------------------------------------------

def test_missing_authorization_is_400_invalid_request(api):
    response = api("GET", "/bucket", key=None)
    assert _error(response) == (400, "400", "InvalidRequest", "InvalidRequest")
    assert "authorization" in response.json()["message"]


def test_malformed_key_is_403_invalid_compact_jws(api):
    response = api("GET", "/bucket", key="not-a-jwt")
    assert _error(response) == (400, "403", "Unauthorized", "AccessDenied")
    assert response.json()["message"] == "Invalid Compact JWS"


def test_key_signed_by_another_project_is_403_signature_verification_failed(api, supabase_standin):
    foreign = supabase_standin.make_key("service_role", secret=b"another project's secret")
    response = api("GET", "/bucket", key=foreign)
    assert _error(response)[1:] == ("403", "Unauthorized", "AccessDenied")
    assert response.json()["message"] == "signature verification failed"


def test_expired_key_is_403_exp_claim_check(api, supabase_standin):
    response = api("GET", "/bucket", key=supabase_standin.make_key("service_role", expires_in=-10))
    assert _error(response)[1] == "403"
    assert response.json()["message"] == '"exp" claim timestamp check failed'


def test_role_unknown_to_the_database_is_http_500_database_error(api, supabase_standin):
    response = api("GET", "/bucket", key=supabase_standin.make_key("editor"))
    assert _error(response) == (500, "500", "DatabaseError", "DatabaseError")


def test_role_comes_from_the_jwt_role_claim(api, supabase_standin):
    """The same request succeeds or not by the role claim alone."""
    supabase_standin.add_bucket("b", public=True)
    assert api("GET", "/bucket/b").status_code == 200
    assert _error(api("GET", "/bucket/b", key=supabase_standin.anon_key))[1:3] == ("404", "Bucket not found")


def test_role_without_policies_sees_no_bucket_and_may_not_upload(api, supabase_standin):
    supabase_standin.add_bucket("b", public=True)
    key = supabase_standin.make_key("authenticated")
    assert _error(api("GET", "/bucket/b", key=key)) == (400, "404", "Bucket not found", "NoSuchBucket")
    assert api("GET", "/bucket", key=key).json() == []
    refused = _upload(api, "b", "x.jpg", key=key)
    assert _error(refused)[1:3] == ("403", "Unauthorized")
    assert "row-level security" in refused.json()["message"]
    assert _error(api("POST", "/bucket", key=key, json={"id": "c", "name": "c"}))[1] == "403"


def test_service_role_bypasses_row_level_security(api, supabase_standin):
    assert api("POST", "/bucket", json={"id": "b", "name": "b", "public": True}).json() == {"name": "b"}
    assert _upload(api, "b", "x.jpg").status_code == 200
    assert _upload(api, "b", "x.jpg", b"new", upsert=True).status_code == 200
    assert [r["name"] for r in api("DELETE", "/object/b", json={"prefixes": ["x.jpg"]}).json()] == ["x.jpg"]


def test_insert_only_key_uploads_new_objects_but_every_upsert_is_refused(api, supabase_standin):
    supabase_standin.add_bucket("b", public=True)
    supabase_standin.grant("authenticated", *INSERT_ONLY)
    key = supabase_standin.make_key("authenticated")
    assert _upload(api, "b", "new.jpg", key=key).json()["Key"] == "b/new.jpg"
    assert _error(_upload(api, "b", "other.jpg", key=key, upsert=True))[1] == "403"   # even a new path
    assert _error(_upload(api, "b", "new.jpg", b"v2", key=key, upsert=True))[1] == "403"
    assert _error(api("PUT", "/object/b/new.jpg", key=key, files={"file": ("x", b"v2", "image/jpeg")}))[1] == "403"
    assert _error(_upload(api, "b", "new.jpg", key=key)) == (400, "409", "Duplicate", "KeyAlreadyExists")
    assert supabase_standin.paths("b") == ["new.jpg"] and supabase_standin.object("b", "new.jpg").data == JPEG


def test_remove_without_delete_policy_answers_200_empty_and_keeps_the_object(api, supabase_standin):
    supabase_standin.add_bucket("b", public=True)
    supabase_standin.grant("authenticated", *INSERT_ONLY)
    key = supabase_standin.make_key("authenticated")
    _upload(api, "b", "x.jpg", key=key)
    response = api("DELETE", "/object/b", key=key, json={"prefixes": ["x.jpg"]})
    assert (response.status_code, response.json()) == (200, [])
    assert supabase_standin.paths("b") == ["x.jpg"]
    supabase_standin.grant("authenticated", "object.delete", "object.select")
    assert [r["name"] for r in api("DELETE", "/object/b", key=key, json={"prefixes": ["x.jpg"]}).json()] == ["x.jpg"]


def test_any_key_reads_public_bucket_objects_but_lists_nothing_without_select(api, supabase_standin):
    supabase_standin.add_bucket("b", public=True)
    _upload(api, "b", "team/x.jpg")
    anon = supabase_standin.anon_key
    assert api("GET", "/object/b/team/x.jpg", key=anon).content == JPEG
    assert api("GET", "/object/info/b/team/x.jpg", key=anon).json()["size"] == len(JPEG)
    listed = api("POST", "/object/list/b", key=anon, json={"prefix": "team", "limit": 100, "offset": 0})
    assert (listed.status_code, listed.json()) == (200, [])


def test_private_bucket_objects_need_a_select_policy(api, supabase_standin):
    supabase_standin.add_bucket("p", public=False)
    _upload(api, "p", "x.jpg")
    anon = supabase_standin.anon_key
    assert _error(api("GET", "/object/info/p/x.jpg", key=anon))[1:3] == ("404", "not_found")
    supabase_standin.grant("anon", "object.select")
    assert api("GET", "/object/p/x.jpg", key=anon).content == JPEG


# -- missing buckets, public URLs ----------------------------------------------------------------

def test_missing_bucket_list_and_remove_answer_200_empty(api):
    assert api("POST", "/object/list/nope", json={"prefix": ""}).json() == []
    response = api("DELETE", "/object/nope", json={"prefixes": ["x.jpg"]})
    assert (response.status_code, response.json()) == (200, [])


@pytest.mark.parametrize("method, path", [("GET", "/bucket/nope"), ("GET", "/object/info/nope/x.jpg"),
                                          ("GET", "/object/nope/x.jpg"), ("POST", "/object/nope/x.jpg")])
def test_missing_bucket_is_404_no_such_bucket(api, method, path):
    kw = {"files": {"file": ("x", JPEG, "image/jpeg")}} if method == "POST" else {}
    response = api(method, path, **kw)
    assert _error(response) == (400, "404", "Bucket not found", "NoSuchBucket")
    assert response.json()["message"] == "Bucket not found"


def test_public_url_of_private_bucket_is_400_no_such_bucket_at_once(api, supabase_standin):
    """A bucket switched to private after upload: its public URLs stop working immediately."""
    supabase_standin.add_bucket("b", public=True)
    _upload(api, "b", "x.jpg")
    url = f"{supabase_standin.url}/storage/v1/object/public/b/x.jpg"
    assert httpx.get(url).status_code == 200
    assert api("PUT", "/bucket/b", json={"public": False}).json() == {"message": "Successfully updated"}
    response = httpx.get(url)
    assert _error(response) == (400, "404", "Bucket not found", "NoSuchBucket")


def test_public_url_of_missing_object_is_400_not_found(supabase_standin):
    supabase_standin.add_bucket("b", public=True)
    response = httpx.get(f"{supabase_standin.url}/storage/v1/object/public/b/missing.jpg")
    assert _error(response) == (400, "404", "not_found", "NoSuchKey")


def test_public_get_headers(api, supabase_standin):
    supabase_standin.add_bucket("b", public=True)
    _upload(api, "b", "x.jpg", cache="120")
    url = f"{supabase_standin.url}/storage/v1/object/public/b/x.jpg"
    headers = httpx.get(url).headers
    assert headers["content-type"] == "image/jpeg"
    assert headers["cache-control"] == "max-age=120"
    assert headers["etag"].startswith('"') and headers["accept-ranges"] == "bytes"
    assert headers["x-robots-tag"] == "none"
    assert email.utils.parsedate_to_datetime(headers["last-modified"]).tzinfo is not None
    assert "content-disposition" not in headers
    assert httpx.get(url, params={"download": ""}).headers["content-disposition"].startswith("attachment;")


def test_range_request_gets_206_and_etag_gets_304(api, supabase_standin):
    supabase_standin.add_bucket("b", public=True)
    _upload(api, "b", "x.jpg")
    url = f"{supabase_standin.url}/storage/v1/object/public/b/x.jpg"
    part = httpx.get(url, headers={"range": "bytes=0-3"})
    assert (part.status_code, part.content) == (206, JPEG[:4])
    assert part.headers["content-range"] == f"bytes 0-3/{len(JPEG)}"
    etag = httpx.get(url).headers["etag"]
    again = httpx.get(url, headers={"if-none-match": etag})
    assert (again.status_code, again.content) == (304, b"")


# -- objects -------------------------------------------------------------------------------------

def test_get_bucket_body_has_no_type_but_list_rows_do(api, supabase_standin):
    supabase_standin.add_bucket("b", public=True)
    assert "type" not in api("GET", "/bucket/b").json()
    assert api("GET", "/bucket").json()[0]["type"] == "STANDARD"


def test_content_type_is_stored_without_parameters(api, supabase_standin):
    supabase_standin.add_bucket("b", public=True)
    _upload(api, "b", "x.jpg", content_type="image/jpeg; charset=utf-8")
    assert supabase_standin.object("b", "x.jpg").content_type == "image/jpeg"


def test_default_content_type_through_the_client_is_text_plain(api, supabase_standin, files):
    """The pitfall the adapter avoids: without a content-type option Supabase stores text/plain."""
    supabase_standin.add_bucket("b", public=True)
    files()("b").upload("raw.jpg", JPEG)
    assert supabase_standin.object("b", "raw.jpg").content_type == "text/plain"


def test_remove_returns_storage_objects_rows(api, supabase_standin):
    supabase_standin.add_bucket("b", public=True)
    _upload(api, "b", "team/x.jpg")
    (row,) = api("DELETE", "/object/b", json={"prefixes": ["team/x.jpg", "team/none.jpg"]}).json()
    assert {"name", "bucket_id", "owner", "owner_id", "id", "version", "metadata", "user_metadata",
            "created_at", "updated_at"} <= set(row)
    assert row["name"] == "team/x.jpg" and row["bucket_id"] == "b"
    assert set(row["metadata"]) == {"eTag", "size", "mimetype", "cacheControl", "lastModified",
                                    "contentLength", "httpStatusCode"}
    assert row["metadata"]["mimetype"] == "image/jpeg" and row["metadata"]["size"] == len(JPEG)


def test_put_to_a_missing_path_creates_the_object(api, supabase_standin):
    supabase_standin.add_bucket("b", public=True)
    response = api("PUT", "/object/b/new.jpg", files={"file": ("x", JPEG, "image/jpeg")})
    assert response.status_code == 200 and supabase_standin.object("b", "new.jpg").data == JPEG


def test_raw_body_upload_is_accepted_with_no_cache(api, supabase_standin):
    supabase_standin.add_bucket("b", public=True)
    response = api("POST", "/object/b/raw.jpg", content=JPEG, headers={"content-type": "image/jpeg"})
    assert response.status_code == 200
    blob = supabase_standin.object("b", "raw.jpg")
    assert (blob.data, blob.content_type, blob.cache_control) == (JPEG, "image/jpeg", "no-cache")


def test_double_slash_key_is_accepted_and_lists_as_an_empty_name(api, supabase_standin, files):
    supabase_standin.add_bucket("b", public=True)
    assert _upload(api, "b", "team//x.jpg").status_code == 200
    assert [r["name"] for r in files()("b").list("team")] == [""]


def test_non_ascii_key_is_400_invalid_key(api, supabase_standin):
    supabase_standin.add_bucket("b", public=True)
    response = _upload(api, "b", "team/caf%C3%A9.jpg")
    assert _error(response)[1:3] == ("400", "InvalidKey")
    assert response.json()["message"].startswith("Invalid key:")


def test_list_gives_direct_children_with_folders_as_null_ids(supabase_standin, files):
    supabase_standin.add_bucket("b", public=True)
    bucket = files()("b")
    for path in ("team/a.jpg", "team/b.jpg", "team/sub/c.jpg", "other/d.jpg"):
        bucket.upload(path, JPEG, {"content-type": "image/jpeg"})
    assert [(r["name"], r["id"]) for r in bucket.list()] == [("other", None), ("team", None)]
    team = bucket.list("team")
    assert [r["name"] for r in team] == ["a.jpg", "b.jpg", "sub"]
    assert team[0]["metadata"]["mimetype"] == "image/jpeg" and team[2]["id"] is None


def test_signed_url_token_is_a_jwt_and_a_bad_token_is_invalid_jwt(supabase_standin, files):
    supabase_standin.add_bucket("b", public=False)
    bucket = files()("b")
    bucket.upload("x.jpg", JPEG, {"content-type": "image/jpeg"})
    signed = bucket.create_signed_url("x.jpg", 60)["signedURL"]
    token = signed.split("token=")[1]
    assert token.count(".") == 2 and httpx.get(signed).content == JPEG
    bad = httpx.get(signed.replace("token=", "token=x"))
    assert _error(bad)[1:3] == ("400", "InvalidJWT") and bad.json()["message"] == "Invalid Compact JWS"


def test_several_paths_are_signed_at_once(api, supabase_standin):
    supabase_standin.add_bucket("b", public=False)
    _upload(api, "b", "x.jpg")
    rows = api("POST", "/object/sign/b", json={"paths": ["x.jpg", "gone.jpg"], "expiresIn": "60"}).json()
    assert [(r["path"], r["signedURL"] is not None) for r in rows] == [("x.jpg", True), ("gone.jpg", False)]
    assert rows[1]["error"]
    assert httpx.get(f"{supabase_standin.url}/storage/v1{rows[0]['signedURL']}").content == JPEG


# -- bucket admin and errors ---------------------------------------------------------------------

def test_bucket_update_empty_and_delete(api, supabase_standin):
    supabase_standin.add_bucket("b", public=True)
    _upload(api, "b", "x.jpg")
    assert _error(api("DELETE", "/bucket/b")) == (400, "409", "ResourceNotEmpty", "ResourceNotEmpty")
    assert api("POST", "/bucket/b/empty").status_code == 200
    assert supabase_standin.paths("b") == []
    assert api("DELETE", "/bucket/b").status_code == 200
    assert "b" not in supabase_standin.buckets


def test_existing_object_and_bucket_are_409_duplicate_as_the_client_reads_them(api, supabase_standin, files):
    supabase_standin.add_bucket("b", public=True)
    _upload(api, "b", "x.jpg")
    with pytest.raises(StorageApiError) as info:
        files()("b").upload("x.jpg", JPEG, {"content-type": "image/jpeg"})
    assert (info.value.status, info.value.code) == ("409", "Duplicate")
    bucket = api("POST", "/bucket", json={"id": "b", "name": "b"})
    assert _error(bucket) == (400, "409", "Duplicate", "BucketAlreadyExists")


def test_internal_error_is_http_500_with_the_same_body_shape(api, supabase_standin):
    supabase_standin.add_bucket("b", public=True)
    supabase_standin.fail("upload", "500")
    response = _upload(api, "b", "x.jpg")
    assert response.status_code == 500
    assert set(response.json()) == {"statusCode", "error", "message", "code"}
    assert response.json()["statusCode"] == "500"


def test_unknown_route_is_a_real_404_with_a_numeric_status(api):
    response = api("GET", "/nothing/here")
    assert response.status_code == 404
    assert response.json() == {"statusCode": 404, "error": "Not Found",
                               "message": "Route GET:/storage/v1/nothing/here not found"}


def test_echo_credentials_repeats_the_key_in_errors(api, supabase_standin):
    """The knob the masking tests rely on: the key really comes back in the error text."""
    supabase_standin.echo_credentials = True
    key = supabase_standin.make_key("authenticated")
    response = _upload(api, "nope", "x.jpg", key=key)
    assert key in response.json()["message"]


def test_lost_answer_still_stores_the_upload(api, supabase_standin):
    supabase_standin.add_bucket("b", public=True)
    supabase_standin.drop("upload")
    with pytest.raises(httpx.RemoteProtocolError):
        _upload(api, "b", "x.jpg")
    assert supabase_standin.paths("b") == ["x.jpg"]

