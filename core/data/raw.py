"""A dataset as its source ships it (:class:`RawData`), the one error every loader raises
(:class:`DatasetUnavailable`, saying how to get the data), and the in-place array compaction the splits use,
so a loaded dataset costs little more than its raw pixels. The base of :mod:`core.data`: the loaders
(:mod:`core.data.folders`, :mod:`core.data.datasets`) build on it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


HOW_TO_GET = {
    "fashion-mnist": "Install it with `sudo apt-get install dataset-fashion-mnist` (Debian/Ubuntu), let Keras "
                     "download it once with network access, or give the folder holding "
                     "train-images-idx3-ubyte.gz and the three other IDX files (the app's data folder box, or --data on "
                     "the command line).",
    "cifar10": "Let Keras download it once with network access (keras.datasets.cifar10.load_data()), or "
               "download cifar-10-python.tar.gz from https://www.cs.toronto.edu/~kriz/cifar.html and give the "
               "archive or its extracted cifar-10-batches-py folder, or a 'CIFAR-10 images' copy (train/<class>/ "
               "and test/<class>/ image folders) (the app's data folder box, or --data on the command line).",
    "dogs-cats": "Download the Kaggle 'cat-and-dog' set (training_set/ and test_set/ with cats/ and dogs/) and "
                 "give the folder that holds them (the app's data folder box, or --data on the command line).",
    "face-mask": "Download the Kaggle 'face-mask-detection' set (with_mask/, without_mask/, "
                 "mask_weared_incorrect/) and give the folder that holds them (the app's data folder box, or "
                 "--data on the command line).",
    "folder": "Give a folder with one sub-folder of images per class (the app's data folder box, or --data on "
              "the command line).",
}



class DatasetUnavailable(RuntimeError):
    """The dataset could not be found or read; the message says where we looked and how to get it."""



@dataclass
class RawData:
    """A dataset as shipped: a training pool and (if the source has one) a test split."""

    class_names: list[str]
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray | None
    y_test: np.ndarray | None
    info: dict[str, Any] = field(default_factory=dict)



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
