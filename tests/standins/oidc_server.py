"""An OpenID Connect provider stand-in over real HTTP on 127.0.0.1 (the sign-in behind `st.login()`).

    server = OIDCStandin(users={"ada@example.com": "Ada Lovelace"},
                         redirect_uris=["http://127.0.0.1:8501/oauth2callback"]).start()
    server.metadata_url   # what Streamlit's [auth] server_metadata_url points at
    ...
    server.stop()

Out of process: `python -m tests.standins.oidc_server --port 0 --redirect-uri URI
--user ada@example.com="Ada Lovelace"` prints its base URL (= the issuer) on its first stdout line;
`GET /_standin/stats` answers the counters as JSON.

What it guarantees (Streamlit 1.67's st.login, i.e. Authlib 1.9's Starlette client, relies on each):
- Discovery at /.well-known/openid-configuration (issuer = the base URL, plain http on loopback);
  S256 is the only PKCE method advertised, so Streamlit turns PKCE on.
- GET /authorize (authorization code flow only): an unknown client_id or a redirect_uri that is
  not exactly a registered one is a 400 HTML page (never a redirect); every other bad request
  redirects back with `error=` (and `state`): unsupported_response_type, invalid_scope (no
  "openid"), invalid_request (a PKCE method other than S256, including the RFC 7636 default
  "plain"; a malformed challenge; no challenge when `require_pkce`), login_required
  (`prompt=none`: the stand-in keeps no sign-in session). Otherwise a plain HTML page: an e-mail
  input (id/name "email") and a "Sign in" button. Only the configured people (`users`, e-mail ->
  name) may sign in; another e-mail shows the page again with an error (a recorded failure).
  The form's POST issues a one-time code (`code_ttl` s) and 302s to redirect_uri?code=&state=.
- POST /token: grant_type=authorization_code, client authentication by client_secret_basic or
  client_secret_post (both at once: invalid_request; wrong or none: 401 invalid_client). The
  code is consumed by the first authenticated attempt, right or wrong (as Keycloak does): a
  wrong code_verifier, redirect_uri or a replay is invalid_grant, and a replay also revokes the
  access tokens issued for that code (RFC 6749 4.1.2). A code_verifier for a code issued without
  a challenge is invalid_grant too. Answers carry Cache-Control: no-store; errors are RFC 6749
  JSON. The id_token is RS256 (a key generated at the first start in the process, or per
  stand-in with `fresh_key=True`; `kid` in the header and in /jwks) with
  iss, sub, aud, exp, iat, auth_time, nonce (when sent), at_hash, email, email_verified, name.
- GET|POST /userinfo with `Authorization: Bearer`: sub, email, email_verified, name; a bad
  token is 401 with `WWW-Authenticate: Bearer error="invalid_token"`.
- GET /logout (end_session_endpoint): post_logout_redirect_uri must be a registered redirect URI
  (or in `post_logout_redirect_uris`), then 302 there (with `state`); without one, a page.

Records for tests (all under a lock): `codes_issued`, `tokens_issued`, `issued` (one
`IssuedCode` per code: pkce, scope, prompt, nonce, email, used), `pkce_used` (per code),
`failures` (one dict per failed attempt: endpoint, error, description), `token_requests` (the
client auth method and parameters each /token call used), `userinfo_calls`, `logouts`.
"""
from __future__ import annotations

import argparse
import base64
import functools
import hashlib
import html
import json
import re
import secrets
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self
from urllib.parse import parse_qs, unquote, urlencode, urlsplit, urlunsplit

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.serving import serve_in_thread, serve_until_terminated, shut

DEFAULT_CLIENT_ID = "standin-client"
DEFAULT_CLIENT_SECRET = "standin-client-secret"  # a test value, not a secret
DEFAULT_USERS = {"ada@example.com": "Ada Lovelace"}
SCOPES = ["openid", "email", "profile"]
# RFC 7636 4.1: 43-128 characters of [A-Z] / [a-z] / [0-9] / "-" / "." / "_" / "~"
_PKCE_VALUE = re.compile(r"^[A-Za-z0-9\-._~]{43,128}$")


