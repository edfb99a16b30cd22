"""Models: the fal endpoints a team adds from fal's own OpenAPI documents, beside the built-in ones.

    service    add (from a file or fetched by id), list, show, refresh and adopt, archive, prices,
               and `install`: every added endpoint put into the registry for this process

`install_added_models(store)` is the one call a process makes after opening its store.
"""
from typing import Any

from core._surface import lazy

_EXPORTS = {"service": ""}
__all__ = ["install_added_models", "service"]
_lazy = lazy(__name__, _EXPORTS)


def install_added_models(store: Any) -> None:
    """Put the endpoints the team added into this process's registry, for every process that
    plans, sends or shows batches after opening its store. Most stores have none: one cheap read,
    and the service (document reader, jsonschema) is imported only when there are some."""
    if store.has_models():
        from core.models import service

        service.install(store)


def __getattr__(name: str) -> Any:
    return _lazy(name)
