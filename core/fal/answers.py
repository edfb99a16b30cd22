"""fal's error answers and transport failures, turned into `core.errors.FalError`s whose message
says what happened and what to do (and whether the request surely never reached fal: `not_sent`).
"""
from __future__ import annotations

from typing import Any

from core._imports import hidden

with hidden("click"):   # httpx's command-line client, unused (core/_imports.py)
    import httpx

from core.errors import (
    FalAuthError,
    FalCancelled,
    FalError,
    FalRateLimited,
    FalServerError,
    FalTimeout,
    FalUnavailable,
    FalValidationError,
)
from core.redact import redact
from core.fal.retry import INGRESS_CODES, NOT_SENT, retry_after_s
from core.fal.wire import loads_redacted, short_url


def detail_fields(detail: list) -> list[str]:
    """"image_size: Input should be ..." per entry; `loc` minus its leading "body"."""
    out = []
    for item in detail:
        if not isinstance(item, dict):
            out.append(str(item))
            continue
        loc = [str(p) for p in (item.get("loc") or []) if p != "body"]
        name = ".".join(loc) or "(body)"
        kind = item.get("type")
        out.append(f"{name}: {item.get('msg', 'invalid')}" + (f" [{kind}]" if kind else ""))
    return out


def error_from(response: httpx.Response, *, what: str, endpoint: str | None,
                request_id: str | None, secrets: tuple[str, ...], attempts: int = 1) -> FalError:
    """The FalError for a non-2xx answer. Everything taken from the answer (body and headers)
    has the secrets masked, and so has the final message."""
    error = error_for(response, what=what, endpoint=endpoint, request_id=request_id,
                       secrets=secrets, attempts=attempts)
    error.args = tuple(redact(a, secrets) if isinstance(a, str) else a for a in error.args)
    return error


def error_for(response: httpx.Response, *, what: str, endpoint: str | None,
               request_id: str | None, secrets: tuple[str, ...], attempts: int) -> FalError:
    code = response.status_code
    rid = redact(response.headers.get("x-fal-request-id") or request_id or "", secrets) or None
    body = loads_redacted(response, secrets)
    detail = body.get("detail") if isinstance(body, dict) else None
    error_type = (body.get("error_type") if isinstance(body, dict) else None) \
        or redact(response.headers.get("x-fal-error-type", ""), secrets) or None
    said = detail if isinstance(detail, str) else None
    target = endpoint or short_url(str(response.request.url))
    kw = {"status_code": code, "request_id": rid, "error_type": error_type}
    tried = f" after {attempts} attempts" if attempts > 1 else ""

    if code in (401, 403):
        return FalAuthError(f"fal rejected the key ({code}): check FAL_KEY"
                            + (f" (fal said: {said})" if said else "") + ".", **kw)
    if code == 422:
        if isinstance(detail, list):
            problems = "; ".join(detail_fields(detail)) or "no details given"
        else:
            problems = said or "no details given"
        return FalValidationError(f"fal refused the input for {target} (422): {problems}. "
                                  "Fix those fields and send again.", detail=detail, **kw)
    if code == 429:
        retry_after = retry_after_s(response)
        wait = f"wait {retry_after:g} s" if retry_after is not None else "wait a little"
        return FalRateLimited(f"fal is rate-limiting this account (429){tried}: {wait} or lower "
                              "DASHBOARD_CONCURRENCY, then try again.", retry_after=retry_after, **kw)
    if is_cancelled(detail, error_type):
        return FalCancelled(f"fal request {rid} was cancelled; submit it again if you still want it.",
                            **kw)
    if code in INGRESS_CODES and "x-fal-request-id" not in response.headers:
        return FalUnavailable(f"fal's gateway answered {code}{tried} for the {what} of {target} "
                              "(the request never reached fal): try again in a minute.",
                              not_sent=True, **kw)
    if code >= 500:
        kind = f" {error_type}" if error_type else ""
        msg = f"fal failed on its side ({code}{kind}){tried} for the {what} of {target}"
        msg += f": {said}" if said else ""
        if what == "submit":
            msg += (". The job may or may not exist, so it was NOT sent again (never risk a second "
                    "paid job): check fal's request history before resubmitting.")
        else:
            msg += ". 5xx answers are not billed; try again later."
        return FalServerError(msg, **kw)
    if code == 404:
        if what == "submit":
            return FalError(f"fal has no endpoint {endpoint} (404): check the endpoint id.", **kw)
        if what == "download":
            return FalError(f"result file {target} is gone (404): fal keeps result files for a "
                            "limited time; run the request again.", **kw)
        return FalError(f"fal does not know request {rid} (404): it may have expired (fal may keep "
                        "a result only an hour, 6 minutes when it is large); run it again.", **kw)
    return FalError(f"fal refused the {what} of {target} ({code})"
                    + (f": {said}" if said else "") + ".", **kw)


def is_cancelled(detail: Any, error_type: str | None) -> bool:
    text = f"{error_type or ''} {detail if isinstance(detail, str) else ''}".lower()
    return "cancel" in text


def transport_error(e: httpx.TransportError, *, what: str, endpoint: str | None, url: str,
                     request_id: str | None, attempts: int) -> FalError:
    target = endpoint or short_url(url)
    tried = f" after {attempts} attempts" if attempts > 1 else ""
    kw = {"request_id": request_id}
    if isinstance(e, NOT_SENT):
        return FalUnavailable(f"could not connect to fal at {short_url(url)}{tried} "
                              f"({type(e).__name__}): check the network and FAL_QUEUE_URL; "
                              "nothing was sent.", not_sent=True, **kw)
    maybe = ("The job may have been accepted, so it was NOT sent again (never risk a second paid job): "
             "check fal's request history before resubmitting."
             if what == "submit" else "Try again later.")
    if isinstance(e, httpx.TimeoutException):
        return FalTimeout(f"fal did not answer the {what} of {target} in time{tried} "
                          f"({type(e).__name__}). {maybe}", **kw)
    return FalUnavailable(f"the connection to fal dropped during the {what} of {target}{tried} "
                          f"({type(e).__name__}). {maybe}", **kw)
