"""The OpenID Connect stand-in (tests/standins/oidc_server.py) speaks the protocol st.login() relies on.

Everything goes over real HTTP with httpx, the way Streamlit's Authlib client calls it: discovery,
the sign-in page, the code + PKCE exchange, the id_token checked against /jwks with PyJWT, and the
refusals (wrong verifier, replayed code, wrong client secret, unregistered redirect URI).
"""
from __future__ import annotations

import base64
import re
import secrets
import subprocess
import sys
import time
from urllib.parse import parse_qs, urlsplit

import httpx
import jwt
import pytest

from tests.serving import stop
from tests.standins.oidc_server import OIDCStandin, s256

REDIRECT = "http://127.0.0.1:8599/oauth2callback"
USERS = {"ada@example.com": "Ada Lovelace", "alan@example.com": "Alan Turing"}


@pytest.fixture
def oidc():
    standin = OIDCStandin(users=USERS, redirect_uris=[REDIRECT]).start()
    try:
        yield standin
    finally:
        standin.stop()


@pytest.fixture
def http(oidc):
    # plain http: verify=False only skips loading the CA bundle (0.1 s per client)
    with httpx.Client(base_url=oidc.url, timeout=5, verify=False) as client:
        yield client


def _params(location: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(location).query).items()}


def _authorize(http, oidc, *, verifier: str | None = None, **extra) -> httpx.Response:
    params = {"client_id": oidc.client_id, "redirect_uri": REDIRECT, "response_type": "code",
              "scope": "openid email profile", "state": "st-123", "nonce": "n-456"}
    if verifier is not None:
        params.update(code_challenge=s256(verifier), code_challenge_method="S256")
    params.update(extra)
    return http.get("/authorize", params={k: v for k, v in params.items() if v is not None})


def _sign_in(http, page: httpx.Response, email: str) -> httpx.Response:
    request_id = re.search(r'name="request_id" value="([^"]+)"', page.text).group(1)
    return http.post("/authorize", data={"request_id": request_id, "email": email})


def _code(http, oidc, *, verifier: str | None = None, email: str = "ada@example.com") -> str:
    page = _authorize(http, oidc, verifier=verifier)
    assert page.status_code == 200, page.text
    answer = _sign_in(http, page, email)
    assert answer.status_code == 302
    return _params(answer.headers["location"])["code"]


def _exchange(http, oidc, code: str, *, verifier: str | None = None, secret: str | None = None,
              redirect_uri: str = REDIRECT, post: bool = False) -> httpx.Response:
    data = {"grant_type": "authorization_code", "code": code, "redirect_uri": redirect_uri}
    if verifier is not None:
        data["code_verifier"] = verifier
    secret = oidc.client_secret if secret is None else secret
    if post:
        return http.post("/token", data={**data, "client_id": oidc.client_id, "client_secret": secret})
    return http.post("/token", data=data, auth=(oidc.client_id, secret))


def test_discovery_names_every_endpoint_on_the_issuer(oidc, http):
    doc = http.get("/.well-known/openid-configuration").json()
    assert doc["issuer"] == oidc.url
    for key, path in [("authorization_endpoint", "/authorize"), ("token_endpoint", "/token"),
                      ("jwks_uri", "/jwks"), ("userinfo_endpoint", "/userinfo"),
                      ("end_session_endpoint", "/logout")]:
        assert doc[key] == oidc.url + path
    assert doc["response_types_supported"] == ["code"]
    assert doc["code_challenge_methods_supported"] == ["S256"]
    assert doc["id_token_signing_alg_values_supported"] == ["RS256"]
    assert doc["token_endpoint_auth_methods_supported"] == ["client_secret_basic", "client_secret_post"]
    assert {"openid", "email", "profile"} <= set(doc["scopes_supported"])
    assert "authorization_code" in doc["grant_types_supported"]


