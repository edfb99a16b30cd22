"""Upload checks and normalisation of reference photos (Pillow + pillow-heif).

What a stored reference photo is, whatever the user uploaded:
- Its type was read from the content, never from the file name. Accepted: JPEG (and MPO, the
  multi-picture JPEG some cameras write), PNG, WebP and HEIC/HEIF. BMP, TIFF, GIF and every other
  format are refused: phones and the web give the team JPEG/PNG/WebP/HEIC, and a narrow list
  keeps rarely used decoders (and their surprises: layers, pages, float samples) out of the path.
- Still images only: animated GIF/APNG/WebP are refused (which frame the user meant is a guess).
  Multi-picture stills use their primary image: MPO's first picture, HEIF's primary item.
- Fully decoded once (a truncated or corrupt file is refused, not half-stored), after the byte
  limit, the pixel limit (decompression bombs, checked from the header before any decoding) and
  the size checks have passed.
- Upright: EXIF orientation applied (HEIF's rotation is applied by libheif itself).
- Colours in sRGB: an embedded ICC profile (Display P3 from iPhones, Adobe RGB, CMYK press
  profiles) is converted to sRGB with LittleCMS and then dropped; without a profile the pixels
  are taken as sRGB (CMYK without a profile gets Pillow's plain conversion).
- 8-bit RGB, or RGBA when the image really has transparency: an alpha channel that is fully
  opaque is dropped. 16-bit samples are scaled (not clipped) to 8 bits.
- No metadata at all: the output is encoded from a fresh pixel buffer, so no EXIF, GPS, XMP,
  IPTC, ICC or text chunks survive.
- Fitted to `max_long_edge` (Lanczos), never upscaled; the short side after fitting must still
  be at least `min_short_side`.
- Encoded deterministically: JPEG quality 90 (optimised Huffman tables) when opaque, PNG when
  transparent. The same input gives the same bytes, so the sha256 of the stored bytes dedupes
  uploads. (A Pillow/libjpeg upgrade may change the bytes; a re-upload is then stored again.)

Reading a photo from a path (`read_photo_file`, for the command line and plan files) accepts
only a regular file and never reads more than the byte limit: a FIFO, a device (`/dev/zero`) or a
directory is refused at once without blocking, and a file over the limit (a 6 GB sparse file) is
refused from its size before any byte is read.

Every refusal is an `UploadRejected(reason, message)`; reasons: "empty", "too_large",
"not_an_image", "unsupported_format", "animated", "too_many_pixels", "too_small", "corrupt",
and from `read_photo_file` also "not_a_file", "unreadable".
"""
from __future__ import annotations

import hashlib
import io
import os
import stat
import threading
import warnings
import zlib
from dataclasses import dataclass

from PIL import Image, ImageCms, ImageOps, UnidentifiedImageError
from pillow_heif import register_heif_opener

from core.errors import UploadRejected

# Thumbnails/depth/aux images are never used: skipping them makes HEIC decoding cheaper and
# guarantees pillow-heif never hands back an embedded thumbnail instead of the photo.
register_heif_opener(thumbnails=False, depth_images=False, aux_images=False)
Image.init()

DEFAULT_MAX_BYTES = 20 * 1024 * 1024
DEFAULT_MAX_LONG_EDGE = 2048
DEFAULT_MIN_SHORT_SIDE = 256
# Pillow's own default limit (about 89.5 MP): above any phone's normal photo mode (48-64 MP).
DEFAULT_MAX_PIXELS = 89_478_485
JPEG_QUALITY = 90

ACCEPTED_FORMATS = frozenset({"JPEG", "MPO", "PNG", "WEBP", "HEIF"})
_ANIMATABLE = {"GIF", "PNG", "WEBP"}
_CONTENT_TYPES = {"JPEG": "image/jpeg", "MPO": "image/jpeg", "PNG": "image/png",
                  "WEBP": "image/webp", "HEIF": "image/heic", "GIF": "image/gif"}

# Image.open touches the process-wide warning filters (see _open); opens are header parses, so
# serialising them costs nothing and keeps two threads from restoring each other's filters.
_OPEN_LOCK = threading.Lock()


@dataclass(frozen=True)
class NormalisedImage:
    data: bytes
    content_type: str
    ext: str
    width: int
    height: int
    sha256: str
    source_format: str
    notes: tuple[str, ...] = ()