def s256(verifier: str) -> str:
    """The S256 code challenge of `verifier` (RFC 7636 4.2)."""
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def _half_hash(value: str) -> str:
    """at_hash (OIDC Core 3.1.3.6): the left half of SHA-256, base64url."""
    digest = hashlib.sha256(value.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest[:16]).rstrip(b"=").decode("ascii")


def _new_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@functools.cache
def _process_key() -> rsa.RSAPrivateKey:
    return _new_key()


@dataclass
class IssuedCode:
    code: str
    client_id: str
    redirect_uri: str
    email: str
    scope: str
    nonce: str | None
    state: str | None
    prompt: str | None
    code_challenge: str | None
    issued_at: float
    expires_at: float
    used: bool = False
    access_tokens: list[str] = field(default_factory=list)

    @property
    def pkce(self) -> bool:
        return self.code_challenge is not None


@dataclass
class _Pending:
    """An authorization request waiting for its sign-in form."""
    params: dict[str, str]
    created: float


@dataclass
class _AccessToken:
    email: str
    client_id: str
    scope: str
    expires_at: float
    revoked: bool = False


class OAuthError(Exception):
    def __init__(self, error: str, description: str, status: int = 400) -> None:
        super().__init__(f"{error}: {description}")
        self.error, self.description, self.status = error, description, status


