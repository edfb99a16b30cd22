"""Fidelity metrics on real photos shipped with scikit-image (offline).

Faces: `data.astronaut()` (Eileen Collins) is the reference face. The only other human faces
installed are scikit-image's `lfw_subset` (Labeled Faces in the Wild crops, 25x25 grayscale),
upscaled here: low resolution, but real different people, enough to check that another person
is not called "the same person".
"""
from __future__ import annotations

import io
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from PIL import Image, ImageFilter, ImageOps
from skimage import data

from core.values import SAME_PERSON_THRESHOLD
from core.evaluation import metrics
from core.errors import DashboardError, MetricsError


def _png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


def _lfw_face(index: int, size: int = 200) -> Image.Image:
    crop = (data.lfw_subset()[index] * 255).astype(np.uint8)
    return Image.fromarray(crop).resize((size, size), Image.Resampling.BICUBIC).convert("RGB")


def face_of(reference, output):
    """The face result `metrics.measure` gives (the one way production measures)."""
    return metrics.measure(reference, output, same_framing=False).face


def phash_of(a, b):
    return metrics.measure(a, b, same_framing=False).phash_distance


def ciede_of(a, b):
    return metrics.measure(a, b, same_framing=False).ciede2000


def ssim_of(a, b):
    return metrics.measure(a, b, same_framing=True).ssim


@pytest.fixture(scope="module")
def astronaut() -> Image.Image:
    return Image.fromarray(data.astronaut())


@pytest.fixture(scope="module")
def gradient() -> Image.Image:
    ramp = np.tile(np.linspace(0, 255, 640, dtype=np.uint8), (480, 1))
    return Image.fromarray(np.stack([ramp, ramp[:, ::-1], np.full_like(ramp, 128)], -1))


def test_identical_image_has_zero_distances_and_full_ssim(astronaut):
    """The baseline every comparison relies on: an image against itself measures as identical."""
    result = metrics.measure(astronaut, astronaut.copy(), same_framing=True)
    assert result.face.status == "ok"
    assert result.face.distance == 0.0
    assert result.face.same_person is True
    assert result.face.faces_reference >= 1 and result.face.faces_output >= 1
    assert result.phash_distance == 0
    assert result.ciede2000 == 0.0
    assert result.ssim == pytest.approx(1.0)
    assert result.version == metrics.METRICS_VERSION


def test_bytes_and_images_give_the_same_measures(astronaut):
    """The store hands over file bytes, tests and pages hand PIL images: same pixels, same numbers."""
    blurred = astronaut.filter(ImageFilter.GaussianBlur(2))
    from_images = metrics.measure(astronaut, blurred, same_framing=True)
    from_bytes = metrics.measure(_png(astronaut), _png(blurred), same_framing=True)
    assert from_bytes == from_images


@pytest.mark.parametrize("change", ["blur", "mirror", "jpeg", "downscale", "upscale"])
def test_same_person_survives_ordinary_changes(astronaut, change):
    """A blurred, mirrored, recompressed or resized copy of the face is still the same person (< 0.6)."""
    if change == "blur":
        other = astronaut.filter(ImageFilter.GaussianBlur(2))
    elif change == "mirror":
        other = ImageOps.mirror(astronaut)
    elif change == "jpeg":
        buf = io.BytesIO()
        astronaut.save(buf, "JPEG", quality=70)
        other = buf.getvalue()
    elif change == "downscale":
        other = astronaut.resize((384, 384), Image.Resampling.LANCZOS)
    else:  # above the detection cap, so the downscaling path runs too
        other = astronaut.resize((1400, 1400), Image.Resampling.LANCZOS)
    face = face_of(astronaut, other)
    assert face.status == "ok"
    assert 0.0 < face.distance < SAME_PERSON_THRESHOLD
    assert face.same_person is True


@pytest.mark.parametrize("index", [0, 1, 2, 3])
def test_a_different_person_is_not_the_same_person(astronaut, index):
    """Faces of other people (LFW crops) measure above dlib's 0.6 threshold."""
    face = face_of(astronaut, _lfw_face(index))
    assert face.status == "ok"
    assert face.distance > SAME_PERSON_THRESHOLD
    assert face.same_person is False


def test_other_people_are_farther_than_any_copy_of_the_reference(astronaut):
    """The ranking the dashboard shows: every altered copy is closer than every other person."""
    copies = [astronaut.filter(ImageFilter.GaussianBlur(2)), ImageOps.mirror(astronaut),
              astronaut.resize((384, 384))]
    others = [_lfw_face(i) for i in range(4)]
    worst_copy = max(face_of(astronaut, c).distance for c in copies)
    nearest_other = min(face_of(astronaut, o).distance for o in others)
    assert worst_copy < nearest_other


def test_output_without_a_face_is_a_result_not_an_error(astronaut):
    """A landscape output (coffee cup) records "no_face_output"; the other metrics are still measured."""
    result = metrics.measure(astronaut, Image.fromarray(data.coffee()), same_framing=False)
    assert result.face.status == "no_face_output"
    assert result.face.faces_output == 0
    assert result.face.faces_reference >= 1
    assert result.face.distance is None and result.face.same_person is None
    assert result.phash_distance > 10
    assert result.ciede2000 > 10
    assert result.ssim is None


