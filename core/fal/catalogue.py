"""fal's catalogue: any endpoint's queue OpenAPI document by id, model search, and prices (issue 18).

    client = CatalogueClient(settings)
    client.document("fal-ai/flux-2")       # bytes, as fal serves them (core.catalog reads them)
    client.search(q="kontext", category="image-to-image")   # SearchPage(models, next_cursor, has_more)
    client.prices(["fal-ai/flux-2", ...])  # {endpoint_id: Price}; needs FAL_KEY

Two hosts: documents from `FAL_OPENAPI_URL` (`?endpoint_id=<id>`), search and prices from the
Platform API at `FAL_API_URL` (`/models`, `/models/pricing`). Errors are the `FalError` tree of
`core.errors`, mapped by `core.fal.answers` as for the queue, plus one branch of this module:

    FalError
    └── UnknownEndpoint      404 for a document: fal has no endpoint with that id (`.endpoint_id`)

Invariants:
- Every call here is a GET that starts no job and costs nothing, so all are idempotent: transport
  errors, 408, 429 (honouring `Retry-After`) and 5xx are sent again with the capped backoff of
  `core.fal.retry` (`retry_reason(idempotent=True)` decides; the loop only sleeps and counts).
- What is read of an answer is capped, inflated and on the wire (`core.fal.wire.inflated`): a
  document at `MAX_DOCUMENT_BYTES` (2 MB; fal's are 8-18 KB), a search page at 16 MB (it inlines
  up to `limit` documents), prices at 1 MB, an error body at `ERROR_BODY_LIMIT`. Past a cap: one
  FalBadResponse line, nothing kept.
- The key goes only to the two configured origins (scheme, host, port), as `Key <FAL_KEY>`: when
  there is one for documents and search (fal raises limits for it), always for prices (without it
  `prices` raises FalAuthError before sending). Every body is redacted with the key before it is
  parsed, and every message too: the key is in no message, log line or repr.
- An answer of the wrong shape (HTML, JSON that is not an OpenAPI document or not the documented
  search or prices object) is one FalBadResponse line; a document is checked only enough to know it
  is one (`openapi` 3.x, `paths`, the endpoint it names): reading it is `core.catalog.openapi`'s.
"""
from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from core._imports import hidden

with hidden("click"):   # httpx's command-line client, unused (core/_imports.py)
    import httpx

from core.config import Settings, load_settings
from core.errors import FalAuthError, FalBadResponse, FalError
from core.redact import redact
from core.fal.answers import error_from, transport_error
from core.fal.retry import RetryPolicy, retry_after_s, retry_reason
from core.fal.wire import ERROR_BODY_LIMIT, as_timeout, checked_endpoint, human_size, inflated, origin_of, short_url

logger = logging.getLogger("core.fal.catalogue")

DEFAULT_TIMEOUT = httpx.Timeout(30.0, connect=10.0)
MAX_DOCUMENT_BYTES = 2 * 1024 * 1024
MAX_PRICE_IDS = 50          # fal's pricing API takes 1-50 endpoint ids per call
MAX_SEARCH_LIMIT = 100
_LIMITS = {"document": MAX_DOCUMENT_BYTES, "search": 16 * 1024 * 1024, "prices": 1024 * 1024}
_CALL_DEADLINE_S = 60.0     # one attempt, whatever the server sends (a byte every 20 s passes a read timeout)
_MAX_PRICE_PAGES = 20       # a pricing answer that pages endlessly is refused, not followed forever
_SETTING = {"document": "FAL_OPENAPI_URL", "search": "FAL_API_URL", "prices": "FAL_API_URL"}


class UnknownEndpoint(FalError):
    """fal answered 404 for an endpoint's document: no endpoint has that id."""

    def __init__(self, message: str, *, endpoint_id: str, **kw: Any):
        self.endpoint_id = endpoint_id
        super().__init__(message, **kw)


@dataclass(frozen=True)
class CatalogueModel:
    """One model of fal's search answer. `document` is its OpenAPI document when the search
    inlined it (`expand=openapi-3.0`), else None."""
    endpoint_id: str
    display_name: str
    category: str | None
    description: str
    status: str | None
    thumbnail_url: str | None
    document: dict | None = field(default=None, repr=False, compare=False)


@dataclass(frozen=True)
class SearchPage:
    models: tuple[CatalogueModel, ...]
    next_cursor: str | None
    has_more: bool


