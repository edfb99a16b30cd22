"""One canonical request mapped onto the own fields of an endpoint added from its fal document.

The dashboard asks every model of a group the same thing: one prompt, the group's reference
photos, the aspect ratio the prompt names, one seed. An added endpoint says through its schema
where each goes (`core.catalog.openapi.describe`: `ModelFields`); this module puts them there.

Invariants:
- Only fields the endpoint's schema has are written: the prompt in its prompt field, the photos
  in its own image field (a list, or one string), the ratio in its own size field
  (`image_size` preset or custom size, `aspect_ratio` enum...), the seed only where there is one.
  What it lacks is left out and said (`notes_for`), never sent for fal to drop silently.
- A model that takes fewer photos than the group has gets the first ones, and the plan says so.
- The aspect ratio asked is the prompt's; a model that cannot be asked for it keeps its default,
  and the plan says why.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from core.catalog.openapi import ModelFields

# the preset each aspect-ratio option of the prompt becomes for built-in endpoints (prompts.py)
_PRESET_RATIOS = {"square_hd": "1:1", "square": "1:1", "portrait_16_9": "9:16", "landscape_16_9": "16:9",
                  "portrait_4_3": "3:4", "landscape_4_3": "4:3"}


def ratio_of(aspect_ratio: str | None, image_size: str | dict[str, int] | None) -> str | None:
    """The ratio a group asks for: its aspect-ratio option, else the one its preset stands for."""
    if aspect_ratio:
        return aspect_ratio.strip()
    if isinstance(image_size, str):
        return _PRESET_RATIOS.get(image_size)
    return None


def canonical_body(fields: ModelFields, *, prompt: str, ratio: str | None, refs: Sequence[str],
                   seed: int | None) -> dict[str, Any]:
    """The body's canonical part for this endpoint (the team preset and params come on top)."""
    body: dict[str, Any] = {fields.prompt_key: prompt}
    if fields.image_key is not None and refs:
        sent = list(refs[: fields.max_images]) if fields.max_images else list(refs)
        body[fields.image_key] = sent if fields.image_kind == "list" else sent[0]
    if ratio is not None and fields.size is not None:
        asked = fields.aspect_ratio_value(ratio)
        if asked is not None:
            body[asked[0]] = asked[1]
    if seed is not None and fields.seed_key is not None:
        body[fields.seed_key] = seed
    return body


def notes_for(fields: ModelFields, *, ratios: Sequence[str | None], references: int) -> tuple[str, ...]:
    """What the team should know before sending this model a plan's groups: what it lacks, photos
    it will not receive, ratios it cannot be asked for."""
    notes = list(fields.missing)
    if fields.image_key is not None and fields.max_images and references > fields.max_images:
        first = "only the first is sent" if fields.max_images == 1 else f"only the first {fields.max_images} are sent"
        notes.append(f"{fields.label} takes {fields.max_images} photo{'s' * (fields.max_images != 1)} "
                     f"of the {references} given: {first}.")
    for ratio in dict.fromkeys(r for r in ratios if r):
        problem = fields.aspect_ratio_problem(ratio)
        if problem and problem not in notes and not any(problem.split(":")[0] in n for n in notes):
            notes.append(f"{problem}; it keeps its default for {ratio}.")
    return tuple(dict.fromkeys(notes))
