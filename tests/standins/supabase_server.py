"""A local stand-in for Supabase Storage that speaks what the `supabase` Python client sends.

Real HTTP/1.1 (keep-alive) on 127.0.0.1 with the stdlib ThreadingHTTPServer. It follows
shared/supabase-storage.md (storage API v1 as seen from supabase/storage3 2.34):

- every route under `/storage/v1`; `Authorization: Bearer <key>` required except on public and
  signed GETs (missing -> "400" Error; unknown key -> "400" InvalidJWT);
- a key -> role map (`keys`) and role -> permissions (`permissions`): "admin" (buckets),
  "write" (upload/update/remove), "read" (download/info/list/sign). service_role has all three;
  anon has none: writes answer "403" Unauthorized (row-level security), reads see nothing;
- buckets: create (`public`, `file_size_limit`, `allowed_mime_types`), list, get;
- objects: multipart upload (`file` part with its content type, `cacheControl`), `x-upsert`,
  update (PUT), authenticated download, public GET (400 with statusCode "404" when the bucket
  is private or the object missing), info, list (direct children, folders with id null),
  remove (`{"prefixes": [...]}`, deleted rows or []), signed URLs;
- errors as HTTP 400 with the real code as a string `statusCode` in the JSON body.

Knobs for tests: `fail(op, status)` makes the next `op` answer that error; `drop(op)` makes it
do its work and then close the connection without answering (an answer lost in transit).
`requests` records what the client sent; `objects`/`object()` show what is stored.
"""
from __future__ import annotations

import base64
import fnmatch
import hashlib
import hmac
import json
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlsplit

SERVICE_KEY = "standin-service-role-key"
ANON_KEY = "standin-anon-key"
GLOBAL_UPLOAD_LIMIT = 50 * 1024 * 1024

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
    def __init__(self, status: str, error: str | None = None, message: str | None = None,
                 code: str | None = None):
        default = ERRORS.get(status, ("Error", "error", "Error"))
        self.status, self.error = status, error or default[0]
        self.message, self.code = message or default[1], code or default[2]
        super().__init__(f"{self.status} {self.error}: {self.message}")

    def body(self) -> dict[str, str]:
        return {"statusCode": self.status, "code": self.code, "error": self.error, "message": self.message}


@dataclass
class Bucket:
    id: str
    public: bool = False
    file_size_limit: int | None = None
    allowed_mime_types: list[str] | None = None
    owner: str = ""
    created_at: str = field(default_factory=lambda: _now())

    def row(self) -> dict[str, Any]:
        return {"id": self.id, "name": self.id, "owner": self.owner, "public": self.public,
                "file_size_limit": self.file_size_limit, "allowed_mime_types": self.allowed_mime_types,
                "type": "STANDARD", "created_at": self.created_at, "updated_at": self.created_at}


@dataclass
class StoredBlob:
    data: bytes
    content_type: str
    cache_control: str
    id: str = field(default_factory=lambda: str(uuid.uuid4()))
    created_at: str = field(default_factory=lambda: _now())

    @property
    def etag(self) -> str:
        return '"' + hashlib.md5(self.data).hexdigest() + '"'


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


