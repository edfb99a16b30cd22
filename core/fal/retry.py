"""When a call to fal may be sent again, in one pure predicate (`retry_reason`), and how long to wait.

Invariants:
- Never risk a second paid job. A submit is sent again ONLY when fal surely did not accept it:
  the connection could not be made, fal answered 429 to a queue submit, or an ingress error page
  came back WITHOUT `x-fal-request-id` (the proxy answered, fal never saw the body). A read
  timeout, a dropped connection after sending, or a 5xx carrying `x-fal-request-id` raise
  instead: the job may exist.
- Status polls, result fetches, cancels and downloads are idempotent: transport errors, 408, 429
  (honouring `Retry-After`) and 5xx are retried with capped exponential backoff and jitter.
"""
from __future__ import annotations

import email.utils
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from core._imports import hidden

with hidden("click"):   # httpx's command-line client, unused (core/_imports.py)
    import httpx



INGRESS_CODES = frozenset({502, 503, 504})


# Raised before a single byte of the request left this machine: always safe to send again.
NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)


@dataclass(frozen=True)
class RetryPolicy:
    """Capped exponential backoff with jitter. `sleep` is injectable so tests never wait.

    A `Retry-After` longer than `max_retry_after` is not waited for: FalRateLimited is raised
    with `.retry_after` so the caller can decide (a batch can pause, a page can say so)."""
    max_attempts: int = 5
    base: float = 0.25
    cap: float = 8.0
    jitter: float = 0.5
    max_retry_after: float = 60.0
    sleep: Callable[[float], None] = field(default=time.sleep, repr=False, compare=False)

    def backoff(self, attempt: int) -> float:
        """Delay before attempt `attempt + 1` (attempt counts from 1)."""
        delay = min(self.cap, self.base * (2 ** (attempt - 1)))
        return delay * (1.0 - self.jitter * random.random())


def retry_reason(*, idempotent: bool, error: Exception | None = None, status_code: int | None = None,
                 from_fal: bool = False, retry_after: float | None = None,
                 max_retry_after: float = 60.0) -> str | None:
    """Why one attempt's outcome may be sent again (a short label for the log), or None when
    it must not be. Pure: the caller counts attempts, computes delays and sleeps.

    `idempotent` is True for status, result, cancel and downloads, False for a submit (a
    second submit is a second paid job). `error` is the transport error of the attempt, or
    `status_code` / `from_fal` (the answer carried `x-fal-request-id`) / `retry_after` (seconds,
    parsed) describe the answer. A submit is sent again ONLY when fal surely did not get it:
    - the connection was never made (connect error or timeout, no free pooled connection);
    - 429: fal refused it for now (queue submissions are not run when refused);
    - 502/503/504 without `x-fal-request-id`: a gateway page, the body never reached fal.
    Idempotent calls are also sent again after any other transport error, 408 and any 5xx.
    A 429 whose Retry-After exceeds `max_retry_after` is not waited for by anyone."""
    if error is not None:
        if isinstance(error, httpx.UnsupportedProtocol):
            return None   # a bad URL stays bad
        if isinstance(error, NOT_SENT) or (idempotent and isinstance(error, httpx.TransportError)):
            return type(error).__name__
        return None
    if status_code is None:
        return None
    if status_code == 429:
        return "429" if retry_after is None or retry_after <= max_retry_after else None
    if status_code in INGRESS_CODES and not from_fal:
        return f"ingress {status_code}"
    if idempotent and (status_code >= 500 or status_code == 408):
        return str(status_code)
    return None


def retry_after_s(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())
