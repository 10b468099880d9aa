"""Class-folder image sets (the paper's Dogs & Cats and Face Mask, any user's folder, a CIFAR-10 image copy):
finding the classes and files, and decoding them, in threads, to square uint8 RGB arrays.

Both layouts are read: pre-split (``training_set/`` and ``test_set/``, or ``train/`` and ``test/``, each with
one folder per class) and flat (one folder per class; the test split is drawn later). Unreadable files are
skipped and listed, never fatal unless a whole class is lost.
"""

from __future__ import annotations

import hashlib
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from .imageio import IMAGE_SUFFIXES, ImageError, decode_image
from .raw import HOW_TO_GET, DatasetUnavailable, RawData, compact


TRAIN_DIR_NAMES = ("training_set", "train", "training")



TEST_DIR_NAMES = ("test_set", "test", "testing")



@dataclass
class FolderScan:
    """What a class-folder tree holds, before any pixel is decoded."""

    root: Path
    layout: str  # "pre-split" or "flat"
    class_names: list[str]
    train: list[tuple[Path, int]]
    test: list[tuple[Path, int]]
    ignored: list[str] = field(default_factory=list)  # non-image files
    empty_classes: list[str] = field(default_factory=list)



def scan_image_folder(path: str | Path) -> FolderScan:
    """Find the classes and image files under ``path`` (pre-split or flat layout)."""
    given = Path(path).expanduser()
    if not given.is_dir():
        raise DatasetUnavailable(f"{path} is not a folder. {HOW_TO_GET['folder']}")
    root = unwrap(given)
    train_dir = first_child(root, TRAIN_DIR_NAMES)
    test_dir = first_child(root, TEST_DIR_NAMES)
    if train_dir and test_dir:
        train_dir, test_dir = unwrap(train_dir), unwrap(test_dir)
        class_names = sorted({d.name for d in _subdirs(train_dir)} | {d.name for d in _subdirs(test_dir)})
        scan = FolderScan(root, "pre-split", class_names, [], [])
        scan.train = _list_images(train_dir, class_names, scan)
        scan.test = _list_images(test_dir, class_names, scan)
    else:
        class_names = sorted(d.name for d in _subdirs(root))
        scan = FolderScan(root, "flat", class_names, [], [])
        scan.train = _list_images(root, class_names, scan)
    counts = np.bincount([label for _, label in scan.train + scan.test], minlength=len(class_names))
    scan.empty_classes = [name for name, n in zip(class_names, counts) if n == 0]
    with_images = [name for name, n in zip(class_names, counts) if n > 0]
    if len(with_images) < 2:
        if not class_names and any(_is_image(f) for f in root.iterdir()):
            found = ("holds images directly, not in class sub-folders"
                     + (f" (it is the only sub-folder of {given}, so it counts as one class)" if root != given
                        else ""))
        else:
            found = (f"has {len(with_images)} class folder(s) with images"
                     + (f" ({with_images[0]})" if with_images else ""))
        raise DatasetUnavailable(f"{given} {found}; at least two classes are needed. {HOW_TO_GET['folder']}")
    return scan



DECODE_THREADS = min(8, os.cpu_count() or 1)
"""Threads decoding a folder's images (OpenCV releases the GIL while it decodes)."""



