"""Models: the fal endpoints a team adds from fal's own OpenAPI documents, beside the built-in ones.

    service    add (from a file or fetched by id), list, show, refresh and adopt, archive, prices,
               and `install`: every added endpoint put into the registry for this process
"""
from core._surface import lazy

_EXPORTS = {"service": ""}
__all__ = sorted(_EXPORTS)
__getattr__ = lazy(__name__, _EXPORTS)
