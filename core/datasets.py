"""Dataset loaders: Fashion-MNIST, CIFAR-10 and class-folder photo sets, as uint8 arrays.

Images stay uint8 in memory (normalisation is the model's first layer), and splits are made by compacting
arrays in place, so a loaded dataset costs little more than its raw pixels. Each loader tries the places a
user's copy may be, in order, and ends with :class:`DatasetUnavailable` saying how to get the data.
"""

from __future__ import annotations

import gzip
import os
import pickle
import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from .config import Protocol
from .imageio import IMAGE_SUFFIXES, ImageError, decode_image

FASHION_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                   "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
CIFAR_CLASSES = ["airplane", "automobile", "bird", "cat", "deer",
                 "dog", "frog", "horse", "ship", "truck"]
FASHION_SYSTEM_DIR = Path("/usr/share/datasets/fashion-mnist")
KERAS_DATASETS_DIR = Path(os.environ.get("KERAS_HOME", Path.home() / ".keras")) / "datasets"

HOW_TO_GET = {
    "fashion-mnist": "Install it with `sudo apt-get install dataset-fashion-mnist` (Debian/Ubuntu), let Keras "
                     "download it once with network access, or give the folder holding "
                     "train-images-idx3-ubyte.gz and the three other IDX files (--data on the command line).",
    "cifar10": "Let Keras download it once with network access (keras.datasets.cifar10.load_data()), or "
               "download cifar-10-python.tar.gz from https://www.cs.toronto.edu/~kriz/cifar.html and give the "
               "archive or its extracted cifar-10-batches-py folder (--data on the command line).",
    "dogs-cats": "Download the Kaggle 'cat-and-dog' set (training_set/ and test_set/ with cats/ and dogs/) and "
                 "give the folder that holds them (the Datasets page, or --data on the command line).",
    "face-mask": "Download the Kaggle 'face-mask-detection' set (with_mask/, without_mask/, "
                 "mask_weared_incorrect/) and give the folder that holds them (the Datasets page, or --data on "
                 "the command line).",
    "folder": "Give a folder with one sub-folder of images per class (the Datasets page, or --data on the "
              "command line).",
}


class DatasetUnavailable(RuntimeError):
    """The dataset could not be found or read; the message says where we looked and how to get it."""


@dataclass
class Dataset:
    """Train/validation/test arrays (uint8, NHWC) with integer labels."""

    name: str
    class_names: list[str]
    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return tuple(self.x_train.shape[1:])  # type: ignore[return-value]

    def sizes(self) -> dict[str, int]:
        return {"train": len(self.y_train), "val": len(self.y_val), "test": len(self.y_test)}

    def class_counts(self) -> dict[str, dict[str, int]]:
        """Images per class in each split (the paper's Figures 9 and 12)."""
        out = {}
        for split, y in (("train", self.y_train), ("val", self.y_val), ("test", self.y_test)):
            counts = np.bincount(y, minlength=self.num_classes)
            out[split] = {name: int(c) for name, c in zip(self.class_names, counts)}
        return out


@dataclass
class RawData:
    """A dataset as shipped: a training pool and (if the source has one) a test split."""

    class_names: list[str]
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray | None
    y_test: np.ndarray | None
    info: dict[str, Any] = field(default_factory=dict)


# --------------------------------------------------------------------------------------------- public API

def load_dataset(protocol: Protocol, progress: Callable[[int, int], None] | None = None) -> Dataset:
    """Load, subsample and split the protocol's dataset, deterministically for ``protocol.seed``.

    All splits of the training pool end up as views of the one buffer the loader filled (see
    :func:`split_tail`), so a loaded dataset holds about its raw uint8 size in memory.
    """
    raw = load_raw(protocol.dataset, protocol.data_path, protocol.image_size, progress)
    rng = np.random.default_rng(protocol.seed)
    x, y = raw.x_train, raw.y_train
    if raw.x_test is None:
        x, y, x_test, y_test = split_tail(x, y, stratified_pick(y, protocol.test_split, rng))
    else:
        x_test, y_test = raw.x_test, raw.y_test
    if protocol.limit and protocol.limit < len(y):
        x, y = compact(x, y, np.sort(stratified_pick(y, protocol.limit / len(y), rng)))
    if protocol.test_limit and protocol.test_limit < len(y_test):
        keep = np.sort(stratified_pick(y_test, protocol.test_limit / len(y_test), rng))
        x_test, y_test = x_test[keep], y_test[keep]
    x_train, y_train, x_val, y_val = split_tail(x, y, stratified_pick(y, protocol.validation_split, rng))
    _require_all_classes(raw.class_names, y_train, protocol.dataset)
    return Dataset(protocol.dataset, raw.class_names, x_train, y_train, x_val, y_val, x_test, y_test,
                   info=raw.info)


