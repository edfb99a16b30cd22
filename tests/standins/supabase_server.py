"""A local stand-in for Supabase Storage that answers what the real server answers.

Real HTTP/1.1 (keep-alive) on 127.0.0.1 with the stdlib ThreadingHTTPServer. It follows the
behaviour written down in docs/supabase-storage.md (storage API v1, as the `supabase` 2.34 /
storage3 2.34 client speaks it, observed against the real server v1.70):

- Keys are JWTs (HS256, signed with the stand-in's secret); the `role` claim picks the role.
  `Authorization: Bearer <jwt>` is required except on public and signed GETs: missing -> "400"
  InvalidRequest; malformed, foreign-signed or expired -> "403" Unauthorized (AccessDenied) with
  the real messages; a role the database does not know -> HTTP 500 DatabaseError.
- Roles: `service_role` bypasses row-level security. Every other role gets only what
  `policies[role]` grants, per operation: "bucket.select", "bucket.insert", "object.select",
  "object.insert", "object.update", "object.delete". With none: `get_bucket` 404 NoSuchBucket,
  upload "403". Upserts (`x-upsert: true`, even to a new path, and PUT) need select, insert
  AND update; `remove` without delete and select policies answers 200 `[]` and deletes
  nothing. Objects of a PUBLIC bucket can be read (download, info) by any valid key; `list`
  without select answers 200 `[]`.
- Missing bucket: `list` and `remove` 200 `[]`; get_bucket, upload, info, download "404"
  NoSuchBucket. Public GET: 400 with "404" NoSuchBucket when the bucket is private or missing,
  "404" not_found when the object is missing.
- Errors are HTTP 400 (500 for internal ones) with the real code as a string `statusCode`, plus
  `error`, `message` and `code`; an unknown route is a real HTTP 404 with a numeric statusCode.
- Objects: multipart upload (file part with its content type, `cacheControl`) or a raw body
  (stored with `no-cache`); content types stored without parameters; keys checked like the
  real server (ASCII only; `a//b` allowed); public GET headers (cache-control, etag,
  last-modified, accept-ranges, x-robots-tag, content-disposition on `?download=`), Range ->
  206, If-None-Match -> 304; `remove` returns full `storage.objects` rows; signed URLs carry a
  JWT; several paths can be signed at once.
- Bucket admin: create, list, get (no `type` field, list rows have one), update, empty, delete
  (409 ResourceNotEmpty when not empty).

Knobs for tests: `make_key(role, ...)` issues keys; `grant(role, *ops)` adds policies;
`fail(op, status)` makes the next `op` answer that error; `drop(op)` makes it do its work and
then close the connection without answering (an answer lost in transit); `echo_credentials`
makes every error message repeat the Authorization and apikey headers (to test masking).
`requests` records what the client sent; `objects`/`object()`/`paths()` show what is stored.
"""
from __future__ import annotations

import base64
import fnmatch
import hashlib
import hmac
import json
import re
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlsplit

from tests.serving import serve_in_thread, shut

GLOBAL_UPLOAD_LIMIT = 50 * 1024 * 1024
POLICY_OPS = ("bucket.select", "bucket.insert", "object.select", "object.insert", "object.update",
              "object.delete")
# What the "insert-only" setups grant: a key that may add objects but never change or delete them.
INSERT_ONLY = ("object.insert",)
# storage-api's isValidKey: ASCII word characters and a few punctuation marks; anything else
# (e.g. "é") is refused with InvalidKey.
_VALID_KEY = re.compile(r"^(\w|/|!|-|\.|\*|'|\(|\)| |&|\$|@|=|;|:|\+|,|\?)*$", re.ASCII)

# statusCode -> (error, message, code) as the real server words them
ERRORS: dict[str, tuple[str, str, str]] = {
    "400": ("InvalidRequest", "Invalid request", "InvalidRequest"),
    "403": ("Unauthorized", "new row violates row-level security policy", "AccessDenied"),
    "404": ("not_found", "Object not found", "NoSuchKey"),
    "409": ("Duplicate", "The resource already exists", "KeyAlreadyExists"),
    "413": ("Payload too large", "The object exceeded the maximum allowed size", "EntityTooLarge"),
    "415": ("invalid_mime_type", "mime type is not supported", "InvalidMimeType"),
    "500": ("Internal", "Internal Server Error", "InternalError"),
}


