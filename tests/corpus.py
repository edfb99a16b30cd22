"""The bad-input corpus: files people really upload (and a few hostile ones), generated at test
time, each with the outcome the upload checks must give.

`CASES` names every case and its expectation without building anything, so pytest can
parametrize on it; `build(case)` returns the file's bytes (cached per process: some cases cost a
second to make). `write_corpus(dir)` writes them all to a folder (for the CLI and for people).
"""
from __future__ import annotations

import functools
import io
import random
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import pillow_heif
from PIL import Image, ImageCms


@dataclass(frozen=True)
class Accept:
    """Accepted: the stored image has this type and size, these notes, and passes `check`."""
    content_type: str
    size: tuple[int, int]
    source_format: str
    notes: tuple[str, ...] = ()          # substrings that must appear among the notes
    check: Callable[[Image.Image], None] | None = None


@dataclass(frozen=True)
class Reject:
    """Refused with this reason code and a message containing `message`."""
    reason: str
    message: str


@dataclass(frozen=True)
class Case:
    name: str
    filename: str
    make: Callable[[], bytes] = field(repr=False)
    expect: Accept | Reject


# -- builders ------------------------------------------------------------------------------------

def _save(im: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt, **kw)
    return buf.getvalue()


def _noise(size: tuple[int, int], mode: str = "RGB", seed: int = 0) -> Image.Image:
    """Incompressible pixels, so a cut file really loses image data."""
    bands = len(Image.new(mode, (1, 1)).getbands())
    return Image.frombytes(mode, size, random.Random(seed).randbytes(size[0] * size[1] * bands))


