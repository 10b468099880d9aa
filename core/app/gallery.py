"""Which test images a method gets wrong, which ones the second stage changes, and their pixels.

Why here: the Results page's confusion-matrix cells and its "what changed" lists are joins of a record's
per-image predictions (:mod:`core.results.predictions`) with the dataset's class names and, where the dataset is on
this machine, the images themselves. The test images are not shipped with the results, so an image is looked
up by the name the record stored (``"test #i"`` in a Keras dataset, a path relative to the dataset folder for
a folder dataset) and shown only when that source is here; otherwise the page shows the name and the
probabilities, which every record holds for every image a method got wrong.

Outcomes of one test image in one repeat, stage one (under the protocol's reported weights) against a head:

- ``fixed``: stage one wrong, the head right;
- ``broken``: stage one right, the head wrong;
- ``both wrong``: both wrong, with different classes.

``(fixed - broken) / test images`` is exactly the head's accuracy gain in that repeat, so these lists are the
whole story behind Table 2's mean difference. For every changed image the frame also says whether stage one
alone gets it right after re-estimating BatchNorm statistics (``last_bn``/``best_bn``) or at its best
checkpoint, which is Table 3's question asked image by image.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..protocol.vocabulary import is_keras_dataset
from ..results import predictions

OUTCOMES = {"fixed": "fixed by the head", "broken": "broken by the head", "both wrong": "both wrong, differently"}
DISPLAY_SIZE = 128
"""Side of a folder image as shown: what the photo models saw (128x128)."""


# ------------------------------------------------------------------------------------------- records

def with_predictions(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The repeats whose records hold per-image predictions (records made before they existed do not)."""
    return [r for r in runs if r.get("predictions")]


def decoded(run: dict[str, Any]) -> dict[str, Any] | None:
    """A record's predictions as arrays, or None for a record made before they were stored."""
    block = run.get("predictions")
    return predictions.decode(block) if block else None


def label_set(dec: dict[str, Any], method: str) -> str:
    """The label vector of ``method`` (``stage1`` = stage one under the protocol's reported weights)."""
    return f"stage1_{dec['stage1_weights']}" if method == "stage1" else method


def _probs_at(dec: dict[str, Any], method: str, test_rows: np.ndarray) -> np.ndarray:
    """Probabilities of ``method`` for test rows that some method got wrong (all the block keeps)."""
    pos = np.searchsorted(dec["rows"], test_rows)
    return dec["probs"][method][pos]


def _ids_at(dec: dict[str, Any], test_rows: np.ndarray) -> list[str]:
    pos = np.searchsorted(dec["rows"], test_rows)
    return [dec["ids"][int(p)] for p in pos]


# ------------------------------------------------------------------------------------ a matrix cell

def cell_images(runs: list[dict[str, Any]], method: str, true: int, predicted: int) -> pd.DataFrame:
    """The test images of true class ``true`` that ``method`` called ``predicted`` (an off-diagonal cell of
    its confusion matrix), one row per repeat and image, most confident mistakes first.

    Diagonal cells (correct answers) have no stored probabilities or names, so they give an empty frame.
    """
    columns = ["repeat", "row", "id", "true", "predicted", "p predicted", "p true"]
    parts = []
    for run in with_predictions(runs) if true != predicted else []:
        dec = decoded(run)
        names = run["dataset"]["class_names"]
        labels = dec["labels"][label_set(dec, method)]
        hit = np.flatnonzero((dec["y_true"] == true) & (labels == predicted))
        if len(hit):
            probs = _probs_at(dec, method, hit)
            parts.append(pd.DataFrame({
                "repeat": int(run["repeat"]), "row": hit, "id": _ids_at(dec, hit), "true": names[true],
                "predicted": names[predicted], "p predicted": probs[:, predicted].astype(float),
                "p true": probs[:, true].astype(float)}))
    frame = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=columns)
    return frame.sort_values(["p predicted", "repeat"], ascending=[False, True], ignore_index=True)


# ------------------------------------------------------------------------------- what the head changed

def changes(runs: list[dict[str, Any]], head: str) -> pd.DataFrame:
    """Every test image on which stage one (reported weights) and ``head`` disagree, per repeat.

    Columns: ``repeat``, ``row``, ``id``, ``true``, ``stage one``, ``head`` (class names), ``p stage one`` and
    ``p head`` (each one's probability of its own answer), ``p true stage one``/``p true head``, ``outcome``
    (a key of :data:`OUTCOMES`), ``BN alone`` (stage one with BatchNorm re-estimated, same weights, is right)
    and ``best alone`` (stage one's best checkpoint is right).
    """
    columns = ["repeat", "row", "id", "true", "stage one", "head", "p stage one", "p head", "p true stage one",
               "p true head", "outcome", "BN alone", "best alone"]
    parts = []
    for run in with_predictions(runs):
        dec = decoded(run)
        names = np.asarray(run["dataset"]["class_names"], dtype=object)
        y = dec["y_true"]
        first, second = dec["labels"][label_set(dec, "stage1")], dec["labels"][head]
        hit = np.flatnonzero(first != second)
        if not len(hit):
            continue
        t, a, b = y[hit], first[hit], second[hit]
        p1, p2 = _probs_at(dec, "stage1", hit), _probs_at(dec, head, hit)
        rows = np.arange(len(hit))
        parts.append(pd.DataFrame({
            "repeat": int(run["repeat"]), "row": hit, "id": _ids_at(dec, hit), "true": names[t],
            "stage one": names[a], "head": names[b], "p stage one": p1[rows, a].astype(float),
            "p head": p2[rows, b].astype(float), "p true stage one": p1[rows, t].astype(float),
            "p true head": p2[rows, t].astype(float),
            "outcome": np.where(b == t, "fixed", np.where(a == t, "broken", "both wrong")),
            "BN alone": dec["labels"][f"stage1_{dec['stage1_weights']}_bn"][hit] == t,
            "best alone": dec["labels"]["stage1_best"][hit] == t}))
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=columns)


