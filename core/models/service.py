"""The models service: fal endpoints a team adds from fal's own OpenAPI documents, without a
developer. The command line (`python -m core model ...`) and the Models page call these.

Invariants:
- A document is read and checked in full (`core.catalog.openapi.read_document`: OpenAPI, its
  endpoint id, an image category, Input and Output found through the paths, local `$ref`s only,
  size capped) and described (`describe`: how the one canonical request maps onto its fields)
  before anything is stored; a refusal is one line and nothing is written.
- Added endpoints reach the registry only through `install(store)`, called by every process that
  plans, sends or shows batches after it opens the store; archived ones are left out, so no new
  batch names them, while old batches keep their rows.
- A price is fal's (its pricing API, when a key and the network exist), else the one a person
  typed, else unknown: estimates then say unknown, never $0.
- `refresh` never changes what batches use: it stages fal's current document and says what
  changed (fields added or removed, defaults, enums, ranges); `adopt` makes it current.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from core.catalog import registry
from core.catalog.openapi import MAX_DOCUMENT_BYTES, EndpointDocument, ModelFields, describe, read_document
from core.config import Settings
from core.errors import DashboardError, ModelDocumentError
from core.store import Store
from core.store.inputs import NewModel
from core.values import StoredModel, now

if TYPE_CHECKING:   # httpx loads only when fal is asked something
    from core.fal.catalogue import SearchPage

UNITS = ("image", "megapixels")
MAX_PRICE_USD = 1000   # per unit; the command line holds the same bound


def add_from_file(store: Store, path: Path, *, added_by: str | None = None, price_usd: float | None = None,
                  unit: str | None = None, label: str | None = None) -> StoredModel:
    """Add the endpoint a document file describes (works offline)."""
    data = _read_file(path)
    return _add(store, data, source=f"file:{path.name}", added_by=added_by, price_usd=price_usd,
                unit=unit, fetched_at=None, prices=None, label=label)


def add_from_fal(store: Store, settings: Settings, endpoint_id: str, *, added_by: str | None = None,
                 price_usd: float | None = None, unit: str | None = None, label: str | None = None) -> StoredModel:
    """Fetch the endpoint's document from fal (FAL_OPENAPI_URL), and its price when a key exists."""
    from core.fal.catalogue import CatalogueClient

    with CatalogueClient(settings) as fal:
        data = fal.document(endpoint_id)
        prices = None
        if price_usd is None and settings.fal_key:
            prices = _fal_prices(fal, endpoint_id)
    return _add(store, data, source="fal", added_by=added_by, price_usd=price_usd, unit=unit,
                fetched_at=now(), prices=prices, endpoint_id=endpoint_id, label=label)


def add_from_bytes(store: Store, data: bytes, name: str, *, added_by: str | None = None,
                   price_usd: float | None = None, unit: str | None = None,
                   fal_price: tuple[float, str] | None = None, label: str | None = None) -> StoredModel:
    """Add the endpoint an uploaded document describes (the Models page has bytes, not a path).
    `fal_price` is what `fal_price` said, when it said something; a typed price wins over it."""
    return _add(store, data, source=f"file:{name}", added_by=added_by, price_usd=price_usd,
                unit=unit, fetched_at=None, prices=None if price_usd is not None else fal_price, label=label)


def fetch_document(settings: Settings, endpoint_id: str) -> bytes:
    """fal's document of `endpoint_id` (FAL_OPENAPI_URL), for `preview`; a FalError when fal
    cannot be reached or has no such endpoint."""
    from core.fal.catalogue import CatalogueClient

    with CatalogueClient(settings) as fal:
        return fal.document(endpoint_id)


def search_fal(settings: Settings, *, q: str | None = None, category: str | None = None,
               cursor: str | None = None, limit: int = 25) -> SearchPage:
    """One page of fal's catalogue (`core.fal.catalogue.SearchPage`); a FalError when fal cannot
    be reached: adding from a document file still works then."""
    from core.fal.catalogue import CatalogueClient

    with CatalogueClient(settings) as fal:
        return fal.search(q=q or None, category=category or None, cursor=cursor, limit=limit)