class SupabaseStandin:
    def __init__(self, *, key: str = SERVICE_KEY, anon_key: str = ANON_KEY):
        self.key, self.anon_key = key, anon_key
        self.keys: dict[str, str] = {key: "service_role", anon_key: "anon"}
        self.permissions: dict[str, set[str]] = {
            "service_role": {"admin", "write", "read"}, "authenticated": {"write", "read"}, "anon": set()}
        self.buckets: dict[str, Bucket] = {}
        self.objects: dict[tuple[str, str], StoredBlob] = {}
        self.requests: list[RecordedRequest] = []
        self.upload_limit = GLOBAL_UPLOAD_LIMIT
        self._faults: list[tuple[str, StorageFault | None]] = []
        self._secret = uuid.uuid4().bytes
        self._lock = threading.RLock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle -------------------------------------------------------------------------------

    def start(self) -> SupabaseStandin:
        standin = self

        class Handler(_Handler):
            owner = standin

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        # a short poll interval: shutdown() waits for one poll, once per test
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.02},
                                        name="supabase-standin", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread:
            self._thread.join(timeout=5)

    @property
    def url(self) -> str:
        assert self._server, "stand-in not started"
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    # -- knobs and inspection ------------------------------------------------------------------

    def add_key(self, key: str, role: str) -> None:
        self.keys[key] = role

    def add_bucket(self, id: str, *, public: bool = True, file_size_limit: int | None = None,
                   allowed_mime_types: list[str] | None = None) -> Bucket:
        with self._lock:
            self.buckets[id] = Bucket(id, public, file_size_limit, allowed_mime_types)
            return self.buckets[id]

    def fail(self, op: str, status: str, *, times: int = 1, error: str | None = None,
             message: str | None = None) -> None:
        """The next `times` calls of `op` answer this error (`op` as in RecordedRequest.op)."""
        with self._lock:
            self._faults += [(op, StorageFault(status, error, message))] * times

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

    # -- signing ---------------------------------------------------------------------------------

    def _sign(self, bucket: str, path: str, expires: int) -> str:
        mac = hmac.new(self._secret, f"{bucket}/{path}:{expires}".encode(), "sha256").digest()
        return f"{expires}.{base64.urlsafe_b64encode(mac).decode().rstrip('=')}"

    def _signature_ok(self, bucket: str, path: str, token: str) -> bool:
        try:
            expires = int(token.split(".", 1)[0])
        except ValueError:
            return False
        return expires >= time.time() and hmac.compare_digest(token, self._sign(bucket, path, expires))


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

    def _send(self, status: int, body: bytes, content_type: str, extra: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("content-type", content_type)
        self.send_header("content-length", str(len(body)))
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, obj: Any, status: int = 200) -> None:
        self._send(status, json.dumps(obj).encode(), "application/json; charset=utf-8")

    def _dispatch(self) -> None:
        split = urlsplit(self.path)
        body = self._body()
        raw_segments = split.path.split("/")
        segments = [unquote(s) for s in raw_segments]
        query = {k: v[0] for k, v in parse_qs(split.query).items()}
        try:
            if segments[:3] != ["", "storage", "v1"]:
                raise StorageFault("404", "Not Found", f"Route {self.command}:{split.path} not found")
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
            # the real server answers errors as HTTP 400 (500 for internal ones)
            self._json(f.body(), 500 if f.status == "500" else 400)