def test_full_code_flow_with_pkce_gives_an_id_token_that_verifies_against_jwks(oidc, http):
    verifier = secrets.token_urlsafe(48)
    page = _authorize(http, oidc, verifier=verifier)
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert 'id="email"' in page.text and 'name="email"' in page.text and ">Sign in</button>" in page.text

    redirect = _sign_in(http, page, "ada@example.com")
    assert redirect.status_code == 302
    location = redirect.headers["location"]
    assert location.startswith(REDIRECT + "?")
    params = _params(location)
    assert params["state"] == "st-123" and params["code"]
    assert oidc.codes_issued == 1 and oidc.pkce_used == [True]

    answer = _exchange(http, oidc, params["code"], verifier=verifier)
    assert answer.status_code == 200, answer.text
    assert answer.headers["cache-control"] == "no-store"
    token = answer.json()
    assert token["token_type"] == "Bearer" and token["expires_in"] > 0 and token["access_token"]
    assert oidc.tokens_issued == 1

    jwks = http.get("/jwks").json()
    header = jwt.get_unverified_header(token["id_token"])
    assert header["alg"] == "RS256" and header["kid"] == oidc.kid
    key = jwt.PyJWKSet.from_dict(jwks)[header["kid"]]
    claims = jwt.decode(token["id_token"], key.key, algorithms=["RS256"], audience=oidc.client_id,
                        issuer=oidc.url)
    assert claims["nonce"] == "n-456"
    assert claims["email"] == "ada@example.com" and claims["email_verified"] is True
    assert claims["name"] == "Ada Lovelace" and claims["sub"] == oidc.subject("ada@example.com")
    assert claims["iat"] <= time.time() < claims["exp"]

    info = http.get("/userinfo", headers={"Authorization": f"Bearer {token['access_token']}"}).json()
    assert info == {"sub": claims["sub"], "email": "ada@example.com", "email_verified": True,
                    "name": "Ada Lovelace"}
    assert http.get("/userinfo", headers={"Authorization": "Bearer nope"}).status_code == 401
    assert oidc.token_requests[0]["auth_method"] == "client_secret_basic"


def test_client_secret_post_and_no_pkce_work_too(oidc, http):
    code = _code(http, oidc)
    answer = _exchange(http, oidc, code, post=True)
    assert answer.status_code == 200, answer.text
    assert oidc.pkce_used == [False]
    assert oidc.token_requests[0]["auth_method"] == "client_secret_post"


def test_unknown_email_shows_the_page_again_with_an_error(oidc, http):
    page = _authorize(http, oidc)
    again = _sign_in(http, page, "mallory@example.com")
    assert again.status_code == 200 and 'id="error"' in again.text and 'id="email"' in again.text
    assert oidc.codes_issued == 0 and oidc.failed_attempts == 1
    assert _sign_in(http, again, "alan@example.com").status_code == 302  # same request, right person


def test_wrong_verifier_is_invalid_grant_and_spends_the_code(oidc, http):
    verifier = secrets.token_urlsafe(48)
    code = _code(http, oidc, verifier=verifier)
    wrong = _exchange(http, oidc, code, verifier=secrets.token_urlsafe(48))
    assert wrong.status_code == 400 and wrong.json()["error"] == "invalid_grant"
    assert _exchange(http, oidc, code, verifier=verifier).json()["error"] == "invalid_grant"
    # a PKCE code without any verifier is refused as well
    missing = _exchange(http, oidc, _code(http, oidc, verifier=verifier))
    assert missing.json()["error"] == "invalid_grant"
    assert oidc.tokens_issued == 0


def test_code_is_single_use_and_a_replay_revokes_its_token(oidc, http):
    verifier = secrets.token_urlsafe(48)
    code = _code(http, oidc, verifier=verifier)
    first = _exchange(http, oidc, code, verifier=verifier)
    assert first.status_code == 200
    replay = _exchange(http, oidc, code, verifier=verifier)
    assert replay.status_code == 400 and replay.json()["error"] == "invalid_grant"
    bearer = {"Authorization": f"Bearer {first.json()['access_token']}"}
    assert http.get("/userinfo", headers=bearer).status_code == 401
    assert oidc.tokens_issued == 1


def test_wrong_client_secret_is_invalid_client(oidc, http):
    code = _code(http, oidc)
    for post in (False, True):
        answer = _exchange(http, oidc, code, secret="wrong", post=post)
        assert answer.status_code == 401 and answer.json()["error"] == "invalid_client"
    assert http.post("/token", data={"grant_type": "authorization_code", "code": code}).status_code == 401
    # the code was never spent by the refused attempts
    assert _exchange(http, oidc, code).status_code == 200


