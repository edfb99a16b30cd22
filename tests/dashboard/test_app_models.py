"""Models page (issue 18): the team adds any fal image endpoint from its OpenAPI document, by file
or from fal's catalogue (the fal stand-in over real HTTP), and Generate offers it at once; a bad
or duplicate document is one line and stores nothing; archiving takes it out of Generate."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from core.catalog import registry
from tests.apptest_support import all_text, assert_ok, new_store, open_page, texts

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "openapi"
KONTEXT, LORA = "fal-ai/flux-pro/kontext", "fal-ai/flux-lora"


def _fixture(endpoint_id: str) -> bytes:
    return (FIXTURES / f"{endpoint_id.replace('/', '__')}.json").read_bytes()


@pytest.fixture(autouse=True)
def _no_added_endpoints_outlive_the_test():
    """The registry is process-wide: what a test added must not reach the next test's Generate."""
    yield
    registry.install_added([])


@pytest.fixture
def catalogue(fal_standin, monkeypatch):
    """The stand-in's catalogue, with FAL_OPENAPI_URL and FAL_API_URL pointed at it."""
    monkeypatch.setenv("FAL_OPENAPI_URL", f"{fal_standin.url}/api/openapi/queue/openapi.json")
    monkeypatch.setenv("FAL_API_URL", f"{fal_standin.url}/v1")
    return fal_standin.catalogue


def _upload(at, name: str, data: bytes):
    at.file_uploader[0].set_value((name, data, "application/json"))
    at.run()
    assert_ok(at)
    return at


def _add(at, price: float | None = None, unit: str | None = None):
    if price is not None:
        at.number_input(key="models_price").set_value(price)
    if unit is not None:
        at.selectbox(key="models_unit").set_value(unit)
    at.button(key="models_add").click().run()
    assert_ok(at)
    return at


def _generate_options() -> list[str]:
    at = open_page("generate.py", clear_caches=False)
    return at.multiselect(key="gen_models").options


def test_models_page_smoke_empty_store():
    """An empty store: the three ways in, and no model listed yet."""
    at = open_page("models.py")
    assert texts(at.title) == ["Models"]
    assert [t.label for t in at.tabs] == ["Search fal", "Endpoint id", "Document file"]
    assert "No model added yet" in all_text(at)


def test_two_uploaded_documents_are_added_listed_and_offered_on_generate():
    """Kontext with a typed price, the LoRA model without one: both are stored with who added
    them, the list shows them with their price (typed, or unknown, never $0), and Generate
    offers them beside the built-ins."""
    at = open_page("models.py", user="Ana")
    _upload(at, "kontext.json", _fixture(KONTEXT))
    shown = all_text(at)
    assert "Form fields, in fal's order" in shown and "image\\_url" in shown
    assert "prompt -\\> prompt" in shown and "What it lacks" in shown
    _add(at, price=0.04, unit="image")
    assert not at.error, texts(at.error)
    assert any("Added" in s and "Generate offers it now" in s for s in texts(at.success))

    _upload(at, "lora.json", _fixture(LORA))
    assert any("unknown" in c for c in texts(at.caption))
    _add(at)
    assert not at.error, texts(at.error)

    stored = {m.endpoint_id: m for m in new_store().list_models()}
    assert set(stored) == {KONTEXT, LORA}
    assert (stored[KONTEXT].price_usd, stored[KONTEXT].price_unit, stored[KONTEXT].price_source) == (0.04, "image", "team")
    assert stored[LORA].price_usd is None and stored[LORA].added_by == "Ana"
    listed = all_text(at)
    assert "$0.04 per image (typed by the team)" in listed and "$0 " not in listed
    assert KONTEXT in listed and LORA in listed
    options = " ".join(_generate_options())
    assert KONTEXT in options and LORA in options


@pytest.mark.parametrize("name, data, said", [
    ("notes.json", b"this is not json {", "JSON"),
    ("video.json", None, "video"),
])
def test_a_bad_document_is_one_error_line_and_nothing_is_stored(name, data, said):
    """Not JSON, or an endpoint that returns video: one line, no preview, no row."""
    if data is None:
        doc = json.loads(_fixture(KONTEXT))
        doc["info"]["x-fal-metadata"]["category"] = "image-to-video"
        data = json.dumps(doc).encode()
    at = _upload(open_page("models.py"), name, data)
    errors = texts(at.error)
    assert len(errors) == 1 and "\n" not in errors[0] and said in errors[0], errors
    assert "Nothing was stored" in errors[0]
    assert not any(b.key == "models_add" for b in at.button)
    assert new_store().list_models(include_archived=True) == []


