"""Canonical payloads: same body -> same text and hash; data: URIs never shown whole."""
import base64
import hashlib

from core.catalog.payloads import REFERENCE_SCHEME, canonical_json, diff_values, payload_hash, reference_token
from core.redact import abbreviate


def test_canonical_json_is_key_order_independent_and_hash_is_versioned():
    a = {"prompt": "x", "image_size": "square_hd", "seed": 1}
    b = {"seed": 1, "image_size": "square_hd", "prompt": "x"}
    assert canonical_json(a) == canonical_json(b) == '{"image_size":"square_hd","prompt":"x","seed":1}'
    assert payload_hash(a) == payload_hash(b)
    assert payload_hash(a).startswith("v1:") and len(payload_hash(a)) == 3 + 64
    assert payload_hash(a) != payload_hash({**a, "seed": 2})


def test_data_uris_are_abbreviated_to_mime_size_and_sha256_everywhere():
    raw = b"\xff\xd8" + b"x" * 5000
    uri = "data:image/jpeg;base64," + base64.b64encode(raw).decode()
    body = {"prompt": "p", "image_urls": [uri, "https://example.test/a.jpg"], "nested": {"u": uri}}
    short = abbreviate(body)
    expected = f"data:image/jpeg;base64,…({len(raw)} bytes, sha256 {hashlib.sha256(raw).hexdigest()[:12]})"
    assert short["image_urls"] == [expected, "https://example.test/a.jpg"]
    assert short["nested"]["u"] == expected
    assert body["image_urls"][0] == uri  # the original is untouched


def test_abbreviating_twice_keeps_the_first_summary():
    uri = "data:image/png;base64," + base64.b64encode(b"12345").decode()
    once = abbreviate(uri)
    assert abbreviate(once) == once
    assert abbreviate(abbreviate("data:garbage")) == abbreviate("data:garbage")


def test_a_reference_token_names_the_stored_reference():
    """A stored payload names a local photo as reference://<id>; send time turns it into data:."""
    assert reference_token("abc") == REFERENCE_SCHEME + "abc" == "reference://abc"


def test_data_uri_quoted_inside_an_error_text_is_abbreviated():
    """fal's string `detail` may echo the input: the base64 must not reach the store or a CSV."""
    raw = b"\x89PNG" + b"y" * 3000
    b64 = base64.b64encode(raw).decode()
    text = f"Could not load image data:image/png;base64,{b64} (bad header); try another"
    short = abbreviate({"detail": text})["detail"]
    assert b64[:40] not in short
    assert short.startswith("Could not load image data:image/png;base64,…(3004 bytes, sha256 ")
    assert short.endswith(" (bad header); try another")
    assert abbreviate(short) == short


def test_diff_tells_an_int_from_a_float_and_a_bool():
    """A payload whose 1 became 1.0 or True is a different body for fal: the diff says so."""
    added, removed, changed = diff_values({"a": 1, "b": True}, {"a": 1.0, "b": 1})
    assert [e.path for e in changed] == ["a", "b"] and not added and not removed
