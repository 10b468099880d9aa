"""Non-UI helpers for the app's pages: dataset availability and split sizes without loading pixels, sample
grids, augmentation previews and architecture diagrams.

Nothing here imports Streamlit; the pages cache these results themselves.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..data.datasets import (FASHION_SYSTEM_DIR, HOW_TO_GET, KERAS_DATASETS_DIR, DatasetUnavailable, class_pick_count,
                             load_raw)
from ..data.folders import TRAIN_DIR_NAMES, scan_image_folder
from ..data.imageio import ImageError, decode_image
from ..protocol.config import Augmentation, Protocol
from ..protocol.vocabulary import (INPUT_SHAPES, NUM_CLASSES, dataset_title, is_keras_dataset,
                                   is_photo_dataset)

_IDX_NAMES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
              "t10k-labels-idx1-ubyte")


# ------------------------------------------------------------------------------------------ availability

def local_source(dataset: str, data_path: str | None = None) -> str | None:
    """Where a local copy of a Keras dataset is, or None; never downloads (a page must not hang offline)."""
    if dataset == "fashion-mnist":
        folders = ([Path(data_path).expanduser()] if data_path else []) + [
            FASHION_SYSTEM_DIR, KERAS_DATASETS_DIR / "fashion-mnist"]
        for folder in folders:
            if all((folder / f"{n}.gz").is_file() or (folder / n).is_file() for n in _IDX_NAMES):
                return str(folder)
        return None
    if dataset == "cifar10":
        candidates = [Path(data_path).expanduser()] if data_path else []
        if KERAS_DATASETS_DIR.is_dir():
            candidates += sorted(KERAS_DATASETS_DIR.glob("cifar-10-batches-py*"))
            candidates += sorted(KERAS_DATASETS_DIR.glob("*/cifar-10-batches-py"))
        for c in candidates:
            for folder in (c, c / "cifar-10-batches-py"):
                if (folder / "data_batch_1").is_file() and (folder / "test_batch").is_file():
                    return str(folder)
            if c.is_file() and c.name.endswith((".tar.gz", ".tgz")):
                return str(c)
            if _has_train_folder(c):  # a "CIFAR-10 images" copy: train/<class>/ and test/<class>/
                return str(c)
        return None
    return data_path if data_path and Path(data_path).expanduser().is_dir() else None


def _has_train_folder(folder: Path) -> bool:
    """A pre-split image copy: a training folder (``train/``, ``training_set/``, ...) inside ``folder`` or inside
    its single wrapper folder."""
    for candidate in (folder, *(sorted(folder.iterdir())[:1] if folder.is_dir() else [])):
        if candidate.is_dir() and any((candidate / name).is_dir() for name in TRAIN_DIR_NAMES):
            return True
    return False


def missing_data(protocol: Protocol) -> str | None:
    """What a job of ``protocol`` would fail on before it trains: its dataset not found here, said with how to
    get it; None when it is there. Reads no pixel, so a queue button can ask on every rerun."""
    dataset, path = protocol.dataset, protocol.data_path
    title = dataset_title(dataset)
    if is_keras_dataset(dataset):
        if local_source(dataset, path) is not None:
            return None
        where = f"at {path}" if path else "on this machine"
        return f"{title} is not found {where}. {HOW_TO_GET[dataset]}"
    if not path:
        return f"No folder given for {title}. {HOW_TO_GET.get(dataset, '')}".strip()
    if not Path(path).expanduser().is_dir():
        return f"The folder {path} for {title} does not exist here. {HOW_TO_GET.get(dataset, '')}".strip()
    return None


@dataclass
class DatasetSummary:
    """What the Datasets page shows for one dataset."""

    dataset: str
    available: bool
    message: str = ""
    source: str | None = None
    class_names: list[str] = field(default_factory=list)
    pool_counts: list[int] = field(default_factory=list)
    """Images per class in the training pool (train + validation), before any split."""
    test_counts: list[int] | None = None
    """Images per class in the shipped test split, or None when the test split is carved from the pool."""
    layout: str = ""
    ignored: list[str] = field(default_factory=list)
    image_shape: tuple[int, ...] | None = None

    def split_counts(self, protocol: Protocol | None = None) -> dict[str, list[int]]:
        """Per-class images in train / val / test under ``protocol``'s splits (as :func:`load_dataset` makes
        them, before any ``limit``): the paper's Figures 9 and 12."""
        p = protocol or Protocol()
        pool = np.asarray(self.pool_counts, dtype=int)
        if self.test_counts is None:
            test = np.array([class_pick_count(c, p.test_split) for c in pool])
            pool = pool - test
        else:
            test = np.asarray(self.test_counts, dtype=int)
        val = np.array([class_pick_count(c, p.validation_split) for c in pool])
        return {"train": (pool - val).tolist(), "val": val.tolist(), "test": test.tolist()}

    def sizes(self, protocol: Protocol | None = None) -> dict[str, int]:
        return {k: int(sum(v)) for k, v in self.split_counts(protocol).items()}


