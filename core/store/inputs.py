"""What the store takes in: the records a plan builds to record a batch, and an endpoint to add.

The store owns these (it knows nothing of plans): `Store.create_batch(NewBatch)` writes the batch,
its groups and one `planned` row per request in one transaction. `core.batches.plans` builds them.

Invariants:
- A group is one (variant, seed): its requests share prompt, seed, `image_size` and references
  across contenders. A request names its group by `group_key`, unique within the batch.
- `payload` is the exact body that will be sent, with local references named `reference://<id>`;
  `payload_hash` is `core.catalog.payloads.payload_hash(payload)`.
- A batch whose reference files are not stored yet (`final` False: a preview) is refused.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from core.catalog.contenders import Contender


@dataclass(frozen=True)
class NewGroup:
    key: str
    variant_key: str
    options: Mapping[str, str]
    prompt: str
    seed: int
    image_size: str
    reference_ids: tuple[str, ...]


@dataclass(frozen=True)
class NewRequest:
    group_key: str
    endpoint: str
    payload: Mapping[str, Any] = field(repr=False)
    payload_hash: str
    estimated_cost: float | None     # None: the endpoint's price is unknown
    prompt: str
    options: Mapping[str, str]
    seed: int
    image_size: str
    reference_ids: tuple[str, ...]
    contender: Contender
    schema_version: str = ""         # the schema the body was validated against (registry)


@dataclass(frozen=True)
class NewBatch:
    name: str
    plan_json: Mapping[str, Any] = field(repr=False)
    groups: tuple[NewGroup, ...]
    requests: tuple[NewRequest, ...] = field(repr=False)
    estimated_cost: float
    final: bool = True


@dataclass(frozen=True)
class NewModel:
    """An endpoint to add from its fal OpenAPI document, as read and checked by
    `core.catalog.openapi.read_document` (`document` is its text, `sha256` of its bytes)."""

    endpoint_id: str
    label: str
    category: str
    document: str = field(repr=False)
    sha256: str
    source: str                      # "file:<name>" or "fal"
    added_by: str | None = None
    fetched_at: str | None = None
    price_usd: float | None = None
    price_unit: str | None = None
    price_source: str | None = None
