"""What the store takes in to record a batch: the input records a plan builds.

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
    estimated_cost: float
    prompt: str
    options: Mapping[str, str]
    seed: int
    image_size: str
    reference_ids: tuple[str, ...]
    contender: Contender


@dataclass(frozen=True)
class NewBatch:
    name: str
    plan_json: Mapping[str, Any] = field(repr=False)
    groups: tuple[NewGroup, ...]
    requests: tuple[NewRequest, ...] = field(repr=False)
    estimated_cost: float
    final: bool = True