def summarize(dataset: str, data_path: str | None = None) -> DatasetSummary:
    """Availability and class counts, decoding no pixel of a folder dataset."""
    try:
        if is_keras_dataset(dataset):
            source = local_source(dataset, data_path)
            if source is None:
                return DatasetSummary(dataset, False, f"No local copy found. {HOW_TO_GET[dataset]}")
            raw = load_raw(dataset, data_path)
            k = len(raw.class_names)
            return DatasetSummary(
                dataset, True, source=str(raw.info.get("source", source)), class_names=list(raw.class_names),
                pool_counts=np.bincount(raw.y_train, minlength=k).tolist(),
                test_counts=np.bincount(raw.y_test, minlength=k).tolist() if raw.y_test is not None else None,
                layout="train + test (as shipped)", image_shape=tuple(raw.x_train.shape[1:]))
        if not data_path:
            return DatasetSummary(dataset, False, f"No folder chosen yet. {HOW_TO_GET[dataset]}")
        scan = scan_image_folder(data_path)
        k = len(scan.class_names)
        pool = np.bincount([label for _, label in scan.train], minlength=k).tolist()
        test = (np.bincount([label for _, label in scan.test], minlength=k).tolist()
                if scan.layout == "pre-split" else None)
        return DatasetSummary(dataset, True, source=str(scan.root), class_names=list(scan.class_names),
                              pool_counts=pool, test_counts=test, layout=scan.layout, ignored=scan.ignored)
    except DatasetUnavailable as exc:
        return DatasetSummary(dataset, False, str(exc))
    except OSError as exc:
        return DatasetSummary(dataset, False, f"Could not read the data: {exc}")


@dataclass
class Duplicates:
    """Byte-identical image files in a folder dataset.

    Why it matters: a random split puts copies of one image on both sides, and on those test images the
    accuracy measures memory, not generalisation (the paper's own Face Mask set has such copies). Files that
    differ only in encoding are not found: this is an exact check, not a perceptual one.
    """

    groups: list[list[str]]
    """Each group: two or more files with the same bytes (paths relative to the dataset folder)."""
    across_classes: int
    """Groups whose copies sit in different class folders: one image, two labels."""
    test_with_copy: float
    """Test images with a copy among the training and validation images: counted for a pre-split folder,
    the expected number under the protocol's random test split for a flat one (see :attr:`exact`)."""
    exact: bool

    @property
    def copies(self) -> int:
        """Files beyond the first of each group."""
        return sum(len(g) - 1 for g in self.groups)