@dataclass(frozen=True)
class Price:
    """What fal bills per `unit` (an image, a megapixel...), the account's discounts applied."""
    unit_price: float
    unit: str
    currency: str


class CatalogueClient:
    """fal's documents, search and prices over one pooled httpx.Client. Close it (or use `with`)."""

    def __init__(self, settings: Settings | None = None, *, key: str | None = None,
                 timeout: httpx.Timeout | float = DEFAULT_TIMEOUT, retry: RetryPolicy = RetryPolicy(),
                 transport: httpx.BaseTransport | None = None):
        settings = settings or load_settings()
        self._key = key if key is not None else settings.fal_key
        self._secrets: tuple[str, ...] = (self._key,) if self._key else ()
        self.openapi_url = settings.fal_openapi_url
        self.api_url = settings.fal_api_url.rstrip("/")
        self._origins = {origin_of(self.openapi_url), origin_of(self.api_url)}
        self.retry = retry
        self._http = httpx.Client(transport=transport, timeout=as_timeout(timeout), follow_redirects=False,
                                  headers={"User-Agent": "fal-model-dashboard",
                                           "Accept-Encoding": "gzip, deflate"})

    def __repr__(self) -> str:
        return (f"CatalogueClient(openapi_url={self.openapi_url!r}, api_url={self.api_url!r}, "
                f"key={'set' if self._key else 'missing'})")

    def __enter__(self) -> CatalogueClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    # --- the three calls ------------------------------------------------------------------------

    def document(self, endpoint_id: str) -> bytes:
        """The queue OpenAPI document of `endpoint_id`, byte for byte as fal serves it."""
        endpoint_id = _checked_id(endpoint_id)
        response = self._get(self.openapi_url, {"endpoint_id": endpoint_id}, what="document",
                             endpoint=endpoint_id)
        raw = response.content
        text = redact(raw.decode("utf-8", "replace"), self._secrets)
        try:
            doc = json.loads(text)
        except (ValueError, RecursionError):
            raise self._bad(response, f"fal's document for {endpoint_id} is not JSON", text) from None
        if not (isinstance(doc, dict) and isinstance(doc.get("openapi"), str) and doc["openapi"].startswith("3.")
                and isinstance(doc.get("paths"), dict)):
            raise self._bad(response, f"fal's answer for {endpoint_id} is JSON but not an OpenAPI 3 document "
                                      "(no `openapi` 3.x and `paths`)", doc)
        info = doc.get("info")
        meta = info.get("x-fal-metadata") if isinstance(info, dict) else None
        named = meta.get("endpointId") if isinstance(meta, dict) else None
        if isinstance(named, str) and named != endpoint_id:
            raise self._bad(response, f"fal answered the document of {named[:100]} when asked for "
                                      f"{endpoint_id}", None)
        return raw

    def search(self, q: str | None = None, category: str | None = None, cursor: str | None = None,
               limit: int = 25) -> SearchPage:
        """One page of fal's active models matching `q` (id, name, description) and `category`,
        each with its OpenAPI document inlined; pass `next_cursor` back for the next page."""
        if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_SEARCH_LIMIT:
            raise ValueError(f"limit must be a whole number from 1 to {MAX_SEARCH_LIMIT}, got {limit!r}")
        params: dict[str, Any] = {"status": "active", "expand": "openapi-3.0", "limit": limit}
        for name, value in (("q", q), ("category", category), ("cursor", cursor)):
            if value:
                params[name] = value
        response = self._get(f"{self.api_url}/models", params, what="search", endpoint=None)
        body = self._json(response, "search")
        models, more, cursor_next = body.get("models"), body.get("has_more"), body.get("next_cursor")
        if not isinstance(models, list) or not isinstance(more, bool) or not isinstance(cursor_next, (str, type(None))):
            raise self._bad(response, "fal's search answer lacks `models` (a list), `has_more` (true or "
                                      "false) or `next_cursor` (a string or null)", body)
        return SearchPage(models=tuple(self._model(response, m) for m in models),
                          next_cursor=cursor_next or None, has_more=more)

    def prices(self, endpoint_ids: Iterable[str]) -> dict[str, Price]:
        """fal's price of each endpoint it prices (an id fal does not price is left out), asked
        `MAX_PRICE_IDS` at a time. Needs the key: fal's pricing API refuses anonymous calls."""
        ids = list(dict.fromkeys(_checked_id(e) for e in endpoint_ids))
        if not self._key:
            raise FalAuthError("prices need the key: fal's pricing API answers only with FAL_KEY; set "
                               "FAL_KEY in the environment or in .streamlit/secrets.toml.")
        out: dict[str, Price] = {}
        for at in range(0, len(ids), MAX_PRICE_IDS):
            out.update(self._prices_of(ids[at:at + MAX_PRICE_IDS]))
        return out

    # --- reading answers ------------------------------------------------------------------------

    def _prices_of(self, ids: list[str]) -> dict[str, Price]:
        out: dict[str, Price] = {}
        params: dict[str, Any] = {"endpoint_id": ",".join(ids)}
        for _ in range(_MAX_PRICE_PAGES):
            response = self._get(f"{self.api_url}/models/pricing", params, what="prices", endpoint=None)
            body = self._json(response, "prices")
            rows, more, cursor = body.get("prices"), body.get("has_more", False), body.get("next_cursor")
            if not isinstance(rows, list) or not isinstance(more, bool):
                raise self._bad(response, "fal's prices answer lacks `prices` (a list)", body)
            for row in rows:
                endpoint_id, price = self._price(response, row)
                out[endpoint_id] = price
            if not more or not isinstance(cursor, str) or not cursor:
                return out
            params = {**params, "cursor": cursor}
        raise self._bad(None, f"fal's prices answer kept paging past {_MAX_PRICE_PAGES} pages", None)

    def _price(self, response: httpx.Response, row: Any) -> tuple[str, Price]:
        if isinstance(row, dict):
            endpoint_id, unit_price = row.get("endpoint_id"), row.get("unit_price")
            unit, currency = row.get("unit"), row.get("currency")
            if (isinstance(endpoint_id, str) and endpoint_id and isinstance(unit, str) and unit
                    and isinstance(currency, str) and currency and isinstance(unit_price, (int, float))
                    and not isinstance(unit_price, bool) and math.isfinite(unit_price) and unit_price >= 0):
                return endpoint_id, Price(float(unit_price), unit, currency)
        raise self._bad(response, "a price in fal's answer lacks `endpoint_id`, `unit_price` (a number "
                                  "of 0 or more), `unit` or `currency`", row)

    def _model(self, response: httpx.Response, entry: Any) -> CatalogueModel:
        meta = entry.get("metadata", {}) if isinstance(entry, dict) else None
        endpoint_id = entry.get("endpoint_id") if isinstance(entry, dict) else None
        document = entry.get("openapi") if isinstance(entry, dict) else None
        texts = ("display_name", "category", "description", "status", "thumbnail_url")
        if (isinstance(endpoint_id, str) and endpoint_id and isinstance(meta, dict)
                and isinstance(document, (dict, type(None)))
                and all(isinstance(meta.get(k), (str, type(None))) for k in texts)):
            return CatalogueModel(endpoint_id=endpoint_id, display_name=meta.get("display_name") or endpoint_id,
                                  category=meta.get("category"), description=meta.get("description") or "",
                                  status=meta.get("status"), thumbnail_url=meta.get("thumbnail_url"),
                                  document=document)
        raise self._bad(response, "a model in fal's search answer lacks `endpoint_id`, or its `metadata` "
                                  "or `openapi` is not an object", entry)

    def _json(self, response: httpx.Response, what: str) -> dict:
        text = redact(response.text, self._secrets)
        try:
            body = json.loads(text)
        except (ValueError, RecursionError):
            body = None
        if not isinstance(body, dict):
            raise self._bad(response, f"fal's {what} answer is not a JSON object", text)
        return body

    def _bad(self, response: httpx.Response | None, said: str, raw: Any) -> FalBadResponse:
        kind = response.headers.get("content-type", "").split(";")[0].strip() if response is not None else ""
        message = f"{said}{f' ({kind})' if kind else ''}; fal's API may have changed: try again later."
        return FalBadResponse(redact(message, self._secrets), raw=raw,
                              status_code=response.status_code if response is not None else None)

    # --- the one place requests are sent --------------------------------------------------------

    def _get(self, url: str, params: dict[str, Any], *, what: str, endpoint: str | None) -> httpx.Response:
        """GET `url`, retried as `retry_reason(idempotent=True)` says; a 2xx answer read within its
        cap, anything else raised as the mapped FalError (a document's 404 as UnknownEndpoint)."""
        if origin_of(url) not in self._origins:   # cannot happen from the public calls: a guard
            raise FalError(f"refused to send the key to {short_url(url)}: not a configured fal host.")
        headers = {"Authorization": f"Key {self._key}"} if self._key else {}
        policy, attempt = self.retry, 0
        while True:
            attempt += 1
            last = attempt >= policy.max_attempts
            try:
                response = self._attempt(url, params, headers, what=what)
            except httpx.TransportError as e:
                reason = retry_reason(idempotent=True, error=e)
                if reason and not last:
                    self._pause(what, url, reason, policy.backoff(attempt), attempt)
                    continue
                error = transport_error(e, what=what, endpoint=endpoint, url=url, request_id=None,
                                        attempts=attempt)
                # the queue's wording names the queue's setting; these hosts have their own
                error.args = tuple(a.replace("FAL_QUEUE_URL", _SETTING[what]) if isinstance(a, str) else a
                                   for a in error.args)
                raise error from None
            code = response.status_code
            if code < 300:
                return response
            if code == 404 and what == "document":
                raise UnknownEndpoint(f"fal has no endpoint {endpoint}: check the id on fal.ai/models.",
                                      endpoint_id=endpoint, status_code=404)
            retry_after = retry_after_s(response) if code == 429 else None
            reason = retry_reason(idempotent=True, status_code=code,
                                  from_fal="x-fal-request-id" in response.headers,
                                  retry_after=retry_after, max_retry_after=policy.max_retry_after)
            if reason and not last:
                self._pause(what, url, reason, retry_after if retry_after is not None else policy.backoff(attempt),
                            attempt)
                continue
            raise error_from(response, what=what, endpoint=endpoint, request_id=None, attempts=attempt,
                             secrets=self._secrets)

    def _attempt(self, url: str, params: dict[str, Any], headers: dict[str, str], *, what: str) -> httpx.Response:
        """One GET, its body read into memory: a 2xx up to its cap (past it FalBadResponse), an
        error body cut at `ERROR_BODY_LIMIT`; the whole read ends by `_CALL_DEADLINE_S`."""
        deadline = time.monotonic() + _CALL_DEADLINE_S
        with self._http.stream("GET", url, params=params, headers=headers) as streamed:
            ok = streamed.status_code < 300
            limit = _LIMITS[what] if ok else ERROR_BODY_LIMIT
            declared = streamed.headers.get("content-length", "")
            if ok and declared.isdigit() and int(declared) > limit:
                raise self._too_large(what, url, limit)
            body = bytearray()
            for chunk in inflated(streamed):
                if time.monotonic() > deadline:
                    raise httpx.ReadTimeout(f"the answer took more than {_CALL_DEADLINE_S:.0f} s")
                if len(body) + len(chunk) > limit or streamed.num_bytes_downloaded > limit:
                    if ok:
                        raise self._too_large(what, url, limit)
                    body += chunk[:max(0, limit - len(body))]
                    break
                body += chunk
            headers_kept = [(k, v) for k, v in streamed.headers.multi_items()
                            if k.lower() not in ("content-length", "content-encoding", "transfer-encoding")]
            return httpx.Response(streamed.status_code, headers=headers_kept, content=bytes(body),
                                  request=streamed.request)

    def _too_large(self, what: str, url: str, limit: int) -> FalBadResponse:
        return FalBadResponse(f"fal's {what} answer at {short_url(url)} is larger than {human_size(limit)}, "
                              "the most this dashboard reads of it; it was not kept.",
                              raw={"truncated": True})

    def _pause(self, what: str, url: str, reason: str, delay: float, attempt: int) -> None:
        logger.warning(json.dumps({"event": "fal.catalogue.retry", "what": what, "url": short_url(url),
                                   "reason": reason, "attempt": attempt, "delay": round(delay, 3)},
                                  separators=(",", ":")))
        self.retry.sleep(delay)


def _checked_id(endpoint_id: str) -> str:
    """An endpoint id as `core.fal.wire.checked_endpoint` allows it, and without a comma (the
    pricing API splits its list at commas)."""
    if not isinstance(endpoint_id, str) or "," in endpoint_id:
        raise FalError(f"{str(endpoint_id)[:100]!r} is not a fal endpoint id (expected e.g. 'fal-ai/flux-2').")
    return checked_endpoint(endpoint_id)
