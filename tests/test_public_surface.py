"""Each package of core declares its public surface (`__all__`), and this test pins it, as httpx's
test_exported_members does: renaming or dropping a public name is a deliberate change here, never
a silent break for a caller. Every declared name must also resolve."""
from __future__ import annotations

import importlib

import pytest

SURFACE = {
    "core.catalog": [
        "Contender", "Endpoint", "OPTION_KEYS", "PromptOptions", "abbreviate", "build_payload",
        "build_prompt", "canonical_json", "contenders", "estimate_cost", "get_endpoint",
        "image_size_for", "list_endpoints", "payload_hash", "payloads", "prompts", "registry",
        "validate_payload",
    ],
    "core.batches": [
        "BatchState", "Cancelled", "FalClient", "FalOutput", "Finished", "Plan", "QueueHandle",
        "RunReport", "Running", "Starting", "Stopped", "cancel", "fal", "follow", "launch",
        "load_plan_file", "make_plan", "plans", "record", "record_result", "rerun", "resume",
        "run_batch", "schedule", "service", "state",
    ],
    "core.photos": [
        "add_reference", "check_reachable", "fal_url", "image_info", "images", "normalise_upload",
        "payload_url", "read_photo_file", "references", "resolve_payload", "sweep_orphans",
    ],
    "core.evaluation": [
        "Vote", "comparison", "fidelity", "metrics", "pairing", "review", "start_background", "stats",
    ],
    "core.export": ["CHUNK_SIZE", "COLUMNS", "ExportResult", "iter_csv", "safe_cell", "to_csv", "to_csv_bytes"],
}


@pytest.mark.parametrize("package", sorted(SURFACE))
def test_exported_members(package):
    module = importlib.import_module(package)
    assert sorted(module.__all__) == sorted(SURFACE[package])
    for name in module.__all__:
        assert getattr(module, name) is not None, f"{package}.{name} does not resolve"


def test_the_store_declares_its_surface():
    store = importlib.import_module("core.store")
    assert "Store" in store.__all__ and "open_store" in store.__all__
    for name in store.__all__:
        assert getattr(store, name) is not None


def test_an_unknown_name_is_an_attribute_error():
    with pytest.raises(AttributeError):
        importlib.import_module("core.batches").no_such_thing  # noqa: B018
