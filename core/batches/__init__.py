"""Batches: what a batch will send, sending it through fal's queue, and the service that pages
and the command line call.

    plans      a plan file or form -> every payload, validated, counted and priced (nothing written)
    service    launch, rerun, cancel, resume, and `state` (Starting/Running/Stopped/Finished/Cancelled)
    schedule   the runner: bounded concurrency, outages ridden through, signals drained
    follow     one accepted job until it ends (no store)
    record     fal's answers and errors -> request statuses; `record_result` writes a result
    fal        the fal client (queue protocol, status stream, capped downloads, typed output)
"""
from core._surface import lazy

_EXPORTS = {
    "plans": "", "service": "", "schedule": "", "follow": "", "record": "", "fal": "",
    "Plan": "plans", "make_plan": "plans", "load_plan_file": "plans",
    "launch": "service", "rerun": "service", "cancel": "service", "resume": "service",
    "state": "service", "BatchState": "service", "Starting": "service", "Running": "service",
    "Stopped": "service", "Finished": "service", "Cancelled": "service",
    "run_batch": "schedule", "RunReport": "schedule",
    "record_result": "record",
    "FalClient": "fal", "FalOutput": "fal", "QueueHandle": "fal",
}
__all__ = sorted(_EXPORTS)
__getattr__ = lazy(__name__, _EXPORTS)