class StorageFault(Exception):
    """An error answer. `http` is the real HTTP status (400 for every 4xx code, 500 for 500)."""

    def __init__(self, status: str, error: str | None = None, message: str | None = None,
                 code: str | None = None):
        default = ERRORS.get(status, ("Error", "error", "Error"))
        self.status, self.error = status, error or default[0]
        self.message, self.code = message or default[1], code or default[2]
        super().__init__(f"{self.status} {self.error}: {self.message}")

    @property
    def http(self) -> int:
        return 500 if self.status == "500" else 400

    def body(self) -> dict[str, Any]:
        return {"statusCode": self.status, "code": self.code, "error": self.error, "message": self.message}


class RouteNotFound(StorageFault):
    """The web framework's own 404: a numeric statusCode and no `code`."""

    def __init__(self, method: str, path: str):
        super().__init__("404", "Not Found", f"Route {method}:{path} not found")

    @property
    def http(self) -> int:
        return 404

    def body(self) -> dict[str, Any]:
        return {"statusCode": 404, "error": "Not Found", "message": self.message}


def _no_bucket() -> StorageFault:
    return StorageFault("404", "Bucket not found", "Bucket not found", "NoSuchBucket")


@dataclass
class Bucket:
    id: str
    public: bool = False
    file_size_limit: int | None = None
    allowed_mime_types: list[str] | None = None
    owner: str = ""
    created_at: str = field(default_factory=lambda: _now())

    def row(self, *, with_type: bool) -> dict[str, Any]:
        row = {"id": self.id, "name": self.id, "owner": self.owner, "public": self.public,
               "file_size_limit": self.file_size_limit, "allowed_mime_types": self.allowed_mime_types,
               "created_at": self.created_at, "updated_at": self.created_at}
        if with_type:  # list_buckets rows have it, get_bucket's body does not
            row["type"] = "STANDARD"
        return row


@dataclass
class StoredBlob:
    data: bytes
    content_type: str
    cache_control: str          # the header value served: "max-age=N" or "no-cache"
    owner: str | None = None
    id: str = field(default_factory=lambda: str(uuid.uuid4()))
    created: datetime = field(default_factory=lambda: datetime.now(timezone.utc))

    @property
    def created_at(self) -> str:
        return self.created.isoformat(timespec="milliseconds").replace("+00:00", "Z")

    @property
    def etag(self) -> str:
        return '"' + hashlib.md5(self.data).hexdigest() + '"'

    def metadata(self) -> dict[str, Any]:
        return {"eTag": self.etag, "size": len(self.data), "mimetype": self.content_type,
                "cacheControl": self.cache_control, "lastModified": self.created_at,
                "contentLength": len(self.data), "httpStatusCode": 200}


@dataclass(frozen=True)
class RecordedRequest:
    op: str
    method: str
    path: str
    headers: dict[str, str]
    form: dict[str, str]            # multipart text fields and, for `file`, its content type
    size: int


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def encode_jwt(claims: dict[str, Any], secret: bytes) -> str:
    """A compact HS256 JWS, as Supabase's keys and signed-URL tokens are."""
    head = _b64(json.dumps({"alg": "HS256", "typ": "JWT"}, separators=(",", ":")).encode())
    body = _b64(json.dumps(claims, separators=(",", ":")).encode())
    sig = _b64(hmac.new(secret, f"{head}.{body}".encode(), "sha256").digest())
    return f"{head}.{body}.{sig}"


