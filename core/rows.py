"""The rows the store reads by the 100,000 as tuples (no dataclass is built for each), for the
per-model cost, latency and fidelity figures. A leaf: imports nothing of the project."""
from __future__ import annotations

from typing import NamedTuple


class RequestCost(NamedTuple):
    """What cost and latency per model read of one request (a tuple: read by the 100,000)."""
    id: str
    endpoint: str
    status: str
    queue_time_s: float | None
    inference_time_s: float | None
    total_time_s: float | None
    estimated_cost: float | None
    images: int
    contender_id: str | None = None
    billed_cost: float | None = None   # what fal's billable units came to, once it said

    @property
    def cost(self) -> float | None:
        """What the request cost: fal's billed units at the price once known, else the estimate."""
        return self.billed_cost if self.billed_cost is not None else self.estimated_cost


class MetricRow(NamedTuple):
    """One result image of a completed request with the metrics the Leaderboard charts (a tuple:
    read by the 100,000 into a DataFrame)."""
    endpoint: str
    group_id: str | None
    request_id: str
    image_id: str
    face_status: str | None
    face_distance: float | None
    phash_distance: int | None
    ciede2000: float | None
    ssim: float | None
    metrics_at: str | None
    metrics_error: str | None
    check_flags: str
    contender_id: str | None = None
