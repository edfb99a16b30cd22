"""Spending limits (issue 20, part 4): a live batch, a resume or a re-run that would pass
`DASHBOARD_BUDGET_USD_PER_BATCH` or `DASHBOARD_BUDGET_USD_PER_DAY` is refused before anything is
written or sent, and Send asks first above `DASHBOARD_CONFIRM_ABOVE_USD`.

Invariants:
- No limit set means no limit; a dry run (no FAL_KEY) is never refused: it sends nothing.
- What is still to send counts at the plan's estimates; what was sent counts at what fal billed
  (`x-fal-billable-units` on the result, at the endpoint's price per unit) once fal said it, else
  at its estimate. A request whose price is unknown counts as $0 and is named in a refusal.
- Spent today: the estimated cost of the requests a person sent (any status but planned,
  cancelled and dry run) since midnight UTC (`Store.spent_since`); the person is `created_by`,
  and no name is one shared bucket.
- A resumed batch counts what it already spent: its unsent requests' estimate is checked, plus
  its spent part against the per-batch limit (today's spent part is already in the day's).
- `check` only reads the store; the callers call it before any row is written or POST leaves.
- The limits in effect are an admin's (set on the dashboard, kept in the store, audited) where one
  set them, else the settings (`limits`).
"""
from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass
from typing import TYPE_CHECKING

from core.config import Settings
from core.errors import BudgetExceeded
from core.store import Store
from core.values import RequestStatus

if TYPE_CHECKING:
    from core.batches.plans import Plan

# the per-batch part of a batch: what it sent, whatever became of it
_NOT_SPENT = frozenset({RequestStatus.PLANNED, RequestStatus.CANCELLED, RequestStatus.DRY_RUN})
# a float sum of prices (0.003 x 1000) must not refuse a batch exactly at its limit
_EPSILON = 1e-9


@dataclass(frozen=True)
class Limits:
    """The limits in effect (None: no limit) and, for each, where it comes from."""

    per_batch: float | None
    per_day: float | None
    confirm_above: float
    set_on_dashboard: frozenset[str] = frozenset()


def parse_limit(name: str, text: str | None) -> float | None:
    """What an admin typed for the limit `name` (blank: no limit; for the confirmation threshold,
    blank is the configured default); a bad amount is one line."""
    from core.config import parse_usd

    return parse_usd(name, text, zero_ok=name == "DASHBOARD_CONFIRM_ABOVE_USD")


def limits(store: Store | None, settings: Settings) -> Limits:
    """An admin's limits where set (`Store.set_limit`), else the settings'."""
    configured = {"DASHBOARD_BUDGET_USD_PER_BATCH": settings.budget_usd_per_batch,
                  "DASHBOARD_BUDGET_USD_PER_DAY": settings.budget_usd_per_day,
                  "DASHBOARD_CONFIRM_ABOVE_USD": settings.confirm_above_usd}
    chosen = store.limits_set() if store is not None else {}
    value = {**configured, **chosen}
    return Limits(value["DASHBOARD_BUDGET_USD_PER_BATCH"], value["DASHBOARD_BUDGET_USD_PER_DAY"],
                  3.0 if value["DASHBOARD_CONFIRM_ABOVE_USD"] is None else value["DASHBOARD_CONFIRM_ABOVE_USD"],
                  frozenset(chosen))


@dataclass(frozen=True)
class Estimate:
    """What a batch (or what is left of it) will cost: `usd` over the known prices, and how many
    requests have no known price (counted as $0)."""

    usd: float
    unpriced: int = 0


def of_plan(plan: Plan) -> Estimate:
    """A plan's estimate (`Plan.estimated_cost` leaves the unpriced requests out)."""
    return Estimate(float(plan.estimated_cost or 0.0), len(plan.unpriced))


def left_in_batch(store: Store, batch_id: str) -> Estimate:
    """The estimate of the batch's requests not sent yet (planned): what a resume would send."""
    left = [r for r in store.request_costs(batch_id=batch_id) if r.status == RequestStatus.PLANNED]
    return Estimate(sum(r.estimated_cost or 0.0 for r in left), sum(r.estimated_cost is None for r in left))


def spent_in_batch(store: Store, batch_id: str) -> Estimate:
    """What the batch already sent, by its estimates (nothing for a dry-run batch)."""
    if store.get_batch(batch_id).dry_run:
        return Estimate(0.0)
    sent = [r for r in store.request_costs(batch_id=batch_id) if r.status not in _NOT_SPENT]
    return Estimate(sum(r.cost or 0.0 for r in sent), sum(r.cost is None for r in sent))


