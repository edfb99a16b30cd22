"""core.redact masks a secret in every form an echo of it takes, and leaves other text alone."""
from __future__ import annotations

import json
from urllib.parse import quote

import pytest

from core.redact import MASK, redact

KEY = "3f2a9c0e-5b7d-4e1f-8a6b:2c4d9e0f1a2b3c4d5e6f7a8b9c0d1e2f"
KEY_ID, KEY_SECRET = KEY.split(":")


@pytest.mark.parametrize("echo, masked", [
    (f"Authorization: Key {KEY}", "Authorization: Key ***"),
    (f"authorization=Bearer {KEY};", "authorization=Bearer ***;"),
    (f"{KEY}{KEY}", "******"),
    (f"?auth=Key%20{quote(KEY, safe='')}", "?auth=Key%20***"),
    (f"/echo/{quote(KEY)}/x", "/echo/***/x"),
    (json.dumps({"headers": {"authorization": f"Key {KEY}"}}), '{"headers": {"authorization": "Key ***"}}'),
    (f"unknown key id {KEY_ID}", "unknown key id ***"),
    (f"secret {KEY_SECRET} refused", "secret *** refused"),
])
def test_every_form_of_the_key_is_masked(echo, masked):
    assert redact(echo, [KEY]) == masked
    assert KEY_ID not in redact(echo, [KEY]) and KEY_SECRET not in redact(echo, [KEY])


def test_a_json_escaped_secret_is_masked_and_the_json_stays_valid():
    odd = 'se"cr\\et-with-quote'
    text = json.dumps({"detail": f"Key {odd}"})
    out = redact(text, [odd])
    assert json.loads(out) == {"detail": f"Key {MASK}"}


def test_several_secrets_none_and_short_ones():
    text = "a=alpha-secret b=beta-secret c=k"
    assert redact(text, ["alpha-secret", None, "beta-secret", "k", ""]) == "a=*** b=*** c=k"


def test_text_without_secrets_is_returned_unchanged():
    text = "fal refused the input (422): prompt: Field required"
    assert redact(text, [KEY]) is text
    assert redact("", [KEY]) == "" and redact(text, []) == text


def test_short_halves_of_a_key_are_not_masked_alone():
    """Masking a 3-character key id everywhere would mangle ordinary words."""
    key = "abc:a-long-enough-secret"
    assert redact("abc says a-long-enough-secret", [key]) == "abc says ***"
    assert redact(f"Key {key}", [key]) == "Key ***"