def decode_jwt(token: str, secret: bytes) -> dict[str, Any]:
    """The claims, or StorageFault with the real server's wording."""
    parts = token.split(".")
    try:
        if len(parts) != 3:
            raise ValueError
        header = json.loads(_unb64(parts[0]))
        claims = json.loads(_unb64(parts[1]))
        signature = _unb64(parts[2])
        if not isinstance(header, dict) or not isinstance(claims, dict):
            raise ValueError
    except (ValueError, UnicodeDecodeError):
        raise StorageFault("403", "Unauthorized", "Invalid Compact JWS", "AccessDenied") from None
    expected = hmac.new(secret, f"{parts[0]}.{parts[1]}".encode(), "sha256").digest()
    if header.get("alg") != "HS256" or not hmac.compare_digest(signature, expected):
        raise StorageFault("403", "Unauthorized", "signature verification failed", "AccessDenied")
    exp = claims.get("exp")
    if isinstance(exp, (int, float)) and exp <= time.time():
        raise StorageFault("403", "Unauthorized", '"exp" claim timestamp check failed', "AccessDenied")
    return claims


class SupabaseStandin:
    def __init__(self) -> None:
        self.jwt_secret = uuid.uuid4().bytes + uuid.uuid4().bytes
        # roles that exist in the database; a JWT naming another one gets a DatabaseError
        self.roles: set[str] = {"anon", "authenticated", "service_role"}
        self.policies: dict[str, set[str]] = {"anon": set(), "authenticated": set()}
        self.key = self.make_key("service_role")
        self.anon_key = self.make_key("anon")
        self.echo_credentials = False
        self.buckets: dict[str, Bucket] = {}
        self.objects: dict[tuple[str, str], StoredBlob] = {}
        self.requests: list[RecordedRequest] = []
        self.upload_limit = GLOBAL_UPLOAD_LIMIT
        self._faults: list[tuple[str, StorageFault | None]] = []
        self._lock = threading.RLock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle -------------------------------------------------------------------------------

    def start(self) -> SupabaseStandin:
        standin = self

        class Handler(_Handler):
            owner = standin

        self._server, self._thread = serve_in_thread(Handler, name="supabase-standin")
        return self

    def stop(self) -> None:
        shut(self._server, self._thread)
        self._server = self._thread = None

    @property
    def url(self) -> str:
        assert self._server, "stand-in not started"
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    # -- knobs and inspection ------------------------------------------------------------------

    def make_key(self, role: str, *, expires_in: float | None = None, secret: bytes | None = None) -> str:
        """A key for `role` signed by this project (or by `secret`: a foreign project's key)."""
        now = int(time.time())
        claims: dict[str, Any] = {"iss": "supabase-standin", "role": role, "iat": now}
        if expires_in is not None:
            claims["exp"] = now + expires_in
        return encode_jwt(claims, secret or self.jwt_secret)

    def grant(self, role: str, *ops: str) -> None:
        """Storage policies for `role`, per operation (see POLICY_OPS)."""
        unknown = set(ops) - set(POLICY_OPS)
        assert not unknown, f"unknown policy operations {unknown}"
        with self._lock:
            self.policies.setdefault(role, set()).update(ops)

    def add_bucket(self, id: str, *, public: bool = True, file_size_limit: int | None = None,
                   allowed_mime_types: list[str] | None = None) -> Bucket:
        with self._lock:
            self.buckets[id] = Bucket(id, public, file_size_limit, allowed_mime_types)
            return self.buckets[id]

    def delete_bucket(self, id: str) -> None:
        """What an admin does in the dashboard: the bucket and everything in it go."""
        with self._lock:
            self.buckets.pop(id, None)
            for key in [k for k in self.objects if k[0] == id]:
                del self.objects[key]

    def fail(self, op: str, status: str, *, times: int = 1, error: str | None = None,
             message: str | None = None, code: str | None = None) -> None:
        """The next `times` calls of `op` answer this error (`op` as in RecordedRequest.op)."""
        with self._lock:
            self._faults += [(op, StorageFault(status, error, message, code))] * times

    def drop(self, op: str, *, times: int = 1) -> None:
        """The next `times` calls of `op` do their work, then close the connection unanswered."""
        with self._lock:
            self._faults += [(op, None)] * times

    def object(self, bucket: str, path: str) -> StoredBlob | None:
        with self._lock:
            return self.objects.get((bucket, path))

    def paths(self, bucket: str) -> list[str]:
        with self._lock:
            return sorted(p for b, p in self.objects if b == bucket)

    def ops(self) -> list[str]:
        return [r.op for r in self.requests]

    def _take_fault(self, op: str) -> tuple[bool, StorageFault | None]:
        with self._lock:
            for i, (name, fault) in enumerate(self._faults):
                if name == op:
                    del self._faults[i]
                    return True, fault
        return False, None


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    owner: SupabaseStandin
    timeout = 30  # an idle keep-alive connection ends its thread after this

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    def do_GET(self) -> None:
        self._dispatch()

    def do_HEAD(self) -> None:
        self._dispatch()

    def do_POST(self) -> None:
        self._dispatch()

    def do_PUT(self) -> None:
        self._dispatch()

    def do_DELETE(self) -> None:
        self._dispatch()

    # -- plumbing --------------------------------------------------------------------------------

    def _body(self) -> bytes:
        if self.headers.get("transfer-encoding", "").lower() == "chunked":
            out = b""
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return out
                out += self.rfile.read(size)
                self.rfile.readline()
        return self.rfile.read(int(self.headers.get("content-length") or 0))

    def _send(self, status: int, body: bytes, content_type: str | None, extra: dict[str, str] | None = None) -> None:
        self.send_response(status)
        if content_type:
            self.send_header("content-type", content_type)
        if status != 304:
            self.send_header("content-length", str(len(body)))
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD" and status != 304:
            self.wfile.write(body)

    def _dispatch(self) -> None:
        split = urlsplit(self.path)
        body = self._body()
        segments = [unquote(s) for s in split.path.split("/")]
        query = {k: v[0] for k, v in parse_qs(split.query, keep_blank_values=True).items()}
        try:
            if segments[:3] != ["", "storage", "v1"]:
                raise RouteNotFound(self.command, split.path)
            route = _Route(self, segments[3:], query, body)
            op, handler = route.resolve()
            form = route.form_summary() if op in ("upload", "update") else {}
            self.owner.requests.append(RecordedRequest(
                op, self.command, split.path, {k.lower(): v for k, v in self.headers.items()}, form, len(body)))
            hit, fault = self.owner._take_fault(op)
            if hit and fault is not None:
                raise fault
            route.authorize(op)
            handler()
            if hit:  # a drop: the work is done, the answer never arrives
                self.close_connection = True
                self.wfile.flush()
                self.connection.shutdown(2)
                return
            status, payload, ctype, extra = route.result
            self._send(status, payload, ctype, extra)
        except StorageFault as f:
            body_obj = f.body()
            if self.owner.echo_credentials:
                body_obj["message"] += (f" (authorization: {self.headers.get('authorization')}; "
                                        f"apikey: {self.headers.get('apikey')})")
            self._send(f.http, json.dumps(body_obj).encode(), "application/json; charset=utf-8")