def load_image_folder(path: str | Path, image_size: int = 128,
                      progress: Callable[[int, int], None] | None = None) -> RawData:
    """Decode every image of a class-folder tree to ``image_size`` square RGB, skipping unreadable files.

    Each image's decoded pixels (what the model sees) are hashed as they are read (``info["hashes"]``): the
    dataset's fingerprint and the test images that duplicate training ones come from them, so a copy whose
    files were re-packed losslessly is the same data, and a re-encoded one is not."""
    scan = scan_image_folder(path)
    total = len(scan.train) + len(scan.test)
    done = [0]
    skipped: list[str] = []

    def decode(item: tuple[Path, int]) -> tuple[np.ndarray | None, str, str | None]:
        file = item[0]
        try:
            image = decode_image(file.read_bytes(), size=image_size)
            return image, hashlib.blake2b(image.data, digest_size=12).hexdigest(), None
        except (ImageError, OSError) as exc:
            return None, "", f"{file.relative_to(scan.root)}: {exc}"

    def read_all(items: list[tuple[Path, int]]) -> tuple[np.ndarray, np.ndarray, list[str], list[str]]:
        x = np.empty((len(items), image_size, image_size, 3), dtype=np.uint8)
        ok = np.zeros(len(items), dtype=bool)
        digests = [""] * len(items)
        with ThreadPoolExecutor(DECODE_THREADS) as pool:
            for i, (image, digest, error) in enumerate(pool.map(decode, items, chunksize=64)):
                if error is None:
                    x[i], digests[i], ok[i] = image, digest, True
                else:
                    skipped.append(error)
                done[0] += 1
                if progress and (done[0] % 200 == 0 or done[0] == total):
                    progress(done[0], total)
        y = np.array([label for _, label in items], dtype=np.int64)
        kept = np.flatnonzero(ok)
        x, y = compact(x, y, kept)
        return x, y, [str(items[i][0].relative_to(scan.root)) for i in kept], [digests[i] for i in kept]

    x_train, y_train, pool_files, pool_hashes = read_all(scan.train)
    x_test, y_test, test_files, test_hashes = (read_all(scan.test) if scan.layout == "pre-split"
                                               else (None, None, [], []))
    _require_decodable(scan, y_train if y_test is None else np.concatenate([y_train, y_test]), skipped)
    info = {"source": str(scan.root), "layout": scan.layout, "skipped": skipped,
            "ignored": scan.ignored, "empty_classes": scan.empty_classes, "pool_files": pool_files,
            "test_files": test_files, "form": "folder", "hashes": {"pool": pool_hashes, "test": test_hashes}}
    return RawData(scan.class_names, x_train, y_train, x_test, y_test, info=info)



def _require_decodable(scan: FolderScan, y: np.ndarray, skipped: list[str]) -> None:
    """A class whose files all failed to decode is named, with the first error, rather than reported later
    as a class with too few images."""
    counts = np.bincount(y, minlength=len(scan.class_names))
    listed = np.bincount([label for _, label in scan.train + scan.test], minlength=len(scan.class_names))
    dead = [name for name, n, m in zip(scan.class_names, counts, listed) if n == 0 and m > 0]
    if dead:
        raise DatasetUnavailable(
            f"{scan.root}: none of the image files of class(es) {', '.join(dead)} could be decoded "
            f"({len(skipped)} unreadable file(s) in all; first: {skipped[0] if skipped else '-'}).")



def unwrap(folder: Path) -> Path:
    """Descend through wrapper folders (Kaggle zips nest ``training_set/training_set/``)."""
    while folder.is_dir():
        children = list(_subdirs(folder))
        if len(children) == 1 and not any(_is_image(f) for f in folder.iterdir()):
            folder = children[0]
        else:
            break
    return folder



def first_child(folder: Path, names: tuple[str, ...]) -> Path | None:
    lowered = {d.name.lower(): d for d in _subdirs(folder)}
    return next((lowered[n] for n in names if n in lowered), None)



def _subdirs(folder: Path):
    return (d for d in sorted(folder.iterdir()) if d.is_dir() and not d.name.startswith("."))



def _is_image(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES



def _list_images(folder: Path, class_names: list[str], scan: FolderScan) -> list[tuple[Path, int]]:
    items = []
    for label, name in enumerate(class_names):
        class_dir = folder / name
        if not class_dir.is_dir():
            continue
        for file in sorted(class_dir.rglob("*")):
            if _is_image(file):
                items.append((file, label))
            elif file.is_file() and not file.name.startswith("."):
                scan.ignored.append(str(file.relative_to(scan.root)))
    return items
