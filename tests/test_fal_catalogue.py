"""`core.fal.catalogue` against the fal stand-in over real HTTP: any endpoint's OpenAPI document by
id, model search, prices, and every fault a user can meet on the way (issue 18). And the stand-in
itself: it validates a body sent to an endpoint whose document it serves against that document,
refusing the fields fal would silently drop."""
from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import httpx
import pytest

from core.config import load_settings
from core.errors import FalAuthError, FalBadResponse, FalError, FalServerError, FalTimeout, FalUnavailable
from core.fal import RetryPolicy
from core.fal.catalogue import MAX_PRICE_IDS, CatalogueClient, CatalogueModel, Price, SearchPage, UnknownEndpoint
from tests.standins.fal_server import DEFAULT_KEY, StandinControl

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "openapi"
FOUR = ("fal-ai/flux-2", "fal-ai/flux-2/edit", "fal-ai/flux-lora", "fal-ai/flux-pro/kontext")
# a body each endpoint accepts, taken from its own document's required fields
VALID = {"fal-ai/flux-2": {"prompt": "a red fox"},
         "fal-ai/flux-2/edit": {"prompt": "make it blue", "image_urls": ["https://example.test/a.png"]},
         "fal-ai/flux-lora": {"prompt": "a red fox", "loras": [{"path": "https://example.test/l.safetensors",
                                                                "scale": 1.0}]},
         "fal-ai/flux-pro/kontext": {"prompt": "make it blue", "image_url": "https://example.test/a.png"}}


def _fixture(endpoint_id: str) -> bytes:
    return (FIXTURES / f"{endpoint_id.replace('/', '__')}.json").read_bytes()


@pytest.fixture
def catalogue(fal_standin, monkeypatch):
    """The stand-in's catalogue state, with FAL_OPENAPI_URL and FAL_API_URL pointed at it."""
    monkeypatch.setenv("FAL_OPENAPI_URL", f"{fal_standin.url}/api/openapi/queue/openapi.json")
    monkeypatch.setenv("FAL_API_URL", f"{fal_standin.url}/v1")
    return fal_standin.catalogue


@pytest.fixture
def sleeps() -> list[float]:
    return []


@pytest.fixture
def client(catalogue, sleeps):
    with CatalogueClient(load_settings(), retry=RetryPolicy(sleep=sleeps.append)) as c:
        yield c


@pytest.fixture
def anonymous(catalogue, sleeps, monkeypatch):
    monkeypatch.delenv("FAL_KEY")
    with CatalogueClient(load_settings(), retry=RetryPolicy(sleep=sleeps.append)) as c:
        yield c


# --- documents ----------------------------------------------------------------------------------

@pytest.mark.parametrize("endpoint_id", FOUR)
def test_a_document_is_fetched_by_id_byte_for_byte(client, catalogue, endpoint_id):
    assert client.document(endpoint_id) == _fixture(endpoint_id)
    assert catalogue.auth_seen == [f"Key {DEFAULT_KEY}"]


def test_a_document_needs_no_key_and_none_is_sent_without_one(anonymous, catalogue):
    assert json.loads(anonymous.document("fal-ai/flux-2"))["info"]["title"] == "Queue OpenAPI for fal-ai/flux-2"
    assert catalogue.auth_seen == [None]


def test_any_registered_document_is_served(client, catalogue):
    doc = json.loads(_fixture("fal-ai/flux-lora").replace(b"fal-ai/flux-lora", b"acme/painter"))
    catalogue.register("acme/painter", doc)
    assert json.loads(client.document("acme/painter"))["info"]["x-fal-metadata"]["endpointId"] == "acme/painter"


def test_an_unknown_endpoint_is_one_clear_error_and_not_retried(client, catalogue, sleeps):
    with pytest.raises(UnknownEndpoint) as caught:
        client.document("fal-ai/no-such-model")
    assert str(caught.value) == "fal has no endpoint fal-ai/no-such-model: check the id on fal.ai/models."
    assert isinstance(caught.value, FalError) and caught.value.endpoint_id == "fal-ai/no-such-model"
    assert catalogue.requests["document"] == 1 and sleeps == []


def test_a_malformed_id_is_refused_before_sending(client, catalogue):
    for bad in ("flux-2", "fal-ai/../x", "fal-ai/flux-2?x=1", "a/b,c/d"):
        with pytest.raises(FalError, match="is not a fal endpoint id"):
            client.document(bad)
    assert catalogue.requests["document"] == 0


