"""Each fidelity metric computed on its own, from the two photos: the reference `metrics.measure`
is checked against (it prepares a reference once and computes every metric in one pass).
Production has one way to measure (`measure`); these were its public single-metric functions."""
from __future__ import annotations

import numpy as np

from core.evaluation import metrics
from core.values import is_same_person


def face_distance(reference: metrics.ImageInput, output: metrics.ImageInput) -> metrics.FaceResult:
    """Identity distance between the reference's face and the output's face.

    A missing face is a status, not an error; when both lack a face the reference is named.
    """
    ref_img, out_img = metrics._to_rgb(reference), metrics._to_rgb(output)
    try:
        ref_vec, ref_n = metrics.face_descriptor(ref_img)
        out_vec, out_n = metrics.face_descriptor(out_img)
    except RuntimeError as exc:  # dlib reports its failures as RuntimeError
        return metrics.FaceResult("error", None, None, 0, 0, detail=f"dlib: {exc}")
    if ref_vec is None:
        return metrics.FaceResult("no_face_reference", None, None, ref_n, out_n)
    if out_vec is None:
        return metrics.FaceResult("no_face_output", None, None, ref_n, out_n)
    distance = float(np.linalg.norm(ref_vec - out_vec))
    return metrics.FaceResult("ok", distance, is_same_person("ok", distance), ref_n, out_n)


def phash_distance(a: metrics.ImageInput, b: metrics.ImageInput) -> int:
    """Hamming distance (0-64) between perceptual hashes; 0 for identical images."""
    return int(metrics._phash(metrics._to_rgb(a)) - metrics._phash(metrics._to_rgb(b)))


def ciede2000(a: metrics.ImageInput, b: metrics.ImageInput) -> float:
    """Mean CIEDE2000 difference, pixel by pixel, of both images squashed to a small square.

    Below ~2 is hard to see; above ~10 is a clearly different palette or layout.
    """
    from skimage.color import deltaE_ciede2000
    return float(np.mean(deltaE_ciede2000(metrics._lab(metrics._to_rgb(a)), metrics._lab(metrics._to_rgb(b)))))


def ssim(a: metrics.ImageInput, b: metrics.ImageInput) -> float:
    """Structural similarity (1.0 identical) of the grayscale images at `a`'s aspect ratio.

    Meaningful only when both images frame the same scene (an edit of the reference).
    """
    from skimage.metrics import structural_similarity
    img_a, img_b = metrics._to_rgb(a), metrics._to_rgb(b)
    size = metrics._ssim_size(img_a)
    return float(structural_similarity(metrics._ssim_gray(img_a.convert("L"), size),
                                       metrics._ssim_gray(img_b.convert("L"), size), data_range=1.0))
