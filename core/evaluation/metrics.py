"""Fidelity of an output image to its reference photo, measured locally and offline.

What is measured (all on decoded RGB, EXIF orientation applied):
- face identity: dlib's HOG frontal face detector (upsampled once, dlib's default threshold) on a
  copy whose long edge is at most `_DETECT_LONG_EDGE` px (never upscaled); the largest face (among
  faces of about the same size, the most confident); 5-point landmarks; dlib's ResNet 128-d
  descriptor (no jitter); Euclidean distance. dlib calls two faces the same person below
  `SAME_PERSON_THRESHOLD` (0.6). `faces_*` counts every detection, weak ones included.
- `phash_distance`: Hamming distance of `imagehash.phash` (64 bits); 0 for identical images.
- `ciede2000`: mean CIEDE2000 colour difference of both images squashed to `_COLOUR_SIZE` squared.
- `ssim`: SSIM of the grayscale images resized to the first image's aspect, long edge `_SSIM_LONG_EDGE`.
  Only meaningful when both share a framing (edit outputs), so `measure` gives None otherwise.

Invariants:
- Deterministic: the same pixels give the same numbers (fixed resampling, no jitter, no randomness).
- "No face found" is a result (`FaceResult.status`), never an exception; an image that cannot be
  decoded raises `MetricsError`; a dlib failure on a decoded image is status "error".
- Models load once per process, lazily, under a lock; dlib's objects are not documented as
  thread-safe, so inference runs under the same lock (resizing and hashing run outside it).
- Work that depends on the reference alone (its face descriptor, perceptual hash, Lab colours and
  grayscale copy for SSIM) is done once per reference: `prepare_reference` keeps it in a
  `PreparedReference`, which `measure` accepts in place of the photo, with the same numbers.
- Any change to a size, threshold, model or algorithm here changes stored numbers: bump
  `METRICS_VERSION`, which every `Fidelity` carries.
"""
from __future__ import annotations

import hashlib
import io
import threading
import warnings
from collections import OrderedDict
from dataclasses import dataclass
from typing import Union

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from core.errors import MetricsError
from core.values import is_same_person  # the one same-person rule

METRICS_VERSION = "1"

# 800 px keeps HOG detection near 0.2 s on this class of machine (1024 px: ~0.5 s) while a
# portrait's face stays far above the ~40 px the once-upsampled detector needs.
_DETECT_LONG_EDGE = 800
_COLOUR_SIZE = 64
_SSIM_LONG_EDGE = 256
_DESCRIPTOR_CACHE_SIZE = 64
_SAME_SIZE = 0.8

ImageInput = Union[bytes, bytearray, memoryview, Image.Image]


@dataclass(frozen=True)
class FaceResult:
    """Identity comparison. `distance`/`same_person` are set only when status is "ok"."""
    status: str
    distance: float | None
    same_person: bool | None
    faces_reference: int
    faces_output: int
    detail: str | None = None


@dataclass(frozen=True)
class Fidelity:
    face: FaceResult
    phash_distance: int
    ciede2000: float
    ssim: float | None
    version: str = METRICS_VERSION


@dataclass(frozen=True, eq=False)
class PreparedReference:
    """What `measure` needs from a reference photo, computed once and compared with many outputs.

    `face_error` is dlib's failure on the reference (then every output measures status "error").
    Arrays are read-only: one prepared reference is shared by every output of a pass."""
    descriptor: np.ndarray | None
    faces: int
    face_error: str | None
    phash: object  # imagehash.ImageHash
    lab: np.ndarray
    ssim_size: tuple[int, int]
    gray: np.ndarray


@dataclass(frozen=True)
class _Models:
    detector: object
    predictor: object
    encoder: object


_lock = threading.Lock()
_models: _Models | None = None
# Reference photos are compared with many outputs: their descriptors are kept by pixel hash.
_descriptors: OrderedDict[str, tuple[np.ndarray | None, int]] = OrderedDict()


def _load_models() -> _Models:
    """Caller holds `_lock`."""
    global _models
    if _models is None:
        import dlib
        # face_recognition_models imports pkg_resources, which newer setuptools deprecates
        # loudly; the warning is about that package, not about us.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            warnings.simplefilter("ignore", UserWarning)
            import face_recognition_models as frm
            predictor_path = frm.pose_predictor_five_point_model_location()
            encoder_path = frm.face_recognition_model_location()
        _models = _Models(
            detector=dlib.get_frontal_face_detector(),
            predictor=dlib.shape_predictor(predictor_path),
            encoder=dlib.face_recognition_model_v1(encoder_path),
        )
    return _models


def _to_rgb(image: ImageInput) -> Image.Image:
    """Decode (if bytes), apply EXIF orientation, return an RGB image."""
    if isinstance(image, Image.Image):
        img = image
    else:
        try:
            img = Image.open(io.BytesIO(bytes(image)))
            img.load()
        except (UnidentifiedImageError, Image.DecompressionBombError, OSError, ValueError) as exc:
            raise MetricsError(
                f"cannot measure: the image could not be decoded ({exc}); "
                "re-upload the photo or re-fetch the output") from exc
    img = ImageOps.exif_transpose(img)
    if img.mode == "RGB":
        return img
    # Palette images with transparency must go through RGBA (PIL warns otherwise).
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    return img.convert("RGB")


def _detection_copy(img: Image.Image) -> np.ndarray:
    scale = _DETECT_LONG_EDGE / max(img.size)
    if scale < 1:
        size = (max(1, round(img.width * scale)), max(1, round(img.height * scale)))
        img = img.resize(size, Image.Resampling.LANCZOS)
    return np.ascontiguousarray(np.asarray(img, dtype=np.uint8))