def find_duplicates(data_path: str, test_split: float = 0.2) -> Duplicates:
    """Group a folder dataset's files by content (sizes first, then SHA-256 of equal-sized files only).

    For a flat folder the test split is drawn per repeat, so the count of test images with a copy in training
    is its expectation: a group of ``g`` copies contributes ``g * q * (1 - q ** (g - 1))`` with ``q`` the test
    fraction (each copy lands in test with probability ``q``; it counts when some other copy does not).
    """
    import hashlib

    scan = scan_image_folder(data_path)
    labelled = [(path, label, "train") for path, label in scan.train] + \
               [(path, label, "test") for path, label in scan.test]
    by_size: dict[int, list[tuple[Path, int, str]]] = {}
    for item in labelled:
        by_size.setdefault(item[0].stat().st_size, []).append(item)
    groups: list[list[tuple[Path, int, str]]] = []
    for same_size in by_size.values():
        if len(same_size) < 2:
            continue
        by_hash: dict[str, list[tuple[Path, int, str]]] = {}
        for item in same_size:
            by_hash.setdefault(hashlib.sha256(item[0].read_bytes()).hexdigest(), []).append(item)
        groups += [g for g in by_hash.values() if len(g) > 1]
    if scan.layout == "pre-split":
        test_with_copy = float(sum(sum(s == "test" for _, _, s in g) for g in groups
                                   if any(s == "train" for _, _, s in g)))
    else:
        q = test_split
        test_with_copy = float(sum(len(g) * q * (1 - q ** (len(g) - 1)) for g in groups))
    return Duplicates(groups=sorted(sorted(str(p.relative_to(scan.root)) for p, _, _ in g) for g in groups),
                      across_classes=sum(len({label for _, label, _ in g}) > 1 for g in groups),
                      test_with_copy=test_with_copy, exact=scan.layout == "pre-split")


# --------------------------------------------------------------------------------------------- samples

def array_samples(x: np.ndarray, y: np.ndarray, num_classes: int, per_class: int,
                  seed: int = 0) -> list[list[np.ndarray]]:
    """``per_class`` random images of each class from arrays, each a copy: a view would keep the whole set
    (Fashion-MNIST's 55 MB) alive for as long as a page or a cache holds the samples."""
    rng = np.random.default_rng(seed)
    out = []
    for label in range(num_classes):
        idx = np.flatnonzero(y == label)
        pick = rng.choice(idx, size=min(per_class, len(idx)), replace=False) if len(idx) else []
        out.append([np.array(x[i]) for i in sorted(pick)])
    return out


def keras_samples(dataset: str, data_path: str | None, per_class: int, seed: int = 0):
    raw = load_raw(dataset, data_path)
    return raw.class_names, array_samples(raw.x_train, raw.y_train, len(raw.class_names), per_class, seed)


def folder_samples(data_path: str, per_class: int, size: int = 128, seed: int = 0):
    """Decode only the shown images of a class-folder dataset (through the one decode function)."""
    scan = scan_image_folder(data_path)
    rng = np.random.default_rng(seed)
    out: list[list[np.ndarray]] = []
    for label, _ in enumerate(scan.class_names):
        files = [f for f, lab in scan.train + scan.test if lab == label]
        order = rng.permutation(len(files))
        images: list[np.ndarray] = []
        for i in order:
            if len(images) >= per_class:
                break
            try:
                images.append(decode_image(files[i].read_bytes(), size=size))
            except (ImageError, OSError):
                continue
        out.append(images)
    return scan.class_names, out


def mosaic(images: list[np.ndarray], scale: int = 1, pad: int = 2) -> np.ndarray | None:
    """One RGB strip of same-size images (gray is expanded), for a compact sample grid."""
    if not images:
        return None
    tiles = []
    for img in images:
        img = np.asarray(img)
        if img.ndim == 2:
            img = img[..., None]
        if img.shape[-1] == 1:
            img = np.repeat(img, 3, axis=-1)
        if scale > 1:
            img = np.repeat(np.repeat(img, scale, axis=0), scale, axis=1)
        tiles.append(img)
    h = max(t.shape[0] for t in tiles)
    strip = []
    for t in tiles:
        if t.shape[0] != h:
            t = np.pad(t, ((0, h - t.shape[0]), (0, 0), (0, 0)), constant_values=255)
        strip += [t, np.full((h, pad, 3), 255, np.uint8)]
    return np.concatenate(strip[:-1], axis=1).astype(np.uint8)


