"""Response checks: what fal answered against what was asked, for one result image.

The checks compare the size the request asked for (`registry.output_size`) with the pixels stored
and the size fal reported, the seed sent with the seed returned, and read fal's NSFW flag.

Invariants:
- A surprise is a code from `CHECK_FLAGS`, in that order; an answer with none has no flags.
  `ResponseCheck.flags` is what `result_images.check_flags` stores (space-separated).
- A size differing by at most `ASPECT_TOLERANCE` in shape is a size surprise only, not an aspect one.
- Pure: `check_response` reads no store and no bytes; `requested_size` and `reported` read only
  the registry and the stored response, and say None where there is nothing to compare with
  (an endpoint no longer in the registry, a response of another shape).
- Cheap to import (no numpy, PIL or dlib): the background worker imports it on its start-up path.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from core.catalog import registry
from core.errors import DashboardError, FalBadResponse
from core.fal.values import parse_output

CHECK_FLAGS = (
    "size_mismatch",        # stored pixels differ from the requested width x height
    "aspect_mismatch",      # ... and so does the shape (aspect ratio off by more than ASPECT_TOLERANCE)
    "reported_size_wrong",  # fal's width/height in the response differ from the stored pixels
    "seed_mismatch",        # the response's seed differs from the seed sent
    "seed_missing",         # a seed was sent and the response carries none
    "nsfw",                 # fal flagged the image (has_nsfw_concepts)
    "unreadable",           # the stored image could not be read or decoded
)
ASPECT_TOLERANCE = 0.02


@dataclass(frozen=True)
class ResponseCheck:
    """What fal answered against what was asked, for one image. Sizes are (width, height)."""
    requested: tuple[int, int] | None
    reported: tuple[int, int] | None
    pixels: tuple[int, int] | None
    seed_sent: int | None
    seed_returned: int | None
    nsfw: bool | None
    flags: tuple[str, ...]



def check_response(*, requested: tuple[int, int] | None, reported: tuple[int, int] | None,
                   pixels: tuple[int, int] | None, seed_sent: int | None, seed_returned: int | None,
                   nsfw: bool | None, readable: bool = True) -> ResponseCheck:
    """Compare one image of fal's answer with the request. Pure: no store, no bytes."""
    flags: list[str] = []
    actual = pixels or reported
    if requested and actual and tuple(actual) != tuple(requested):
        flags.append("size_mismatch")
        want, got = requested[0] / requested[1], actual[0] / actual[1]
        if abs(got / want - 1) > ASPECT_TOLERANCE:
            flags.append("aspect_mismatch")
    if reported and pixels and tuple(reported) != tuple(pixels):
        flags.append("reported_size_wrong")
    if seed_sent is not None:
        if seed_returned is None:
            flags.append("seed_missing")
        elif int(seed_returned) != int(seed_sent):
            flags.append("seed_mismatch")
    if nsfw:
        flags.append("nsfw")
    if not readable:
        flags.append("unreadable")
    return ResponseCheck(requested, reported, pixels, seed_sent, seed_returned, nsfw, tuple(flags))


def sent_seed(payload: Mapping[str, Any], group_seed: int | None) -> int | None:
    """The seed the request sent: its payload's, else its group's."""
    seed = payload.get("seed")
    if isinstance(seed, int) and not isinstance(seed, bool):
        return seed
    return group_seed


def requested_size(endpoint: str, payload: Mapping[str, Any]) -> tuple[int, int] | None:
    try:
        return registry.output_size(endpoint, dict(payload))
    except (DashboardError, KeyError, TypeError, ValueError):
        return None  # an endpoint no longer in the registry: nothing to compare with


def reported(response: Any, idx: int) -> tuple[tuple[int, int] | None, int | None]:
    """(fal's width/height of image idx, the seed fal returned) from the stored response, read
    with the client's own parser; a response of another shape reports nothing."""
    try:
        output = parse_output(response)
    except FalBadResponse:
        return None, None
    if idx < len(output.images):
        image = output.images[idx]
        if image.width and image.height:
            return (image.width, image.height), output.seed
    return None, output.seed
