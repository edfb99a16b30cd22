"""An endpoint's tunable parameters, as a form draws them (the Generate page's parameter form).

Invariant: the fields the builder fills from the request itself (prompt, references, size, seed:
`registry.BUILDER_FIELDS`, or an added endpoint's own ones) are never offered as parameters.
"""
from __future__ import annotations

from typing import Any

from core.catalog import registry
from core.catalog.validation import resolve_ref


def parameter_fields(endpoint_id: str) -> list[dict[str, Any]]:
    """The tunable parameters of an endpoint for forms, in schema order (prompt, references, seed and
    image_size excluded: the builder sets those). Keys: name, title, type, default, min, max, enum,
    description, preset (the team preset value sent for it, or None)."""
    endpoint = registry.get_endpoint(endpoint_id)
    preset = registry.preset_params(endpoint_id)
    builder: tuple[str | None, ...] = registry.BUILDER_FIELDS
    if endpoint.fields is not None:
        f = endpoint.fields
        builder = (f.prompt_key, f.image_key, f.size.key if f.size else None, f.seed_key)
    fields_: list[dict[str, Any]] = []
    for name, prop in endpoint.schema["properties"].items():
        if name in builder:
            continue
        branches = [resolve_ref(s, endpoint.schema) for s in prop.get("anyOf", [prop])]
        main = next((b for b in branches if b.get("type") != "null"), prop)
        fields_.append({
            "name": name,
            "title": prop.get("title", name),
            "type": main.get("type"),
            "default": prop.get("default"),
            "min": main.get("minimum", main.get("exclusiveMinimum")),
            "max": main.get("maximum", main.get("exclusiveMaximum")),
            "enum": list(main["enum"]) if "enum" in main else None,
            "description": prop.get("description", ""),
            "preset": preset.get(name),
        })
    return fields_