class _Route:
    """One request: which operation it is, who may run it, and the work."""

    def __init__(self, h: _Handler, segments: list[str], query: dict[str, str], body: bytes):
        self.h, self.s, self.q, self.body = h, segments, query, body
        self.owner = h.owner
        self.role = "public"
        self.result: tuple[int, bytes, str | None, dict[str, str]] = (200, b"{}", "application/json", {})
        self._multipart: dict[str, tuple[str | None, bytes]] | None = None

    # -- routing ---------------------------------------------------------------------------------

    def resolve(self) -> tuple[str, Any]:
        m, s = self.h.command, self.s
        if s[:1] == ["bucket"]:
            if m == "POST" and len(s) == 1:
                return "create_bucket", self.create_bucket
            if m == "GET" and len(s) == 1:
                return "list_buckets", self.list_buckets
            if m == "GET" and len(s) == 2:
                return "get_bucket", self.get_bucket
            if m == "PUT" and len(s) == 2:
                return "update_bucket", self.update_bucket
            if m == "DELETE" and len(s) == 2:
                return "delete_bucket", self.delete_bucket
            if m == "POST" and len(s) == 3 and s[2] == "empty":
                return "empty_bucket", self.empty_bucket
        if s[:1] == ["object"] and len(s) >= 2:
            kind = s[1]
            if kind == "public" and m in ("GET", "HEAD") and len(s) >= 4:
                return "public", self.public_get
            if kind == "sign" and m == "POST" and len(s) == 3:
                return "sign_many", self.sign_many
            if kind == "sign" and m == "POST" and len(s) >= 4:
                return "sign", self.sign
            if kind == "sign" and m in ("GET", "HEAD") and len(s) >= 4:
                return "signed", self.signed_get
            if kind == "info" and m == "GET" and len(s) >= 4:
                return "info", self.info
            if kind == "list" and m == "POST" and len(s) == 3:
                return "list", self.list
            if kind == "authenticated" and m in ("GET", "HEAD") and len(s) >= 4:
                return "download", self.download
            if m == "DELETE" and len(s) == 2:
                return "remove", self.remove
            if m == "POST" and len(s) >= 3:
                return "upload", self.upload
            if m == "PUT" and len(s) >= 3:
                return "update", self.update
            if m in ("GET", "HEAD") and len(s) >= 3:
                return "download", self.download
        raise RouteNotFound(m, "/storage/v1/" + "/".join(s))

    def authorize(self, op: str) -> None:
        if op in ("public", "signed"):
            return
        auth = self.h.headers.get("authorization")
        if not auth:
            raise StorageFault("400", "InvalidRequest", "headers must have required property 'authorization'",
                               "InvalidRequest")
        token = auth[7:].strip() if auth.lower().startswith("bearer ") else auth.strip()
        claims = decode_jwt(token, self.owner.jwt_secret)
        role = claims.get("role")
        if not isinstance(role, str) or role not in self.owner.roles:
            raise StorageFault("500", "DatabaseError", f'role "{role}" does not exist', "DatabaseError")
        self.role = role

    def may(self, op: str) -> bool:
        """Row-level security: service_role bypasses it, every other role needs a policy."""
        return self.role == "service_role" or op in self.owner.policies.get(self.role, set())

    # -- helpers ---------------------------------------------------------------------------------

    def _bucket(self, bucket_id: str) -> Bucket:
        b = self.owner.buckets.get(bucket_id)
        if b is None:
            raise _no_bucket()
        return b

    def _object_path(self, start: int) -> str:
        parts = self.s[start:]
        key = "/".join(parts)
        if not parts or not key or not _VALID_KEY.match(key):
            raise StorageFault("400", "InvalidKey", f"Invalid key: {key}", "InvalidKey")
        return key

    def _json_body(self) -> dict[str, Any]:
        try:
            body = json.loads(self.body or b"{}")
        except ValueError:
            raise StorageFault("400", "Error", "Body is not valid JSON", "InvalidRequest") from None
        if not isinstance(body, dict):
            raise StorageFault("400", "Error", "body must be object", "InvalidRequest")
        return body

    def _ok(self, obj: Any) -> None:
        self.result = (200, json.dumps(obj).encode(), "application/json; charset=utf-8", {})

    def _object_row(self, bucket: str, name: str, blob: StoredBlob) -> dict[str, Any]:
        """A row of storage.objects, as `remove` returns it."""
        return {"bucket_id": bucket, "name": name, "owner": blob.owner, "owner_id": blob.owner,
                "id": blob.id, "version": blob.id, "metadata": blob.metadata(), "user_metadata": None,
                "created_at": blob.created_at, "updated_at": blob.created_at,
                "last_accessed_at": blob.created_at}

    def _info_row(self, bucket: str, name: str, blob: StoredBlob) -> dict[str, Any]:
        return {"id": blob.id, "name": name, "bucket_id": bucket, "version": blob.id,
                "size": len(blob.data), "content_type": blob.content_type,
                "cache_control": blob.cache_control, "etag": blob.etag, "metadata": {},
                "created_at": blob.created_at, "last_modified": blob.created_at}

    def _serve(self, blob: StoredBlob) -> None:
        headers = {"cache-control": blob.cache_control, "etag": blob.etag,
                   "last-modified": format_datetime(blob.created, usegmt=True),
                   "accept-ranges": "bytes", "x-robots-tag": "none"}
        if "download" in self.q:
            name = self.q["download"]
            headers["content-disposition"] = f"attachment; filename={quote(name)}" if name else "attachment;"
        if self.h.headers.get("if-none-match") == blob.etag:
            self.result = (304, b"", None, headers)
            return
        data, status = blob.data, 200
        wanted = re.fullmatch(r"bytes=(\d*)-(\d*)", self.h.headers.get("range", "").strip())
        if wanted and (wanted.group(1) or wanted.group(2)) and data:
            first, last = wanted.groups()
            if first:
                start, end = int(first), min(int(last) if last else len(data) - 1, len(data) - 1)
            else:
                start, end = max(0, len(data) - int(last)), len(data) - 1
            if start <= end:
                headers["content-range"] = f"bytes {start}-{end}/{len(data)}"
                data, status = data[start:end + 1], 206
        self.result = (status, data, blob.content_type, headers)

    def _parts(self) -> dict[str, tuple[str | None, bytes]]:
        """name -> (content type or None, bytes) of a multipart/form-data body."""
        if self._multipart is not None:
            return self._multipart
        ctype = self.h.headers.get("content-type", "")
        boundary = None
        for param in ctype.split(";")[1:]:
            k, _, v = param.strip().partition("=")
            if k.lower() == "boundary":
                boundary = v.strip('"')
        parts: dict[str, tuple[str | None, bytes]] = {}
        if not ctype.lower().startswith("multipart/form-data") or not boundary:
            self._multipart = parts
            return parts
        for chunk in self.body.split(b"--" + boundary.encode())[1:]:
            if chunk.startswith(b"--"):
                break
            head, _, content = chunk.removeprefix(b"\r\n").partition(b"\r\n\r\n")
            content = content.removesuffix(b"\r\n")
            headers = {}
            for line in head.decode("utf-8", "replace").split("\r\n"):
                k, _, v = line.partition(":")
                headers[k.strip().lower()] = v.strip()
            disposition = headers.get("content-disposition", "")
            name = None
            for param in disposition.split(";")[1:]:
                k, _, v = param.strip().partition("=")
                if k == "name":
                    name = v.strip('"')
            if name:
                parts[name] = (headers.get("content-type"), content)
        self._multipart = parts
        return parts

    def form_summary(self) -> dict[str, str]:
        parts = self._parts()
        out = {k: v.decode("utf-8", "replace") for k, (ct, v) in parts.items() if k != "file"}
        if "file" in parts:
            out["file.content-type"] = parts["file"][0] or ""
        return out

    # -- buckets ---------------------------------------------------------------------------------

    def create_bucket(self) -> None:
        if not self.may("bucket.insert"):
            raise StorageFault("403")
        body = self._json_body()
        bucket_id = body.get("id") or body.get("name")
        if not bucket_id:
            raise StorageFault("400", "Error", "body must have required property 'name'", "InvalidRequest")
        with self.owner._lock:
            if bucket_id in self.owner.buckets:
                raise StorageFault("409", code="BucketAlreadyExists")
            self.owner.buckets[bucket_id] = Bucket(
                bucket_id, bool(body.get("public", False)), body.get("file_size_limit"),
                body.get("allowed_mime_types"))
        self._ok({"name": bucket_id})

    def list_buckets(self) -> None:
        visible = self.may("bucket.select")
        self._ok([b.row(with_type=True) for b in self.owner.buckets.values()] if visible else [])

    def _admin_bucket(self) -> Bucket:
        # without a policy the row is invisible: the server finds no bucket
        if not self.may("bucket.select"):
            raise _no_bucket()
        return self._bucket(self.s[1])

    def get_bucket(self) -> None:
        self._ok(self._admin_bucket().row(with_type=False))

    def update_bucket(self) -> None:
        b = self._admin_bucket()
        if self.role != "service_role":
            raise StorageFault("403")
        body = self._json_body()
        with self.owner._lock:
            if "public" in body:
                b.public = bool(body["public"])
            if "file_size_limit" in body:
                b.file_size_limit = body["file_size_limit"]
            if "allowed_mime_types" in body:
                b.allowed_mime_types = body["allowed_mime_types"]
        self._ok({"message": "Successfully updated"})

    def empty_bucket(self) -> None:
        b = self._admin_bucket()
        if self.role != "service_role":
            raise StorageFault("403")
        with self.owner._lock:
            for key in [k for k in self.owner.objects if k[0] == b.id]:
                del self.owner.objects[key]
        self._ok({"message": "Successfully emptied"})

    def delete_bucket(self) -> None:
        b = self._admin_bucket()
        if self.role != "service_role":
            raise StorageFault("403")
        with self.owner._lock:
            if any(k[0] == b.id for k in self.owner.objects):
                raise StorageFault("409", "ResourceNotEmpty", "The bucket you tried to delete is not empty",
                                   "ResourceNotEmpty")
            del self.owner.buckets[b.id]
        self._ok({"message": "Successfully deleted"})

    # -- objects ---------------------------------------------------------------------------------

    def _write(self, *, put: bool) -> None:
        bucket_id, path = self.s[1], self._object_path(2)
        b = self._bucket(bucket_id)
        upsert = put or self.h.headers.get("x-upsert", "false").lower() == "true"
        # an upsert is INSERT ... ON CONFLICT DO UPDATE: it needs select, insert and update
        # policies, even for a new path
        needed = ("object.insert", "object.select", "object.update") if upsert else ("object.insert",)
        if not all(self.may(op) for op in needed):
            raise StorageFault("403")
        parts = self._parts()
        if parts:
            if "file" not in parts:
                raise StorageFault("400", "Error", "No file part in the request", "InvalidRequest")
            ctype, data = parts["file"]
            ctype = ctype or "text/plain"
            seconds = parts.get("cacheControl", (None, b"3600"))[1].decode() or "3600"
            cache = f"max-age={seconds}"
        else:  # a raw body is accepted too
            ctype, data = self.h.headers.get("content-type") or "text/plain", self.body
            cache = "no-cache"
        ctype = ctype.split(";")[0].strip().lower()
        limit = min(self.owner.upload_limit, b.file_size_limit or self.owner.upload_limit)
        if len(data) > limit:
            raise StorageFault("413")
        if b.allowed_mime_types and not any(fnmatch.fnmatch(ctype, pattern.lower())
                                            for pattern in b.allowed_mime_types):
            raise StorageFault("415", message=f"mime type {ctype} is not supported")
        with self.owner._lock:
            if (bucket_id, path) in self.owner.objects and not upsert:
                raise StorageFault("409")
            blob = StoredBlob(data, ctype, cache, owner=None if self.role == "service_role" else self.role)
            self.owner.objects[(bucket_id, path)] = blob
        self._ok({"Key": f"{bucket_id}/{path}", "Id": blob.id})

    def upload(self) -> None:
        self._write(put=False)

    def update(self) -> None:
        self._write(put=True)

    def _readable(self, bucket_id: str, path: str) -> StoredBlob:
        b = self._bucket(bucket_id)
        blob = self.owner.object(bucket_id, path)
        # objects of a public bucket are readable by any valid key; others need a select policy
        if blob is None or not (b.public or self.may("object.select")):
            raise StorageFault("404")
        return blob

    def download(self) -> None:
        start = 3 if self.s[1] == "authenticated" else 2
        bucket_id = self.s[start - 1]
        self._serve(self._readable(bucket_id, self._object_path(start)))

    def info(self) -> None:
        bucket_id, path = self.s[2], self._object_path(3)
        self._ok(self._info_row(bucket_id, path, self._readable(bucket_id, path)))

    def public_get(self) -> None:
        bucket_id, path = self.s[2], self._object_path(3)
        b = self.owner.buckets.get(bucket_id)
        if b is None or not b.public:  # the public route only finds public buckets
            raise _no_bucket()
        blob = self.owner.object(bucket_id, path)
        if blob is None:
            raise StorageFault("404")
        self._serve(blob)

    def list(self) -> None:
        bucket_id = self.s[2]
        body = self._json_body()
        if bucket_id not in self.owner.buckets or not self.may("object.select"):
            self._ok([])  # a missing bucket and rows hidden by RLS both look empty
            return
        prefix = (body.get("prefix") or "").strip("/")
        search = body.get("search") or ""
        limit, offset = int(body.get("limit", 100)), int(body.get("offset", 0))
        sort = body.get("sortBy") or {}
        folders: set[str] = set()
        files: dict[str, StoredBlob] = {}
        with self.owner._lock:
            for (b, name), blob in self.owner.objects.items():
                if b != bucket_id or (prefix and not name.startswith(prefix + "/")):
                    continue
                rest = name[len(prefix) + 1:] if prefix else name
                head, sep, _ = rest.partition("/")
                if not head.lower().startswith(search.lower()):
                    continue
                if sep:
                    folders.add(head)
                else:
                    files[head] = blob
        rows: list[dict[str, Any]] = [
            {"name": f, "id": None, "updated_at": None, "created_at": None, "last_accessed_at": None,
             "metadata": None} for f in folders]
        for name, blob in files.items():
            rows.append({"name": name, "id": blob.id, "updated_at": blob.created_at,
                         "created_at": blob.created_at, "last_accessed_at": blob.created_at,
                         "metadata": blob.metadata()})
        rows.sort(key=lambda r: r["name"], reverse=sort.get("order") == "desc")
        self._ok(rows[offset:offset + limit])

    def remove(self) -> None:
        bucket_id = self.s[1]
        prefixes = self._json_body().get("prefixes") or []
        deleted = []
        # a missing bucket, and rows row-level security hides from DELETE, simply match nothing
        # (DELETE ... RETURNING: the rows must pass both the delete and the select policies)
        if bucket_id in self.owner.buckets and self.may("object.delete") and self.may("object.select"):
            with self.owner._lock:
                for p in prefixes:
                    blob = self.owner.objects.pop((bucket_id, p), None)
                    if blob is not None:
                        deleted.append(self._object_row(bucket_id, p, blob))
        self._ok(deleted)

    def _signed_url(self, bucket_id: str, path: str, expires_in: int) -> str:
        now = int(time.time())
        token = encode_jwt({"url": f"{bucket_id}/{path}", "iat": now, "exp": now + expires_in},
                           self.owner.jwt_secret)
        return f"/object/sign/{quote(bucket_id)}/{quote(path)}?token={token}"

    def _expires_in(self, body: dict[str, Any]) -> int:
        try:
            return int(body.get("expiresIn"))  # type: ignore[arg-type]
        except (TypeError, ValueError):
            raise StorageFault("400", "Error", "body must have required property 'expiresIn'",
                               "InvalidRequest") from None

    def sign(self) -> None:
        bucket_id, path = self.s[2], self._object_path(3)
        self._readable(bucket_id, path)
        self._ok({"signedURL": self._signed_url(bucket_id, path, self._expires_in(self._json_body()))})

    def sign_many(self) -> None:
        bucket_id = self.s[2]
        self._bucket(bucket_id)
        body = self._json_body()
        expires_in = self._expires_in(body)
        out = []
        for path in body.get("paths") or []:
            try:
                self._readable(bucket_id, path)
                out.append({"path": path, "signedURL": self._signed_url(bucket_id, path, expires_in),
                            "error": None})
            except StorageFault:
                out.append({"path": path, "signedURL": None,
                            "error": "Either the object does not exist or you do not have access to it"})
        self._ok(out)

    def signed_get(self) -> None:
        bucket_id, path = self.s[2], self._object_path(3)
        try:
            claims = decode_jwt(self.q.get("token", ""), self.owner.jwt_secret)
        except StorageFault as f:
            raise StorageFault("400", "InvalidJWT", f.message, "InvalidJWT") from None
        if claims.get("url") != f"{bucket_id}/{path}":
            raise StorageFault("400", "InvalidSignature", "The url do not match the signature",
                               "InvalidSignature")
        blob = self.owner.object(bucket_id, path)
        if blob is None:
            raise StorageFault("404")
        self._serve(blob)
