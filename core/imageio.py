"""One image decoder for dataset files and uploads alike.

Why one function: a model must see at prediction time exactly the pixels it saw in training, so the folder
loaders and the Classify page both go through :func:`decode_image`. It refuses hostile files cheaply: the
header is read (by Pillow, lazily, without decoding pixels) and an image whose declared size exceeds
``max_pixels`` is rejected before any pixel is decoded. JPEG is decoded at reduced scale by OpenCV's
``IMREAD_REDUCED_*`` modes when the target is much smaller than the file, which bounds time and memory.
"""

from __future__ import annotations

import io
import os

import numpy as np

os.environ.setdefault("OPENCV_IO_MAX_IMAGE_PIXELS", str(2**27))
import cv2  # noqa: E402  (the limit above must be set before OpenCV reads it)
from PIL import Image, UnidentifiedImageError  # noqa: E402

DEFAULT_MAX_PIXELS = 50_000_000
"""Above any phone camera (a 12 MP photo is 12e6) and far below what would exhaust memory."""

SUPPORTED_FORMATS = {"JPEG", "PNG", "BMP", "WEBP", "TIFF", "GIF"}
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif"}


class ImageError(ValueError):
    """An image that cannot be used; the message is meant for the user."""


def read_header(data: bytes) -> tuple[str, int, int]:
    """Format name, width and height from the header alone."""
    if not data:
        raise ImageError("The file is empty.")
    try:
        with Image.open(io.BytesIO(data)) as img:
            fmt, (width, height) = img.format or "", img.size
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise ImageError("This is not an image we can read (JPEG or PNG expected).") from exc
    except Image.DecompressionBombError as exc:  # Pillow's own size guard fires on open for huge files
        raise ImageError(f"The image is too large to decode safely ({exc}).") from exc
    if fmt not in SUPPORTED_FORMATS:
        raise ImageError(f"Unsupported image format {fmt or 'unknown'}; use JPEG or PNG.")
    return fmt, width, height


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
    fmt, width, height = read_header(data)
    if width * height > max_pixels:
        raise ImageError(
            f"The image declares {width}x{height} pixels, more than the {max_pixels:,} allowed."
        )
    target = (size, size) if isinstance(size, int) else size
    image = _decode_pixels(data, fmt, width, height, target)
    image = _to_rgb(image)
    if grayscale:
        image = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)[..., None]
    if target is not None and (image.shape[1], image.shape[0]) != target:
        interp = cv2.INTER_AREA if image.shape[1] > target[0] else cv2.INTER_LINEAR
        image = cv2.resize(image, target, interpolation=interp)
        if grayscale:
            image = image[..., None]
    return np.ascontiguousarray(image)


def _decode_pixels(data: bytes, fmt: str, width: int, height: int, target: tuple[int, int] | None):
    buf = np.frombuffer(data, dtype=np.uint8)
    if fmt == "JPEG":
        # JPEG is 8-bit without alpha; IMREAD_COLOR/REDUCED apply EXIF orientation.
        flag = _reduced_flag(width, height, target)
        image = cv2.imdecode(buf, flag)
        if image is None:
            raise ImageError("The JPEG file is damaged and could not be decoded.")
        return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    if fmt in ("PNG", "BMP", "WEBP", "TIFF"):
        image = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED)
        if image is not None:
            return _bgr_to_rgb_any(image)
    return _decode_with_pillow(data)


def _reduced_flag(width: int, height: int, target: tuple[int, int] | None) -> int:
    """Largest JPEG DCT down-scale that still leaves at least twice the target resolution."""
    if target is None:
        return cv2.IMREAD_COLOR
    for factor, flag in ((8, cv2.IMREAD_REDUCED_COLOR_8), (4, cv2.IMREAD_REDUCED_COLOR_4),
                         (2, cv2.IMREAD_REDUCED_COLOR_2)):
        if min(width, height) // factor >= 2 * max(target):
            return flag
    return cv2.IMREAD_COLOR


def _bgr_to_rgb_any(image: np.ndarray) -> np.ndarray:
    if image.ndim == 2:
        return image
    if image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2RGBA)
    if image.shape[2] == 3:
        return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    return image


def _decode_with_pillow(data: bytes) -> np.ndarray:
    """Formats OpenCV does not decode (GIF) or files it refuses; EXIF-transposed."""
    from PIL import ImageOps

    try:
        with Image.open(io.BytesIO(data)) as img:
            img = ImageOps.exif_transpose(img)
            if img.mode not in ("L", "RGB", "RGBA", "LA", "I;16", "I"):
                img = img.convert("RGBA")
            return np.asarray(img)
    except (OSError, ValueError, SyntaxError) as exc:
        raise ImageError("The image file is damaged and could not be decoded.") from exc


def _to_rgb(image: np.ndarray) -> np.ndarray:
    """Any decoded array (gray/GA/RGB/RGBA, 8/16-bit) to 8-bit RGB."""
    if image.dtype == np.uint16:
        image = (image // 257).astype(np.uint8)
    elif image.dtype != np.uint8:
        image = np.clip(image, 0, 255).astype(np.uint8)
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[..., 0]
    if image.ndim == 2:
        return np.stack([image] * 3, axis=-1)
    if image.shape[2] == 2:  # gray + alpha
        gray, alpha = image[..., :1], image[..., 1:]
        image = np.concatenate([gray, gray, gray, alpha], axis=-1)
    if image.shape[2] == 4:
        rgb = image[..., :3].astype(np.float32)
        alpha = image[..., 3:].astype(np.float32) / 255.0
        return (rgb * alpha + 255.0 * (1.0 - alpha)).round().astype(np.uint8)
    return image[..., :3]