class OIDCStandin:
    def __init__(self, *, users: dict[str, str] | None = None, client_id: str = DEFAULT_CLIENT_ID,
                 client_secret: str = DEFAULT_CLIENT_SECRET, redirect_uris: list[str] | None = None,
                 post_logout_redirect_uris: list[str] | None = None, code_ttl: float = 60.0,
                 token_ttl: int = 3600, require_pkce: bool = False, fresh_key: bool = False,
                 port: int = 0) -> None:
        self.users: dict[str, str] = dict(DEFAULT_USERS if users is None else users)
        self.client_id = client_id
        self.client_secret = client_secret
        self.redirect_uris: list[str] = list(redirect_uris or [])
        self.post_logout_redirect_uris: list[str] = list(post_logout_redirect_uris or [])
        self.code_ttl = code_ttl
        self.token_ttl = token_ttl
        self.require_pkce = require_pkce
        self.port = port
        # an RSA key costs ~0.1 s: by default one per process, made at the first start
        self._key = _new_key() if fresh_key else _process_key()
        self.kid = "standin-" + secrets.token_hex(4)
        self.codes: dict[str, IssuedCode] = {}
        self.issued: list[IssuedCode] = []
        self.failures: list[dict[str, str]] = []
        self.token_requests: list[dict[str, Any]] = []
        self.logouts: list[dict[str, Any]] = []
        self.tokens_issued = 0
        self.userinfo_calls = 0
        self._pending: dict[str, _Pending] = {}
        self._access: dict[str, _AccessToken] = {}
        self._lock = threading.RLock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle -------------------------------------------------------------------------------

    def start(self) -> OIDCStandin:
        standin = self

        class Handler(_Handler):
            owner = standin

        self._server, self._thread = serve_in_thread(Handler, port=self.port, name="oidc-standin")
        return self

    def stop(self) -> None:
        shut(self._server, self._thread)
        self._server = self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        assert self._server, "stand-in not started"
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    issuer = url

    @property
    def metadata_url(self) -> str:
        return f"{self.url}/.well-known/openid-configuration"

    # -- inspection ------------------------------------------------------------------------------

    @property
    def codes_issued(self) -> int:
        with self._lock:
            return len(self.issued)

    @property
    def pkce_used(self) -> list[bool]:
        with self._lock:
            return [c.pkce for c in self.issued]

    @property
    def failed_attempts(self) -> int:
        with self._lock:
            return len(self.failures)

    def stats(self) -> dict[str, Any]:
        with self._lock:
            return {"codes_issued": len(self.issued), "tokens_issued": self.tokens_issued,
                    "pkce_used": [c.pkce for c in self.issued],
                    "issued": [{k: v for k, v in asdict(c).items() if k != "access_tokens"}
                               for c in self.issued],
                    "failures": list(self.failures), "token_requests": list(self.token_requests),
                    "userinfo_calls": self.userinfo_calls, "logouts": list(self.logouts)}

    def subject(self, email: str) -> str:
        """The stable `sub` of a person (the same on every sign-in)."""
        return "user-" + hashlib.sha256(email.lower().encode()).hexdigest()[:16]

    def jwks(self) -> dict[str, Any]:
        jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(self._key.public_key()))
        jwk.update(kid=self.kid, use="sig", alg="RS256")
        return {"keys": [jwk]}

    def metadata(self) -> dict[str, Any]:
        base = self.url
        return {
            "issuer": base,
            "authorization_endpoint": f"{base}/authorize",
            "token_endpoint": f"{base}/token",
            "jwks_uri": f"{base}/jwks",
            "userinfo_endpoint": f"{base}/userinfo",
            "end_session_endpoint": f"{base}/logout",
            "response_types_supported": ["code"],
            "response_modes_supported": ["query"],
            "grant_types_supported": ["authorization_code"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "code_challenge_methods_supported": ["S256"],
            "scopes_supported": list(SCOPES),
            "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
            "claims_supported": ["iss", "sub", "aud", "exp", "iat", "auth_time", "nonce", "at_hash",
                                 "email", "email_verified", "name"],
        }

    # -- the protocol (called by the handler) ----------------------------------------------------

    def _fail(self, endpoint: str, error: str, description: str) -> None:
        with self._lock:
            self.failures.append({"endpoint": endpoint, "error": error, "description": description})

    def check_authorization(self, q: dict[str, str]) -> str | None:
        """Validate an authorization request. Raises OAuthError with status 400 for a request that
        must not be redirected (client or redirect_uri wrong); returns the redirect_uri otherwise,
        raising OAuthError(status=302) for errors to send back to it."""
        if q.get("client_id") != self.client_id:
            raise OAuthError("invalid_client", "unknown client_id", 400)
        redirect_uri = q.get("redirect_uri")
        if not redirect_uri or redirect_uri not in self.redirect_uris:
            raise OAuthError("invalid_request", "redirect_uri is not registered for this client", 400)
        if q.get("response_type") != "code":
            raise OAuthError("unsupported_response_type", "only response_type=code is supported", 302)
        if "openid" not in (q.get("scope") or "").split():
            raise OAuthError("invalid_scope", "the scope must contain openid", 302)
        challenge, method = q.get("code_challenge"), q.get("code_challenge_method")
        if challenge is None:
            if method is not None:
                raise OAuthError("invalid_request", "code_challenge_method without code_challenge", 302)
            if self.require_pkce:
                raise OAuthError("invalid_request", "PKCE (S256) is required", 302)
        else:
            if (method or "plain") != "S256":
                raise OAuthError("invalid_request", "code_challenge_method must be S256", 302)
            if not _PKCE_VALUE.match(challenge):
                raise OAuthError("invalid_request", "malformed code_challenge", 302)
        if q.get("prompt") == "none":
            raise OAuthError("login_required", "no sign-in session at the stand-in", 302)
        return redirect_uri

    def pend(self, q: dict[str, str]) -> str:
        request_id = secrets.token_urlsafe(16)
        with self._lock:
            self._pending[request_id] = _Pending(dict(q), time.time())
        return request_id

    def pending(self, request_id: str) -> dict[str, str] | None:
        with self._lock:
            p = self._pending.get(request_id)
            return dict(p.params) if p else None

    def issue_code(self, request_id: str, email: str) -> IssuedCode | None:
        """A code for the pending request `request_id` (None: it is unknown or already finished)."""
        with self._lock:
            p = self._pending.pop(request_id, None)
            if p is None:
                return None
            q = p.params
            now = time.time()
            c = IssuedCode(code=secrets.token_urlsafe(32), client_id=q["client_id"],
                           redirect_uri=q["redirect_uri"], email=email, scope=q.get("scope", ""),
                           nonce=q.get("nonce"), state=q.get("state"), prompt=q.get("prompt"),
                           code_challenge=q.get("code_challenge"), issued_at=now,
                           expires_at=now + self.code_ttl)
            self.codes[c.code] = c
            self.issued.append(c)
            return c

    def token(self, form: dict[str, str], authorization: str | None) -> dict[str, Any]:
        basic = None
        if authorization and authorization[:6].lower() == "basic ":
            try:
                raw = base64.b64decode(authorization[6:].strip(), validate=True).decode()
                user, _, password = raw.partition(":")
                basic = (unquote(user.replace("+", " ")), unquote(password.replace("+", " ")))
            except (ValueError, UnicodeDecodeError):
                raise OAuthError("invalid_client", "malformed Basic credentials", 401) from None
        posted = "client_secret" in form
        method = "client_secret_basic" if basic else "client_secret_post" if posted else "none"
        with self._lock:
            self.token_requests.append({"auth_method": method, "grant_type": form.get("grant_type"),
                                        "code_verifier": "code_verifier" in form,
                                        "redirect_uri": form.get("redirect_uri"),
                                        "params": sorted(form)})
        if basic and posted:
            raise OAuthError("invalid_request", "more than one client authentication method", 400)
        if basic:
            client_id, secret = basic
            if form.get("client_id") not in (None, client_id):
                raise OAuthError("invalid_request", "client_id differs from the authenticated client", 400)
        elif posted:
            client_id, secret = form.get("client_id"), form["client_secret"]
        else:
            raise OAuthError("invalid_client", "client authentication required", 401)
        if client_id != self.client_id or not secrets.compare_digest(secret, self.client_secret):
            raise OAuthError("invalid_client", "client authentication failed", 401)
        grant_type = form.get("grant_type")
        if not grant_type:
            raise OAuthError("invalid_request", "grant_type is required")
        if grant_type != "authorization_code":
            raise OAuthError("unsupported_grant_type", f"{grant_type} is not supported")
        code_value = form.get("code")
        if not code_value:
            raise OAuthError("invalid_request", "code is required")
        with self._lock:
            c = self.codes.get(code_value)
            if c is None:
                raise OAuthError("invalid_grant", "unknown authorization code")
            if c.used:
                for t in c.access_tokens:  # RFC 6749 4.1.2: revoke what the code gave
                    self._access[t].revoked = True
                raise OAuthError("invalid_grant", "authorization code already used")
            c.used = True
        if time.time() > c.expires_at:
            raise OAuthError("invalid_grant", "authorization code expired")
        if c.client_id != client_id:
            raise OAuthError("invalid_grant", "code was issued to another client")
        if form.get("redirect_uri") != c.redirect_uri:
            raise OAuthError("invalid_grant", "redirect_uri does not match the authorization request")
        verifier = form.get("code_verifier")
        if c.code_challenge is not None:
            if not verifier:
                raise OAuthError("invalid_grant", "code_verifier is required")
            if not _PKCE_VALUE.match(verifier) or not secrets.compare_digest(s256(verifier), c.code_challenge):
                raise OAuthError("invalid_grant", "code_verifier does not match the code_challenge")
        elif verifier is not None:
            raise OAuthError("invalid_grant", "code_verifier sent for a code issued without PKCE")
        now = int(time.time())
        access_token = secrets.token_urlsafe(32)
        claims = {"iss": self.url, "sub": self.subject(c.email), "aud": client_id, "exp": now + self.token_ttl,
                  "iat": now, "auth_time": int(c.issued_at), "at_hash": _half_hash(access_token),
                  "email": c.email, "email_verified": True, "name": self.users.get(c.email, c.email)}
        if c.nonce is not None:
            claims["nonce"] = c.nonce
        id_token = jwt.encode(claims, self._key, algorithm="RS256", headers={"kid": self.kid})
        with self._lock:
            self._access[access_token] = _AccessToken(c.email, client_id, c.scope, now + self.token_ttl)
            c.access_tokens.append(access_token)
            self.tokens_issued += 1
        return {"access_token": access_token, "token_type": "Bearer", "expires_in": self.token_ttl,
                "id_token": id_token, "scope": c.scope}

    def userinfo(self, authorization: str | None) -> dict[str, Any]:
        with self._lock:
            self.userinfo_calls += 1
            token = authorization[7:].strip() if authorization and authorization[:7].lower() == "bearer " else ""
            t = self._access.get(token)
            if t is None or t.revoked or time.time() > t.expires_at:
                raise OAuthError("invalid_token", "the access token is invalid", 401)
            return {"sub": self.subject(t.email), "email": t.email, "email_verified": True,
                    "name": self.users.get(t.email, t.email)}

    def verify_id_token(self, token: str, *, verify_exp: bool = True) -> dict[str, Any]:
        return jwt.decode(token, self._key.public_key(), algorithms=["RS256"], audience=self.client_id,
                          issuer=self.url, options={"verify_exp": verify_exp})


_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title></head>
<body>
<h1>{title}</h1>
{body}
</body></html>
"""


class _Handler(BaseHTTPRequestHandler):
    owner: OIDCStandin
    protocol_version = "HTTP/1.1"
    server_version = "oidc-standin"
    disable_nagle_algorithm = True  # no 40 ms delayed-ACK stalls between headers and body

    def log_message(self, format: str, *args: Any) -> None:
        pass

    # -- plumbing --------------------------------------------------------------------------------

    def _send(self, status: int, body: bytes, content_type: str, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("Pragma", "no-cache")
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, status: int, doc: Any, headers: dict[str, str] | None = None) -> None:
        self._send(status, json.dumps(doc).encode(), "application/json", headers)

    def _html(self, status: int, title: str, body: str) -> None:
        page = _PAGE.format(title=html.escape(title), body=body)
        self._send(status, page.encode(), "text/html; charset=utf-8")

    def _redirect(self, location: str) -> None:
        self._send(302, b"", "text/plain", {"Location": location})

    def _form(self) -> dict[str, str]:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length).decode("utf-8", "replace") if length else ""
        return {k: v[0] for k, v in parse_qs(raw, keep_blank_values=True).items()}

    def _query(self) -> dict[str, str]:
        return {k: v[0] for k, v in parse_qs(urlsplit(self.path).query, keep_blank_values=True).items()}

    @staticmethod
    def _with_params(uri: str, params: dict[str, str | None]) -> str:
        parts = urlsplit(uri)
        extra = urlencode({k: v for k, v in params.items() if v is not None})
        query = f"{parts.query}&{extra}" if parts.query else extra
        return urlunsplit(parts._replace(query=query))

    # -- routing ---------------------------------------------------------------------------------

    def do_GET(self) -> None:
        path = urlsplit(self.path).path
        routes = {"/.well-known/openid-configuration": lambda: self._json(200, self.owner.metadata()),
                  "/jwks": lambda: self._json(200, self.owner.jwks()),
                  "/authorize": self.authorize, "/userinfo": self.userinfo, "/logout": self.logout,
                  "/_standin/stats": lambda: self._json(200, self.owner.stats())}
        routes.get(path, self.not_found)()

    def do_POST(self) -> None:
        path = urlsplit(self.path).path
        routes = {"/authorize": self.sign_in, "/token": self.token, "/userinfo": self.userinfo,
                  "/logout": self.logout}
        routes.get(path, self.not_found)()

    def not_found(self) -> None:
        self._json(404, {"error": "not_found", "error_description": f"no route {urlsplit(self.path).path}"})

    # -- endpoints -------------------------------------------------------------------------------

    def _bad_page(self, e: OAuthError, endpoint: str = "authorize") -> None:
        self.owner._fail(endpoint, e.error, e.description)
        self._html(400, "Sign-in error", f"<p id=\"error\">{html.escape(e.error)}: {html.escape(e.description)}</p>")

    def _sign_in_page(self, request_id: str, q: dict[str, str], error: str | None = None,
                      email: str = "") -> None:
        err = f'<p id="error" role="alert">{html.escape(error)}</p>\n' if error else ""
        body = (f"{err}<form method=\"post\" action=\"/authorize\">\n"
                f"<input type=\"hidden\" name=\"request_id\" value=\"{html.escape(request_id)}\">\n"
                f"<label for=\"email\">E-mail</label>\n"
                f"<input type=\"text\" id=\"email\" name=\"email\" value=\"{html.escape(email)}\" autofocus>\n"
                f"<button type=\"submit\">Sign in</button>\n</form>\n"
                f"<p>Signing in to {html.escape(q.get('client_id', ''))}</p>")
        self._html(200, "Sign in", body)

    def authorize(self) -> None:
        q = self._query()
        try:
            self.owner.check_authorization(q)
        except OAuthError as e:
            if e.status == 400:
                return self._bad_page(e)
            self.owner._fail("authorize", e.error, e.description)
            return self._redirect(self._with_params(q["redirect_uri"], {
                "error": e.error, "error_description": e.description, "state": q.get("state")}))
        request_id = self.owner.pend(q)
        self._sign_in_page(request_id, q, email=q.get("login_hint", ""))

    def sign_in(self) -> None:
        form = self._form()
        request_id = form.get("request_id", "")
        q = self.owner.pending(request_id)
        if q is None:
            return self._bad_page(OAuthError("invalid_request", "unknown or finished sign-in request"))
        email = form.get("email", "").strip()
        if email.lower() not in {e.lower() for e in self.owner.users}:
            self.owner._fail("sign_in", "access_denied", f"unknown e-mail {email!r}")
            return self._sign_in_page(request_id, q, error="No account for that e-mail address.", email=email)
        email = next(e for e in self.owner.users if e.lower() == email.lower())
        c = self.owner.issue_code(request_id, email)
        if c is None:  # the same form sent twice at once: the other one won
            return self._bad_page(OAuthError("invalid_request", "unknown or finished sign-in request"))
        self._redirect(self._with_params(c.redirect_uri, {"code": c.code, "state": c.state}))

    def token(self) -> None:
        form = self._form()
        try:
            answer = self.owner.token(form, self.headers.get("Authorization"))
        except OAuthError as e:
            self.owner._fail("token", e.error, e.description)
            headers = {"WWW-Authenticate": 'Basic realm="oidc-standin"'} if e.status == 401 else None
            return self._json(e.status, {"error": e.error, "error_description": e.description}, headers)
        self._json(200, answer)

    def userinfo(self) -> None:
        if self.command == "POST":
            self._form()
        try:
            answer = self.owner.userinfo(self.headers.get("Authorization"))
        except OAuthError as e:
            self.owner._fail("userinfo", e.error, e.description)
            return self._json(401, {"error": e.error, "error_description": e.description},
                              {"WWW-Authenticate": f'Bearer error="{e.error}"'})
        self._json(200, answer)

    def logout(self) -> None:
        q = self._form() if self.command == "POST" else self._query()
        target = q.get("post_logout_redirect_uri")
        hint_valid = None
        if q.get("id_token_hint"):
            try:
                self.owner.verify_id_token(q["id_token_hint"], verify_exp=False)
                hint_valid = True
            except jwt.PyJWTError:
                hint_valid = False
        with self.owner._lock:
            self.owner.logouts.append({"client_id": q.get("client_id"), "post_logout_redirect_uri": target,
                                       "id_token_hint": hint_valid, "state": q.get("state")})
        if target:
            if target not in self.owner.redirect_uris + self.owner.post_logout_redirect_uris:
                return self._bad_page(OAuthError("invalid_request", "post_logout_redirect_uri is not registered"),
                                      "logout")
            return self._redirect(self._with_params(target, {"state": q.get("state")}))
        self._html(200, "Signed out", "<p>You are signed out.</p>")


def _user(value: str) -> tuple[str, str]:
    email, sep, name = value.partition("=")
    if not sep or "@" not in email:
        raise argparse.ArgumentTypeError("expected EMAIL=NAME")
    return email.strip(), name.strip()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="OpenID Connect stand-in on 127.0.0.1 (prints its URL first)")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--client-id", default=DEFAULT_CLIENT_ID)
    parser.add_argument("--client-secret", default=DEFAULT_CLIENT_SECRET)
    parser.add_argument("--redirect-uri", action="append", default=[], help="registered redirect URI (repeat)")
    parser.add_argument("--user", action="append", type=_user, default=[], help="EMAIL=NAME allowed to sign in")
    parser.add_argument("--code-ttl", type=float, default=60.0)
    parser.add_argument("--require-pkce", action="store_true")
    args = parser.parse_args(argv)
    standin = OIDCStandin(users=dict(args.user) if args.user else None, client_id=args.client_id,
                          client_secret=args.client_secret, redirect_uris=args.redirect_uri,
                          code_ttl=args.code_ttl, require_pkce=args.require_pkce, port=args.port)
    return serve_until_terminated(standin)


if __name__ == "__main__":
    sys.exit(main())