def test_5xx_is_retried_with_backoff_then_given_up(client, catalogue, sleeps):
    catalogue.inject("document", "500", times=99)
    with pytest.raises(FalServerError, match=r"\(500\) after 5 attempts for the document of fal-ai/flux-2"):
        client.document("fal-ai/flux-2")
    assert catalogue.requests["document"] == 5 and len(sleeps) == 4
    assert all(0 < s <= RetryPolicy().cap for s in sleeps)


def test_a_passing_fault_is_ridden_through(client, catalogue, sleeps):
    catalogue.inject("document", "503", times=2)
    catalogue.inject("search", "ingress")
    catalogue.inject("pricing", "drop")
    assert client.document("fal-ai/flux-2") == _fixture("fal-ai/flux-2")
    assert len(client.search().models) == 4
    assert set(client.prices(FOUR)) == set(FOUR)
    assert len(sleeps) == 4


def test_429_waits_as_long_as_fal_says(client, catalogue, sleeps):
    catalogue.inject("search", "429", retry_after=3)
    client.search()
    assert sleeps == [3.0]


def test_a_slow_answer_under_the_timeout_is_waited_for(catalogue, sleeps):
    catalogue.inject("document", "slow", seconds=0.4)
    with CatalogueClient(load_settings(), timeout=5.0, retry=RetryPolicy(sleep=sleeps.append)) as c:
        assert c.document("fal-ai/flux-2") == _fixture("fal-ai/flux-2")
    assert sleeps == []


def test_an_answer_slower_than_the_timeout_is_retried_then_a_timeout(catalogue, sleeps):
    catalogue.inject("document", "slow", times=2, seconds=0.6)
    with CatalogueClient(load_settings(), timeout=0.2, retry=RetryPolicy(max_attempts=2, sleep=sleeps.append)) as c:
        with pytest.raises(FalTimeout, match="did not answer the document of fal-ai/flux-2 in time after 2 attempts"):
            c.document("fal-ai/flux-2")


def test_an_unreachable_host_names_its_setting(monkeypatch, catalogue, sleeps):
    monkeypatch.setenv("FAL_OPENAPI_URL", "http://127.0.0.1:9/api/openapi/queue/openapi.json")
    with CatalogueClient(load_settings(), retry=RetryPolicy(max_attempts=2, sleep=sleeps.append)) as c:
        with pytest.raises(FalUnavailable, match="check the network and FAL_OPENAPI_URL; nothing was sent"):
            c.document("fal-ai/flux-2")


@pytest.mark.parametrize("fault, said", [
    ("html", "is not JSON (text/html)"),
    ("not_openapi", "is JSON but not an OpenAPI 3 document"),
    ("huge", "larger than 2 MB"),
])
def test_an_answer_that_is_not_a_document_is_one_bad_response_line(client, catalogue, sleeps, fault, said):
    catalogue.inject("document", fault)
    with pytest.raises(FalBadResponse, match=re.escape(said)) as caught:
        client.document("fal-ai/flux-2")
    assert "\n" not in str(caught.value) and sleeps == [], "not transient: not asked again"


def test_a_document_of_another_endpoint_is_refused(client, catalogue):
    catalogue.register("acme/painter", _fixture("fal-ai/flux-lora"))
    with pytest.raises(FalBadResponse, match="fal answered the document of fal-ai/flux-lora when asked for acme/painter"):
        client.document("acme/painter")


# --- search -------------------------------------------------------------------------------------

def test_search_lists_active_models_with_their_documents_inlined(client, catalogue):
    catalogue.register("acme/old", _fixture("fal-ai/flux-2").replace(b"fal-ai/flux-2", b"acme/old"),
                       status="deprecated")
    page = client.search()
    assert isinstance(page, SearchPage) and page == SearchPage(page.models, None, False)
    assert [m.endpoint_id for m in page.models] == sorted(FOUR), "a deprecated model is not offered"
    kontext = page.models[-1]
    assert isinstance(kontext, CatalogueModel) and kontext.category == "image-to-image"
    assert kontext.display_name == "FLUX.1 Kontext [pro]" and kontext.status == "active"
    assert kontext.thumbnail_url.startswith("https://")
    assert kontext.document == json.loads(_fixture("fal-ai/flux-pro/kontext"))


