"""The fal stand-in's catalogue routes: per-endpoint queue OpenAPI documents, model search and
prices, as fal documents them (docs/fal.md, "Any image model"). One
stand-in serves them all: tests point FAL_OPENAPI_URL at `<url>/api/openapi/queue/openapi.json`
and FAL_API_URL at `<url>/v1`. `fal_server._dispatch` hands these paths here:

    GET /api/openapi/queue/openapi.json?endpoint_id=<id>   the document of <id>, byte for byte; 404 unknown
    GET /v1/models?q=&category=&status=&limit=&cursor=&expand=openapi-3.0&endpoint_id=
    GET /v1/models/pricing?endpoint_id=a,b                 1-50 ids; `Authorization: Key <key>` required

What it guarantees:
- By default it serves the four documents in tests/fixtures/openapi/; `register(endpoint_id,
  document, **metadata)` serves any other (bytes, text or an object), and `set_price` prices it.
- Search matches `q` (case-insensitive) in the id, display name and description; filters on
  `category` and `status`; pages with `limit` (1-100) and an opaque `cursor`; `expand=openapi-3.0`
  inlines each document as `openapi`. The four have default prices.
- Faults, as the queue's (`inject(where, fault, times=1, **params)`), where "document", "search"
  or "pricing": "401", "404", "429" (retry_after=), "500", "503" (JSON, with x-fal-request-id),
  "502"/"504"/"ingress" (the nginx page, none), "slow" (seconds=, then the answer), "drop",
  "echo_auth" (status=, default 400: a gateway's JSON echoing the Authorization header as sent), and
  answers of the wrong shape: "html" (200 text/html), "not_openapi" (200 JSON that is no document),
  "wrong_shape" (200 JSON lacking the documented keys), "huge" (200, `size` bytes, default 3 MB).
- Bodies submitted to an endpoint whose document it serves are validated against that document's
  Input (found through the `POST /<id>` request body's `$ref`, local `$ref`s resolved, Draft
  2020-12), 422 as fal answers; a field the Input does not have is refused too (fal drops it
  silently: here it is made visible, detail "extra field"). This extraction is the stand-in's
  own, independent of core.catalog.openapi's.
- State belongs to one stand-in epoch: `FalStandin.reset()` forgets registrations, prices, faults.
"""
from __future__ import annotations

import base64
import collections
import json
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import jsonschema

DOCUMENT_DIR = Path(__file__).resolve().parents[1] / "fixtures" / "openapi"
OPENAPI_PATH = ["api", "openapi", "queue", "openapi.json"]
WHERES = ("document", "search", "pricing")
FAULTS = ("401", "404", "429", "500", "502", "503", "504", "ingress", "slow", "drop", "echo_auth",
          "html", "not_openapi", "wrong_shape", "huge")
MAX_PRICE_IDS = 50

# Stand-in prices for the four documents (USD; fal bills these per megapixel, kontext per image).
DEFAULT_PRICES = {"fal-ai/flux-2": (0.012, "megapixels"), "fal-ai/flux-2/edit": (0.012, "megapixels"),
                  "fal-ai/flux-lora": (0.035, "megapixels"), "fal-ai/flux-pro/kontext": (0.04, "images")}
DEFAULT_METADATA = {
    "fal-ai/flux-2": ("FLUX.2 [dev]", "Text-to-image generation with FLUX.2 [dev] from Black Forest Labs."),
    "fal-ai/flux-2/edit": ("FLUX.2 [dev] Edit", "Image editing with FLUX.2 [dev]: edit images from a prompt."),
    "fal-ai/flux-lora": ("FLUX.1 [dev] with LoRAs", "Super fast endpoint for FLUX.1 [dev] with LoRA support."),
    "fal-ai/flux-pro/kontext": ("FLUX.1 Kontext [pro]", "Edits an image from a prompt: local edits and scenes."),
}