def spent_today(store: Store, person: str | None, *, now: _dt.datetime | None = None) -> Estimate:
    """What `person` (None or "": the shared bucket) sent since midnight UTC."""
    now = now or _dt.datetime.now(_dt.timezone.utc)
    midnight = now.astimezone(_dt.timezone.utc).replace(hour=0, minute=0, second=0, microsecond=0)
    usd, unpriced = store.spent_since(midnight.isoformat(timespec="microseconds"), person=person)
    return Estimate(usd, unpriced)


def left_today(store: Store, settings: Settings, person: str | None, *,
               now: _dt.datetime | None = None) -> float | None:
    """USD `person` may still send today, never below 0; None when no daily limit is set."""
    per_day = limits(store, settings).per_day
    if per_day is None:
        return None
    return max(0.0, per_day - spent_today(store, person, now=now).usd)


def left_today_line(store: Store, settings: Settings, person: str | None) -> str | None:
    """What Generate shows when a daily limit is set: what `person` has left today."""
    left = left_today(store, settings, person)
    if left is None:
        return None
    who = person or "the team (no name)"
    return (f"Left today for {who}: {_usd(left)} of {_usd(limits(store, settings).per_day or 0.0)} "
            "(DASHBOARD_BUDGET_USD_PER_DAY, since midnight UTC).")


def check(store: Store, settings: Settings, *, estimate_usd: float, person: str | None,
          batch_id: str | None = None, unpriced: int = 0, now: _dt.datetime | None = None) -> None:
    """Raise BudgetExceeded (one line: the limit, the estimate, what is left) when sending
    `estimate_usd` more (`unpriced` requests more at an unknown price) as `person` would pass a
    limit. `batch_id`: the batch it joins (a resume, a re-run), whose spent part counts too."""
    if settings.dry_run:
        return
    in_effect = limits(store, settings)
    per_batch, per_day = in_effect.per_batch, in_effect.per_day
    if per_batch is not None:
        spent = spent_in_batch(store, batch_id) if batch_id else Estimate(0.0)
        if spent.usd + estimate_usd > per_batch + _EPSILON:
            what = (f"this batch is estimated at {_usd(estimate_usd)}" if not spent.usd else
                    f"what is left of this batch is estimated at {_usd(estimate_usd)} and it already spent "
                    f"{_usd(spent.usd)} ({_usd(spent.usd + estimate_usd)} in all)")
            raise BudgetExceeded(f"{what}, over the per-batch limit of {_usd(per_batch)} "
                                 f"(DASHBOARD_BUDGET_USD_PER_BATCH): send fewer requests or raise the limit"
                                 + _unpriced_note(unpriced + spent.unpriced))
    if per_day is not None:
        today = spent_today(store, person, now=now)
        if today.usd + estimate_usd > per_day + _EPSILON:
            who = f"{person} has" if person else "the team (no name) has"
            raise BudgetExceeded(f"this batch is estimated at {_usd(estimate_usd)}, but {who} "
                                 f"{_usd(max(0.0, per_day - today.usd))} left of today's {_usd(per_day)} "
                                 "(DASHBOARD_BUDGET_USD_PER_DAY, since midnight UTC): send fewer requests, "
                                 "wait until tomorrow or raise the limit" + _unpriced_note(unpriced + today.unpriced))


def needs_confirmation(settings: Settings, estimate_usd: float, store: Store | None = None) -> bool:
    """Send asks first when the batch is live and its estimate is above the team's threshold
    (`DASHBOARD_CONFIRM_ABOVE_USD`, or an admin's; 0 means every live batch)."""
    if settings.dry_run:
        return False
    above = limits(store, settings).confirm_above
    return above == 0 or estimate_usd > above + _EPSILON


def confirmation(request_count: int, estimate: Estimate) -> str:
    """The question Send asks: the request count and the estimate, repeated."""
    unknown = (f" plus {estimate.unpriced} request{'s' * (estimate.unpriced != 1)} at an unknown price"
               if estimate.unpriced else "")
    return (f"Send {request_count} request{'s' * (request_count != 1)} to fal, estimated at "
            f"{_usd(estimate.usd)}{unknown}? fal bills every request it runs.")


def _unpriced_note(unpriced: int) -> str:
    if not unpriced:
        return ""
    return (f" ({unpriced} request{'s' * (unpriced != 1)} with no known price "
            f"{'is' if unpriced == 1 else 'are'} counted as $0)")


def _usd(amount: float) -> str:
    """Dollars as the plan shows them: cents, or tenths of a cent below a dime."""
    return f"${amount:,.2f}" if amount >= 0.1 or amount == 0 else f"${amount:.3f}"
