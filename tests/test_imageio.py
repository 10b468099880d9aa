import io

import cv2
import numpy as np
import pytest
from PIL import Image

from core.imageio import ImageError, decode_image, read_header


def _png(array: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".png", array)
    assert ok
    return buf.tobytes()


def test_rgb_png_round_trip_keeps_channel_order():
    rgb = np.zeros((8, 8, 3), np.uint8)
    rgb[..., 0] = 200  # red
    out = decode_image(_png(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)))
    assert out.shape == (8, 8, 3) and out[0, 0].tolist() == [200, 0, 0]


def test_grayscale_16bit_and_alpha_become_rgb():
    gray16 = np.full((6, 6), 65535, np.uint16)
    assert decode_image(_png(gray16))[0, 0].tolist() == [255, 255, 255]
    bgra = np.zeros((6, 6, 4), np.uint8)  # fully transparent black: composited on white
    assert decode_image(_png(bgra))[0, 0].tolist() == [255, 255, 255]
    assert decode_image(_png(gray16), grayscale=True, size=3).shape == (3, 3, 1)


def test_exif_rotation_is_applied():
    img = Image.new("RGB", (40, 20), "white")
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise on display
    buf = io.BytesIO()
    img.save(buf, "JPEG", exif=exif.tobytes())
    assert decode_image(buf.getvalue()).shape[:2] == (40, 20)


def _png_declaring(width: int, height: int) -> bytes:
    """A well-formed PNG header declaring ``width x height`` with almost no pixel data behind it."""
    import struct
    import zlib

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
            + chunk(b"IEND", b""))


def test_huge_declared_size_is_refused_from_the_header():
    # 400 MP would need 1.2 GB to decode; the header alone must be enough to refuse it.
    with pytest.raises(ImageError, match="too large|more than"):
        decode_image(_png_declaring(20_000, 20_000))
    with pytest.raises(ImageError, match="more than the 1,000 allowed"):
        decode_image(_png_declaring(100, 100), max_pixels=1000)


@pytest.mark.parametrize("data", [b"", b"garbage bytes", b"\xff\xd8\xff\xe0 broken jpeg"])
def test_garbage_gives_a_clear_message(data):
    with pytest.raises(ImageError):
        decode_image(data)


def test_large_jpeg_decodes_reduced_to_target():
    big = np.random.default_rng(0).integers(0, 255, (1600, 1200, 3), dtype=np.uint8)
    ok, buf = cv2.imencode(".jpg", big)
    assert read_header(buf.tobytes())[1:] == (1200, 1600)
    assert decode_image(buf.tobytes(), size=128).shape == (128, 128, 3)
