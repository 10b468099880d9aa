"""One image decoder for dataset files and uploads alike.

Why one function: a model must see at prediction time exactly the pixels it saw in training, so the folder
loaders and the Classify page both go through :func:`decode_image`.

Why it is careful about memory: an upload is hostile until decoded. A 16-megapixel 16-bit RGBA PNG is a
133 KB file but 128 MB of pixels, and float copies of it took a demo server from 700 MB to 1.55 GB. So:

- the header is read first (by Pillow, lazily, without decoding pixels) and an image whose declared size
  exceeds ``max_pixels`` is refused before any pixel is decoded;
- JPEG is decoded at reduced scale by OpenCV's ``IMREAD_REDUCED_*`` modes when the target is much smaller
  than the file (the DCT does the reduction, so a 48 MP photo never exists at full size);
- every other format is decoded once by Pillow, which keeps at most 4 bytes a pixel (16-bit colour samples
  become 8-bit while the file is read), and refused beforehand if that buffer would exceed
  :data:`DECODE_BUDGET_BYTES`. The image is then converted and box-reduced in horizontal strips with Pillow's
  integer operations: alpha is composited on white, 16-bit gray scaled to 8 bits, EXIF orientation applied to
  the small result. No full-size copy, float or otherwise, is ever made.
"""

from __future__ import annotations

import io
import os
import struct
import warnings

import numpy as np

os.environ.setdefault("OPENCV_IO_MAX_IMAGE_PIXELS", str(2**27))
import cv2  # noqa: E402  (the limit above must be set before OpenCV reads it)
from PIL import ExifTags, Image, UnidentifiedImageError  # noqa: E402

DEFAULT_MAX_PIXELS = 50_000_000
"""Above any phone camera (a 12 MP photo is 12e6) and far below what would exhaust memory."""

DECODE_BUDGET_BYTES = 256 * 2**20
"""The most memory one decode may hold at full resolution (Pillow's buffer of the whole image): 50 MP of
8-bit RGBA is 200 MB. A file that would need more is refused from its header, whatever ``max_pixels`` says."""

STRIP_BYTES = 8 * 2**20
"""Full-resolution rows converted at a time (their copies are the only other per-pixel memory)."""

SUPPORTED_FORMATS = {"JPEG", "PNG", "BMP", "WEBP", "TIFF", "GIF"}
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif"}
FORMAT_NAMES = "JPEG, PNG, WebP, BMP, TIFF or GIF"
"""The formats above as a person reads them: the upload box and every refusal say the same list."""
_DAMAGED = (OSError, ValueError, SyntaxError, EOFError, struct.error)
"""What Pillow raises for truncated or malformed files."""


class ImageError(ValueError):
    """An image that cannot be used; the message is meant for the user."""


def read_header(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> tuple[str, int, int]:
    """Format name, width and height from the header alone."""
    if not data:
        raise ImageError("The file is empty.")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # our own limit is checked below
            with Image.open(io.BytesIO(data)) as img:
                fmt, (width, height) = img.format or "", img.size
    except Image.DecompressionBombError as exc:  # Pillow's own guard fires on open for enormous headers
        raise ImageError(_too_many_pixels(max_pixels)) from exc
    except (UnidentifiedImageError, *_DAMAGED) as exc:
        raise ImageError(f"This is not an image we can read ({FORMAT_NAMES} expected).") from exc
    if fmt not in SUPPORTED_FORMATS:
        raise ImageError(f"Unsupported image format {fmt or 'unknown'}; use {FORMAT_NAMES}.")
    return fmt, width, height


def _too_many_pixels(max_pixels: int, width: int | None = None, height: int | None = None) -> str:
    size = f"{width}×{height} = {width * height / 1e6:.3g} megapixels" if width else "its header declares more"
    return (f"The image is too large ({size}; this app decodes images of up to {max_pixels / 1e6:g} megapixels, "
            f"{max_pixels:,} pixels). Scale it down and try again.")


def decode_image(
    data: bytes,
    *,
    size: int | tuple[int, int] | None = None,
    grayscale: bool = False,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> np.ndarray:
    """Decode image bytes to an upright uint8 array: ``HxWx3`` RGB, or ``HxWx1`` when ``grayscale``.

    Handles EXIF orientation (phone photos), grayscale, palette, RGBA/LA (composited on white, so a
    transparent background does not turn black), and 16-bit files (scaled to 8 bits). ``size`` resizes to
    a square side or ``(width, height)`` with area interpolation.
    """
    fmt, width, height = read_header(data, max_pixels)
    if width * height > max_pixels:
        raise ImageError(_too_many_pixels(max_pixels, width, height))
    target = (size, size) if isinstance(size, int) else size
    if fmt == "JPEG":
        image = _decode_jpeg(data, width, height, target)
    else:
        image = _decode_reduced(data, target)
    if grayscale:
        image = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)[..., None]
    if target is not None and (image.shape[1], image.shape[0]) != target:
        interp = cv2.INTER_AREA if image.shape[1] > target[0] else cv2.INTER_LINEAR
        image = cv2.resize(image, target, interpolation=interp)
        if grayscale:
            image = image[..., None]
    return np.ascontiguousarray(image)


# ---------------------------------------------------------------------------------------------- JPEG
def _decode_jpeg(data: bytes, width: int, height: int, target: tuple[int, int] | None) -> np.ndarray:
    """JPEG is 8-bit without alpha; OpenCV's IMREAD_COLOR/REDUCED modes apply EXIF orientation."""
    image = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), _reduced_flag(width, height, target))
    if image is None:
        raise ImageError("The JPEG file is damaged and could not be decoded.")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def _reduced_flag(width: int, height: int, target: tuple[int, int] | None) -> int:
    """Largest JPEG DCT down-scale that still leaves at least twice the target resolution."""
    if target is None:
        return cv2.IMREAD_COLOR
    for factor, flag in ((8, cv2.IMREAD_REDUCED_COLOR_8), (4, cv2.IMREAD_REDUCED_COLOR_4),
                         (2, cv2.IMREAD_REDUCED_COLOR_2)):
        if min(width, height) // factor >= 2 * max(target):
            return flag
    return cv2.IMREAD_COLOR