def fal_price(settings: Settings, endpoint_id: str) -> tuple[float, str] | None:
    """fal's price of the endpoint as (USD, unit), or None: no key (fal prices only with one), or
    fal cannot tell. Then a person may type one; with neither it is unknown, never $0."""
    from core.fal.catalogue import CatalogueClient

    if not settings.fal_key:
        return None
    with CatalogueClient(settings) as fal:
        return _fal_prices(fal, endpoint_id)


def preview(data: bytes, *, endpoint_id: str | None = None,
            label: str | None = None) -> tuple[EndpointDocument, ModelFields]:
    """A document checked and described, nothing stored (the Models page's preview)."""
    doc = read_document(data, endpoint_id=endpoint_id)
    return doc, describe(doc, label=label or _label(doc))


def install(store: Store) -> None:
    """Put every active added endpoint into this process's registry (call after opening the store).
    A stored document that no longer reads (a newer rule refuses it) is left out, with its reason
    kept for `show`."""
    models = store.list_models()
    key = tuple((m.endpoint_id, m.sha256, m.label, m.price_usd, m.price_unit) for m in models)
    if key == registry.added_key():
        return   # the registry holds these already (a page reruns many times a minute)
    added = []
    for model in models:
        try:
            doc = read_document(model.document.encode("utf-8"), endpoint_id=model.endpoint_id)
        except ModelDocumentError:
            continue
        added.append(registry.AddedEndpoint(doc, model.label, model.price_usd, model.price_unit))
    registry.install_added(added)


def every_model(store: Store, *, include_archived: bool = False) -> list[dict[str, Any]]:
    """One row per endpoint a plan may name: built-in ones, then added ones."""
    install(store)
    rows: list[dict[str, Any]] = [
        {"endpoint_id": e.id, "label": e.label, "mode": e.mode, "source": "built-in",
         "price": _rule_words(e.price)} for e in registry.list_endpoints() if not e.added]
    for m in store.list_models(include_archived=include_archived):
        rows.append({"endpoint_id": m.endpoint_id, "label": m.label, "category": m.category,
                     "source": m.source, "added_by": m.added_by, "added_at": m.added_at,
                     "price": price_words(m), "archived": m.archived_at is not None,
                     "refresh_waiting": m.pending_document is not None})
    return rows


def show_lines(store: Store, endpoint_id: str) -> list[str]:
    """An endpoint's fields in fal's order, how the canonical request maps onto them, and what it
    lacks, as lines for a terminal."""
    model = store.get_model(endpoint_id)
    if model is None:
        install(store)
        endpoint = registry.get_endpoint(endpoint_id)   # a built-in, or a PayloadError naming the known ones
        return [f"{endpoint.id}: {endpoint.label} (built-in, {endpoint.mode})",
                *(f"  {line}" for line in endpoint.notes)]
    doc, fields = preview(model.document.encode("utf-8"), endpoint_id=endpoint_id, label=model.label)
    lines = [f"{model.endpoint_id}: {model.label} ({model.category}, added {model.added_at[:10]}"
             f"{' by ' + model.added_by if model.added_by else ''}; document sha256 {model.sha256[:12]})",
             f"price: {price_words(model)}", "fields, in fal's order:"]
    for name, required, description in fields_in_order(doc):
        lines.append(f"  {name}{' (required)' if required else ''}: {description}")
    lines.append("the dashboard's request goes to:")
    lines += [f"  {line}" for line in mapping_lines(fields)]
    lines += ["what it lacks:", *(f"  {line}" for line in fields.missing or ("nothing the dashboard sends",))]
    if model.archived_at:
        lines.append(f"archived {model.archived_at[:10]}: no new batch may name it")
    return lines


def fields_in_order(doc: EndpointDocument) -> list[tuple[str, bool, str]]:
    """The endpoint's input fields in fal's order: (name, required, its description on one line)."""
    props, required = doc.input_schema.get("properties", {}), doc.input_schema.get("required", [])
    return [(name, name in required,
             _one_line(props.get(name, {}).get("description") or props.get(name, {}).get("title") or ""))
            for name in doc.field_order]


def describe_lines(model: StoredModel) -> list[str]:
    """The mapping and what is missing, for the line after an add."""
    _, fields = preview(model.document.encode("utf-8"), endpoint_id=model.endpoint_id, label=model.label)
    return [*mapping_lines(fields), *fields.missing]