def test_search_matches_id_name_and_description_and_filters_on_category(client):
    assert [m.endpoint_id for m in client.search(q="kontext").models] == ["fal-ai/flux-pro/kontext"]
    assert [m.endpoint_id for m in client.search(q="LoRA support").models] == ["fal-ai/flux-lora"]
    assert [m.endpoint_id for m in client.search(q="edit", category="image-to-image").models] == [
        "fal-ai/flux-2/edit", "fal-ai/flux-pro/kontext"]
    assert [m.endpoint_id for m in client.search(category="text-to-image").models] == [
        "fal-ai/flux-2", "fal-ai/flux-lora"]
    assert client.search(q="banana").models == ()


def test_search_pages_with_limit_and_cursor(client):
    seen, cursor = [], None
    for _ in range(10):
        page = client.search(limit=3, cursor=cursor)
        seen += [m.endpoint_id for m in page.models]
        if not page.has_more:
            break
        cursor = page.next_cursor
        assert cursor
    assert seen == sorted(FOUR) and page.next_cursor is None


def test_search_refuses_a_limit_fal_does_not_take(client):
    for limit in (0, 101, True):
        with pytest.raises(ValueError, match="limit must be a whole number from 1 to 100"):
            client.search(limit=limit)


def test_search_works_without_a_key(anonymous, catalogue):
    assert len(anonymous.search().models) == 4 and catalogue.auth_seen == [None]


def test_a_search_answer_of_the_wrong_shape_is_one_bad_response_line(client, catalogue):
    catalogue.inject("search", "wrong_shape")
    with pytest.raises(FalBadResponse, match="fal's search answer lacks `models`"):
        client.search()
    catalogue.inject("search", "html")
    with pytest.raises(FalBadResponse, match=r"search answer is not a JSON object \(text/html\)"):
        client.search()


# --- prices -------------------------------------------------------------------------------------

def test_prices_of_the_four_and_of_a_registered_model(client, catalogue):
    catalogue.set_price("acme/painter", 0.05, "images")
    prices = client.prices([*FOUR, "acme/painter", "acme/unpriced"])
    assert prices["fal-ai/flux-2"] == Price(0.012, "megapixels", "USD")
    assert prices["acme/painter"] == Price(0.05, "images", "USD")
    assert "acme/unpriced" not in prices, "what fal does not price is left out, not invented"
    assert catalogue.auth_seen == [f"Key {DEFAULT_KEY}"]


def test_more_than_fifty_ids_are_asked_fifty_at_a_time(client, catalogue):
    ids = [f"acme/model-{i}" for i in range(2 * MAX_PRICE_IDS + 7)]
    for i, endpoint_id in enumerate(ids):
        catalogue.set_price(endpoint_id, i / 1000)
    prices = client.prices(ids + ids[:5])
    assert len(prices) == len(ids) and prices[ids[-1]].unit_price == (len(ids) - 1) / 1000
    assert catalogue.requests["pricing"] == 3, "the stand-in refuses more than 50 ids per call, as fal does"


def test_prices_without_a_key_say_they_need_it_and_send_nothing(anonymous, catalogue):
    with pytest.raises(FalAuthError, match="prices need the key") as caught:
        anonymous.prices(FOUR)
    assert "FAL_KEY" in str(caught.value)
    assert catalogue.requests["pricing"] == 0


def test_prices_with_a_wrong_key_are_refused(fal_standin, catalogue, sleeps):
    fal_standin.set_key("another-key-0000:another-secret")
    with CatalogueClient(load_settings(), retry=RetryPolicy(sleep=sleeps.append)) as c:
        with pytest.raises(FalAuthError, match=r"fal rejected the key \(401\): check FAL_KEY"):
            c.prices(FOUR)
    assert sleeps == [], "a wrong key stays wrong"


def test_a_prices_answer_of_the_wrong_shape_is_one_bad_response_line(client, catalogue):
    catalogue.inject("pricing", "wrong_shape")
    with pytest.raises(FalBadResponse, match="fal's prices answer lacks `prices`"):
        client.prices(FOUR)


# --- the key never appears ----------------------------------------------------------------------