def load_raw(dataset: str, data_path: str | None = None, image_size: int = 128,
             progress: Callable[[int, int], None] | None = None) -> RawData:
    """The dataset as its source ships it (no split, no limit)."""
    if dataset == "fashion-mnist":
        return load_fashion_mnist(data_path)
    if dataset == "cifar10":
        return load_cifar10(data_path)
    if not data_path:
        raise DatasetUnavailable(f"No folder given for {dataset}. {HOW_TO_GET[dataset]}")
    return load_image_folder(data_path, image_size, progress)


def stratified_pick(y: np.ndarray, fraction: float, rng: np.random.Generator) -> np.ndarray:
    """Shuffled indices of ``fraction`` of each class (at least one per class when it has two or more)."""
    picked = []
    for label in np.unique(y):
        idx = np.flatnonzero(y == label)
        rng.shuffle(idx)
        picked.append(idx[:class_pick_count(len(idx), fraction)])
    out = np.concatenate(picked) if picked else np.array([], dtype=np.int64)
    rng.shuffle(out)
    return out


def class_pick_count(n: int, fraction: float) -> int:
    """How many of a class's ``n`` images :func:`stratified_pick` takes: ``fraction`` of them, rounded, but
    at least one and (for a fraction below 1) never all, so both sides of a split keep every class."""
    k = int(round(fraction * n))
    return min(max(k, 1 if n > 1 else 0), n - 1 if fraction < 1 else n)


def compact(x: np.ndarray, y: np.ndarray, keep: np.ndarray, chunk: int = 4096):
    """Keep rows ``keep`` (ascending) by moving them to the front of ``x`` in place; returns views.

    Why in place: a fancy-indexed copy of a 60k-image training pool would double peak memory.
    """
    x = _move_to_front(x, np.asarray(keep), chunk)
    return x[: len(keep)], y[keep].copy()


def split_tail(x: np.ndarray, y: np.ndarray, pick: np.ndarray):
    """Split rows ``pick`` off ``x`` in place: the others (ascending) to the front, ``pick`` (in its order) to
    the tail. Returns ``(x_rest, y_rest, x_pick, y_pick)``, both ``x`` parts views of the one buffer.

    The rows are permuted cycle by cycle with a single row of scratch space, so a split costs no memory even
    while it runs (a gather of the picked rows would briefly hold them twice: 1.29x raw at peak, measured).
    """
    pick = np.asarray(pick)
    mask = np.ones(len(y), dtype=bool)
    mask[pick] = False
    order = np.concatenate([np.flatnonzero(mask), pick])
    if not x.flags.writeable:
        x = x.copy()
    _permute_rows(x, order)
    n = len(y) - len(pick)
    y = y[order]
    return x[:n], y[:n], x[n:], y[n:]


def _permute_rows(x: np.ndarray, order: np.ndarray) -> None:
    """``x[:] = x[order]`` in place, following the permutation's cycles."""
    done = order == np.arange(len(order))
    for start in np.flatnonzero(~done):
        if done[start]:
            continue
        scratch = x[start].copy()
        i = start
        while order[i] != start:
            x[i] = x[order[i]]
            done[i] = True
            i = order[i]
        x[i] = scratch
        done[i] = True


def _move_to_front(x: np.ndarray, keep: np.ndarray, chunk: int) -> np.ndarray:
    """Copy rows ``keep`` (ascending) to ``x[:len(keep)]``. Safe in place because ``keep[k] >= k``: a source
    row is never overwritten before it is read, and each chunk is gathered into a temporary first."""
    if not x.flags.writeable:
        x = x.copy()
    for start in range(0, len(keep), chunk):
        rows = keep[start:start + chunk]
        x[start:start + len(rows)] = x[rows]
    return x