def _halves(size: tuple[int, int], top=(220, 20, 20), bottom=(20, 20, 220)) -> Image.Image:
    """Top half one colour, bottom half another: orientation is visible in the pixels."""
    im = Image.new("RGB", size, bottom)
    im.paste(top, (0, 0, size[0], size[1] // 2))
    return im


def _raw_png(width: int, height: int, *, bit_depth: int = 1, color_type: int = 0) -> bytes:
    """A valid PNG of zeros built chunk by chunk: bombs need no memory to make."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    channels = {0: 1, 2: 3, 4: 2, 6: 4}[color_type]
    row = b"\x00" * (1 + (width * bit_depth * channels + 7) // 8)
    comp = zlib.compressobj(9)
    rows_per_step = 256
    parts = [comp.compress(row * min(rows_per_step, height - y)) for y in range(0, height, rows_per_step)]
    idat = b"".join(parts) + comp.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, color_type, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def _jpeg(size=(800, 600), **kw) -> bytes:
    return _save(_halves(size), "JPEG", quality=90, **kw)


def _truncated_jpeg() -> bytes:
    data = _save(_noise((1024, 768)), "JPEG", quality=95)
    return data[: len(data) * 6 // 10]


def _truncated_png() -> bytes:
    data = _save(_noise((600, 400)), "PNG")
    return data[: len(data) // 2]


def _selfie_with_gps() -> bytes:
    """A phone selfie stored sideways (orientation 6) with camera and GPS EXIF tags."""
    exif = Image.Exif()
    exif[0x0112] = 6                     # Orientation: rotate 90 CW to display
    exif[0x010F] = "Apple"               # Make
    exif[0x0110] = "iPhone 15 Pro"       # Model
    exif[0x0132] = "2026:01:02 03:04:05"  # DateTime
    gps = exif.get_ifd(0x8825)
    gps.update({1: "N", 2: (52.0, 22.0, 30.5), 3: "E", 4: (4.0, 53.0, 12.25)})
    return _save(_halves((1200, 900)), "JPEG", quality=90, exif=exif)


def _cmyk_jpeg() -> bytes:
    return _save(Image.new("CMYK", (600, 400), (0, 255, 255, 0)), "JPEG", quality=95)


def _png_16bit() -> bytes:
    # mid grey in 16 bits: 32896 / 257 = 128; clipping would make it 255 (white)
    return _save(Image.new("I;16", (512, 384), 32896), "PNG")


def _palette_transparent() -> bytes:
    im = Image.new("P", (400, 300), 1)
    im.putpalette([0, 0, 0, 30, 160, 40] + [0] * (256 * 3 - 6))
    im.paste(0, (0, 0, 100, 100))
    return _save(im, "PNG", transparency=0)


def _animated(fmt: str, frames: int) -> bytes:
    ims = [Image.new("RGB", (300, 300), (i * 60, 100, 200)) for i in range(frames)]
    return _save(ims[0], fmt, save_all=True, append_images=ims[1:], duration=100, loop=0)


def _heic() -> bytes:
    buf = io.BytesIO()
    pillow_heif.from_pillow(_halves((800, 600))).save(buf, quality=80)
    return buf.getvalue()


def _la_png() -> bytes:
    im = Image.new("LA", (400, 400), (128, 255))
    im.paste((128, 0), (0, 0, 200, 400))
    return _save(im, "PNG")


def _rgba_png(opaque: bool) -> bytes:
    im = Image.new("RGBA", (500, 400), (10, 200, 30, 255))
    if not opaque:
        im.paste((0, 0, 0, 0), (0, 0, 250, 400))
    return _save(im, "PNG")


def _huge_bytes() -> bytes:
    # a real JPEG followed by padding: refused on size before any parsing
    return _jpeg() + b"\x00" * (21 * 1024 * 1024)


def _jpeg_with_xmp() -> bytes:
    xmp = (b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
           b'<rdf:Description xmlns:photoshop="http://ns.adobe.com/photoshop/1.0/" photoshop:City="Amsterdam"/>'
           b"</rdf:RDF></x:xmpmeta>")
    return _jpeg(xmp=xmp)


def _jpeg_with_srgb_icc() -> bytes:
    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    return _jpeg(icc_profile=icc)


def _icc_swapped_primaries() -> bytes:
    """A minimal ICC v2 RGB matrix profile whose red and blue primaries are swapped.

    Pure red tagged with it is sRGB blue: after a real colour conversion the stored pixel must
    be blue, which proves the profile was applied (not merely dropped).
    """
    def s15(v: float) -> bytes:
        return struct.pack(">i", round(v * 65536))

    def xyz(x, y, z) -> bytes:
        return b"XYZ " + b"\0" * 4 + s15(x) + s15(y) + s15(z)

    desc_text = b"Swapped RB test\0"
    desc = (b"desc" + b"\0" * 4 + struct.pack(">I", len(desc_text)) + desc_text
            + b"\0" * 8 + b"\0" * 3 + b"\0" * 67)
    curve = b"curv" + b"\0" * 4 + struct.pack(">IH", 1, 0x0233) + b"\0\0"  # gamma 2.2 (u8Fixed8)
    tags = [(b"desc", desc), (b"wtpt", xyz(0.9642, 1.0, 0.8249)), (b"cprt", b"text" + b"\0" * 4 + b"none\0"),
            # sRGB's D50-adapted colorants, red and blue exchanged
            (b"rXYZ", xyz(0.1431, 0.0606, 0.7141)), (b"gXYZ", xyz(0.3851, 0.7169, 0.0971)),
            (b"bXYZ", xyz(0.4361, 0.2225, 0.0139)),
            (b"rTRC", curve), (b"gTRC", curve), (b"bTRC", curve)]
    offset = 128 + 4 + 12 * len(tags)
    table, body = b"", b""
    for sig, data in tags:
        data += b"\0" * (-len(data) % 4)
        table += sig + struct.pack(">II", offset + len(body), len(data))
        body += data
    size = offset + len(body)
    header = (struct.pack(">I", size) + b"lcms" + struct.pack(">I", 0x02100000) + b"mntrRGB XYZ "
              + struct.pack(">6H", 2026, 1, 1, 0, 0, 0) + b"acsp" + b"\0" * 24
              + struct.pack(">I", 0) + s15(0.9642) + s15(1.0) + s15(0.8249) + b"\0" * 48)
    assert len(header) == 128
    return header + struct.pack(">I", len(tags)) + table + body


def _red_with_swapped_icc() -> bytes:
    return _save(Image.new("RGB", (600, 400), (255, 0, 0)), "PNG", icc_profile=_icc_swapped_primaries())


def _check_blue(im: Image.Image) -> None:
    assert _near(im.getpixel((300, 200)), (0, 0, 255), tol=25), im.getpixel((300, 200))


def _mov_header() -> bytes:
    return b"\x00\x00\x00\x14ftypqt  \x00\x00\x00\x00qt  " + b"\x00" * 200


# -- checks on the stored image ------------------------------------------------------------------

def _near(actual, expected, tol=12) -> bool:
    return all(abs(a - e) <= tol for a, e in zip(actual, expected))


def _check_rotated(im: Image.Image) -> None:
    # stored red-top/blue-bottom, orientation 6 (90 CW): red is now on the right
    w, h = im.size
    assert _near(im.getpixel((w - 10, h // 2)), (220, 20, 20)), im.getpixel((w - 10, h // 2))
    assert _near(im.getpixel((10, h // 2)), (20, 20, 220)), im.getpixel((10, h // 2))


def _check_upright(im: Image.Image) -> None:
    w, h = im.size
    assert _near(im.getpixel((w // 2, 10)), (220, 20, 20)), im.getpixel((w // 2, 10))
    assert _near(im.getpixel((w // 2, h - 10)), (20, 20, 220)), im.getpixel((w // 2, h - 10))


def _check_red(im: Image.Image) -> None:
    assert _near(im.getpixel((300, 200)), (255, 0, 0), tol=20), im.getpixel((300, 200))


def _check_mid_grey(im: Image.Image) -> None:
    assert im.mode == "RGB"
    assert _near(im.getpixel((256, 192)), (128, 128, 128), tol=3), im.getpixel((256, 192))


def _check_palette_alpha(im: Image.Image) -> None:
    assert im.mode == "RGBA"
    assert im.getpixel((10, 10))[3] == 0
    assert im.getpixel((300, 200)) == (30, 160, 40, 255)


def _check_half_transparent(im: Image.Image) -> None:
    assert im.mode == "RGBA"
    assert im.getpixel((10, 10))[3] == 0
    assert im.getpixel((im.size[0] - 10, 10))[3] == 255


def _check_rgb(im: Image.Image) -> None:
    assert im.mode == "RGB"


# -- the cases -----------------------------------------------------------------------------------

JPEG, PNG = "image/jpeg", "image/png"

CASES: list[Case] = [
    Case("jpeg_named_png", "photo.png", _jpeg, Accept(JPEG, (800, 600), "JPEG", check=_check_upright)),
    Case("zero_bytes", "empty.jpg", lambda: b"", Reject("empty", "empty.jpg is empty (0 bytes)")),
    Case("text_named_jpg", "notes.jpg", lambda: b"shopping list\nmilk\neggs\n",
         Reject("not_an_image", "notes.jpg is not an image we can read: it looks like a text file")),
    Case("truncated_jpeg", "cut.jpg", _truncated_jpeg, Reject("corrupt", "cut.jpg is damaged or incomplete")),
    Case("truncated_png", "cut.png", _truncated_png, Reject("corrupt", "cut.png is damaged or incomplete")),
    Case("png_bomb_400mp", "bomb.png", lambda: _raw_png(20000, 20000),
         Reject("too_many_pixels", "bomb.png declares 20000x20000 px (400.0 MP), above the 89.5 MP limit")),
    Case("png_bomb_100mp", "big.png", lambda: _raw_png(10000, 10000),
         Reject("too_many_pixels", "big.png declares 10000x10000 px (100.0 MP), above the 89.5 MP limit")),
    Case("one_pixel", "dot.png", lambda: _save(Image.new("RGB", (1, 1)), "PNG"),
         Reject("too_small", "dot.png is 1x1 px; reference photos need at least 256 px")),
    Case("wide_30000", "panorama.png", lambda: _raw_png(30000, 1000, bit_depth=8),
         Reject("too_small", "its short side would be 68 px, under the 256 px minimum")),
    Case("cmyk_jpeg", "print.jpg", _cmyk_jpeg,
         Accept(JPEG, (600, 400), "JPEG", ("converted from CMYK",), _check_red)),
    Case("png_16bit", "scan16.png", _png_16bit,
         Accept(JPEG, (512, 384), "PNG", ("16-bit samples scaled to 8-bit",), _check_mid_grey)),
    Case("palette_transparent", "logo.png", _palette_transparent,
         Accept(PNG, (400, 300), "PNG", ("transparency kept",), _check_palette_alpha)),
    Case("animated_gif", "wave.gif", lambda: _animated("GIF", 3),
         Reject("animated", "wave.gif is animated (3 frames)")),
    Case("animated_webp", "wave.webp", lambda: _animated("WEBP", 2),
         Reject("animated", "wave.webp is animated (2 frames)")),
    Case("animated_png", "wave.png", lambda: _animated("PNG", 4),
         Reject("animated", "wave.png is animated (4 frames)")),
    Case("exif_selfie_gps", "IMG_0001.JPG", _selfie_with_gps,
         Accept(JPEG, (900, 1200), "JPEG", ("rotated per EXIF orientation 6",), _check_rotated)),
    Case("heic", "IMG_0002.HEIC", _heic, Accept(JPEG, (800, 600), "HEIF", check=_check_upright)),
    Case("webp", "product.webp", lambda: _save(_halves((640, 480)), "WEBP", quality=90),
         Accept(JPEG, (640, 480), "WEBP", check=_check_upright)),
    Case("grayscale", "bw.jpg", lambda: _save(_noise((512, 512), "L"), "JPEG"),
         Accept(JPEG, (512, 512), "JPEG", check=_check_rgb)),
    Case("la_png", "ghost.png", _la_png, Accept(PNG, (400, 400), "PNG", ("transparency kept",), _check_half_transparent)),
    Case("rgba_png", "cutout.png", lambda: _rgba_png(opaque=False),
         Accept(PNG, (500, 400), "PNG", ("transparency kept",), _check_half_transparent)),
    Case("rgba_opaque_png", "screenshot.png", lambda: _rgba_png(opaque=True),
         Accept(JPEG, (500, 400), "PNG", ("alpha channel fully opaque: dropped",), _check_rgb)),
    Case("huge_bytes", "huge.jpg", _huge_bytes,
         Reject("too_large", "huge.jpg is 21.0 MB, over the 20.0 MB upload limit")),
    Case("svg", "logo.svg.png", lambda: b'<?xml version="1.0"?>\n<svg xmlns="http://www.w3.org/2000/svg" '
         b'width="500" height="500"><rect width="500" height="500"/></svg>',
         Reject("not_an_image", "it looks like an SVG vector drawing")),
    Case("html", "image.jpg", lambda: b"<!DOCTYPE html>\n<html><body><img src='x.jpg'></body></html>",
         Reject("not_an_image", "it looks like an HTML page")),
    Case("pdf", "scan.jpg", lambda: b"%PDF-1.7\n1 0 obj\n<< /Type /Catalog >>\nendobj\n%%EOF\n",
         Reject("not_an_image", "it looks like a PDF document")),
    Case("mov", "IMG_0003.HEIC", _mov_header, Reject("not_an_image", "it looks like a video (MP4/MOV)")),
    Case("bmp", "paint.bmp", lambda: _save(_halves((400, 300)), "BMP"),
         Reject("unsupported_format", "paint.bmp is a BMP image; only JPEG, PNG, WebP and HEIC are accepted")),
    Case("tiff", "scan.tif", lambda: _save(_halves((400, 300)), "TIFF"),
         Reject("unsupported_format", "scan.tif is a TIFF image; only JPEG, PNG, WebP and HEIC are accepted")),
    Case("still_gif", "still.gif", lambda: _save(_halves((400, 300)), "GIF"),
         Reject("unsupported_format", "still.gif is a GIF image")),
    Case("jpeg_with_xmp", "xmp.jpg", _jpeg_with_xmp, Accept(JPEG, (800, 600), "JPEG", check=_check_upright)),
    Case("jpeg_with_srgb_icc", "srgb.jpg", _jpeg_with_srgb_icc, Accept(JPEG, (800, 600), "JPEG", check=_check_upright)),
    Case("icc_swapped_primaries", "wide-gamut.png", _red_with_swapped_icc,
         Accept(JPEG, (600, 400), "PNG", ("colours converted from ICC profile Swapped RB test to sRGB",), _check_blue)),
    Case("progressive_jpeg", "prog.jpg", lambda: _jpeg(progressive=True),
         Accept(JPEG, (800, 600), "JPEG", check=_check_upright)),
    Case("large_4000x3000", "camera.jpg", lambda: _jpeg((4000, 3000)),
         Accept(JPEG, (2048, 1536), "JPEG", ("downscaled from 4000x3000 to 2048x1536",), _check_upright)),
    Case("short_side_256", "edge.png", lambda: _save(_halves((256, 400)), "PNG"),
         Accept(JPEG, (256, 400), "PNG", check=_check_upright)),
    Case("short_side_255", "edge.png", lambda: _save(_halves((255, 400)), "PNG"),
         Reject("too_small", "edge.png is 255x400 px; reference photos need at least 256 px on the short side")),
]

BY_NAME = {c.name: c for c in CASES}
ACCEPTED = [c.name for c in CASES if isinstance(c.expect, Accept)]
REJECTED = [c.name for c in CASES if isinstance(c.expect, Reject)]


@functools.cache
def build(name: str) -> bytes:
    return BY_NAME[name].make()


def write_corpus(directory: Path) -> dict[str, Path]:
    """Write every case to `directory/<name>/<filename>`; returns name -> path."""
    out = {}
    for case in CASES:
        path = Path(directory) / case.name / case.filename
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(build(case.name))
        out[case.name] = path
    return out
