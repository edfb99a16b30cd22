"""Evaluation: how good the outputs are and which contender wins.

    metrics       fidelity of an output to its reference photo (face identity, phash, colour, SSIM)
    checks        response checks: what fal answered against what was asked
    measuring     one stored result image checked and measured, its outcome built
    pool          processes that measure while the caller stores the outcomes
    fidelity      the passes over pending images and the background worker that runs them
    review        blind review: items, stable hidden sides, votes
    pairing       the next blind pair when a group has many contenders
    stats         win rates (Wilson), Bradley-Terry (with bootstrap intervals), Elo, agreement
    leaderboard   what the blind votes say per contender, and the swept axes' win rates
    tally         cost, latency, fidelity and swept settings per contender: the Leaderboard's figures
    batch_parts   the all-batches cache: each batch's part of the figures, kept in the store
    grid          outputs on an X/Y grid of two swept settings
"""
from core._surface import lazy

_EXPORTS = {
    "metrics": "", "checks": "", "measuring": "", "pool": "", "fidelity": "", "review": "", "pairing": "",
    "stats": "", "leaderboard": "", "tally": "", "batch_parts": "", "grid": "",
    "start_background": "fidelity", "Vote": "stats",
}
__all__ = sorted(_EXPORTS)
__getattr__ = lazy(__name__, _EXPORTS)
