"""`registry.endpoint_label`: the one rule pages use to name an endpoint, old rows included."""
from core.catalog import registry


def test_a_known_endpoint_is_named_by_its_label():
    assert registry.endpoint_label("fal-ai/flux/schnell") == registry.get_endpoint("fal-ai/flux/schnell").label
    assert registry.endpoint_label("fal-ai/flux/schnell") != "fal-ai/flux/schnell"


def test_an_endpoint_gone_from_the_registry_is_named_by_its_id():
    assert registry.endpoint_label("fal-ai/retired-model") == "fal-ai/retired-model"
