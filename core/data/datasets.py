"""Dataset loaders: Fashion-MNIST, CIFAR-10 and class-folder photo sets, as uint8 arrays.

Images stay uint8 in memory (normalisation is the model's first layer), and splits are made by compacting
arrays in place, so a loaded dataset costs little more than its raw pixels. Each loader tries the places a
user's copy may be, in order, and ends with :class:`DatasetUnavailable` saying how to get the data.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..protocol.config import Protocol
from ..protocol.vocabulary import CIFAR_CLASSES, FASHION_CLASSES
from .folders import TRAIN_DIR_NAMES, first_child, load_image_folder, unwrap
from .raw import HOW_TO_GET, DatasetUnavailable, RawData, compact, split_tail
from .safe_load import UnsafeDataError, cifar_unpickle

FASHION_SYSTEM_DIR = Path("/usr/share/datasets/fashion-mnist")
KERAS_DATASETS_DIR = Path(os.environ.get("KERAS_HOME", Path.home() / ".keras")) / "datasets"


FORMS = {
    "official": "the official files",
    "jpeg-copy": "JPEG copy",
    "image-copy": "image-file copy",
    "folder": "image folder",
}
"""Which form of a dataset a loader read (``RawData.info["form"]``): for Fashion-MNIST and CIFAR-10 the
official files (IDX, the python batches or Keras' download of them) or, for CIFAR-10, a copy re-encoded as
image files; for photo sets their folder. Two forms of "the same" dataset have different pixels, so their
runs are different experiments."""


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
    ids: dict[str, np.ndarray] = field(default_factory=dict)
    """Per split, each row's position in its source (the training pool or the shipped test set), so a
    prediction can be traced back to its image: see :meth:`image_ids`."""
    split_seed: int = 0

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def image_ids(self, split: str, rows: np.ndarray) -> list[str]:
        """Names of the source images of ``rows`` of ``split``: a file path relative to the dataset folder,
        or ``"test #i"``/``"train #i"`` (the index in the Keras dataset's own array)."""
        source = "test" if split == "test" and self.info.get("test_from_pool") is False else "pool"
        files = self.info.get("test_files" if source == "test" else "pool_files")
        idx = self.ids[split][np.asarray(rows, dtype=np.int64)]
        if files:
            return [files[i] for i in idx]
        prefix = "test" if source == "test" else "train"
        return [f"{prefix} #{int(i)}" for i in idx]

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return tuple(self.x_train.shape[1:])  # type: ignore[return-value]

    def sizes(self) -> dict[str, int]:
        return {"train": len(self.y_train), "val": len(self.y_val), "test": len(self.y_test)}

    def identity(self) -> dict[str, Any]:
        """Which data this is, for the record: its form (:data:`FORMS`), a content fingerprint of the whole
        source, the source's image counts before any split or limit, the side the model takes, and the test
        rows whose pixels equal one of this split's training or validation images."""
        return {"form": self.info.get("form"), "fingerprint": self.info.get("fingerprint"),
                "source_sizes": self.info.get("source_sizes"), "image_size": int(self.x_train.shape[1]),
                "test_duplicates_of_train": self.test_duplicates_of_train()}

    def test_duplicates_of_train(self) -> list[int]:
        """Test rows whose image has the same pixels as a training or validation image of this split (the Face
        Mask set ships 155 byte-identical copies): a test score that counts them partly measures memory."""
        hashes = self.info.get("hashes")
        if not hashes:
            return []
        pool, test = hashes["pool"], hashes["test" if self.info.get("test_from_pool") is False else "pool"]
        seen = {pool[i] for split in ("train", "val") for i in self.ids[split]}
        return [row for row, i in enumerate(self.ids["test"]) if test[i] in seen]

    def class_counts(self) -> dict[str, dict[str, int]]:
        """Images per class in each split (the paper's Figures 9 and 12)."""
        out = {}
        for split, y in (("train", self.y_train), ("val", self.y_val), ("test", self.y_test)):
            counts = np.bincount(y, minlength=self.num_classes)
            out[split] = {name: int(c) for name, c in zip(self.class_names, counts)}
        return out


# --------------------------------------------------------------------------------------------- public API

def load_dataset(protocol: Protocol, progress: Callable[[int, int], None] | None = None,
                 repeat: int = 0) -> Dataset:
    """Load, subsample and split the protocol's dataset, deterministically for its split seed.

    All splits of the training pool end up as views of the one buffer the loader filled (see
    :func:`split_tail`), so a loaded dataset holds about its raw uint8 size in memory.
    """
    return split_raw(load_raw(protocol.dataset, protocol.data_path, protocol.image_size, progress), protocol,
                     repeat)


def split_seed(protocol: Protocol, repeat: int = 0) -> int:
    """The seed of a repeat's data split: ``seed`` for all repeats, or ``seed + repeat`` with ``resplit``."""
    return protocol.seed + repeat if protocol.resplit else protocol.seed


def split_raw(raw: RawData, protocol: Protocol, repeat: int = 0, copy: bool = False) -> Dataset:
    """Test split (for flat folders), ``per_class``/``limit``/``test_limit`` subsets and the validation split
    of ``raw``.

    The split works in place on ``raw``'s buffer unless ``copy`` (needed when the same raw data is split
    again for the next repeat, as ``resplit`` does). Row ids travel with the labels as a second column, so
    every row of every split knows which source image it is.
    """
    seed = split_seed(protocol, repeat)
    rng = np.random.default_rng(seed)
    x = raw.x_train.copy() if copy else raw.x_train
    yi = np.column_stack([raw.y_train, np.arange(len(raw.y_train))])
    if raw.x_test is None:
        _require_split_sizes(raw.class_names, raw.y_train, protocol, flat=True)
        x, yi, x_test, yi_test = split_tail(x, yi, stratified_pick(yi[:, 0], protocol.test_split, rng))
    else:
        _require_split_sizes(raw.class_names, raw.y_train, protocol, flat=False)
        x_test, yi_test = raw.x_test, np.column_stack([raw.y_test, np.arange(len(raw.y_test))])
    if protocol.per_class:
        x, yi = compact(x, yi, np.sort(per_class_pick(yi[:, 0], protocol.per_class, rng)))
    if protocol.limit and protocol.limit < len(yi):
        x, yi = compact(x, yi, np.sort(stratified_pick(yi[:, 0], protocol.limit / len(yi), rng)))
    if protocol.test_limit and protocol.test_limit < len(yi_test):
        keep = np.sort(stratified_pick(yi_test[:, 0], protocol.test_limit / len(yi_test), rng))
        x_test, yi_test = x_test[keep], yi_test[keep]
    x_train, yi_train, x_val, yi_val = split_tail(x, yi, stratified_pick(yi[:, 0], protocol.validation_split,
                                                                       rng))
    _require_all_classes(raw.class_names, yi_train[:, 0], protocol.dataset)
    info = {**raw.info, "test_from_pool": raw.x_test is None}
    return Dataset(protocol.dataset, raw.class_names, x_train, yi_train[:, 0].copy(), x_val,
                   yi_val[:, 0].copy(), x_test, yi_test[:, 0].copy(), info=info,
                   ids={"train": yi_train[:, 1].copy(), "val": yi_val[:, 1].copy(), "test": yi_test[:, 1].copy()},
                   split_seed=seed)


def load_raw(dataset: str, data_path: str | None = None, image_size: int = 128,
             progress: Callable[[int, int], None] | None = None) -> RawData:
    """The dataset as its source ships it (no split, no limit), with its identity in ``info`` (``form``,
    ``fingerprint``, ``source_sizes``; see :meth:`Dataset.identity`)."""
    if dataset == "fashion-mnist":
        raw = load_fashion_mnist(data_path)
    elif dataset == "cifar10":
        raw = load_cifar10(data_path, progress)
    elif not data_path:
        raise DatasetUnavailable(f"No folder given for {dataset}. {HOW_TO_GET[dataset]}")
    else:
        raw = load_image_folder(data_path, image_size, progress)
    raw.info.setdefault("form", "official")
    raw.info["source_sizes"] = {"train": len(raw.y_train), "test": 0 if raw.y_test is None else len(raw.y_test)}
    raw.info["fingerprint"] = fingerprint(raw)
    return raw


def fingerprint(raw: RawData) -> str:
    """A content hash of a whole source: its class names, and per image its decoded pixels and its label, in
    the source's order. Equal for two copies with the same pixels wherever they live (a losslessly re-packed
    JPEG too); different for a re-encoded copy, a subset, or a relabelled one."""
    h = hashlib.blake2b(digest_size=12)
    h.update("\n".join(raw.class_names).encode())
    hashes = raw.info.get("hashes")
    for part in ("pool", "test"):
        y = raw.y_train if part == "pool" else raw.y_test
        if y is None:
            continue
        h.update(part.encode() + np.asarray(y, np.int64).tobytes())
        if hashes:
            h.update("".join(hashes[part]).encode())
        else:
            h.update(np.ascontiguousarray(raw.x_train if part == "pool" else raw.x_test).data)
    return h.hexdigest()


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


def per_class_pick(y: np.ndarray, count: int, rng: np.random.Generator) -> np.ndarray:
    """Indices of ``count`` images of each class (all of a class that has fewer), drawn at random: report 003's
    tiny regime of N images per class from any class folder."""
    picked = []
    for label in np.unique(y):
        idx = np.flatnonzero(y == label)
        rng.shuffle(idx)
        picked.append(idx[:count])
    return np.concatenate(picked) if picked else np.array([], dtype=np.int64)


def class_pick_count(n: int, fraction: float) -> int:
    """How many of a class's ``n`` images :func:`stratified_pick` takes: ``fraction`` of them, rounded, but
    at least one and (for a fraction below 1) never all, so both sides of a split keep every class."""
    k = int(round(fraction * n))
    return min(max(k, 1 if n > 1 else 0), n - 1 if fraction < 1 else n)


def _require_split_sizes(class_names: list[str], y: np.ndarray, protocol: Protocol, flat: bool) -> None:
    """Every class needs an image in each split it is carved into (training, validation and, for a flat
    folder, test); otherwise training would run and the evaluation would find an empty split."""
    need = 3 if flat else 2
    counts = np.bincount(y, minlength=len(class_names))
    short = [f"{name} ({n})" for name, n in zip(class_names, counts) if n < need]
    if short:
        where = "training, validation and test" if flat else "training and validation"
        raise DatasetUnavailable(
            f"{protocol.dataset}: too few images in class(es) {', '.join(short)}; each class needs at least "
            f"{need} readable images (one each for {where}), and many more to learn anything.")


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
    """IDX files from ``data_path`` (and only there, when given), else the Debian package, Keras' cache, then a
    Keras download. A given path that holds no usable copy is an error, never silently replaced."""
    if data_path:
        folder = Path(data_path).expanduser()
        if not all(_idx_path(folder, name) for name in _IDX_FILES.values()):
            raise DatasetUnavailable(f"--data {data_path} does not hold the four Fashion-MNIST IDX files "
                                     f"({', '.join(_IDX_FILES.values())}, optionally .gz). "
                                     + HOW_TO_GET["fashion-mnist"])
        return _read_fashion(folder)
    candidates = [FASHION_SYSTEM_DIR, KERAS_DATASETS_DIR / "fashion-mnist"]
    for folder in candidates:
        if all(_idx_path(folder, name) for name in _IDX_FILES.values()):
            return _read_fashion(folder)
    return _keras_download("fashion-mnist", FASHION_CLASSES, candidates)


def _read_fashion(folder: Path) -> RawData:
    arrays = {key: read_idx(_idx_path(folder, name)) for key, name in _IDX_FILES.items()}
    for split in ("train", "test"):
        x, y = arrays[f"x_{split}"], arrays[f"y_{split}"]
        if x.ndim != 3 or x.shape[1:] != (28, 28) or y.ndim != 1 or len(x) != len(y) or y.max(initial=0) > 9:
            raise DatasetUnavailable(f"{folder}: the {split} IDX files are not Fashion-MNIST "
                                     f"(images {x.shape}, labels {y.shape}).")
    return RawData(FASHION_CLASSES, arrays["x_train"][..., None], arrays["y_train"].astype(np.int64),
                   arrays["x_test"][..., None], arrays["y_test"].astype(np.int64), info={"source": str(folder)})


def _idx_path(folder: Path, name: str) -> Path | None:
    for candidate in (folder / f"{name}.gz", folder / name):
        if candidate.is_file():
            return candidate
    return None


def read_idx(path: Path) -> np.ndarray:
    """Read an IDX file (gzipped or not) straight into a uint8 array, without an intermediate bytes copy."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        return _read_idx(path, opener)
    except (OSError, EOFError, ValueError) as exc:  # gzip.BadGzipFile, truncated streams, absurd shapes
        raise DatasetUnavailable(f"{path} could not be read as an IDX file ({exc}).") from exc


def _read_idx(path: Path, opener) -> np.ndarray:
    with opener(path, "rb") as fh:
        header = fh.read(4)
        if len(header) != 4 or header[:2] != b"\x00\x00" or header[2] != 0x08:
            raise DatasetUnavailable(f"{path} is not an unsigned-byte IDX file.")
        ndim = header[3]
        shape = tuple(int.from_bytes(fh.read(4), "big") for _ in range(ndim))
        if not 1 <= ndim <= 3 or int(np.prod(shape, dtype=np.int64)) > 2**31:
            raise DatasetUnavailable(f"{path} declares an implausible IDX shape {shape}.")
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

CIFAR_MEMBERS = ("data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5", "test_batch")
CIFAR_MAX_MEMBER_BYTES = 64 * 2**20
"""Each real batch is 31 MB; a bigger member is not CIFAR-10 (and would be a decompression bomb)."""


def load_cifar10(data_path: str | None = None, progress: Callable[[int, int], None] | None = None) -> RawData:
    """``cifar-10-batches-py`` (or its ``.tar.gz``) from ``data_path`` (only there, when given) or Keras' cache,
    then a download; or, at ``data_path``, a copy of CIFAR-10 as image files in ``train/<class>/`` and
    ``test/<class>/`` folders (:func:`_read_cifar_images`). The batches are pickles: they are read with
    :func:`~core.data.safe_load.cifar_unpickle`, which accepts dicts, lists, bytes and NumPy arrays and nothing
    else, and only the six expected members are read."""
    if data_path:
        path = Path(data_path).expanduser()
        folder = _cifar_folder(path)
        if folder is not None:
            return _read_cifar_folder(folder)
        if path.is_dir() and first_child(unwrap(path), TRAIN_DIR_NAMES) is not None:
            return _read_cifar_images(path, progress)
        if path.is_file():
            return _read_cifar_tar(path)
        raise DatasetUnavailable(f"--data {data_path} is neither cifar-10-python.tar.gz nor a folder holding "
                                 "cifar-10-batches-py. " + HOW_TO_GET["cifar10"])
    candidates = []
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


def _read_cifar_images(path: Path, progress: Callable[[int, int], None] | None) -> RawData:
    """The "CIFAR-10 images" layout: ``train/<class>/*.jpg`` (50,000) and ``test/<class>/*.jpg`` (the official
    10,000 test images) as 32x32 image files. Classes keep the official order and label numbers whatever the
    folders' order; the test folder is the test split and the validation split is drawn from the training
    pool, as with the official batches. Its ``form`` is ``jpeg-copy``: not the official pixels."""
    raw = load_image_folder(path, 32, progress)
    if sorted(raw.class_names) != sorted(CIFAR_CLASSES) or raw.y_test is None:
        raise DatasetUnavailable(f"{path} is not a CIFAR-10 image copy: it needs train/ and test/ folders with "
                                 f"the ten classes {', '.join(CIFAR_CLASSES)} (found {', '.join(raw.class_names)}).")
    official = np.array([CIFAR_CLASSES.index(name) for name in raw.class_names])
    raw.y_train, raw.y_test = official[raw.y_train], official[raw.y_test]
    raw.class_names = list(CIFAR_CLASSES)
    raw.info["form"] = "jpeg-copy" if any(f.lower().endswith((".jpg", ".jpeg")) for f in raw.info["pool_files"][:50]) \
        else "image-copy"
    return raw


def _cifar_folder(path: Path) -> Path | None:
    for folder in (path, path / "cifar-10-batches-py"):
        if (folder / "data_batch_1").is_file() and (folder / "test_batch").is_file():
            return folder
    return None


def _cifar_batch(blob: Any, where: str) -> tuple[np.ndarray, np.ndarray]:
    try:
        data = np.asarray(blob[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
        labels = np.asarray(blob[b"labels"], dtype=np.int64)
    except (KeyError, TypeError, ValueError) as exc:
        raise DatasetUnavailable(f"{where} is not a CIFAR-10 batch ({type(exc).__name__}: {exc}).") from exc
    if len(data) != len(labels) or labels.min(initial=0) < 0 or labels.max(initial=0) > 9:
        raise DatasetUnavailable(f"{where} is not a CIFAR-10 batch ({len(data)} images, {len(labels)} labels).")
    return np.ascontiguousarray(data), labels


def _cifar_from_batches(read: Callable[[str], Any], source: str) -> RawData:
    train = [_cifar_batch(read(name), f"{source}: {name}") for name in CIFAR_MEMBERS[:5]]
    x_test, y_test = _cifar_batch(read("test_batch"), f"{source}: test_batch")
    x_train = np.concatenate([x for x, _ in train])
    y_train = np.concatenate([y for _, y in train])
    return RawData(CIFAR_CLASSES, x_train, y_train, x_test, y_test, info={"source": source})


def _unpickle_batch(stream, where: str) -> Any:
    try:
        return cifar_unpickle(stream)
    except UnsafeDataError as exc:
        raise DatasetUnavailable(f"{where} is not a genuine CIFAR-10 batch and was not loaded: {exc}.") from exc
    except Exception as exc:  # noqa: BLE001 - any malformed pickle is one clear line, never a traceback
        raise DatasetUnavailable(f"{where} could not be read as a CIFAR-10 batch ({type(exc).__name__}).") from exc


def _read_cifar_folder(folder: Path) -> RawData:
    def read(name: str) -> Any:
        path = folder / name
        if path.stat().st_size > CIFAR_MAX_MEMBER_BYTES:
            raise DatasetUnavailable(f"{path} is too large to be a CIFAR-10 batch.")
        with open(path, "rb") as fh:
            return _unpickle_batch(fh, str(path))
    return _cifar_from_batches(read, str(folder))


def _read_cifar_tar(archive: Path) -> RawData:
    """Only ``cifar-10-batches-py/<batch>`` regular files are read; links, other names and oversized members
    are never extracted."""
    try:
        with tarfile.open(archive, "r:gz") as tar:
            members = {}
            for m in tar.getmembers():
                parts = Path(m.name).parts
                if m.isfile() and len(parts) == 2 and parts[0] == "cifar-10-batches-py" and parts[1] in CIFAR_MEMBERS:
                    members[parts[1]] = m

            def read(name: str) -> Any:
                if name not in members:
                    raise DatasetUnavailable(f"{archive} has no cifar-10-batches-py/{name}; is it "
                                             "cifar-10-python.tar.gz?")
                if members[name].size > CIFAR_MAX_MEMBER_BYTES:
                    raise DatasetUnavailable(f"{archive}: {name} is too large to be a CIFAR-10 batch.")
                return _unpickle_batch(tar.extractfile(members[name]), f"{archive}: {name}")
            return _cifar_from_batches(read, str(archive))
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise DatasetUnavailable(f"{archive} is not a readable cifar-10-python.tar.gz ({type(exc).__name__}: "
                                 f"{exc}).") from exc


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


