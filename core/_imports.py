"""Importing a library without the optional extras it loads only when they are installed.

Some libraries import heavy optional packages at import time for a feature this project never
uses: sqlite-utils maps pandas' and numpy's scalar types (~0.5 s), httpx builds its command-line
client from click and pygments (~0.03 s, then fails without rich). `hidden(...)` makes those
names unimportable for the duration of one import, so the library takes its "not installed"
path; names already imported are left alone, and all stay importable afterwards.
"""
from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator


@contextlib.contextmanager
def hidden(*names: str) -> Iterator[None]:
    missing = [name for name in names if name not in sys.modules]
    sys.modules.update(dict.fromkeys(missing))
    try:
        yield
    finally:
        for name in missing:
            if sys.modules.get(name, "") is None:
                del sys.modules[name]
