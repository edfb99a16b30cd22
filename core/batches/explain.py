"""What a batch, or a plan being built, means in words a person reads on a page.

The pages draw these sentences; the rules behind them live here so the Generate page, the command
line and the tests say the same thing.

Invariants:
- "done" is never said of a request that was not answered: a cancelled request was never sent (or
  fal was asked to drop it), a dry-run request was recorded only. A progress line counts them
  apart from the completed and failed ones.
- The money line of a finished batch counts what was sent (completed and failed requests), not the
  estimate of the whole plan; a dry run spends nothing.
- A batch is finished only when every request is final; the page offers Cancel only before that.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping

from core.catalog import registry
from core.errors import DashboardError
from core.values import BatchProgress, RequestRecord, RequestStatus

S = RequestStatus

# the words of each status in a progress line, in the order they are listed
_STATUS_WORDS = (
    (S.COMPLETED, "completed"), (S.FAILED, "failed"), (S.CANCELLED, "cancelled (never sent)"),
    (S.DRY_RUN, "recorded as dry run"), (S.RUNNING, "running at fal"), (S.QUEUED, "queued at fal"),
    (S.SUBMITTED, "being sent"), (S.IN_DOUBT, "in doubt (sent, never answered)"),
    (S.PLANNED, "waiting to be sent"),
)


def _n(count: int, word: str) -> str:
    return f"{count} {word}{'' if count == 1 else 's'}"


def progress_line(progress: BatchProgress) -> str:
    """One line for the progress bar, e.g. "10 of 80 answered: 10 completed, 70 cancelled (never
    sent) · $0.225 spent (estimate for all 80: $1.800)"."""
    counts = progress.counts
    parts = [f"{counts[s]} {w}" for s, w in _STATUS_WORDS if counts.get(s)]
    answered = counts.get(S.COMPLETED, 0) + counts.get(S.FAILED, 0)
    if progress.dry_run:
        head = f"{counts.get(S.DRY_RUN, 0)} of {progress.total} payloads recorded"
        money = "dry run: nothing sent, nothing spent"
    else:
        head = f"{answered} of {progress.total} answered by fal"
        if progress.settled:
            money = f"about ${progress.completed_cost:.3f} spent on completed requests"
            if progress.completed_cost != progress.estimated_cost:
                money += f" (estimate for all {progress.total}: ${progress.estimated_cost:.3f})"
        else:
            money = f"estimate for all {progress.total}: ${progress.estimated_cost:.3f}"
    return f"{head}: {', '.join(parts) or 'nothing yet'} · {money}"


def progress_fraction(progress: BatchProgress) -> float:
    """How far the batch is, 0..1: final requests (of any kind) over all requests."""
    return progress.done / progress.total if progress.total else 0.0


def outcome_notes(progress: BatchProgress) -> list[tuple[str, str]]:
    """(kind, sentence) notes under the progress of a batch: "warning" for failures a person should
    read, "info" for cancelled requests, which have no error to read."""
    notes = []
    doubt = progress.in_doubt
    if doubt:
        notes.append(("warning", f"{_n(doubt, 'request')} in doubt: sent, but fal never answered, so it "
                                 "may hold (and bill) them. Look them up in fal's request history, then "
                                 "in History send them again (they may be paid twice) or give them up."))
    failed = progress.counts.get(S.FAILED, 0)
    cancelled = progress.counts.get(S.CANCELLED, 0)
    if failed:
        notes.append(("warning", f"{_n(failed, 'request')} failed: History (status *failed*) shows each "
                                 "error in words."))
    if cancelled:
        them = "it" if cancelled == 1 else "them"
        notes.append(("info", f"{_n(cancelled, 'request')} cancelled before fal answered: nothing more "
                              f"was sent for {them}, and no cost is counted for {them}."))
    return notes


def never_sent(request: RequestRecord) -> bool:
    """Nothing of this request reached fal: a dry run, or cancelled before it was submitted. It
    costs nothing and its payload is "as stored", never "as sent"."""
    return request.dry_run or (request.status == S.CANCELLED and not request.submitted_at)


def may_cancel(progress: BatchProgress) -> bool:
    """Cancel makes sense while a runner has work left and no cancel was asked for yet."""
    return not progress.settled and not progress.cancel_requested


def cancel_note(progress: BatchProgress) -> str:
    """In place of the Cancel button once a cancel was asked for and the batch is not settled yet,
    or ""."""
    if progress.cancel_requested and not progress.settled:
        return "Cancel requested: nothing more is sent; what fal still holds is being cancelled."
    return ""


def results_caption(shown: int, completed: int, progress: BatchProgress) -> str:
    """Under the thumbnails: how many of the completed results are shown, and where the rest are."""
    if completed <= shown:
        return ""
    return (f"The newest {shown} of {completed} completed results "
            f"({progress.done} of {progress.total} requests final) — every one is in History and Compare.")


def models_needing_references(models: Iterable[str], references: Iterable[str]) -> list[str]:
    """The chosen models that edit a photo while no reference photo is picked (a form's first
    state, not an error: the page says which step to take next)."""
    if list(references):
        return []
    needing = []
    for m in models:
        try:
            if registry.get_endpoint(m).mode == "edit":
                needing.append(m)
        except DashboardError:
            continue
    return needing


def varying_options(option_sets: Iterable[Mapping[str, str]]) -> list[str]:
    """The option keys whose value differs between the given option sets, in first-seen order:
    what tells apart thumbnails or requests that share a model and a seed."""
    seen: dict[str, set[str]] = {}
    for options in option_sets:
        for k, v in options.items():
            seen.setdefault(k, set()).add(v)
    return [k for k, values in seen.items() if len(values) > 1]
