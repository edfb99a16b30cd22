"""The one exception tree of `core`. Every message says what happened and what to do.

    DashboardError
    ├── ConfigError              settings or secrets.toml unusable
    ├── PayloadError             a body fails validation before anything is sent (names field, endpoint)
    ├── PromptError              an option key that does not exist
    ├── PlanError                a batch plan file that is not usable
    ├── BudgetExceeded           a batch or re-run would pass a spending limit; nothing was sent
    ├── AccessDenied             sign-in is on and this person's role does not allow the action
    ├── ModelDocumentError       a fal OpenAPI document that cannot describe a comparable image endpoint
    ├── UploadRejected           a reference photo refused by the upload checks (`.reason` code)
    ├── StorageError             a storage backend failed; nothing was left half-written
    │   ├── StoragePermissionError   no permission (Supabase "403")
    │   ├── BucketNotFound           no such bucket ("404")
    │   ├── ObjectMissing            no such object ("404" not_found): deleted, or never stored
    │   ├── ObjectExists             already exists ("409")
    │   ├── ObjectTooLarge           too large ("413")
    │   └── UnsupportedContentType   type not allowed ("415")
    ├── StoreError               the SQLite store (e.g. unknown id)
    │   ├── BatchBusy            another live runner owns this batch
    │   └── StoreUnavailable     the database refused for a passing reason (locked, full, read-only)
    ├── FalError                 talking to fal
    │   ├── FalAuthError         401/403: the key is missing or wrong
    │   ├── FalValidationError   422: `.detail` is fal's list (or string)
    │   ├── FalRateLimited       429 after retries; `.retry_after`
    │   ├── FalServerError       5xx / runner errors after retries; `.error_type`
    │   ├── FalTimeout           no answer in time
    │   ├── FalUnavailable       transport failure (cannot connect) after retries
    │   ├── FalCancelled         the request was cancelled
    │   ├── FalBadResponse       fal answered 2xx with a body of an unexpected shape; `.raw` keeps it
    │   └── UnknownEndpoint      fal has no endpoint of that id (core.fal.catalogue, 404 on a document)
    └── MetricsError             an image could not be decoded for measuring
"""
from __future__ import annotations

from typing import Any

from core.redact import abbreviate


class DashboardError(Exception):
    """Base of every error `core` raises on purpose."""


class ConfigError(DashboardError):
    pass


class PayloadError(DashboardError):
    """A request body that must not be sent. `messages` holds one line per problem."""

    def __init__(self, endpoint: str, messages: list[str]):
        self.endpoint = endpoint
        self.messages = list(messages)
        super().__init__("; ".join(self.messages))


class PromptError(DashboardError):
    pass


class PlanError(DashboardError):
    pass


class BudgetExceeded(DashboardError):
    """A live batch, resume or re-run refused by core.batches.budget before any row is written or
    any request sent: one line naming the limit, the estimate and what is left."""


class AccessDenied(DashboardError):
    """core.access refused an action: one line naming it, the role it needs and who asked."""


class ModelDocumentError(DashboardError):
    """A fal queue OpenAPI document refused by core.catalog.openapi: one line, what and what to do."""


class UploadRejected(DashboardError):
    """`reason` is a short stable code (e.g. "empty", "not_an_image", "too_small")."""

    def __init__(self, reason: str, message: str):
        self.reason = reason
        super().__init__(message)


class StorageError(DashboardError):
    pass


class StoragePermissionError(StorageError):
    pass


class BucketNotFound(StorageError):
    pass


class ObjectMissing(StorageError):
    pass


class ObjectExists(StorageError):
    pass


class ObjectTooLarge(StorageError):
    pass


class UnsupportedContentType(StorageError):
    pass


class StoreError(DashboardError):
    pass


class BatchBusy(StoreError):
    pass



class StoreUnavailable(StoreError):
    """The database refused an operation for a reason that may pass: locked by another process
    longer than the busy timeout, disk full, read-only, an I/O error. Nothing was half-written;
    the same call may work later (the runner retries, then leaves the request resumable).
    `reason`: "locked", "full", "read_only" or "other"; a full disk or a read-only directory
    does not pass by itself, so a runner stops for it instead of retrying."""

    def __init__(self, message: str = "", *, reason: str = "other"):
        super().__init__(message)
        self.reason = reason

    @property
    def needs_a_person(self) -> bool:
        return self.reason in ("full", "read_only")

class FalError(DashboardError):
    """`status_code` is the HTTP status when there was one; `request_id` fal's id when known;
    `not_sent` is True only when fal surely never received the request."""

    def __init__(self, message: str, *, status_code: int | None = None,
                 request_id: str | None = None, error_type: str | None = None,
                 not_sent: bool = False):
        self.status_code = status_code
        # True only when fal surely never received the request (safe to send it again later)
        self.not_sent = not_sent
        self.request_id = request_id
        self.error_type = error_type
        # fal may echo a data: URI of the input in its detail; never carry it whole
        super().__init__(abbreviate(message))


class FalAuthError(FalError):
    pass


class FalValidationError(FalError):
    def __init__(self, message: str, *, detail: Any = None, **kw: Any):
        self.detail = detail
        super().__init__(message, **kw)


class FalRateLimited(FalError):
    def __init__(self, message: str, *, retry_after: float | None = None, **kw: Any):
        self.retry_after = retry_after
        super().__init__(message, **kw)


class FalServerError(FalError):
    pass


class FalTimeout(FalError):
    pass


class FalUnavailable(FalError):
    pass


class FalCancelled(FalError):
    pass


class FalBadResponse(FalError):
    """fal answered, but not in the shape its schema promises (e.g. a JSON list, no `images`).
    Not transient: asking again gets the same answer. `raw` is the body as received (decoded
    JSON, or the text when it was not JSON), so the caller can keep it with the failure."""

    def __init__(self, message: str, *, raw: Any = None, **kw: Any):
        self.raw = raw
        super().__init__(message, **kw)


class MetricsError(DashboardError):
    """An image given to `core.evaluation.metrics` could not be decoded, so nothing was measured."""