def mapping_lines(fields: ModelFields) -> list[str]:
    """Where each part of the one request goes for this model, in words."""
    size = fields.size
    return [
        f"prompt -> {fields.prompt_key}",
        f"reference photos -> {fields.image_key} ({'a list' if fields.image_kind == 'list' else 'one photo'}"
        f"{', at most ' + str(fields.max_images) if fields.max_images else ''})" if fields.image_key
        else "reference photos -> (none: text-to-image)",
        f"aspect ratio -> {size.key} ({size.kind.replace('_', ' ')})" if size else "aspect ratio -> (none)",
        f"seed -> {fields.seed_key}" if fields.seed_key else "seed -> (none)",
        f"steps -> {fields.steps_key}" if fields.steps_key else "steps -> (none)",
        f"guidance -> {fields.guidance_key}" if fields.guidance_key else "guidance -> (none)",
        f"LoRAs -> {fields.loras_key}" if fields.loras_key else "LoRAs -> (none)",
    ]


def refresh(store: Store, settings: Settings, endpoint_id: str, *, by: str | None = None) -> list[str]:
    """Fetch fal's current document for an added endpoint and stage it; what changed, in words
    ([] when it is the one in use: nothing is staged)."""
    from core.fal.catalogue import CatalogueClient

    model = _added(store, endpoint_id)
    with CatalogueClient(settings) as fal:
        data = fal.document(endpoint_id)
    new = read_document(data, endpoint_id=endpoint_id)
    if new.sha256 == model.sha256:
        return []
    old = read_document(model.document.encode("utf-8"), endpoint_id=endpoint_id)
    store.stage_model_document(endpoint_id, document=data.decode("utf-8"), sha256=new.sha256)
    changes = schema_changes(old.input_schema, new.input_schema) or ["the document changed, but not its input fields"]
    store.add_audit(who=by, action="model.refreshed", subject=endpoint_id,
                    detail=f"document {new.sha256[:12]} staged: " + "; ".join(changes)[:500])
    return changes


def adopt(store: Store, endpoint_id: str, *, by: str | None = None) -> StoredModel:
    model = _added(store, endpoint_id)
    if model.pending_document is None:
        raise DashboardError(f"{endpoint_id} has no refreshed document to adopt; "
                             f"run `python -m core model refresh {endpoint_id}` first.")
    doc = read_document(model.pending_document.encode("utf-8"), endpoint_id=endpoint_id)
    adopted = store.adopt_model_document(endpoint_id, label=model.label, category=doc.category)
    store.add_audit(who=by, action="model.adopted", subject=endpoint_id, detail=f"document {doc.sha256[:12]}")
    return adopted


def archive(store: Store, endpoint_id: str, *, by: str | None = None) -> StoredModel:
    _added(store, endpoint_id)
    archived = store.archive_model(endpoint_id)
    store.add_audit(who=by, action="model.archived", subject=endpoint_id, detail=archived.label)
    return archived


