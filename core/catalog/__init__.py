"""What can be asked of fal: the prompt options, the endpoints (data in endpoints.toml and the
JSON Schemas in schemas/), the payloads built from them, and contenders (an endpoint at one
parameter set). A new endpoint touches only this package.

    prompts      option catalogs (options.toml) -> prompt sentence and image_size
    registry     endpoints, payload building, validate_payload (before sending), parameter fields, cost
    validation   a body or one field judged by its endpoint's JSON Schema (jsonschema), and why not
    payloads     canonical JSON, payload hashes, JSON diffs
    contenders   stable ids and readable labels of endpoint + parameter sets
    openapi      fal's queue OpenAPI document of any image endpoint, checked, and its fields described
    added        the one canonical request mapped onto an added endpoint's own fields
    forms        an endpoint's tunable parameters, as a form draws them
"""
from core._surface import lazy

_EXPORTS = {
    "prompts": "", "registry": "", "validation": "", "payloads": "", "contenders": "", "openapi": "", "added": "", "forms": "",
    "PromptOptions": "prompts", "build_prompt": "prompts", "image_size_for": "prompts",
    "OPTION_KEYS": "prompts",
    "Endpoint": "registry", "get_endpoint": "registry", "list_endpoints": "registry",
    "build_payload": "registry", "validate_payload": "registry", "estimate_cost": "registry",
    "canonical_json": "payloads", "payload_hash": "payloads",
    "Contender": "contenders",
}
__all__ = sorted(_EXPORTS)
__getattr__ = lazy(__name__, _EXPORTS)