def change_summary(runs: list[dict[str, Any]], head: str, frame: pd.DataFrame | None = None) -> dict[str, Any]:
    """Counts behind the gain, summed over the repeats with predictions (``frame``: :func:`changes` of the
    same runs and head, when the caller has it already).

    ``net`` is ``fixed - broken``; ``net / test_images`` equals the head's mean accuracy gain over those
    repeats. ``fixed_by_bn``/``fixed_by_best``: of the fixed images, how many stage one already gets right
    with BatchNorm re-estimated / at its best checkpoint; ``broken_by_bn``: of the broken ones, how many
    the re-estimated stage one also gets wrong.
    """
    frame = changes(runs, head) if frame is None else frame
    used = with_predictions(runs)
    fixed, broken = frame[frame["outcome"] == "fixed"], frame[frame["outcome"] == "broken"]
    images = int(sum(int(r["predictions"]["n"]) for r in used))
    return {"repeats": len(used), "test_images": images, "fixed": len(fixed), "broken": len(broken),
            "both_wrong": int((frame["outcome"] == "both wrong").sum()), "net": len(fixed) - len(broken),
            "gain": (len(fixed) - len(broken)) / images if images else float("nan"),
            "fixed_by_bn": int(fixed["BN alone"].sum()), "fixed_by_best": int(fixed["best alone"].sum()),
            "broken_by_bn": int((~broken["BN alone"].astype(bool)).sum())}


# ------------------------------------------------------------------------------------------ pixels

def image_source(run: dict[str, Any]) -> str | None:
    """Where this run's images are on this machine, or None (never downloads).

    Keras datasets: the recorded source folder, the protocol's ``data_path`` or the usual local copies.
    Folder datasets: the folder the record names (its ``dataset.source``, the scanned root the image names
    are relative to), else the protocol's ``data_path``, when it exists here.
    """
    from .preview import local_source

    name = run["dataset"]["name"]
    given = run["protocol"].get("data_path")
    if is_keras_dataset(name):
        return local_source(name, given) or (local_source(name, run["dataset"].get("source"))
                                             if run["dataset"].get("source") else None)
    for candidate in (run["dataset"].get("source"), given):
        if candidate and Path(candidate).expanduser().is_dir():
            return str(Path(candidate).expanduser())
    return None


def image(dataset: str, image_id: str, source: str | None) -> np.ndarray | None:
    """The pixels (uint8, HxWxC) of a test image named in a record, or None when they are not here."""
    if not source:
        return None
    if is_keras_dataset(dataset):
        return _keras_image(dataset, source, image_id)
    return _folder_image(source, image_id)


def _keras_image(dataset: str, source: str, image_id: str) -> np.ndarray | None:
    split, _, index = image_id.partition(" #")
    if split not in ("test", "train") or not index.isdigit():
        return None
    x = _keras_split(dataset, source, split)
    i = int(index)
    return None if x is None or i >= len(x) else np.array(x[i])


@functools.lru_cache(maxsize=2)
def _keras_split(dataset: str, source: str, split: str) -> np.ndarray | None:
    """One split's images of a Keras dataset. Only the split is kept: the galleries show test images, and the
    whole set (CIFAR-10's 180 MB, Fashion-MNIST's 55 MB) held in a server for them outweighed a page."""
    from ..data.datasets import load_raw

    raw = load_raw(dataset, source)
    x = raw.x_test if split == "test" else raw.x_train
    return None if x is None else np.array(x)  # a copy: a view would keep the whole set alive


@functools.lru_cache(maxsize=1024)
def _folder_image(root: str, image_id: str) -> np.ndarray | None:
    """Decode one file under ``root``; a name that leaves the folder (``..``) or is not an image gives None."""
    from ..data.imageio import ImageError, decode_image

    base = Path(root).resolve()
    path = (base / image_id).resolve()
    if not path.is_relative_to(base) or not path.is_file():
        return None
    try:
        return decode_image(path.read_bytes(), size=DISPLAY_SIZE)
    except (ImageError, OSError):
        return None