def normalise_upload(
    data: bytes,
    *,
    filename: str | None = None,
    max_bytes: int = DEFAULT_MAX_BYTES,
    max_long_edge: int = DEFAULT_MAX_LONG_EDGE,
    min_short_side: int = DEFAULT_MIN_SHORT_SIDE,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> NormalisedImage:
    """Check an uploaded file and return the bytes to store, or raise UploadRejected."""
    name = filename or "the file"
    if not data:
        raise UploadRejected("empty", f"{name} is empty (0 bytes). Choose the photo again and re-upload.")
    if len(data) > max_bytes:
        raise UploadRejected("too_large", _too_large(name, len(data), max_bytes))

    im = _open(data, name, max_pixels)
    fmt = im.format or "?"
    notes: list[str] = []
    if fmt not in ACCEPTED_FORMATS:
        raise UploadRejected(
            "unsupported_format",
            f"{name} is a {fmt} image; only JPEG, PNG, WebP and HEIC are accepted. "
            "Export it as JPEG or PNG and upload that.")
    frames = getattr(im, "n_frames", 1) or 1
    if frames > 1:
        notes.append(f"used the primary image of {frames} in the {fmt} file")

    width, height = _upright_size(im)
    target = _fit(width, height, max_long_edge)
    if min(width, height) < min_short_side:
        raise UploadRejected(
            "too_small",
            f"{name} is {width}x{height} px; reference photos need at least {min_short_side} px "
            "on the short side. Use a larger original.")
    if min(target) < min_short_side:
        raise UploadRejected(
            "too_small",
            f"{name} is {width}x{height} px: fitted to {max_long_edge} px on the long side its short "
            f"side would be {min(target)} px, under the {min_short_side} px minimum. "
            "Crop it to a less elongated shape.")

    if fmt in ("JPEG", "MPO") and target != (width, height):
        # DCT scaling decodes big JPEGs at 1/2, 1/4 or 1/8 size directly: far less memory and
        # time; every byte of the file is still read, so truncation is still detected.
        stored = (target[1], target[0]) if _swaps_axes(im) else target
        im.draft(None, stored)
    try:
        im.load()
    except UploadRejected:
        raise
    except (OSError, SyntaxError, ValueError, EOFError, zlib.error, Image.DecompressionBombError) as e:
        raise UploadRejected(
            "corrupt",
            f"{name} is damaged or incomplete ({_short(e)}): it could not be decoded to the end. "
            "Re-export or re-download the original and upload that.") from None

    metadata = _metadata_kinds(im)
    im = _upright(im, notes)
    im = _to_srgb_8bit(im, notes)
    if (width, height) != target:
        notes.append(f"downscaled from {width}x{height} to {target[0]}x{target[1]}")
    if im.size != target:  # after a JPEG draft the decoded size lies between the two
        im = im.resize(target, Image.Resampling.LANCZOS)
    if metadata:  # said only of what the file carried: a clean photo gets no such note
        notes.append(f"metadata removed ({', '.join(metadata)})")
    return _encode(im, fmt, notes)


def _metadata_kinds(im: Image.Image) -> list[str]:
    """The kinds of metadata the decoded file carries (EXIF, GPS, XMP, ICC profile, text), in that
    order; the stored copy carries none of them."""
    kinds = []
    try:
        exif = im.getexif()
        gps = exif.get_ifd(0x8825) if exif else {}
    except (OSError, ValueError, SyntaxError):
        exif, gps = {}, {}
    info = im.info
    if exif or info.get("exif"):
        kinds.append("EXIF")
    if gps:
        kinds.append("GPS")
    if info.get("xmp") or info.get("XML:com.adobe.xmp"):
        kinds.append("XMP")
    if info.get("icc_profile"):
        kinds.append("ICC profile")
    text_keys = set(getattr(im, "text", None) or {}) if im.format == "PNG" else set()
    if info.get("comment") or text_keys - {"XML:com.adobe.xmp"}:
        kinds.append("text")
    return kinds


def read_photo_file(path: str | os.PathLike[str], max_bytes: int = DEFAULT_MAX_BYTES) -> bytes:
    """The bytes of the photo file at `path`, read with a size cap, or UploadRejected.

    Opened without blocking (a FIFO with no writer would otherwise hang the open) and checked
    with fstat on the open descriptor, so the file cannot be swapped between check and read.
    """
    name = os.fspath(path)
    flags = os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOCTTY", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        raise UploadRejected("unreadable", f"cannot read {name}: no such file.") from None
    except IsADirectoryError:
        raise UploadRejected("not_a_file", f"{name} is a directory, not a regular file: give the "
                             "path of one image file.") from None
    except OSError as e:
        try:  # a socket cannot even be opened (ENXIO): name what it is instead
            mode = os.stat(path).st_mode
        except OSError:
            mode = stat.S_IFREG
        if not stat.S_ISREG(mode):
            raise UploadRejected("not_a_file", f"{name} is {_file_kind(mode)}, not a regular file: "
                                 "give the path of one image file.") from None
        raise UploadRejected("unreadable", f"cannot read {name}: {e.strerror or e}.") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise UploadRejected("not_a_file", f"{name} is {_file_kind(info.st_mode)}, not a regular "
                                 "file: give the path of one image file.")
        if info.st_size > max_bytes:
            raise UploadRejected("too_large", _too_large(name, info.st_size, max_bytes))
        os.set_blocking(fd, True)
        chunks: list[bytes] = []
        total = 0
        while True:
            chunk = os.read(fd, min(1 << 20, max_bytes + 1 - total))
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
            if total > max_bytes:  # the file grew after fstat
                raise UploadRejected("too_large", _too_large(name, total, max_bytes))
        return b"".join(chunks)
    except OSError as e:
        raise UploadRejected("unreadable", f"cannot read {name}: {e.strerror or e}.") from None
    finally:
        os.close(fd)


def _file_kind(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISFIFO(mode):
        return "a named pipe (FIFO)"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not a regular file"


def _too_large(name: str, size: int, max_bytes: int) -> str:
    return (f"{name} is {_mb(size)}, over the {_mb(max_bytes)} upload limit "
            "(DASHBOARD_MAX_UPLOAD_BYTES). Export a smaller JPEG and upload that.")


def image_info(data: bytes) -> tuple[str, int, int]:
    """(content type, width, height) from the header of an image, without decoding it.

    Raises UploadRejected("not_an_image" | "too_many_pixels") like `normalise_upload`.
    """
    im = _open(data, "the image", DEFAULT_MAX_PIXELS)
    fmt = im.format or ""
    content_type = _CONTENT_TYPES.get(fmt) or Image.MIME.get(fmt) or "application/octet-stream"
    return content_type, im.size[0], im.size[1]


# -- steps ---------------------------------------------------------------------------------------

def _open(data: bytes, name: str, max_pixels: int) -> Image.Image:
    with _OPEN_LOCK, warnings.catch_warnings():
        # Our own limit decides (below); Pillow's hard error at twice its limit still applies.
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            im = Image.open(io.BytesIO(data))
            if im.format in _ANIMATABLE and getattr(im, "is_animated", False):
                raise UploadRejected(
                    "animated",
                    f"{name} is animated ({im.n_frames} frames); reference photos must be still "
                    "images. Export the frame you want as JPEG or PNG and upload that.")
        except Image.DecompressionBombError:
            raise UploadRejected("too_many_pixels", _bomb_message(name, _header_size(data), max_pixels)) from None
        except UnidentifiedImageError:
            raise UploadRejected(
                "not_an_image",
                f"{name} is not an image we can read: it looks like {_sniff(data)}. "
                "Upload a JPEG, PNG, WebP or HEIC photo.") from None
        except (OSError, SyntaxError, ValueError, EOFError, zlib.error) as e:
            raise UploadRejected(
                "corrupt",
                f"{name} is damaged ({_short(e)}): its header cannot be read. "
                "Re-export or re-download the original and upload that.") from None
    if im.size[0] * im.size[1] > max_pixels:
        raise UploadRejected("too_many_pixels", _bomb_message(name, im.size, max_pixels))
    return im


def _bomb_message(name: str, size: tuple[int, int] | None, max_pixels: int) -> str:
    dims = f"{size[0]}x{size[1]} px ({size[0] * size[1] / 1e6:.1f} MP)" if size else "more pixels"
    return (f"{name} declares {dims}, above the {max_pixels / 1e6:.1f} MP limit: decoding it could "
            "exhaust memory (a decompression bomb). Resize it below the limit and upload that.")


def _header_size(data: bytes) -> tuple[int, int] | None:
    """The declared size of a PNG (the usual bomb carrier) without Pillow, for the message."""
    if data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR":
        return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    return None


def _swaps_axes(im: Image.Image) -> bool:
    return _orientation(im) in (5, 6, 7, 8)


def _orientation(im: Image.Image) -> int:
    try:
        value = im.getexif().get(0x0112, 1)
        return int(value) if value in range(1, 9) else 1
    except Exception:  # a broken EXIF block must not sink a good photo: treat as upright
        return 1


def _upright_size(im: Image.Image) -> tuple[int, int]:
    w, h = im.size
    return (h, w) if _swaps_axes(im) else (w, h)


def _fit(width: int, height: int, max_long_edge: int) -> tuple[int, int]:
    long_edge = max(width, height)
    if long_edge <= max_long_edge:
        return width, height
    scale = max_long_edge / long_edge
    return max(1, round(width * scale)), max(1, round(height * scale))


def _upright(im: Image.Image, notes: list[str]) -> Image.Image:
    orientation = _orientation(im)
    if orientation == 1:
        return im
    try:
        out = ImageOps.exif_transpose(im)
    except Exception:
        notes.append(f"EXIF orientation {orientation} could not be applied")
        return im
    notes.append(f"rotated per EXIF orientation {orientation}")
    return out


def _to_srgb_8bit(im: Image.Image, notes: list[str]) -> Image.Image:
    """RGB or RGBA, 8 bits per sample, colours converted to sRGB."""
    icc = im.info.get("icc_profile")
    mode = im.mode
    if mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
        # convert("L") clips 16-bit values at 255 (everything bright turns white): scale instead.
        im = im.convert("I").point(lambda v: v * (1 / 257)).convert("L")
        notes.append("16-bit samples scaled to 8-bit")
    elif mode == "1":
        im = im.convert("L")
    elif mode == "P":
        im = im.convert("RGBA" if "transparency" in im.info else "RGB")
        notes.append("palette expanded")
    elif mode in ("PA", "La"):
        im = im.convert("RGBA")
    elif mode == "RGBa":
        im = im.convert("RGBA")
    elif mode in ("YCbCr", "LAB", "HSV"):
        im = im.convert("RGB")

    alpha = None
    if im.mode in ("RGBA", "LA"):
        alpha = im.getchannel("A")
        im = im.convert("RGB" if im.mode == "RGBA" else "L")
        if alpha.getextrema()[0] == 255:
            notes.append("alpha channel fully opaque: dropped")
            alpha = None

    source_mode = im.mode
    if icc:
        im = _apply_icc(im, icc, notes)
    if im.mode != "RGB":
        im = im.convert("RGB")
        if source_mode == "CMYK" and not icc:
            notes.append("converted from CMYK (no ICC profile)")
    if alpha is not None:
        im.putalpha(alpha)
        notes.append("transparency kept (PNG)")
    return im


def _apply_icc(im: Image.Image, icc: bytes, notes: list[str]) -> Image.Image:
    try:
        src = ImageCms.ImageCmsProfile(io.BytesIO(icc))
        description = (ImageCms.getProfileDescription(src) or "").strip()
    except (ImageCms.PyCMSError, OSError, ValueError) as e:
        notes.append(f"unreadable ICC profile ignored ({_short(e)}); colours taken as sRGB")
        return im
    if "srgb" in description.lower() and im.mode == "RGB":
        return im
    try:
        out = ImageCms.profileToProfile(
            im, src, _SRGB, renderingIntent=ImageCms.Intent.PERCEPTUAL, outputMode="RGB")
    except ImageCms.PyCMSError as e:
        notes.append(f"ICC profile {description or '?'} not applicable to {im.mode} ({_short(e)}); ignored")
        return im
    notes.append(f"colours converted from ICC profile {description or '?'} to sRGB")
    return out


_SRGB = ImageCms.createProfile("sRGB")


def _encode(im: Image.Image, source_format: str, notes: list[str]) -> NormalisedImage:
    # A fresh image from raw pixels: nothing of the source's `info` (EXIF, XMP, ICC, text) can
    # reach the encoder by default.
    clean = Image.frombytes(im.mode, im.size, im.tobytes())
    buf = io.BytesIO()
    if clean.mode == "RGBA":
        clean.save(buf, "PNG", compress_level=6)
        content_type, ext = "image/png", "png"
    else:
        clean.save(buf, "JPEG", quality=JPEG_QUALITY, optimize=True, progressive=False)
        content_type, ext = "image/jpeg", "jpg"
    out = buf.getvalue()
    return NormalisedImage(
        data=out, content_type=content_type, ext=ext, width=clean.size[0], height=clean.size[1],
        sha256=hashlib.sha256(out).hexdigest(), source_format=source_format, notes=tuple(notes))


# -- messages ------------------------------------------------------------------------------------

def _mb(n: int) -> str:
    return f"{n / (1024 * 1024):.1f} MB"


def _short(e: BaseException) -> str:
    text = str(e).strip() or type(e).__name__
    return text if len(text) <= 120 else text[:117] + "..."


def _sniff(data: bytes) -> str:
    """A human guess at what a non-image file is, for the rejection message."""
    head = data[:1024]
    low = head.lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    if head.startswith(b"%PDF"):
        return "a PDF document (export the page as PNG or JPEG)"
    if low.startswith(b"<svg") or (low.startswith(b"<?xml") and b"<svg" in low):
        return "an SVG vector drawing (export it as PNG)"
    if low.startswith((b"<!doctype html", b"<html")) or b"<html" in low[:200]:
        return "an HTML page (perhaps a saved web page rather than the image itself)"
    if head[4:8] == b"ftyp":
        return "a video (MP4/MOV), not a photo"
    if head.startswith(b"PK\x03\x04"):
        return "a ZIP archive"
    if b"\x00" not in head:
        try:
            head.decode("utf-8")
            return "a text file"
        except UnicodeDecodeError:
            pass
    return "an unknown binary format"