def _require_all_classes(class_names: list[str], y: np.ndarray, dataset: str) -> None:
    missing = [name for i, name in enumerate(class_names) if not np.any(y == i)]
    if len(class_names) < 2:
        raise DatasetUnavailable(f"{dataset}: at least two classes with images are needed.")
    if missing:
        raise DatasetUnavailable(f"{dataset}: no training images left for class(es) {', '.join(missing)}; "
                                 "use a larger --limit or add images.")


# ------------------------------------------------------------------------------------------ Fashion-MNIST

_IDX_FILES = {
    "x_train": "train-images-idx3-ubyte", "y_train": "train-labels-idx1-ubyte",
    "x_test": "t10k-images-idx3-ubyte", "y_test": "t10k-labels-idx1-ubyte",
}


def load_fashion_mnist(data_path: str | None = None) -> RawData:
    """IDX files from ``data_path``, the Debian package, Keras' cache, then a Keras download."""
    candidates = [Path(data_path).expanduser()] if data_path else []
    candidates += [FASHION_SYSTEM_DIR, KERAS_DATASETS_DIR / "fashion-mnist"]
    for folder in candidates:
        if all(_idx_path(folder, name) for name in _IDX_FILES.values()):
            arrays = {key: read_idx(_idx_path(folder, name)) for key, name in _IDX_FILES.items()}
            return RawData(FASHION_CLASSES, arrays["x_train"][..., None], arrays["y_train"].astype(np.int64),
                           arrays["x_test"][..., None], arrays["y_test"].astype(np.int64),
                           info={"source": str(folder)})
    return _keras_download("fashion-mnist", FASHION_CLASSES, candidates)


def _idx_path(folder: Path, name: str) -> Path | None:
    for candidate in (folder / f"{name}.gz", folder / name):
        if candidate.is_file():
            return candidate
    return None


def read_idx(path: Path) -> np.ndarray:
    """Read an IDX file (gzipped or not) straight into a uint8 array, without an intermediate bytes copy."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as fh:
        header = fh.read(4)
        if len(header) != 4 or header[:2] != b"\x00\x00" or header[2] != 0x08:
            raise DatasetUnavailable(f"{path} is not an unsigned-byte IDX file.")
        ndim = header[3]
        shape = tuple(int.from_bytes(fh.read(4), "big") for _ in range(ndim))
        out = np.empty(shape, dtype=np.uint8)
        view = memoryview(out.reshape(-1))
        got = 0
        while got < out.size:
            n = fh.readinto(view[got:])
            if not n:
                raise DatasetUnavailable(f"{path} is truncated ({got} of {out.size} bytes).")
            got += n
    return out


# --------------------------------------------------------------------------------------------- CIFAR-10

def load_cifar10(data_path: str | None = None) -> RawData:
    """``cifar-10-batches-py`` (or its ``.tar.gz``) from ``data_path`` or Keras' cache, then a download."""
    candidates = [Path(data_path).expanduser()] if data_path else []
    if KERAS_DATASETS_DIR.is_dir():
        candidates += sorted(KERAS_DATASETS_DIR.glob("cifar-10-batches-py*"))
        candidates += sorted(KERAS_DATASETS_DIR.glob("*/cifar-10-batches-py"))
    for candidate in candidates:
        folder = _cifar_folder(candidate)
        if folder is not None:
            return _read_cifar_folder(folder)
        if candidate.is_file() and candidate.name.endswith((".tar.gz", ".tgz")):
            return _read_cifar_tar(candidate)
    return _keras_download("cifar10", CIFAR_CLASSES, candidates)


def _cifar_folder(path: Path) -> Path | None:
    for folder in (path, path / "cifar-10-batches-py"):
        if (folder / "data_batch_1").is_file() and (folder / "test_batch").is_file():
            return folder
    return None


