"""Every test here that takes `settings` or `st` runs on both engines (tests/engines.py)."""
from tests.engines import *  # noqa: F403
