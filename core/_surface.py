"""How a package of `core` declares its public surface without paying for it at import time.

Each package's `__init__` names what callers may use (`__all__`) and where it lives; a name is
imported the first time it is asked for (PEP 562 module `__getattr__`). So `python -m core` and
the batch runner import only what they use (start-up time matters there), while the surface is
still written down in one place and tested (tests/test_public_surface.py).
"""
from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any


def lazy(package: str, exports: Mapping[str, str]) -> Callable[[str], Any]:
    """A module `__getattr__` for `package`: `exports` maps each public name to the submodule
    (relative to the package) that defines it; a submodule exports itself with ""."""

    def __getattr__(name: str) -> Any:
        where = exports.get(name)
        if where is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        if where == "":
            return importlib.import_module(f"{package}.{name}")
        return getattr(importlib.import_module(f"{package}.{where}"), name)

    return __getattr__
