"""Upload checks: every corpus file ends as expected, and what is stored is clean and stable."""
from __future__ import annotations

import io
import os
import socket
import threading
import time

import pytest
from PIL import Image

from core.errors import UploadRejected
from core.photos.images import image_info, normalise_upload, read_photo_file
from tests.corpus import ACCEPTED, BY_NAME, CASES, Accept, Reject, build

# markers that betray metadata in the encoded bytes (JPEG APP1 EXIF/XMP, APP2 ICC, PNG chunks)
METADATA_MARKERS = (b"Exif\x00\x00", b"http://ns.adobe.com/xap", b"ICC_PROFILE", b"eXIf", b"iCCP",
                    b"tEXt", b"iTXt", b"zTXt", b"Apple", b"iPhone")


def _open(data: bytes) -> Image.Image:
    im = Image.open(io.BytesIO(data))
    im.load()
    return im


def test_corpus_is_large_enough():
    """The brief asks for at least 25 generated files, accepted and refused alike."""
    assert len(CASES) >= 25
    assert len({c.name for c in CASES}) == len(CASES)


@pytest.mark.parametrize("name", [c.name for c in CASES])
def test_corpus_file_ends_as_expected(name):
    """Each corpus file is either stored in the documented shape or refused with its reason."""
    case = BY_NAME[name]
    expect = case.expect
    if isinstance(expect, Reject):
        with pytest.raises(UploadRejected) as info:
            normalise_upload(build(name), filename=case.filename)
        assert info.value.reason == expect.reason, str(info.value)
        assert expect.message in str(info.value)
        return
    assert isinstance(expect, Accept)
    out = normalise_upload(build(name), filename=case.filename)
    assert (out.content_type, (out.width, out.height), out.source_format) == (
        expect.content_type, expect.size, expect.source_format)
    for note in expect.notes:
        assert any(note in n for n in out.notes), out.notes
    im = _open(out.data)
    assert im.format == {"image/jpeg": "JPEG", "image/png": "PNG"}[out.content_type]
    assert im.size == expect.size
    assert im.mode in ("RGB", "RGBA")
    if expect.check:
        expect.check(im)


@pytest.mark.parametrize("name", ACCEPTED)
def test_stored_image_keeps_no_metadata(name):
    """No EXIF (GPS, camera, dates), XMP, ICC or text chunk survives normalisation."""
    out = normalise_upload(build(name), filename=BY_NAME[name].filename)
    im = _open(out.data)
    assert not im.getexif()
    assert not {"exif", "xmp", "XML:com.adobe.xmp", "icc_profile", "dpi"} & set(im.info)
    for marker in METADATA_MARKERS:
        assert marker not in out.data, marker


@pytest.mark.parametrize("name", ACCEPTED)
def test_same_input_gives_same_bytes(name):
    """Dedupe relies on the sha256 of the stored bytes: normalising twice must agree."""
    first = normalise_upload(build(name))
    second = normalise_upload(build(name))
    assert first.data == second.data and first.sha256 == second.sha256


def test_selfie_gps_is_present_before_and_gone_after():
    """The corpus selfie really carries GPS and orientation 6; the stored image carries neither."""
    source = Image.open(io.BytesIO(build("exif_selfie_gps")))
    assert source.getexif()[0x0112] == 6
    assert source.getexif().get_ifd(0x8825)[1] == "N"
    out = normalise_upload(build("exif_selfie_gps"))
    stored = _open(out.data)
    assert not stored.getexif() and not stored.getexif().get_ifd(0x8825)
    assert (out.width, out.height) == (900, 1200)


