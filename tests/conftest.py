"""Shared fixtures: an isolated cache per test, and small real-format datasets made on the fly."""

from __future__ import annotations

import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")

from pathlib import Path  # noqa: E402

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from core.data.datasets import FASHION_SYSTEM_DIR  # noqa: E402

HAS_FASHION = (FASHION_SYSTEM_DIR / "train-images-idx3-ubyte.gz").is_file()
needs_fashion = pytest.mark.skipif(
    not HAS_FASHION, reason="Fashion-MNIST not installed (apt-get install dataset-fashion-mnist)")


@pytest.fixture
def cache_dir(tmp_path, monkeypatch) -> Path:
    """A private cache for the test; also what ``RunStore()`` and the app use by default."""
    path = tmp_path / "cache"
    monkeypatch.setenv("TWO_STAGE_CACHE", str(path))
    return path


def synthetic_images(n_per_class: int, n_classes: int, size: int = 40, seed: int = 0):
    """Learnable colour images: each class has its own bright quadrant."""
    rng = np.random.default_rng(seed)
    images, labels = [], []
    for label in range(n_classes):
        for _ in range(n_per_class):
            img = rng.integers(0, 60, size=(size, size, 3), dtype=np.uint8)
            half = size // 2
            r, c = divmod(label % 4, 2)
            img[r * half:(r + 1) * half, c * half:(c + 1) * half, label % 3] = 230
            images.append(img)
            labels.append(label)
    return np.stack(images), np.array(labels)


def write_class_folders(root: Path, images: np.ndarray, labels: np.ndarray, class_names: list[str],
                        fmt: str = ".png") -> Path:
    """Write images as ``root/<class>/<i><fmt>`` (RGB arrays are written as real PNG/JPEG files)."""
    for i, (img, label) in enumerate(zip(images, labels)):
        folder = root / class_names[label]
        folder.mkdir(parents=True, exist_ok=True)
        ext = fmt if i % 2 == 0 else (".jpg" if fmt == ".png" else ".png")
        bgr = cv2.cvtColor(img, cv2.COLOR_RGB2BGR) if img.ndim == 3 and img.shape[2] == 3 else img
        assert cv2.imwrite(str(folder / f"img_{i:04d}{ext}"), bgr)
    return root


@pytest.fixture
def photo_folder(tmp_path) -> Path:
    """A flat three-class folder of 12 PNG/JPEG images each, plus a corrupt file, a grayscale image and
    a non-image file, like a real Kaggle download with some dirt in it."""
    images, labels = synthetic_images(12, 3)
    root = write_class_folders(tmp_path / "masks", images, labels, ["with_mask", "without_mask", "incorrect"])
    (root / "with_mask" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    gray = cv2.cvtColor(images[0], cv2.COLOR_RGB2GRAY)
    cv2.imwrite(str(root / "without_mask" / "gray.png"), gray)
    (root / "incorrect" / "notes.txt").write_text("not an image")
    return root
