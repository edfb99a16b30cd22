"""Batches: what a batch will send, sending it through fal's queue, and the service that pages
and the command line call.

    plan_file  reading a plan file safely, and the value checks of every plan input
    spec       a spec's fields, each checked, and the request count bounded (before anything is read)
    plans      a spec and its resolved references -> every payload, validated, counted and priced (pure)
    service    plan_batch (references resolved and uploaded), launch, rerun, cancel, resume, and
               `state` (Starting/Running/Stopped/Finished/Cancelled)
    budget     spending limits: a batch, resume or re-run over a limit refused before it is sent,
               what is left today, and when Send asks first
    schedule   the runner: bounded concurrency, outages ridden through, signals drained
    record     fal's answers and errors -> request statuses; `record_result` writes a result
    explain    what a batch's state means in words, and what may be done to it (cancel, resume)
    drafts     Generate's saved draft (one JSON file per person)
    sweeps     sweep axes: a parameter's values, parsed from what a person typed

The fal client the runner sends through is `core.fal`.
"""
from core._surface import lazy

_EXPORTS = {
    "plans": "", "service": "", "schedule": "", "record": "", "drafts": "", "explain": "", "sweeps": "", "plan_file": "", "spec": "", "budget": "",
    "Plan": "plans", "make_plan": "plans", "load_plan_file": "plan_file", "plan_batch": "service",
    "launch": "service", "rerun": "service", "cancel": "service", "resume": "service",
    "state": "service", "BatchState": "service", "Starting": "service", "Running": "service",
    "Stopped": "service", "Finished": "service", "Cancelled": "service",
    "run_batch": "schedule", "RunReport": "schedule",
    "record_result": "record",
}
__all__ = sorted(_EXPORTS)
__getattr__ = lazy(__name__, _EXPORTS)