@dataclass(frozen=True)
class DocumentEndpoint:
    """An endpoint known from its document, shaped as the queue's `_Endpoint` (duck-typed there)."""
    endpoint_id: str
    input_schema: dict
    validator: jsonschema.Draft202012Validator
    legacy_images: bool

    @property
    def properties(self) -> dict:
        return self.input_schema.get("properties", {})


@dataclass
class _Entry:
    raw: bytes
    doc: dict
    endpoint: DocumentEndpoint | None     # None: the document has no usable POST /<id> Input
    metadata: dict


def input_schema(doc: dict, endpoint_id: str) -> dict:
    """The Input component of `POST /<endpoint_id>`, made self-contained: the document's components
    ride along under `components`, so its local `#/components/schemas/...` refs resolve as JSON
    pointers from the schema's root (2020-12 ignores the unknown keyword)."""
    ref = doc["paths"][f"/{endpoint_id}"]["post"]["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    prefix = "#/components/schemas/"
    if not ref.startswith(prefix):
        raise ValueError(f"{endpoint_id}: the request body $ref {ref!r} is not local")
    component = doc["components"]["schemas"][ref[len(prefix):]]
    return {**component, "components": {"schemas": doc["components"]["schemas"]}}


def _entry(endpoint_id: str, raw: bytes, metadata: dict) -> _Entry:
    doc = json.loads(raw)
    try:
        schema = input_schema(doc, endpoint_id)
        jsonschema.Draft202012Validator.check_schema(schema)
        endpoint = DocumentEndpoint(endpoint_id, schema, jsonschema.Draft202012Validator(schema),
                                    legacy_images="ImageFile" not in doc["components"]["schemas"])
    except (KeyError, TypeError, ValueError, jsonschema.SchemaError):
        endpoint = None
    meta = (doc.get("info") or {}).get("x-fal-metadata") or {}
    name, description = DEFAULT_METADATA.get(endpoint_id, (endpoint_id, ""))
    return _Entry(raw, doc, endpoint, {
        "display_name": name, "category": meta.get("category"), "description": description,
        "status": "active", "tags": [], "updated_at": "2025-12-25T00:00:00Z",
        "thumbnail_url": meta.get("thumbnailUrl"), "model_url": meta.get("playgroundUrl"),
        "license_type": "commercial", "date": "2025-12-25T00:00:00Z", **metadata})


class Catalogue:
    """Documents, prices and faults of one stand-in epoch. Thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: dict[str, _Entry] = {}
        for path in sorted(DOCUMENT_DIR.glob("*.json")):
            endpoint_id = path.stem.replace("__", "/")
            self._entries[endpoint_id] = _entry(endpoint_id, path.read_bytes(), {})
        self._prices = {e: (p, u, "USD") for e, (p, u) in DEFAULT_PRICES.items()}
        self._faults: dict[str, list[list]] = {w: [] for w in WHERES}
        self.requests: collections.Counter = collections.Counter()
        self.auth_seen: list[str | None] = []   # the Authorization header of each call, in order

    # --- test API -------------------------------------------------------------------------------

    def register(self, endpoint_id: str, document: bytes | str | dict, **metadata: Any) -> None:
        """Serve `document` for `endpoint_id` (bytes as given; an object as JSON), found by search
        with `metadata` over the defaults (display_name, description, category, status, ...)."""
        raw = document if isinstance(document, bytes) else (
            document.encode() if isinstance(document, str) else json.dumps(document).encode())
        with self._lock:
            self._entries[endpoint_id] = _entry(endpoint_id, raw, metadata)

    def set_price(self, endpoint_id: str, unit_price: float, unit: str = "images", currency: str = "USD") -> None:
        with self._lock:
            self._prices[endpoint_id] = (float(unit_price), unit, currency)

    def inject(self, where: str, fault: str | int, times: int = 1, **params: Any) -> None:
        fault = str(fault)
        if where not in WHERES:
            raise ValueError(f"where must be one of {WHERES}, got {where!r}")
        if fault not in FAULTS:
            raise ValueError(f"fault at {where} must be one of {FAULTS}, got {fault!r}")
        with self._lock:
            self._faults[where].append([fault, int(times), dict(params)])

    def endpoint(self, endpoint_id: str) -> DocumentEndpoint | None:
        """The endpoint as its served document describes it (None: no document, or no Input)."""
        with self._lock:
            entry = self._entries.get(endpoint_id)
        return entry.endpoint if entry else None

    def refusals(self, endpoint_id: str, body: dict, detail_of: Callable[[Any, dict], list[dict]]) -> list[dict]:
        """fal-shaped 422 entries for `body` against the served document's Input (`detail_of` is
        the queue's own violation-to-detail mapping), plus one "extra field" entry per field the
        Input does not have; [] when no document is served for `endpoint_id`."""
        endpoint = self.endpoint(endpoint_id)
        if endpoint is None:
            return []
        extras = [{"type": "extra_forbidden", "loc": ["body", name], "msg": "extra field", "input": body[name]}
                  for name in sorted(body) if name not in endpoint.properties]
        return extras + detail_of(endpoint, {k: v for k, v in body.items() if k in endpoint.properties})

    def _take(self, where: str) -> tuple[str, dict] | None:
        with self._lock:
            queue = self._faults[where]
            if not queue:
                return None
            queue[0][1] -= 1
            fault, _, params = queue[0] if queue[0][1] > 0 else queue.pop(0)
            return fault, params

    # --- answers (pure: each returns (status, content type, body bytes, headers)) ---------------

    def document(self, query: dict[str, list[str]]) -> tuple[int, Any]:
        endpoint_id = (query.get("endpoint_id") or [""])[0]
        with self._lock:
            entry = self._entries.get(endpoint_id)
        if entry is None:
            return 404, {"detail": f"Endpoint '{endpoint_id}' not found"}
        return 200, entry.raw

    def search(self, query: dict[str, list[str]]) -> tuple[int, Any]:
        q = (query.get("q") or [""])[0].lower()
        category, status = (query.get("category") or [None])[0], (query.get("status") or [None])[0]
        ids = [i for v in query.get("endpoint_id", []) for i in v.split(",") if i]
        try:
            limit = int((query.get("limit") or ["25"])[0])
            cursor = query.get("cursor", [None])[0]
            start = int(base64.urlsafe_b64decode(cursor.encode()).decode().removeprefix("at:")) if cursor else 0
        except ValueError:
            return 400, {"detail": "limit and cursor must be what a previous answer gave"}
        if not 1 <= limit <= 100:
            return 422, {"detail": [{"type": "less_than_equal", "loc": ["query", "limit"],
                                     "msg": "Input should be between 1 and 100", "input": limit}]}
        with self._lock:
            entries = sorted(self._entries.items())
        found = [(i, e) for i, e in entries
                 if (not ids or i in ids) and (not category or e.metadata["category"] == category)
                 and (not status or e.metadata["status"] == status)
                 and (not q or any(q in (s or "").lower() for s in (i, e.metadata["display_name"],
                                                                     e.metadata["description"])))]
        page, more = found[start:start + limit], start + limit < len(found)
        expand = "openapi-3.0" in query.get("expand", [])
        models = [{"endpoint_id": i, "metadata": dict(e.metadata), **({"openapi": e.doc} if expand else {})}
                  for i, e in page]
        cursor_next = base64.urlsafe_b64encode(f"at:{start + limit}".encode()).decode() if more else None
        return 200, {"models": models, "next_cursor": cursor_next, "has_more": more}

    def pricing(self, query: dict[str, list[str]]) -> tuple[int, Any]:
        ids = list(dict.fromkeys(i for v in query.get("endpoint_id", []) for i in v.split(",") if i))
        if not 1 <= len(ids) <= MAX_PRICE_IDS:
            return 422, {"detail": [{"type": "value_error", "loc": ["query", "endpoint_id"],
                                     "msg": f"Between 1 and {MAX_PRICE_IDS} endpoint ids are required",
                                     "input": len(ids)}]}
        with self._lock:
            prices = [{"endpoint_id": i, "unit_price": self._prices[i][0], "unit": self._prices[i][1],
                       "currency": self._prices[i][2]} for i in ids if i in self._prices]
        return 200, {"prices": prices, "next_cursor": None, "has_more": False}


_STATES_LOCK = threading.Lock()


def catalogue_of(standin: Any) -> Catalogue:
    """The catalogue of `standin` for its current epoch: a reset stand-in gets a fresh one."""
    with _STATES_LOCK:
        epoch, state = getattr(standin, "_catalogue_state", (None, None))
        if state is None or epoch != standin._epoch:
            state = Catalogue()
            standin._catalogue_state = (standin._epoch, state)
        return state


def handles(method: str, parts: list[str]) -> bool:
    return method == "GET" and (parts == OPENAPI_PATH or parts in (["v1", "models"], ["v1", "models", "pricing"]))


def serve(handler: Any, parts: list[str], query: dict[str, list[str]]) -> None:
    """Answer one catalogue request on `handler` (the queue stand-in's `_Handler`)."""
    standin = handler.standin
    catalogue = catalogue_of(standin)
    where = "document" if parts == OPENAPI_PATH else ("pricing" if parts[-1] == "pricing" else "search")
    with catalogue._lock:
        catalogue.requests[where] += 1
        catalogue.auth_seen.append(handler.headers.get("Authorization"))
    fault = catalogue._take(where)
    if fault is not None and _play(handler, where, *fault):
        return
    if where == "pricing" and handler.headers.get("Authorization") != f"Key {standin.key}":
        return handler._json(401, {"detail": "No user found for Key ID and Secret"}, request_id=None)
    code, body = getattr(catalogue, where)(query)
    if isinstance(body, bytes):
        return handler._send(code, body, "application/json", {})
    handler._json(code, body, request_id=None)


def _play(handler: Any, where: str, fault: str, params: dict) -> bool:
    """Serve an injected fault; True when it answered (or dropped) the request."""
    rid = "catalogue-" + str(time.monotonic_ns())
    if fault == "slow":
        time.sleep(float(params.get("seconds", 1.0)))
        return False
    if fault == "drop":   # the request read, the connection closed unanswered
        handler.close_connection = True
        return True
    if fault == "401":
        handler._json(401, {"detail": "No user found for Key ID and Secret"}, request_id=None)
    elif fault == "404":
        handler._json(404, {"detail": "Not Found"}, request_id=None)
    elif fault == "429":
        retry_after = params.get("retry_after", 1)
        handler._json(429, {"detail": "Rate limit exceeded"}, request_id=None,
                      headers={} if retry_after is None else {"Retry-After": str(retry_after)})
    elif fault in ("500", "503"):
        handler._json(int(fault), {"detail": "Internal Server Error"}, request_id=rid)
    elif fault in ("502", "504", "ingress"):
        handler._ingress_page(int(params.get("status") or (int(fault) if fault.isdigit() else 502)))
    elif fault == "echo_auth":
        auth = handler.headers.get("Authorization") or ""
        handler._json(int(params.get("status", 400)), {"detail": f"Gateway refused (Authorization: {auth})",
                                                       "echo": auth.partition(" ")[2]}, request_id=None)
    elif fault == "html":
        handler._send(200, b"<!doctype html><html><body><h1>fal.ai</h1><p>Sign in</p></body></html>",
                      "text/html; charset=utf-8", {})
    elif fault == "not_openapi":
        handler._json(200, {"detail": "ok", "endpoint_id": "fal-ai/flux-2", "schema": {"type": "object"}},
                      request_id=None)
    elif fault == "wrong_shape":
        handler._json(200, {"models": "none", "prices": {"fal-ai/flux-2": 1}, "has_more": "no"}, request_id=None)
    else:   # huge: a JSON document padded past any sane size
        size = int(params.get("size", 3 * 1024 * 1024))
        head = b'{"openapi": "3.0.4", "paths": {}, "padding": "'
        handler._send(200, head + b"a" * max(0, size - len(head) - 2) + b'"}', "application/json", {})
    return True