def test_the_key_never_appears_in_an_error_a_log_or_a_repr(client, catalogue, caplog):
    """Gateways echo the Authorization header; whatever fal answers, the key is masked."""
    caplog.set_level(logging.DEBUG)
    key_id, secret = DEFAULT_KEY.split(":")
    errors = []
    for where, fault, params in [("document", "echo_auth", {}), ("search", "echo_auth", {"status": 200}),
                                 ("pricing", "echo_auth", {"status": 502}), ("pricing", "401", {}),
                                 ("document", "500", {}), ("document", "html", {}), ("search", "wrong_shape", {})]:
        catalogue.inject(where, fault, times=99, **params)
        call = {"document": lambda: client.document("fal-ai/flux-2"), "search": client.search,
                "pricing": lambda: client.prices(FOUR)}[where]
        with pytest.raises(FalError) as caught:
            call()
        errors.append(caught.value)
        catalogue._faults[where].clear()
    with pytest.raises(UnknownEndpoint) as missing:
        client.document("fal-ai/none")
    errors.append(missing.value)
    texts = [str(e) for e in errors] + [repr(e) for e in errors] + [json.dumps(getattr(e, "raw", None), default=str)
                                                                    for e in errors]
    texts += [repr(client), caplog.text]
    for text in texts:
        assert DEFAULT_KEY not in text and key_id not in text and secret not in text, text
    assert "Authorization: Key ***" in str(errors[0]), "the echo is shown, masked"


# --- the stand-in validates what it is sent against the documents it serves ---------------------

@pytest.fixture
def queue(fal_standin, catalogue):
    with httpx.Client(base_url=fal_standin.url, headers={"Authorization": f"Key {DEFAULT_KEY}"},
                      timeout=10) as http:
        yield http


@pytest.mark.parametrize("endpoint_id", FOUR)
def test_the_standin_accepts_a_valid_body_for_each_document(fal_standin, queue, endpoint_id):
    answer = queue.post(f"/{endpoint_id}", json=VALID[endpoint_id])
    assert answer.status_code == 200, answer.text
    assert fal_standin.submissions_by_endpoint == {endpoint_id: 1}


@pytest.mark.parametrize("endpoint_id", FOUR)
def test_the_standin_refuses_a_field_the_document_does_not_have(fal_standin, queue, endpoint_id):
    """fal drops `strength` on these silently; the stand-in says so, so a test sees it."""
    answer = queue.post(f"/{endpoint_id}", json={**VALID[endpoint_id], "strength": 0.65})
    assert answer.status_code == 422
    assert answer.json()["detail"] == [{"type": "extra_forbidden", "loc": ["body", "strength"],
                                        "msg": "extra field", "input": 0.65}]
    assert fal_standin.submissions == 0


@pytest.mark.parametrize("endpoint_id", FOUR)
def test_the_standin_refuses_a_value_out_of_the_documents_range(fal_standin, queue, endpoint_id):
    answer = queue.post(f"/{endpoint_id}", json={**VALID[endpoint_id], "num_images": 9})
    assert answer.status_code == 422
    assert answer.json()["detail"][0]["loc"] == ["body", "num_images"]
    assert answer.json()["detail"][0]["type"] == "less_than_equal"


def test_a_document_only_endpoint_runs_jobs_to_a_result(fal_standin, queue):
    body = {"prompt": "p", "image_size": {"width": 640, "height": 480}}
    sub = queue.post("/fal-ai/flux-lora", json=body).json()
    for _ in range(500):
        if queue.get(sub["status_url"]).status_code == 200:
            break
    result = queue.get(sub["response_url"])
    assert result.status_code == 200 and result.json()["images"][0]["width"] == 640


def test_a_registered_documents_input_is_enforced_and_resolves_its_refs(fal_standin, catalogue, queue):
    doc = json.loads(_fixture("fal-ai/flux-lora").replace(b"fal-ai/flux-lora", b"acme/painter"))
    catalogue.register("acme/painter", doc)
    assert queue.post("/acme/painter", json={"prompt": "p", "loras": [{"path": "u", "scale": 1}]}).status_code == 200
    bad = queue.post("/acme/painter", json={"prompt": "p", "image_size": {"width": 0, "height": 5}})
    assert bad.status_code == 422 and bad.json()["detail"][0]["loc"] == ["body", "image_size"]


# --- the control API, for a stand-in in another process -----------------------------------------

def test_the_control_api_registers_documents_prices_and_faults(fal_standin, client, sleeps):
    doc = json.loads(_fixture("fal-ai/flux-2").replace(b"fal-ai/flux-2", b"acme/remote"))
    with StandinControl(fal_standin.url) as control:
        control.register_document("acme/remote", doc, display_name="Remote")
        control.set_price("acme/remote", 0.07, unit="images")
        control.inject("document", "500")
    assert json.loads(client.document("acme/remote"))["info"]["title"] == "Queue OpenAPI for acme/remote"
    assert len(sleeps) == 1
    assert client.prices(["acme/remote"]) == {"acme/remote": Price(0.07, "images", "USD")}
    assert [m.display_name for m in client.search(q="remote").models] == ["Remote"]