def test_reference_without_a_face_is_named_first(gradient, astronaut):
    """When the reference has no face, the output's face cannot be compared: "no_face_reference"."""
    assert face_of(gradient, astronaut).status == "no_face_reference"
    both_empty = face_of(gradient, Image.fromarray(data.coffee()))
    assert both_empty.status == "no_face_reference"
    assert (both_empty.faces_reference, both_empty.faces_output) == (0, 0)


def test_face_descriptor_reports_128_values_or_none(astronaut, gradient):
    vec, count = metrics.face_descriptor(astronaut)
    assert vec.shape == (128,) and count >= 1
    assert not vec.flags.writeable, "cached descriptors must not be mutable by callers"
    assert metrics.face_descriptor(gradient) == (None, 0)


def test_the_largest_face_is_compared(astronaut):
    """With two people in the picture, the larger face is the one measured."""
    canvas = Image.new("RGB", (900, 520), "white")
    canvas.paste(astronaut, (0, 0))            # her face is about 90 px wide
    canvas.paste(_lfw_face(0, 380), (515, 60))  # this face is about 300 px wide
    vec, count = metrics.face_descriptor(canvas)
    lfw_vec, _ = metrics.face_descriptor(_lfw_face(0, 380))
    astro_vec, _ = metrics.face_descriptor(astronaut)
    assert count >= 2
    assert np.linalg.norm(vec - lfw_vec) < 0.3
    assert np.linalg.norm(vec - astro_vec) > SAME_PERSON_THRESHOLD


def test_exif_orientation_is_applied(astronaut):
    """Phone photos arrive rotated with an EXIF orientation tag; the face must still be found upright."""
    rotated = astronaut.transpose(Image.Transpose.ROTATE_90)  # what the sensor stored
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display": undoes ROTATE_90 (which is counter-clockwise)
    buf = io.BytesIO()
    rotated.save(buf, "JPEG", quality=95, exif=exif)
    face = face_of(astronaut, buf.getvalue())
    assert face.status == "ok" and face.same_person is True
    assert phash_of(astronaut, buf.getvalue()) <= 4


def test_metrics_move_in_the_right_direction(astronaut):
    """A near copy scores closer than a different picture on every image metric."""
    near = astronaut.filter(ImageFilter.GaussianBlur(1))
    far = Image.fromarray(data.chelsea())
    assert phash_of(astronaut, near) < phash_of(astronaut, far)
    assert ciede_of(astronaut, near) < 2 < 10 < ciede_of(astronaut, far)
    assert ssim_of(astronaut, near) > 0.8 > 0.3 > ssim_of(astronaut, far)


def test_ssim_compares_same_framing_at_different_resolutions(astronaut):
    """An edit output at another resolution (same framing) is compared at a common size."""
    assert ssim_of(astronaut, astronaut.resize((1024, 1024))) > 0.95
    assert metrics.measure(astronaut, astronaut, same_framing=False).ssim is None


def test_other_image_modes_are_measured(astronaut):
    """Grayscale, RGBA and palette-with-transparency images decode without warnings (warnings fail tests)."""
    palette = astronaut.convert("P")
    palette.info["transparency"] = 0
    for img in (astronaut.convert("L"), astronaut.convert("RGBA"), palette):
        result = metrics.measure(astronaut, _png(img), same_framing=True)
        assert result.face.status == "ok"


def test_undecodable_bytes_raise_metrics_error(astronaut):
    with pytest.raises(MetricsError, match="could not be decoded") as info:
        metrics.measure(astronaut, b"<html>not an image</html>", same_framing=False)
    assert isinstance(info.value, DashboardError)
    truncated = _png(astronaut)[:2000]
    with pytest.raises(MetricsError):
        metrics.face_descriptor(truncated)


def test_dlib_failure_is_recorded_as_error_status(astronaut, dlib_fails):
    """A failure inside dlib must not kill a background measuring run: status "error" with detail."""
    face = face_of(astronaut, astronaut.rotate(3))
    assert face.status == "error"
    assert "Unsupported image type" in face.detail
    assert face.distance is None


def test_results_are_deterministic_and_thread_safe(astronaut, monkeypatch):
    """Background workers measure in parallel: results equal the serial ones, run after run."""
    outputs = [astronaut.filter(ImageFilter.GaussianBlur(r)) for r in (1, 2, 3)] + [ImageOps.mirror(astronaut)]
    serial = [metrics.measure(astronaut, o, same_framing=True) for o in outputs]
    monkeypatch.setattr(metrics, "_descriptors", type(metrics._descriptors)())  # recompute, not recall
    barrier = threading.Barrier(4)

    def run(o):
        barrier.wait()
        return metrics.measure(astronaut, o, same_framing=True)

    with ThreadPoolExecutor(4) as pool:
        parallel = list(pool.map(run, outputs))
    assert parallel == serial