class _Route:
    """One request: which operation it is, who may run it, and the work."""

    def __init__(self, h: _Handler, segments: list[str], query: dict[str, str], body: bytes):
        self.h, self.s, self.q, self.body = h, segments, query, body
        self.owner = h.owner
        self.result: tuple[int, bytes, str, dict[str, str]] = (200, b"{}", "application/json", {})
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
        if s[:1] == ["object"] and len(s) >= 2:
            kind = s[1]
            if kind == "public" and m in ("GET", "HEAD") and len(s) >= 4:
                return "public", self.public_get
            if kind == "sign" and m == "POST" and len(s) >= 4:
                return "sign", self.sign
            if kind == "sign" and m == "GET" and len(s) >= 4:
                return "signed", self.signed_get
            if kind == "info" and m == "GET" and len(s) >= 4:
                return "info", self.info
            if kind == "list" and m == "POST" and len(s) == 3:
                return "list", self.list
            if kind == "authenticated" and m == "GET" and len(s) >= 4:
                return "download", self.download
            if m == "DELETE" and len(s) == 2:
                return "remove", self.remove
            if m == "POST" and len(s) >= 3:
                return "upload", self.upload
            if m == "PUT" and len(s) >= 3:
                return "update", self.update
            if m in ("GET", "HEAD") and len(s) >= 3:
                return "download", self.download
        raise StorageFault("404", "Not Found", f"Route {m}:/storage/v1/{'/'.join(s)} not found")

    def authorize(self, op: str) -> None:
        if op in ("public", "signed"):
            self.role = "public"
            return
        auth = self.h.headers.get("authorization")
        if not auth:
            raise StorageFault("400", "Error", "headers must have required property 'authorization'", "Error")
        token = auth[7:] if auth.lower().startswith("bearer ") else ""
        role = self.owner.keys.get(token)
        if role is None:
            raise StorageFault("400", "InvalidJWT", "invalid signature", "InvalidJWT")
        self.role = role

    def can(self, permission: str) -> bool:
        return permission in self.owner.permissions.get(self.role, set())

    # -- helpers ---------------------------------------------------------------------------------

    def _bucket(self, bucket_id: str, *, visible_to_reader: bool = True) -> Bucket:
        b = self.owner.buckets.get(bucket_id)
        if b is None or (visible_to_reader and self.role != "public" and not self.can("read")
                         and not self.can("admin")):
            raise StorageFault("404", "Bucket not found", "Bucket not found", "NoSuchBucket")
        return b

    def _object_path(self, start: int) -> str:
        parts = self.s[start:]
        if not parts or any(p in ("", ".", "..") for p in parts):
            raise StorageFault("400", "InvalidKey", f"Invalid key: {'/'.join(parts)}", "InvalidKey")
        return "/".join(parts)

    def _json_body(self) -> dict[str, Any]:
        try:
            return json.loads(self.body or b"{}")
        except ValueError:
            raise StorageFault("400", "InvalidRequest", "Body is not valid JSON") from None

    def _ok(self, obj: Any) -> None:
        self.result = (200, json.dumps(obj).encode(), "application/json; charset=utf-8", {})

    def _blob_row(self, bucket: str, name: str, blob: StoredBlob) -> dict[str, Any]:
        return {"id": blob.id, "name": name, "bucket_id": bucket, "version": blob.id,
                "size": len(blob.data), "content_type": blob.content_type,
                "cache_control": f"max-age={blob.cache_control}", "etag": blob.etag,
                "metadata": {}, "created_at": blob.created_at, "last_modified": blob.created_at}

    def _serve(self, blob: StoredBlob) -> None:
        self.result = (200, blob.data, blob.content_type, {
            "cache-control": f"max-age={blob.cache_control}", "etag": blob.etag,
            "last-modified": blob.created_at})

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
        if not ctype.lower().startswith("multipart/form-data") or not boundary:
            raise StorageFault("400", "InvalidRequest", "The request is not multipart")
        parts: dict[str, tuple[str | None, bytes]] = {}
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
        try:
            parts = self._parts()
        except StorageFault:
            return {}
        out = {k: v.decode("utf-8", "replace") for k, (ct, v) in parts.items() if k != "file"}
        if "file" in parts:
            out["file.content-type"] = parts["file"][0] or ""
        return out

    # -- buckets ---------------------------------------------------------------------------------

    def create_bucket(self) -> None:
        if not self.can("admin"):
            raise StorageFault("403")
        body = self._json_body()
        bucket_id = body.get("id") or body.get("name")
        if not bucket_id:
            raise StorageFault("400", "InvalidRequest", "body must have required property 'name'")
        with self.owner._lock:
            if bucket_id in self.owner.buckets:
                raise StorageFault("409", code="BucketAlreadyExists")
            self.owner.buckets[bucket_id] = Bucket(
                bucket_id, bool(body.get("public", False)), body.get("file_size_limit"),
                body.get("allowed_mime_types"))
        self._ok({"name": bucket_id})

    def list_buckets(self) -> None:
        visible = self.can("read") or self.can("admin")
        self._ok([b.row() for b in self.owner.buckets.values()] if visible else [])

    def get_bucket(self) -> None:
        self._ok(self._bucket(self.s[1]).row())

    # -- objects ---------------------------------------------------------------------------------

    def _write(self, *, update: bool) -> None:
        bucket_id, path = self.s[1], self._object_path(2)
        b = self._bucket(bucket_id, visible_to_reader=False)
        if not self.can("write"):
            raise StorageFault("403")
        parts = self._parts()
        if "file" not in parts:
            raise StorageFault("400", "InvalidRequest", "No file part in the request")
        ctype, data = parts["file"]
        ctype = (ctype or "text/plain;charset=UTF-8").strip()
        limit = min(self.owner.upload_limit, b.file_size_limit or self.owner.upload_limit)
        if len(data) > limit:
            raise StorageFault("413")
        if b.allowed_mime_types and not any(
                fnmatch.fnmatch(ctype.split(";")[0].strip().lower(), pattern.lower())
                for pattern in b.allowed_mime_types):
            raise StorageFault("415", message=f"mime type {ctype} is not supported")
        cache = parts.get("cacheControl", (None, b"3600"))[1].decode() or "3600"
        upsert = self.h.headers.get("x-upsert", "false").lower() == "true"
        with self.owner._lock:
            exists = (bucket_id, path) in self.owner.objects
            if update and not exists:
                raise StorageFault("404")
            if not update and exists and not upsert:
                raise StorageFault("409")
            blob = StoredBlob(data, ctype, cache)
            self.owner.objects[(bucket_id, path)] = blob
        self._ok({"Key": f"{bucket_id}/{path}", "Id": blob.id})

    def upload(self) -> None:
        self._write(update=False)

    def update(self) -> None:
        self._write(update=True)

    def _readable(self, bucket_id: str, path: str) -> StoredBlob:
        self._bucket(bucket_id)
        blob = self.owner.object(bucket_id, path)
        if blob is None or not self.can("read"):
            raise StorageFault("404")
        return blob

    def download(self) -> None:
        start = 3 if self.s[1] == "authenticated" else 2
        bucket_id = self.s[start - 1]
        self._serve(self._readable(bucket_id, self._object_path(start)))

    def info(self) -> None:
        bucket_id, path = self.s[2], self._object_path(3)
        self._ok(self._blob_row(bucket_id, path, self._readable(bucket_id, path)))

    def public_get(self) -> None:
        bucket_id, path = self.s[2], self._object_path(3)
        b = self.owner.buckets.get(bucket_id)
        blob = self.owner.object(bucket_id, path)
        if b is None:
            raise StorageFault("404", "Bucket not found", "Bucket not found", "NoSuchBucket")
        if not b.public or blob is None:
            raise StorageFault("404")
        self._serve(blob)

    def list(self) -> None:
        bucket_id = self.s[2]
        self._bucket(bucket_id)
        body = self._json_body()
        if not self.can("read"):
            self._ok([])
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
                         "metadata": {"eTag": blob.etag, "size": len(blob.data), "mimetype": blob.content_type,
                                      "cacheControl": f"max-age={blob.cache_control}",
                                      "lastModified": blob.created_at, "contentLength": len(blob.data),
                                      "httpStatusCode": 200}})
        rows.sort(key=lambda r: r["name"], reverse=sort.get("order") == "desc")
        self._ok(rows[offset:offset + limit])

    def remove(self) -> None:
        bucket_id = self.s[1]
        self._bucket(bucket_id, visible_to_reader=False)
        prefixes = self._json_body().get("prefixes") or []
        deleted = []
        if self.can("write"):  # row-level security filters silently: nothing matched
            with self.owner._lock:
                for p in prefixes:
                    blob = self.owner.objects.pop((bucket_id, p), None)
                    if blob is not None:
                        deleted.append(self._blob_row(bucket_id, p, blob))
        self._ok(deleted)

    def sign(self) -> None:
        bucket_id, path = self.s[2], self._object_path(3)
        self._readable(bucket_id, path)
        try:
            expires_in = int(self._json_body().get("expiresIn"))
        except (TypeError, ValueError):
            raise StorageFault("400", "InvalidRequest", "body must have required property 'expiresIn'") from None
        token = self.owner._sign(bucket_id, path, int(time.time()) + expires_in)
        self._ok({"signedURL": f"/object/sign/{quote(bucket_id)}/{quote(path)}?token={token}"})

    def signed_get(self) -> None:
        bucket_id, path = self.s[2], self._object_path(3)
        if not self.owner._signature_ok(bucket_id, path, self.q.get("token", "")):
            raise StorageFault("400", "InvalidSignature", "Invalid signature", "InvalidSignature")
        blob = self.owner.object(bucket_id, path)
        if blob is None:
            raise StorageFault("404")
        self._serve(blob)
