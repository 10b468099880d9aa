"""Per-image test predictions, stored compactly in every run record.

Why in the record: accuracies alone cannot say *which* images the second stage gets right that stage one got
wrong, and the test images themselves are not shipped. So each record keeps every method's predicted class for
every test image (one byte each), and, for the images that at least one method gets wrong (every image on
which the methods disagree is among them), the class probabilities and the image's name in its dataset. The
Results page's confusion matrices and "what changed" galleries are computed from this, for shipped runs too.

Arrays are stored as base64 of their raw bytes (uint8 labels, uint32 rows, float16 probabilities): a
Fashion-MNIST record grows by about 130 kB, a Dogs & Cats one by 10 kB.
"""

from __future__ import annotations

import base64
from typing import Any

import numpy as np

from ..protocol.vocabulary import METHODS

LABEL_SETS = ("stage1_last", "stage1_best", "stage1_last_bn", "stage1_best_bn", "adam", "sgd")
"""Every predicted-label vector a record holds: stage one under the four weight choices, and both heads
(under the protocol's ``stage2_eval`` weights)."""
PROB_SETS = METHODS
"""Methods whose probabilities are kept (stage one under the protocol's ``stage1_eval`` weights)."""


def pack(array: np.ndarray, dtype: str) -> str:
    return base64.b64encode(np.ascontiguousarray(array, dtype=dtype).tobytes()).decode("ascii")


def unpack(text: str, dtype: str, shape: tuple[int, ...] = (-1,)) -> np.ndarray:
    return np.frombuffer(base64.b64decode(text), dtype=dtype).reshape(shape)


def encode(y_true: np.ndarray, probs: dict[str, np.ndarray], stage1_weights: str,
           image_ids: Any) -> dict[str, Any]:
    """The record's ``predictions`` block.

    ``probs`` maps every name in :data:`LABEL_SETS` to an ``(n, classes)`` probability array; ``image_ids``
    is a callable from row indices to image names (``Dataset.image_ids`` for the test split).
    """
    y_true = np.asarray(y_true)
    n, classes = probs["adam"].shape
    labels = {name: np.argmax(probs[name], axis=1) for name in LABEL_SETS}
    wrong = np.zeros(n, dtype=bool)
    for pred in labels.values():
        wrong |= pred != y_true
    rows = np.flatnonzero(wrong)
    chosen = {"stage1": probs[f"stage1_{stage1_weights}"], "adam": probs["adam"], "sgd": probs["sgd"]}
    return {
        "split": "test", "n": int(n), "classes": int(classes), "stage1_weights": stage1_weights,
        "y_true": pack(y_true, "uint8"),
        "labels": {name: pack(pred, "uint8") for name, pred in labels.items()},
        "rows": pack(rows, "uint32"),
        "ids": list(image_ids(rows)) if len(rows) else [],
        "probs": {name: pack(p[rows], "float16") for name, p in chosen.items()},
    }


def decode(block: dict[str, Any]) -> dict[str, Any]:
    """Arrays back from a record's ``predictions`` block: ``y_true``, ``labels[name]``, ``rows``, ``ids`` and
    ``probs[name]`` (rows of ``rows`` only)."""
    classes = int(block["classes"])
    rows = unpack(block["rows"], "uint32").astype(np.int64)
    return {
        "n": int(block["n"]), "classes": classes, "stage1_weights": block["stage1_weights"],
        "y_true": unpack(block["y_true"], "uint8").astype(np.int64),
        "labels": {k: unpack(v, "uint8").astype(np.int64) for k, v in block["labels"].items()},
        "rows": rows, "ids": list(block["ids"]),
        "probs": {k: unpack(v, "float16", (len(rows), classes)).astype(np.float32)
                  for k, v in block["probs"].items()},
    }
