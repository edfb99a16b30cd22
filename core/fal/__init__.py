"""The fal client: everything that talks to fal's queue, as a small package.

    values    a job's handle, its statuses and its result, as typed values (no I/O)
    retry     when a call may be sent again (one pure predicate) and how long to wait
    wire      reading bounded answers: inflated 64 KB at a time, JSON objects, status events
    answers   fal's error answers and transport failures -> `core.errors.FalError`s
    client    `FalClient`: submit, status, the status stream, result, cancel, download
    tls       the process's one TLS context, built in the background (`warm_tls`)
    follow    one accepted job followed until it ends (stream first, then adaptive polling)
    catalogue `CatalogueClient`: any endpoint's OpenAPI document by id, model search, prices

The facts about fal these rely on, with their sources, are in docs/fal.md.
"""
from core._surface import lazy

_EXPORTS = {
    "values": "", "retry": "", "wire": "", "answers": "", "client": "", "follow": "", "tls": "", "catalogue": "",
    "Completed": "values", "InProgress": "values", "Queued": "values", "Status": "values",
    "QueueHandle": "values", "OutputImage": "values", "FalOutput": "values",
    "parse_output": "values", "handle_from_row": "values",
    "RetryPolicy": "retry", "retry_reason": "retry",
    "FalClient": "client", "DEFAULT_TIMEOUT": "client", "DEFAULT_STREAM_TIMEOUT": "client",
    "MAX_DOWNLOAD_BYTES": "client", "tls_context": "tls", "warm_tls": "tls",
    "Cadence": "follow", "PollPolicy": "follow", "Outage": "follow", "Signals": "follow",
    "Finished": "follow", "Gone": "follow", "Lost": "follow", "is_transient": "follow",
    "CatalogueClient": "catalogue", "CatalogueModel": "catalogue", "SearchPage": "catalogue",
    "Price": "catalogue", "UnknownEndpoint": "catalogue", "MAX_DOCUMENT_BYTES": "catalogue",
    "MAX_PRICE_IDS": "catalogue",
}
__all__ = sorted(_EXPORTS)
__getattr__ = lazy(__name__, _EXPORTS)