def test_adding_the_same_endpoint_twice_is_refused_in_one_line():
    at = open_page("models.py")
    _add(_upload(at, "kontext.json", _fixture(KONTEXT)))
    _add(_upload(at, "kontext-again.json", _fixture(KONTEXT)))
    errors = texts(at.error)
    assert len(errors) == 1 and "already added" in errors[0] and "\n" not in errors[0], errors
    assert [m.endpoint_id for m in new_store().list_models()] == [KONTEXT]


def test_a_zero_price_is_refused_never_stored_as_free():
    at = open_page("models.py")
    _add(_upload(at, "kontext.json", _fixture(KONTEXT)), price=0.0)
    assert any("more than 0" in e for e in texts(at.error))
    assert new_store().list_models() == []


def test_search_lists_fals_models_and_one_is_added_from_fal_with_fals_price(catalogue):
    """Search the stand-in's catalogue, preview one, add it: its price is fal's, read with the key."""
    at = open_page("models.py", user="Bo")
    at.text_input(key="models_q").set_value("kontext")
    at.button(key="models_search").click().run()
    assert_ok(at)
    assert any("FLUX.1 Kontext [pro]" in m for m in texts(at.markdown))
    at.button(key=f"models_pick_{KONTEXT}").click().run()
    assert "fal's price" in all_text(at)
    _add(at)
    model = new_store().get_model(KONTEXT)
    assert model.source == "fal" and model.price_source == "fal" and model.added_by == "Bo"


def test_an_endpoint_id_is_fetched_and_an_unknown_one_is_one_line(catalogue):
    at = open_page("models.py")
    at.text_input(key="models_endpoint_id").set_value("acme/nothing-here")
    at.button(key="models_fetch").click().run()
    errors = texts(at.error)
    assert len(errors) == 1 and "acme/nothing-here" in errors[0]
    at.text_input(key="models_endpoint_id").set_value(LORA)
    at.button(key="models_fetch").click().run()
    assert any(b.key == "models_add" for b in at.button)


def test_when_fal_cannot_be_reached_search_says_so_and_that_a_file_still_works(catalogue):
    """fal's 500s (retried, then given up) are one line that points to the document file."""
    catalogue.inject("search", "500", times=99)
    at = open_page("models.py")
    at.button(key="models_search").click().run()
    assert_ok(at)
    errors = texts(at.error)
    assert len(errors) == 1 and "\n" not in errors[0], errors
    assert "fal cannot be reached" in errors[0] and "document file still works" in errors[0]


def test_archiving_asks_first_then_generate_no_longer_offers_the_model():
    at = open_page("models.py")
    _add(_upload(at, "lora.json", _fixture(LORA)))
    assert LORA in " ".join(_generate_options())
    at = open_page("models.py", clear_caches=False)
    at.button(key=f"models_archive_{LORA}").click().run()
    assert any("Archive" in w for w in texts(at.warning)), "archiving asks first"
    assert new_store().get_model(LORA).archived_at is None
    at.button(key=f"models_archive_yes_{LORA}").click().run()
    assert_ok(at)
    assert new_store().get_model(LORA).archived_at is not None
    assert LORA not in " ".join(_generate_options())


def test_refresh_says_what_changed_and_adopt_makes_it_current(catalogue):
    """fal now serves a document with a new default: refresh lists it, Adopt makes it current."""
    at = open_page("models.py")
    _add(_upload(at, "lora.json", _fixture(LORA)))
    at.button(key=f"models_refresh_{LORA}").click().run()
    assert any("nothing to adopt" in m for m in texts(at.markdown))
    doc = json.loads(_fixture(LORA))
    doc["info"]["x-fal-metadata"]["endpointId"] = LORA
    schema = next(s for k, s in doc["components"]["schemas"].items() if k.endswith("Input"))
    schema["properties"]["num_inference_steps"]["default"] = 30
    catalogue.register(LORA, json.dumps(doc).encode())
    at.button(key=f"models_refresh_{LORA}").click().run()
    assert any("num\\_inference\\_steps\\: default 28" in m for m in texts(at.markdown)), texts(at.markdown)
    before = new_store().get_model(LORA).sha256
    at.button(key=f"models_adopt_{LORA}").click().run()
    assert_ok(at)
    assert new_store().get_model(LORA).sha256 != before
