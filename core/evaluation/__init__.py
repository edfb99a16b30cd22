"""Evaluation: how good the outputs are and which contender wins.

    metrics      fidelity of an output to its reference photo (face identity, phash, colour, SSIM)
    fidelity     the background worker that measures stored results, and response checks
    review       blind review: items, stable hidden sides, votes
    pairing      the next blind pair when a group has many contenders
    stats        win rates (Wilson), Bradley-Terry (with bootstrap intervals), Elo, agreement
    comparison   the leaderboard, cost and latency, fidelity per contender, the comparison CSV
"""
from core._surface import lazy

_EXPORTS = {
    "metrics": "", "fidelity": "", "review": "", "pairing": "", "stats": "", "comparison": "", "grid": "",
    "start_background": "fidelity", "Vote": "stats",
}
__all__ = sorted(_EXPORTS)
__getattr__ = lazy(__name__, _EXPORTS)
