"""Reference photos: upload checks and normalisation (images), and references: dedupe, the URL
a stored payload carries and the one fal receives, the reachability check before a batch sends,
and the clean-up of objects a failed upload left behind.
"""
from core._surface import lazy

_EXPORTS = {
    "images": "", "references": "",
    "normalise_upload": "images", "read_photo_file": "images", "image_info": "images",
    "add_reference": "references", "check_reachable": "references", "fal_url": "references",
    "payload_url": "references", "resolve_payload": "references", "sweep_orphans": "references",
}
__all__ = sorted(_EXPORTS)
__getattr__ = lazy(__name__, _EXPORTS)
