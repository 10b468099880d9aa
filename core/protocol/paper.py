"""The paper's published Table 1 and Table 2 (Zhou, "Image Classification by CNN with Two-stage Training").

These are the only numbers in the project that were not produced by a run here; every accessor labels them
as the paper's. Accuracies are fractions. Version 2 of Face Mask Detection is given with and without the one
outlier experiment the paper excludes. The paper reports 20 repeats per dataset on an RTX 2080 Ti.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pandas as pd

from .vocabulary import TABLE_METHOD_NAMES

if TYPE_CHECKING:
    from .config import Protocol

SOURCE = "Zhou, Image Classification by CNN with Two-stage Training, Tables 1-2 (20 repeats, RTX 2080 Ti)"
REPEATS = 20

# column -> (dataset id, protocol note)
COLUMNS = {
    "Fashion-MNIST": ("fashion-mnist", "paper protocol"),
    "Cifar-10": ("cifar10", "paper protocol"),
    "Dogs & Cats": ("dogs-cats", "paper protocol"),
    "Face Mask Detection v1": ("face-mask", "version 1: EarlyStopping patience 10"),
    "Face Mask Detection v2": ("face-mask", "version 2: patience 5 + ReduceLROnPlateau"),
    "Face Mask Detection v2 (excluding one outlier)": ("face-mask", "version 2, one outlier excluded"),
}

# TABLE1[column][method] = (train, val, test)
TABLE1: dict[str, dict[str, tuple[float, float, float]]] = {
    "Fashion-MNIST": {"stage1": (0.9703, 0.9210, 0.9175), "adam": (0.9764, 0.9225, 0.9186),
                      "sgd": (0.9749, 0.9230, 0.9191)},
    "Cifar-10": {"stage1": (0.9877, 0.8591, 0.8566), "adam": (0.9924, 0.8644, 0.8607),
                 "sgd": (0.9888, 0.8638, 0.8606)},
    "Dogs & Cats": {"stage1": (0.8247, 0.8064, 0.8140), "adam": (0.9162, 0.8675, 0.8732),
                    "sgd": (0.9118, 0.8680, 0.8765)},
    "Face Mask Detection v1": {"stage1": (0.9227, 0.9099, 0.9088), "adam": (0.9906, 0.9778, 0.9759),
                               "sgd": (0.9865, 0.9751, 0.9719)},
    "Face Mask Detection v2": {"stage1": (0.9728, 0.9611, 0.9599), "adam": (0.9930, 0.9831, 0.9813),
                               "sgd": (0.9903, 0.9800, 0.9775)},
    "Face Mask Detection v2 (excluding one outlier)": {
        "stage1": (0.9918, 0.9807, 0.9787), "adam": (0.9959, 0.9857, 0.9844),
        "sgd": (0.9934, 0.9828, 0.9810)},
}

# TABLE2[column] = (mean first-stage test, mean second-stage test, alpha, two-tailed p); second stage = Adam.
TABLE2: dict[str, tuple[float, float, float, float]] = {
    "Fashion-MNIST": (0.9175, 0.9186, 0.05, 0.026120),
    "Cifar-10": (0.8566, 0.8607, 0.05, 0.000320),
    "Dogs & Cats": (0.8140, 0.8732, 0.05, 0.000016),
    "Face Mask Detection v1": (0.9088, 0.9759, 0.05, 0.007079),
    "Face Mask Detection v2": (0.9599, 0.9813, 0.05, 0.189317),
    "Face Mask Detection v2 (excluding one outlier)": (0.9787, 0.9844, 0.05, 0.000004),
}

# Images the paper used per dataset (its section 3): the training pool (20 % of it for validation) and the test
# split. Dogs & Cats is "more than 8,000" and "above 2,000"; Face Mask's 8,982 are split 80/20 twice.
DATA_SIZES: dict[str, tuple[int, int]] = {
    "fashion-mnist": (60_000, 10_000),
    "cifar10": (50_000, 10_000),
    "dogs-cats": (8_000, 2_000),
    "face-mask": (7_185, 1_797),
}


def columns_for(dataset: str) -> list[str]:
    """The paper's table columns that report ``dataset``."""
    return [col for col, (ds, _) in COLUMNS.items() if ds == dataset]


def paper_column(protocol: Protocol) -> str | None:
    """The paper's Table 1/2 column that a protocol reproduces (Face Mask v2 = patience 5 + ReduceLR)."""
    columns = columns_for(protocol.dataset)
    if not columns:
        return None
    if protocol.dataset == "face-mask":
        return "Face Mask Detection v2" if protocol.reduce_lr else "Face Mask Detection v1"
    return columns[0]


def table1(column: str) -> pd.DataFrame:
    """The paper's Table 1 for one column, shaped like :func:`core.results.stats.table1` (means only)."""
    rows = []
    for method, (train, val, test) in TABLE1[column].items():
        rows.append({"method": TABLE_METHOD_NAMES[method], "repeats": REPEATS, "train mean": train,
                     "val mean": val, "test mean": test})
    return pd.DataFrame(rows).set_index("method")


def table2() -> pd.DataFrame:
    """The paper's Table 2 as published."""
    rows = [{"dataset": col, "mean first-stage test": a, "mean second-stage test": b,
             "significance level": alpha, "p (two-tailed)": p}
            for col, (a, b, alpha, p) in TABLE2.items()]
    return pd.DataFrame(rows)


def data_size_note(dataset: str, sizes: dict[str, int], smaller_than: float = 0.9) -> str | None:
    """One sentence when our run used clearly fewer images than the paper (a subset or ``--limit``), so that our
    numbers are never read beside the paper's as if they came from the same data; None otherwise."""
    if dataset not in DATA_SIZES or not sizes:
        return None
    pool, test = DATA_SIZES[dataset]
    ours_pool = int(sizes.get("train", 0)) + int(sizes.get("val", 0))
    ours_test = int(sizes.get("test", 0))
    if ours_pool >= smaller_than * pool and ours_test >= smaller_than * test:
        return None
    return (f"Data: ours {ours_pool:,} training + validation and {ours_test:,} test images; the paper "
            f"about {pool:,} and {test:,}, so a gap in accuracy may be the data's size, not the method.")
