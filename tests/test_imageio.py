import io
import sys

import cv2
import numpy as np
import pytest
from PIL import Image

from core.data.imageio import ImageError, decode_image, read_header


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
    with pytest.raises(ImageError, match="up to 0.001 megapixels, 1,000 pixels"):
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


def test_a_decompression_bomb_is_refused_in_plain_words():
    # 400 MP trips Pillow's own guard when the header is opened; the user reads the app's limit, not Pillow's.
    with pytest.raises(ImageError) as refused:
        decode_image(_png_declaring(20_000, 20_000), max_pixels=16_000_000)
    message = str(refused.value)
    assert "16,000,000" in message and "16 megapixels" in message
    assert "bomb" not in message and "DOS" not in message


def test_a_decode_that_would_need_too_much_memory_is_refused(monkeypatch):
    import core.data.imageio

    monkeypatch.setattr(core.data.imageio, "DECODE_BUDGET_BYTES", 100 * 100 * 4 - 1)
    with pytest.raises(ImageError, match="too large to decode here"):
        decode_image(_png(np.zeros((100, 100, 4), np.uint8)))


def test_transparency_is_composited_before_reducing():
    # Opaque red on the left, fully transparent *black* on the right, large enough to be box-reduced first:
    # averaging the invisible black into the edge would leave a dark seam.
    bgra = np.zeros((1024, 1024, 4), np.uint8)
    bgra[:, :512] = (0, 0, 255, 255)
    out = decode_image(_png(bgra), size=64)
    assert out[:, :32].tolist() == [[[255, 0, 0]] * 32] * 64
    assert out[:, 32:].tolist() == [[[255, 255, 255]] * 32] * 64


def test_png_exif_orientation_is_applied():
    img = Image.new("RGB", (40, 20), "white")
    exif = Image.Exif()
    exif[0x0112] = 6
    buf = io.BytesIO()
    img.save(buf, "PNG", exif=exif.tobytes())
    assert decode_image(buf.getvalue()).shape[:2] == (40, 20)


def _write_png(path, width: int, height: int, bit_depth: int, row: bytes) -> None:
    """An RGBA PNG whose every scanline is ``row``, written without a full-size array in this process."""
    import struct
    import zlib

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    packer = zlib.compressobj(6)
    lines = (b"\0" + row) * 64
    idat = b"".join(packer.compress(lines) for _ in range(height // 64)) + packer.compress(
        (b"\0" + row) * (height % 64)) + packer.flush()
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, bit_depth, 6, 0,
                                                                      0, 0))
                     + chunk(b"IDAT", idat) + chunk(b"IEND", b""))


MEASURE = """
import json, sys, time
from pathlib import Path
import numpy as np, psutil
from core.data.imageio import decode_image

def peak_rss():  # this process's high-water mark (VmHWM; unlike ru_maxrss, not inherited from the parent)
    line = next(l for l in Path("/proc/self/status").read_text().splitlines() if l.startswith("VmHWM:"))
    return int(line.split()[1]) * 1024

decode_image(open(sys.argv[2], "rb").read(), size=16)  # imports and first-call set-up are not the decode's
data = open(sys.argv[1], "rb").read()
Path("/proc/self/clear_refs").write_text("5")  # restart the high-water mark from the current RSS
before = psutil.Process().memory_info().rss
cpu, wall = time.process_time(), time.perf_counter()
out = decode_image(data, size=128)
cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
peak = peak_rss()
print(json.dumps({"extra_mb": (peak - before) / 2**20, "cpu_s": cpu, "wall_s": wall,
                  "left": out[:, :60].reshape(-1, 3).tolist()[0], "right": out[:, 68:].reshape(-1, 3).tolist()[0]}))
"""


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads the peak memory from /proc")
@pytest.mark.parametrize("width,bit_depth,cpu_limit", [(4000, 16, 1.0), (7000, 8, 2.0)])
def test_a_huge_transparent_png_decodes_in_bounded_memory_and_time(tmp_path, width, bit_depth, cpu_limit):
    """16 MP 16-bit RGBA (the demo's pixel limit: a 200 KB file the old decoder turned into 855 MB and 2 s of
    CPU) and 49 MP RGBA (under the normal limit: 2.2 GB, 4.3 s of CPU), left half opaque teal, right half
    transparent black. Memory is measured exactly (the process's peak); time as CPU seconds, which a loaded
    machine does not inflate the way it does wall time."""
    import json
    import subprocess
    from pathlib import Path

    sample = 65535 if bit_depth == 16 else 255
    pixel = [0, sample * 128 // 255, sample * 128 // 255, sample]  # teal, opaque
    fmt = ">4H" if bit_depth == 16 else ">4B"
    import struct

    half = width // 2
    row = struct.pack(fmt, *pixel) * half + struct.pack(fmt, 0, 0, 0, 0) * (width - half)
    big, small = tmp_path / "big.png", tmp_path / "small.png"
    _write_png(big, width, width, bit_depth, row)
    small.write_bytes(_png(np.zeros((32, 32, 4), np.uint8)))
    root = Path(__file__).resolve().parent.parent
    result = subprocess.run([sys.executable, "-c", MEASURE, str(big), str(small)], cwd=root, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    measured = json.loads(result.stdout)
    print(f"{width}x{width} RGBA{bit_depth}: {big.stat().st_size / 1e3:.0f} KB file, {measured}")
    assert measured["left"] == [0, 128, 128] and measured["right"] == [255, 255, 255]
    assert measured["extra_mb"] < 300
    assert measured["cpu_s"] < cpu_limit


def test_refusals_name_the_formats_the_upload_box_takes_and_sizes_come_with_units():
    """A garbage file was told "JPEG or PNG expected" by a box that takes six formats, and a too-large image
    "more than the 50,000,000 allowed", with no unit."""
    from core.data.imageio import FORMAT_NAMES

    with pytest.raises(ImageError) as garbage:
        decode_image(b"this is not an image at all")
    assert FORMAT_NAMES in str(garbage.value) and "WebP" in FORMAT_NAMES
    with pytest.raises(ImageError) as big:
        decode_image(_png_declaring(8_000, 8_000), max_pixels=50_000_000)
    message = str(big.value)
    assert "8000×8000 = 64 megapixels" in message and "up to 50 megapixels" in message
    assert "50,000,000 allowed" not in message
