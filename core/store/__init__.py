"""The store: SQLite rows and image blobs."""
from core.store.records import *  # noqa: F401,F403  (temporary re-export while the Store object lands)
from core.store.records import _pid_alive  # noqa: F401
