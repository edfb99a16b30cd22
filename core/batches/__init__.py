"""Batches: plans, the runner and the fal client."""