def schema_changes(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """Fields added or removed, and per kept field its default, enum and range, when they differ."""
    old_props, new_props = old.get("properties", {}), new.get("properties", {})
    lines = [f"field added: {k}" for k in new_props if k not in old_props]
    lines += [f"field removed: {k}" for k in old_props if k not in new_props]
    for key in (k for k in new_props if k in old_props):
        a, b = _facts(old_props[key], old), _facts(new_props[key], new)
        for fact in ("default", "enum", "minimum", "maximum", "type"):
            if a.get(fact) != b.get(fact):
                lines.append(f"{key}: {fact} {_json(a.get(fact))} -> {_json(b.get(fact))}")
    was, now_required = set(old.get("required", [])), set(new.get("required", []))
    lines += [f"now required: {k}" for k in sorted(now_required - was)]
    lines += [f"no longer required: {k}" for k in sorted(was - now_required)]
    return lines


def price_words(model: StoredModel) -> str:
    if model.price_usd is None:
        return "unknown (type a price and its unit, or add it with a fal key to read fal's price)"
    source = "fal's price" if model.price_source == "fal" else "typed by the team"
    return f"${model.price_usd:g} per {model.price_unit or 'image'} ({source})"


# ---------------------------------------------------------------------------- helpers


def _add(store: Store, data: bytes, *, source: str, added_by: str | None, price_usd: float | None,
         unit: str | None, fetched_at: str | None, prices: tuple[float, str] | None,
         endpoint_id: str | None = None, label: str | None = None) -> StoredModel:
    doc, _fields = preview(data, endpoint_id=endpoint_id)
    label = " ".join((label or "").split()) or _label(doc)
    if len(label) > 80:
        raise DashboardError("a model's label is at most 80 characters")
    if doc.endpoint_id in {e.id for e in registry.list_endpoints() if not e.added}:
        raise ModelDocumentError(f"{doc.endpoint_id} is built in already; plans may name it as it is.")
    if unit is not None and unit not in UNITS:
        raise DashboardError(f"--unit must be one of {', '.join(UNITS)} (what fal bills), not {unit!r}")
    if price_usd is None and unit is not None:
        raise DashboardError("--unit goes with --price: give the price of one unit")
    if price_usd is not None and not 0 < price_usd < MAX_PRICE_USD:
        raise DashboardError(f"a price per unit is more than 0 and less than {MAX_PRICE_USD} USD, not "
                             f"{price_usd:g}; leave it empty when it is unknown (never $0)")
    price_source = None
    if price_usd is not None:
        unit, price_source = unit or "image", "team"
    elif prices is not None:
        price_usd, unit, price_source = prices[0], prices[1], "fal"
    model = store.add_model(NewModel(
        endpoint_id=doc.endpoint_id, label=label, category=doc.category,
        document=data.decode("utf-8"), sha256=doc.sha256, source=source, added_by=added_by,
        fetched_at=fetched_at, price_usd=price_usd, price_unit=unit, price_source=price_source))
    store.add_audit(who=added_by, action="model.added", subject=doc.endpoint_id,
                    detail=f"{label} from {source}, document {doc.sha256[:12]}, price {price_words(model)}")
    return model


def _fal_prices(fal: Any, endpoint_id: str) -> tuple[float, str] | None:
    """fal's price of the endpoint, or None when fal cannot tell (the person may type one)."""
    from core.errors import FalError

    try:
        price = fal.prices([endpoint_id]).get(endpoint_id)
    except FalError:
        return None
    if price is None or price.currency.upper() != "USD":
        return None
    unit = "megapixels" if "megapixel" in price.unit.lower() or price.unit.lower() in ("mp", "1m pixels") else "image"
    return float(price.unit_price), unit


def _read_file(path: Path) -> bytes:
    try:
        with path.open("rb") as f:
            data = f.read(MAX_DOCUMENT_BYTES + 1)
    except OSError as e:
        raise ModelDocumentError(f"cannot read {path}: {e.strerror or e}") from None
    return data   # read_document refuses more than MAX_DOCUMENT_BYTES in one line


def _added(store: Store, endpoint_id: str) -> StoredModel:
    model = store.get_model(endpoint_id)
    if model is None:
        raise DashboardError(f"{endpoint_id} is not an added model; `python -m core model list` lists them.")
    return model


def _label(doc: EndpointDocument) -> str:
    """The document's display name, else the id without its owner ("flux-pro/kontext"): fal's
    queue documents carry no display name, and a page or a sentence names the model by it."""
    for key in ("displayName", "display_name", "title"):
        value = doc.metadata.get(key)
        if isinstance(value, str) and value.strip():
            return value.strip()
    owner, _, rest = doc.endpoint_id.partition("/")
    return rest or owner


def _facts(prop: dict[str, Any], root: dict[str, Any]) -> dict[str, Any]:
    from core.catalog.validation import resolve_ref

    branches = [resolve_ref(s, root) for s in prop.get("anyOf", [prop])]
    main = next((b for b in branches if b.get("type") != "null"), prop)
    return {"default": prop.get("default", main.get("default")), "enum": main.get("enum"),
            "minimum": main.get("minimum"), "maximum": main.get("maximum"), "type": main.get("type")}


def _json(value: Any) -> str:
    return "none" if value is None else json.dumps(value, ensure_ascii=False)


def _one_line(text: str, limit: int = 100) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _rule_words(rule: registry.PriceRule | None) -> str:
    if rule is None:
        return "unknown"
    if rule.basis == "per_image":
        return f"${rule.usd_per_mp:g} per image"
    extra = " (inputs count 1 MP each)" if rule.basis == "input_and_output" else ""
    return f"${rule.usd_per_mp:g} per megapixel{extra}"
