"""Classification metrics from predicted labels: confusion matrices and per-class precision, recall and F1.

One implementation for every experiment (the paper's runs, the related reports' models, sweeps): the
definitions are report 002's equations. For class ``c``, with ``TP`` the images of ``c`` predicted ``c``,
``FP`` the images of other classes predicted ``c`` and ``FN`` the images of ``c`` predicted otherwise:

    precision = TP / (TP + FP),  recall = TP / (TP + FN),  F1 = 2 * precision * recall / (precision + recall)

A class never predicted has precision 0 (and a class absent from the labels recall 0), as scikit-learn's
``zero_division=0``; macro averages are plain means over classes.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from . import predictions


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> np.ndarray:
    """``m[i, j]`` = number of images of true class ``i`` predicted as class ``j``."""
    y_true, y_pred = np.asarray(y_true, dtype=np.int64), np.asarray(y_pred, dtype=np.int64)
    return np.bincount(y_true * num_classes + y_pred, minlength=num_classes ** 2).reshape(num_classes,
                                                                                          num_classes)


def per_class(matrix: np.ndarray, class_names: list[str], repeats: int = 1) -> pd.DataFrame:
    """Precision, recall, F1 and support per class, plus a ``macro average`` row.

    ``matrix`` may be ``repeats`` repeats' matrices summed (:func:`experiment_confusion`): the rates are then
    pooled over them, and ``support`` is still the test images of the class in one repeat (a reader takes
    "support 20000" for the test set's size, not 20 x 1,000)."""
    matrix = np.asarray(matrix, dtype=np.float64)
    tp = np.diag(matrix)
    predicted, actual = matrix.sum(axis=0), matrix.sum(axis=1)
    precision = np.divide(tp, predicted, out=np.zeros_like(tp), where=predicted > 0)
    recall = np.divide(tp, actual, out=np.zeros_like(tp), where=actual > 0)
    both = precision + recall
    f1 = np.divide(2 * precision * recall, both, out=np.zeros_like(tp), where=both > 0)
    support = actual / max(int(repeats), 1)
    frame = pd.DataFrame({"precision": precision, "recall": recall, "F1": f1, "support": support},
                         index=pd.Index(class_names, name="class"))
    frame.loc["macro average"] = [precision.mean(), recall.mean(), f1.mean(), support.sum()]
    whole = np.allclose(frame["support"], np.round(frame["support"]))  # repeats with differing test sets: a mean
    frame["support"] = frame["support"].round().astype(int) if whole else frame["support"].round(1)
    return frame


def accuracy(matrix: np.ndarray) -> float:
    matrix = np.asarray(matrix)
    return float(np.trace(matrix) / matrix.sum()) if matrix.sum() else float("nan")


def record_confusion(run: dict[str, Any], method: str) -> np.ndarray | None:
    """A stored repeat's test-set confusion matrix for ``stage1`` (under the protocol's reported weights),
    ``adam`` or ``sgd`` (or any name in :data:`core.results.predictions.LABEL_SETS`); None for a record made before
    per-image predictions were stored."""
    block = run.get("predictions")
    if not block:
        return None
    decoded = predictions.decode(block)
    name = f"stage1_{decoded['stage1_weights']}" if method == "stage1" else method
    return confusion_matrix(decoded["y_true"], decoded["labels"][name], decoded["classes"])


def experiment_confusion(runs: list[dict[str, Any]], method: str) -> tuple[np.ndarray | None, int]:
    """The confusion matrices of all repeats that stored predictions, summed; and how many repeats that is."""
    found = [m for m in (record_confusion(run, method) for run in runs) if m is not None]
    return (np.sum(found, axis=0), len(found)) if found else (None, 0)


def per_class_summary(runs: list[dict[str, Any]], methods: tuple[str, ...] = ("stage1", "adam", "sgd")
                      ) -> pd.DataFrame:
    """Per class and method: recall (the class's accuracy), precision and F1, each the mean over the repeats
    that stored predictions, with the class's test images per repeat; then per method the macro averages and
    the worst class (each repeat's lowest recall, averaged). A gain that lives in one class shows as one
    class's recall moving while the others stay."""
    rows = []
    for method in methods:
        tables = [per_class(m, r["dataset"]["class_names"]) for r in runs
                  if (m := record_confusion(r, method)) is not None]
        if not tables:
            continue
        mean = sum(tables) / len(tables)
        worst = float(np.mean([t.drop(index="macro average")["recall"].min() for t in tables]))
        for name in mean.index:
            rows.append({"method": method, "class": name, "recall": mean.loc[name, "recall"],
                         "precision": mean.loc[name, "precision"], "F1": mean.loc[name, "F1"],
                         "test images per repeat": mean.loc[name, "support"], "repeats": len(tables)})
        rows.append({"method": method, "class": "worst class", "recall": worst, "precision": float("nan"),
                     "F1": float("nan"), "test images per repeat": float("nan"), "repeats": len(tables)})
    return pd.DataFrame(rows)


def record_per_class(y_true: np.ndarray, labels: dict[str, np.ndarray], class_names: list[str]
                     ) -> dict[str, dict[str, list[float]]]:
    """A record's per-class summary: per method, each class's recall, precision and F1 on the test split."""
    out = {}
    for method, y_pred in labels.items():
        table = per_class(confusion_matrix(y_true, y_pred, len(class_names)), class_names).drop(index="macro average")
        out[method] = {k: [round(float(v), 6) for v in table[k]] for k in ("recall", "precision", "F1")}
    return out