def test_big_sideways_jpeg_is_rotated_and_fitted():
    """A 4000x3000 phone photo stored sideways (orientation 6) becomes 1536x2048, upright:
    the reduced-size JPEG decode must request the size in stored orientation."""
    exif = Image.Exif()
    exif[0x0112] = 6
    im = Image.new("RGB", (4000, 3000), (20, 20, 220))
    im.paste((220, 20, 20), (0, 0, 4000, 1500))
    buf = io.BytesIO()
    im.save(buf, "JPEG", exif=exif, quality=90)
    out = normalise_upload(buf.getvalue(), max_long_edge=1024)
    assert (out.width, out.height) == (768, 1024)
    stored = _open(out.data)
    assert stored.getpixel((700, 512))[0] > 200     # red moved to the right
    assert stored.getpixel((50, 512))[2] > 200      # blue on the left
    assert "downscaled from 3000x4000 to 768x1024" in out.notes


def test_multi_picture_jpeg_uses_first_picture():
    """MPO files (some cameras' JPEGs with a second picture) are stills: the first picture is kept."""
    first = Image.new("RGB", (600, 400), (220, 20, 20))
    second = Image.new("RGB", (600, 400), (20, 20, 220))
    buf = io.BytesIO()
    first.save(buf, "MPO", save_all=True, append_images=[second])
    out = normalise_upload(buf.getvalue(), filename="stereo.jpg")
    assert out.source_format == "MPO" and out.content_type == "image/jpeg"
    assert _open(out.data).getpixel((300, 200))[0] > 200
    assert any("primary image of 2" in n for n in out.notes)


def test_limits_come_from_the_arguments():
    """Byte, pixel and edge limits are the caller's (settings), not constants."""
    data = build("jpeg_named_png")
    assert normalise_upload(data, max_bytes=len(data)).width == 800
    with pytest.raises(UploadRejected) as info:
        normalise_upload(data, max_bytes=len(data) - 1)
    assert info.value.reason == "too_large"
    with pytest.raises(UploadRejected) as info:
        normalise_upload(data, max_pixels=800 * 600 - 1, filename="a.jpg")
    assert info.value.reason == "too_many_pixels"
    assert "a.jpg declares 800x600 px" in str(info.value)
    assert (normalise_upload(data, max_long_edge=400).width, normalise_upload(data, max_long_edge=400).height) == (400, 300)
    with pytest.raises(UploadRejected) as info:
        normalise_upload(data, min_short_side=601)
    assert info.value.reason == "too_small"


def test_message_names_the_file_or_says_the_file():
    with pytest.raises(UploadRejected, match="^the file is empty"):
        normalise_upload(b"")
    with pytest.raises(UploadRejected, match="^holiday.jpg is empty"):
        normalise_upload(b"", filename="holiday.jpg")


def test_small_images_are_never_upscaled():
    out = normalise_upload(build("short_side_256"))
    assert (out.width, out.height) == (256, 400)
    assert not any("downscaled" in n for n in out.notes)


@pytest.mark.parametrize("name, expected", [
    ("jpeg_named_png", ("image/jpeg", 800, 600)),
    ("rgba_png", ("image/png", 500, 400)),
    ("webp", ("image/webp", 640, 480)),
    ("heic", ("image/heic", 800, 600)),
])
def test_image_info_reads_type_and_size_from_the_header(name, expected):
    assert image_info(build(name)) == expected


def test_image_info_refuses_non_images_and_bombs():
    with pytest.raises(UploadRejected) as info:
        image_info(b"<html></html>")
    assert info.value.reason == "not_an_image"
    with pytest.raises(UploadRejected) as info:
        image_info(build("png_bomb_400mp"))
    assert info.value.reason == "too_many_pixels"


# -- reading a photo file from a path ------------------------------------------------------------

def _read_in_thread(path, max_bytes=20 * 1024 * 1024, limit_s=5.0):
    """read_photo_file in a thread: a hang fails the test instead of blocking the suite."""
    outcome: dict = {}

    def run():
        try:
            outcome["data"] = read_photo_file(path, max_bytes)
        except BaseException as e:  # noqa: BLE001 - handed to the test
            outcome["error"] = e

    thread = threading.Thread(target=run, daemon=True)
    started = time.monotonic()
    thread.start()
    thread.join(limit_s)
    assert not thread.is_alive(), f"read_photo_file({path}) hung"
    return outcome, time.monotonic() - started