# ------------------------------------------------------------------------------------ every other format
def _decode_reduced(data: bytes, target: tuple[int, int] | None) -> np.ndarray:
    """PNG, BMP, WEBP, TIFF, GIF (first frame): 8-bit RGB, box-reduced to at least twice ``target``."""
    try:
        with Image.open(io.BytesIO(data)) as img:
            width, height = img.size
            need = width * height * _bytes_per_pixel(img.mode)
            if need > DECODE_BUDGET_BYTES:
                raise ImageError(f"The image is too large to decode here ({width}×{height} {img.mode} needs "
                                 f"{need / 2**20:.0f} MB; at most {DECODE_BUDGET_BYTES / 2**20:.0f} MB). Scale "
                                 "it down or save it as JPEG.")
            orientation = img.getexif().get(ExifTags.Base.Orientation, 1)
            upright = (height, width) if orientation in (5, 6, 7, 8) else (width, height)
            factor = _box_factor(upright, target)
            img.load()
            if img.mode in ("RGB", "L"):  # Pillow box-reduces these as they are, in one call
                image = np.asarray((img.reduce(factor) if factor > 1 else img).convert("RGB"))
            else:
                step = max(factor, STRIP_BYTES // (4 * width) // factor * factor)
                image = np.concatenate([_reduced_strip(img.crop((0, top, width, min(height, top + step))), factor)
                                        for top in range(0, height, step)])
    except ImageError:
        raise
    except _DAMAGED as exc:
        raise ImageError("The image file is damaged and could not be decoded.") from exc
    return _upright(image, orientation)


def _bytes_per_pixel(mode: str) -> int:
    """What Pillow keeps per pixel: one byte for 1/L/P, two for 16-bit gray, four for everything else."""
    if mode in ("1", "L", "P"):
        return 1
    return 2 if mode.startswith("I;16") else 4


def _box_factor(size: tuple[int, int], target: tuple[int, int] | None) -> int:
    """Largest integer box reduction that keeps at least twice the target (the final resize does the rest),
    like the JPEG path's DCT scaling."""
    if target is None:
        return 1
    return max(1, min(size[0] // (2 * target[0]), size[1] // (2 * target[1])))


def _reduced_strip(strip: Image.Image, factor: int) -> np.ndarray:
    """One strip of rows as 8-bit RGB, box-reduced by ``factor``.

    Transparency is composited on white after premultiplying (Pillow's ``RGBa``), so averaging never mixes
    the colour of invisible pixels into visible ones: a premultiplied sample ``c·a/255`` on white is
    ``c·a/255 + 255 - a``, exact in integers. 16-bit gray is scaled like ``v // 257``.
    """
    if strip.mode.startswith("I") or strip.mode == "F":
        values = np.asarray(strip)
        if strip.mode.startswith("I;16"):
            values = values // 257
        strip = Image.fromarray(np.clip(values, 0, 255).astype(np.uint8))
    if strip.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in strip.info:
        premultiplied = (strip if strip.mode == "RGBA" else strip.convert("RGBA")).convert("RGBa")
        pixels = np.asarray(premultiplied.reduce(factor) if factor > 1 else premultiplied)
        return pixels[..., :3] + (255 - pixels[..., 3:])
    rgb = strip.convert("RGB")
    return np.asarray(rgb.reduce(factor) if factor > 1 else rgb)


def _upright(image: np.ndarray, orientation: int) -> np.ndarray:
    """Apply an EXIF orientation (as ``PIL.ImageOps.exif_transpose`` would) to the small decoded image."""
    turns = {2: lambda a: a[:, ::-1], 3: lambda a: a[::-1, ::-1], 4: lambda a: a[::-1],
             5: lambda a: a.transpose(1, 0, 2), 6: lambda a: np.rot90(a, -1),
             7: lambda a: a.transpose(1, 0, 2)[::-1, ::-1], 8: lambda a: np.rot90(a, 1)}
    return np.ascontiguousarray(turns[orientation](image)) if orientation in turns else image