def _pixel_key(img: Image.Image) -> str:
    digest = hashlib.sha256(img.tobytes())
    digest.update(f"{img.size}".encode())
    return digest.hexdigest()


def _main_face(rects, scores) -> int:
    """Index of the largest face. HOG detections come in pyramid steps, so a weak false hit can be
    as large as the real face: faces within `_SAME_SIZE` of the largest area count as equally
    large, and among those the detector's most confident one wins."""
    largest = max(r.area() for r in rects)
    candidates = [i for i, r in enumerate(rects) if r.area() >= _SAME_SIZE * largest]
    return max(candidates, key=lambda i: (scores[i], rects[i].area(), -i))


def _describe(img: Image.Image) -> tuple[np.ndarray | None, int]:
    """`face_descriptor` of an RGB image without the cache (an output is measured once)."""
    arr = _detection_copy(img)
    with _lock:
        models = _load_models()
        rects, scores, _ = models.detector.run(arr, 1, 0.0)
        if len(rects) == 0:
            return None, 0
        best = _main_face(rects, scores)
        shape = models.predictor(arr, rects[best])
        vec = np.array(models.encoder.compute_face_descriptor(arr, shape), dtype=np.float64)
    vec.setflags(write=False)
    return vec, len(rects)


def face_descriptor(image: ImageInput) -> tuple[np.ndarray | None, int]:
    """The 128-d descriptor of the largest face (None when no face) and how many faces were found.

    The returned array is read-only (it may be shared through the cache).
    Raises `MetricsError` if bytes cannot be decoded; dlib's own failures propagate as RuntimeError.
    """
    img = _to_rgb(image)
    key = _pixel_key(img)
    with _lock:
        cached = _descriptors.get(key)
        if cached is not None:
            _descriptors.move_to_end(key)
            return cached
    result = _describe(img)
    with _lock:
        _descriptors[key] = result
        if len(_descriptors) > _DESCRIPTOR_CACHE_SIZE:
            _descriptors.popitem(last=False)
    return result


def _phash(img: Image.Image):
    """imagehash's phash; it converts to grayscale first, so an "L" copy gives the same hash."""
    import imagehash
    return imagehash.phash(img)


def _lab(img: Image.Image) -> np.ndarray:
    from skimage.color import rgb2lab
    return rgb2lab(np.asarray(img.resize((_COLOUR_SIZE, _COLOUR_SIZE), Image.Resampling.BOX), dtype=np.uint8))


def _ssim_size(img: Image.Image) -> tuple[int, int]:
    scale = _SSIM_LONG_EDGE / max(img.size)
    return max(7, round(img.width * scale)), max(7, round(img.height * scale))


def _ssim_gray(gray: Image.Image, size: tuple[int, int]) -> np.ndarray:
    """`gray` is the image in mode "L"."""
    return np.asarray(gray.resize(size, Image.Resampling.LANCZOS), dtype=np.float64) / 255.0


def _readonly(arr: np.ndarray) -> np.ndarray:
    arr.setflags(write=False)
    return arr


def prepare_reference(reference: ImageInput) -> PreparedReference:
    """Everything `measure` computes from the reference alone, once (its face through the
    descriptor cache). Raises `MetricsError` if bytes cannot be decoded."""
    return _prepare(_to_rgb(reference))


def _prepare(img: Image.Image) -> PreparedReference:
    try:
        descriptor, faces = face_descriptor(img)
        face_error = None
    except RuntimeError as exc:  # dlib reports its failures as RuntimeError
        descriptor, faces, face_error = None, 0, f"dlib: {exc}"
    gray = img.convert("L")
    size = _ssim_size(img)
    return PreparedReference(descriptor=descriptor, faces=faces, face_error=face_error, phash=_phash(gray),
                             lab=_readonly(_lab(img)), ssim_size=size, gray=_readonly(_ssim_gray(gray, size)))


def _face(ref: PreparedReference, out: Image.Image) -> FaceResult:
    """`face_distance` against a prepared reference: same statuses, same order of checks."""
    if ref.face_error is not None:
        return FaceResult("error", None, None, 0, 0, detail=ref.face_error)
    try:
        out_vec, out_n = _describe(out)
    except RuntimeError as exc:
        return FaceResult("error", None, None, 0, 0, detail=f"dlib: {exc}")
    if ref.descriptor is None:
        return FaceResult("no_face_reference", None, None, ref.faces, out_n)
    if out_vec is None:
        return FaceResult("no_face_output", None, None, ref.faces, out_n)
    distance = float(np.linalg.norm(ref.descriptor - out_vec))
    return FaceResult("ok", distance, is_same_person("ok", distance), ref.faces, out_n)


def measure(reference: ImageInput | PreparedReference, output: ImageInput, *,
            same_framing: bool) -> Fidelity:
    """All fidelity metrics of `output` against `reference`. `same_framing` enables SSIM.

    Pass a `PreparedReference` to compare many outputs with one photo: the numbers are the same."""
    from skimage.color import deltaE_ciede2000
    from skimage.metrics import structural_similarity

    ref_img = None if isinstance(reference, PreparedReference) else _to_rgb(reference)
    out = _to_rgb(output)
    ref = reference if isinstance(reference, PreparedReference) else _prepare(ref_img)
    gray = out.convert("L")
    return Fidelity(
        face=_face(ref, out),
        phash_distance=int(ref.phash - _phash(gray)),
        ciede2000=float(np.mean(deltaE_ciede2000(ref.lab, _lab(out)))),
        ssim=(float(structural_similarity(ref.gray, _ssim_gray(gray, ref.ssim_size), data_range=1.0))
              if same_framing else None),
        version=METRICS_VERSION,
    )