def test_read_photo_file_reads_a_regular_file_and_follows_symlinks(tmp_path):
    data = build("webp")
    (tmp_path / "p.webp").write_bytes(data)
    (tmp_path / "link.webp").symlink_to(tmp_path / "p.webp")
    assert read_photo_file(tmp_path / "p.webp") == data
    assert read_photo_file(str(tmp_path / "link.webp")) == data


def test_read_photo_file_refuses_a_fifo_without_hanging(tmp_path):
    fifo = tmp_path / "photo.jpg"
    os.mkfifo(fifo)
    outcome, elapsed = _read_in_thread(fifo)
    error = outcome["error"]
    assert isinstance(error, UploadRejected) and error.reason == "not_a_file"
    assert str(error) == f"{fifo} is a named pipe (FIFO), not a regular file: give the path of one image file."
    assert elapsed < 2


@pytest.mark.skipif(not os.path.exists("/dev/zero"), reason="no /dev/zero")
def test_read_photo_file_refuses_dev_zero_before_reading_a_byte():
    outcome, _ = _read_in_thread("/dev/zero")
    assert isinstance(outcome["error"], UploadRejected) and outcome["error"].reason == "not_a_file"
    assert "is a device" in str(outcome["error"])


def test_read_photo_file_refuses_a_directory_and_a_socket(tmp_path):
    with pytest.raises(UploadRejected, match="is a directory, not a regular file") as info:
        read_photo_file(tmp_path)
    assert info.value.reason == "not_a_file"
    path = tmp_path / "s.sock"
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(path))
        with pytest.raises(UploadRejected, match="is a socket"):
            read_photo_file(path)


def test_read_photo_file_refuses_a_huge_sparse_file_from_its_size(tmp_path):
    """A 6 GB sparse file must be refused from its size, without reading it into memory."""
    huge = tmp_path / "huge.jpg"
    with open(huge, "wb") as f:
        f.truncate(6 * 1024 ** 3)
    outcome, elapsed = _read_in_thread(huge)
    error = outcome["error"]
    assert isinstance(error, UploadRejected) and error.reason == "too_large"
    assert "6144.0 MB, over the 20.0 MB upload limit (DASHBOARD_MAX_UPLOAD_BYTES)" in str(error)
    assert elapsed < 2


def test_read_photo_file_caps_at_the_limit(tmp_path):
    path = tmp_path / "p.bin"
    path.write_bytes(b"x" * 2049)
    assert read_photo_file(path, 2049) == b"x" * 2049
    with pytest.raises(UploadRejected) as info:
        read_photo_file(path, 2048)
    assert info.value.reason == "too_large"


def test_read_photo_file_missing_file(tmp_path):
    with pytest.raises(UploadRejected, match="cannot read .*nope.jpg: no such file") as info:
        read_photo_file(tmp_path / "nope.jpg")
    assert info.value.reason == "unreadable"


def test_the_metadata_note_names_only_what_the_file_carried():
    """A clean photo gets no "metadata removed" note; one with EXIF is told its EXIF went."""
    clean = io.BytesIO()
    Image.new("RGB", (640, 480), "red").save(clean, "JPEG")
    assert not any("metadata" in n for n in normalise_upload(clean.getvalue(), filename="c.jpg").notes)
    exif = Image.Exif()
    exif[0x010F] = "PhoneMaker"
    tagged = io.BytesIO()
    Image.new("RGB", (640, 480), "red").save(tagged, "JPEG", exif=exif.tobytes())
    notes = normalise_upload(tagged.getvalue(), filename="t.jpg").notes
    assert "metadata removed (EXIF)" in notes