def test_redirect_uri_must_match_exactly_and_again_at_the_token_endpoint(oidc, http):
    for uri in (REDIRECT + "/", REDIRECT.replace("127.0.0.1", "localhost"), "http://evil.example/cb", None):
        answer = _authorize(http, oidc, redirect_uri=uri)
        assert answer.status_code == 400 and "location" not in answer.headers
    assert _authorize(http, oidc, client_id="someone-else").status_code == 400
    code = _code(http, oidc)
    mismatch = _exchange(http, oidc, code, redirect_uri="http://127.0.0.1:8599/other")
    assert mismatch.json()["error"] == "invalid_grant"
    assert oidc.codes_issued == 1 and oidc.tokens_issued == 0


@pytest.mark.parametrize("extra, error", [
    ({"response_type": "token"}, "unsupported_response_type"),
    ({"scope": "email profile"}, "invalid_scope"),
    ({"code_challenge": "x" * 43, "code_challenge_method": "plain"}, "invalid_request"),
    ({"code_challenge": "x" * 43}, "invalid_request"),  # the RFC 7636 default is plain
    ({"code_challenge": "short", "code_challenge_method": "S256"}, "invalid_request"),
    ({"prompt": "none"}, "login_required"),
])
def test_bad_authorization_requests_go_back_with_an_error(oidc, http, extra, error):
    answer = _authorize(http, oidc, **extra)
    assert answer.status_code == 302
    params = _params(answer.headers["location"])
    assert answer.headers["location"].startswith(REDIRECT)
    assert params["error"] == error and params["state"] == "st-123" and "code" not in params
    assert oidc.failures[-1]["error"] == error


def test_expired_code_is_invalid_grant():
    with OIDCStandin(users=USERS, redirect_uris=[REDIRECT], code_ttl=0.05) as oidc, \
            httpx.Client(base_url=oidc.url, timeout=5, verify=False) as client:
        code = _code(client, oidc)
        time.sleep(0.1)
        assert _exchange(client, oidc, code).json()["error"] == "invalid_grant"


def test_logout_redirects_only_to_a_registered_uri(oidc, http):
    token = _exchange(http, oidc, _code(http, oidc)).json()
    answer = http.get("/logout", params={"client_id": oidc.client_id, "post_logout_redirect_uri": REDIRECT,
                                         "id_token_hint": token["id_token"], "state": "s"})
    assert answer.status_code == 302 and answer.headers["location"] == REDIRECT + "?state=s"
    assert http.get("/logout", params={"post_logout_redirect_uri": "http://evil.example/"}).status_code == 400
    assert http.get("/logout").status_code == 200
    assert oidc.logouts[0]["id_token_hint"] is True


def test_runs_out_of_process_and_prints_its_url_first():
    proc = subprocess.Popen([sys.executable, "-m", "tests.standins.oidc_server", "--port", "0",
                             "--redirect-uri", REDIRECT, "--user", "ada@example.com=Ada Lovelace"],
                            stdout=subprocess.PIPE, text=True)
    try:
        url = proc.stdout.readline().strip()
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+", url)
        with httpx.Client(base_url=url, timeout=5, verify=False) as client:
            assert client.get("/.well-known/openid-configuration").json()["issuer"] == url
            assert client.get("/_standin/stats").json()["codes_issued"] == 0
    finally:
        stop(proc)
        proc.stdout.close()


def test_basic_credentials_are_form_urlencoded_as_rfc_6749_says():
    with OIDCStandin(users=USERS, redirect_uris=[REDIRECT], client_id="a:b", client_secret="p&q %") as oidc, \
            httpx.Client(base_url=oidc.url, timeout=5, verify=False) as client:
        code = _code(client, oidc)
        raw = base64.b64encode(b"a%3Ab:p%26q+%25").decode()
        answer = client.post("/token", headers={"Authorization": f"Basic {raw}"},
                             data={"grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT})
        assert answer.status_code == 200, answer.text


def test_a_sign_in_form_gives_one_code_only(oidc, http):
    page = _authorize(http, oidc)
    assert _sign_in(http, page, "ada@example.com").status_code == 302
    assert _sign_in(http, page, "ada@example.com").status_code == 400
    assert oidc.codes_issued == 1