# ---------------------------------------------------------------------------------------- augmentation

def demo_image(size: int = 160) -> np.ndarray:
    """A built-in asymmetric picture (so rotation, shift and flips are visible) for when no data is present."""
    import cv2

    img = np.full((size, size, 3), 235, np.uint8)
    cv2.rectangle(img, (size // 8, size // 8), (size // 2, size // 2), (220, 60, 60), -1)
    cv2.circle(img, (3 * size // 4, 3 * size // 4), size // 7, (40, 120, 220), -1)
    pts = np.array([[size // 2, size - size // 6], [size // 6, size - size // 6], [size // 3, size // 2 + 10]])
    cv2.fillPoly(img, [pts.astype(np.int32)], (40, 170, 80))
    cv2.putText(img, "R", (size // 2 + 8, size // 3 + 6), cv2.FONT_HERSHEY_SIMPLEX, size / 90, (30, 30, 30), 3)
    return img


def augment_variants(image: np.ndarray, aug: Augmentation, n: int = 12, seed: int = 0) -> list[np.ndarray]:
    """``n`` augmented versions of one uint8 image through the model's own augmentation layers (seeded:
    the same seed gives the same variants)."""
    import keras

    from ..models.models import augmentation_layers

    image = np.asarray(image)
    if image.ndim == 2:
        image = image[..., None]
    keras.utils.set_random_seed(seed)
    x = np.repeat(image[None].astype(np.float32), n, axis=0)
    out = keras.ops.convert_to_tensor(x)
    for layer in augmentation_layers(aug, seed):
        out = layer(out, training=True)
    arr = np.clip(np.round(keras.ops.convert_to_numpy(out)), 0, 255).astype(np.uint8)
    return [arr[i] for i in range(n)]


# --------------------------------------------------------------------------------------- architectures

def architecture(dataset: str, with_augmentation: bool | None = None) -> dict[str, Any]:
    """Stage-one layers (with the cut marked), the stage-two head, and parameter counts for one dataset."""
    from ..models.models import FEATURE_LAYER, build_head, build_stage1, layer_table

    arch = "dogs-cats" if dataset == "folder" else dataset
    shape = INPUT_SHAPES[arch]
    classes = NUM_CLASSES[arch]
    augment = is_photo_dataset(dataset) if with_augmentation is None else with_augmentation
    model = build_stage1(arch, shape, classes, Augmentation() if augment else None)
    rows = layer_table(model)
    if not rows or rows[0]["type"] != "InputLayer":
        rows.insert(0, {"name": "pixels", "type": "InputLayer", "output shape": str((None, *shape)),
                        "parameters": 0})
    cut = next(i for i, r in enumerate(rows) if r["name"] == FEATURE_LAYER)
    for i, row in enumerate(rows):
        row["part"] = "feature extractor" if i <= cut else "dropped by stage two"
    feature_dim = int(model.get_layer(FEATURE_LAYER).output.shape[-1])
    head = build_head(feature_dim, classes)
    head_rows = layer_table(head)
    if not head_rows or head_rows[0]["type"] != "InputLayer":
        head_rows.insert(0, {"name": "features", "type": "InputLayer", "output shape": str((None, feature_dim)),
                             "parameters": 0})
    return {"dataset": dataset, "architecture": arch, "input_shape": shape, "num_classes": classes,
            "augmented": augment, "rows": rows, "cut_index": cut, "feature_dim": feature_dim,
            "head_rows": head_rows, "stage1_params": int(model.count_params()),
            "head_params": int(head.count_params()),
            "extractor_params": int(sum(r["parameters"] for r in rows[: cut + 1]))}


def architecture_dot(info: dict[str, Any]) -> str:
    """Graphviz DOT of stage one with the cut after the last hidden layer, and stage two's head beside it."""
    def esc(s: str) -> str:
        return s.replace('"', "'")

    lines = ['digraph G {', 'rankdir=TB; nodesep=0.3; ranksep=0.18;',
             'node [shape=box, style="rounded,filled", fontname="Helvetica", fontsize=13, height=0.35, width=2.6];',
             'edge [arrowsize=0.5];']
    lines.append('subgraph cluster_s1 { label="Stage one: the CNN (trained with Adam)"; fontname="Helvetica"; '
                 'color="#999999"; style=rounded;')
    rows, cut = info["rows"], info["cut_index"]
    for i, r in enumerate(rows):
        if r["type"].startswith("Random"):
            color = "#fde2b8"
        elif i <= cut:
            color = "#d6e6f5"
        else:
            color = "#eeeeee"
        label = f'{r["type"]}\\n{shape_text(r["output shape"])}  ·  {r["parameters"]:,} params'
        extra = ', penwidth=2.5, color="#c0392b"' if i == cut else ""
        lines.append(f'n{i} [label="{esc(label)}", fillcolor="{color}"{extra}];')
    for i in range(len(rows) - 1):
        style = ' [style=dashed, color="#c0392b", label="  cut", fontcolor="#c0392b", fontsize=10]' \
            if i == cut else ""
        lines.append(f"n{i} -> n{i + 1}{style};")
    lines.append("}")
    lines.append('subgraph cluster_s2 { label="Stage two: brand-new softmax model (Adam / SGD)"; '
                 'fontname="Helvetica"; color="#c0392b"; style=rounded;')
    for j, r in enumerate(info["head_rows"]):
        label = f'{r["type"]}\\n{shape_text(r["output shape"])}  ·  {r["parameters"]:,} params'
        lines.append(f'h{j} [label="{esc(label)}", fillcolor="#f9d6d5"];')
    for j in range(len(info["head_rows"]) - 1):
        lines.append(f"h{j} -> h{j + 1};")
    lines.append("}")
    lines.append(f'n{cut} -> h0 [style=bold, color="#c0392b", label=" features ({info["feature_dim"]})", '
                 'fontcolor="#c0392b", fontsize=10];')
    # stage two below stage one, not beside it: the diagram stays one node wide, so a page column holds it at
    # its own size instead of shrinking its text
    lines.append(f"n{len(rows) - 1} -> h0 [style=invis];")
    lines.append("}")
    return "\n".join(lines)


def shape_text(text: str) -> str:
    """"(None, 28, 28, 64)" as "28×28×64": the batch dimension says nothing in a diagram and widened it."""
    parts = [p.strip() for p in str(text).strip("()").split(",") if p.strip() and p.strip() != "None"]
    return "×".join(parts) or str(text)


METHOD_DOT = """digraph G {
rankdir=LR; nodesep=0.35; ranksep=0.35;
node [shape=box, style="rounded,filled", fontname="Helvetica", fontsize=11];
edge [fontname="Helvetica", fontsize=9];
img [label="images\\n(train / val / test)", fillcolor="#eeeeee"];
subgraph cluster_1 { label="Stage one"; style=rounded; color="#1f77b4"; fontname="Helvetica";
  cnn [label="CNN layers\\n(conv, pool, dropout, dense)", fillcolor="#d6e6f5"];
  sm1 [label="softmax", fillcolor="#d6e6f5"]; cnn -> sm1; }
subgraph cluster_2 { label="Stage two"; style=rounded; color="#c0392b"; fontname="Helvetica";
  feat [label="features of the\\nlast hidden layer", shape=parallelogram, fillcolor="#fde2b8"];
  adam [label="new softmax\\ntrained with Adam", fillcolor="#f9d6d5"];
  sgd [label="new softmax\\ntrained with SGD+momentum", fillcolor="#f9d6d5"];
  feat -> adam; feat -> sgd; }
img -> cnn [label="train with Adam,\\nEarlyStopping"];
cnn -> feat [label="cut here, freeze", style=dashed, color="#c0392b"];
sm1 -> p1; p1 [label="CNN accuracy", shape=note, fillcolor="#ffffff"];
adam -> p2; sgd -> p2; p2 [label="two-stage accuracy\\n(paired t-test vs CNN)", shape=note, fillcolor="#ffffff"];
}"""
