"""Evaluation: fidelity metrics, review, statistics and comparison."""