def _cifar_batch(blob: dict) -> tuple[np.ndarray, np.ndarray]:
    data = np.asarray(blob[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    return np.ascontiguousarray(data), np.asarray(blob[b"labels"], dtype=np.int64)


def _cifar_from_batches(read: Callable[[str], dict], source: str) -> RawData:
    train = [_cifar_batch(read(f"data_batch_{i}")) for i in range(1, 6)]
    x_test, y_test = _cifar_batch(read("test_batch"))
    x_train = np.concatenate([x for x, _ in train])
    y_train = np.concatenate([y for _, y in train])
    return RawData(CIFAR_CLASSES, x_train, y_train, x_test, y_test, info={"source": source})


def _read_cifar_folder(folder: Path) -> RawData:
    def read(name: str) -> dict:
        with open(folder / name, "rb") as fh:
            return pickle.load(fh, encoding="bytes")  # the official archive is a trusted pickle
    return _cifar_from_batches(read, str(folder))


def _read_cifar_tar(archive: Path) -> RawData:
    with tarfile.open(archive, "r:gz") as tar:
        members = {Path(m.name).name: m for m in tar.getmembers() if m.isfile()}

        def read(name: str) -> dict:
            if name not in members:
                raise DatasetUnavailable(f"{archive} has no {name}; is it cifar-10-python.tar.gz?")
            return pickle.load(tar.extractfile(members[name]), encoding="bytes")
        return _cifar_from_batches(read, str(archive))


def _keras_download(dataset: str, class_names: list[str], looked: list[Path]) -> RawData:
    """Last resort: Keras' own loader (downloads once, needs network)."""
    try:
        import keras

        loader = keras.datasets.fashion_mnist if dataset == "fashion-mnist" else keras.datasets.cifar10
        (x_train, y_train), (x_test, y_test) = loader.load_data()
    except Exception as exc:  # noqa: BLE001 - any failure (network, disk) becomes one clear message
        where = ", ".join(str(p) for p in looked) or "nowhere"
        raise DatasetUnavailable(
            f"{dataset} is not available: looked in {where}, and the Keras download failed "
            f"({type(exc).__name__}: {exc}). {HOW_TO_GET[dataset]}") from exc
    if x_train.ndim == 3:
        x_train, x_test = x_train[..., None], x_test[..., None]
    return RawData(class_names, x_train, y_train.reshape(-1).astype(np.int64), x_test,
                   y_test.reshape(-1).astype(np.int64), info={"source": "keras download"})


# ---------------------------------------------------------------------------------------- image folders

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
    root = _unwrap(Path(path).expanduser())
    if not root.is_dir():
        raise DatasetUnavailable(f"{path} is not a folder. {HOW_TO_GET['folder']}")
    train_dir = _first_child(root, TRAIN_DIR_NAMES)
    test_dir = _first_child(root, TEST_DIR_NAMES)
    if train_dir and test_dir:
        train_dir, test_dir = _unwrap(train_dir), _unwrap(test_dir)
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
    if len(class_names) - len(scan.empty_classes) < 2:
        raise DatasetUnavailable(
            f"{root} has {len(class_names) - len(scan.empty_classes)} class folder(s) with images; at least "
            f"two are needed. {HOW_TO_GET['folder']}")
    return scan


def load_image_folder(path: str | Path, image_size: int = 128,
                      progress: Callable[[int, int], None] | None = None) -> RawData:
    """Decode every image of a class-folder tree to ``image_size`` square RGB, skipping unreadable files."""
    scan = scan_image_folder(path)
    total = len(scan.train) + len(scan.test)
    done = [0]
    skipped: list[str] = []

    def read_all(items: list[tuple[Path, int]]) -> tuple[np.ndarray, np.ndarray]:
        x = np.empty((len(items), image_size, image_size, 3), dtype=np.uint8)
        ok = np.zeros(len(items), dtype=bool)
        for i, (file, _) in enumerate(items):
            try:
                x[i] = decode_image(file.read_bytes(), size=image_size)
                ok[i] = True
            except (ImageError, OSError) as exc:
                skipped.append(f"{file.relative_to(scan.root)}: {exc}")
            done[0] += 1
            if progress and (done[0] % 200 == 0 or done[0] == total):
                progress(done[0], total)
        y = np.array([label for _, label in items], dtype=np.int64)
        return compact(x, y, np.flatnonzero(ok))

    x_train, y_train = read_all(scan.train)
    x_test, y_test = read_all(scan.test) if scan.layout == "pre-split" else (None, None)
    info = {"source": str(scan.root), "layout": scan.layout, "skipped": skipped,
            "ignored": scan.ignored, "empty_classes": scan.empty_classes}
    return RawData(scan.class_names, x_train, y_train, x_test, y_test, info=info)


def _unwrap(folder: Path) -> Path:
    """Descend through wrapper folders (Kaggle zips nest ``training_set/training_set/``)."""
    while folder.is_dir():
        children = list(_subdirs(folder))
        if len(children) == 1 and not any(_is_image(f) for f in folder.iterdir()):
            folder = children[0]
        else:
            break
    return folder


def _first_child(folder: Path, names: tuple[str, ...]) -> Path | None:
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
