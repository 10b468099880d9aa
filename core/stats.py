"""Table 1 and Table 2 from run records, plus the tests the paper lacks.

Table 1: mean and standard deviation of train/val/test accuracy for stage one and both stage-two heads.
Table 2: paired two-tailed t-test of test accuracy (``scipy.stats.ttest_rel``), stage one vs each head, with
the mean difference and its 95% confidence interval, a Wilcoxon signed-rank test, and the same rows after
excluding outlying repeats by a documented rule (:func:`outlier_mask`).

Which weights' numbers are used (last epoch or best checkpoint) is read from each run's protocol unless
overridden, so the app can show how much of the "two-stage gain" that choice explains without retraining.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats as sps

METHODS = {
    "stage1": "CNN (Adam)",
    "adam": "CNN + second stage (Adam)",
    "sgd": "CNN + second stage (SGD)",
}
SPLITS = ("train", "val", "test")
OUTLIER_K = 1.5
"""Tukey's fence multiplier: a repeat is an outlier when its stage-one test accuracy lies more than 1.5
inter-quartile ranges outside the quartiles. This reproduces the paper's "exclude one outlier" row without
choosing the repeat by hand."""


def metric(run: dict[str, Any], method: str, split: str, weights: str | None = None,
           kind: str = "accuracy") -> float:
    """One number of one repeat: ``method`` in stage1/adam/sgd, ``split`` in train/val/test."""
    if weights is None:
        weights = run["protocol"]["stage1_eval" if method == "stage1" else "stage2_eval"]
    return float(run[method][weights][f"{split}_{kind}"])


def fit_seconds(run: dict[str, Any], method: str) -> float:
    """Training time of one stage: the per-epoch times summed (records resumed after a crash stored only the
    resumed part as ``fit_seconds``; the epoch log always covers every epoch)."""
    epochs = run[method].get("history", {}).get("seconds")
    return float(sum(epochs)) if epochs else float(run[method]["fit_seconds"])


def runs_frame(runs: list[dict[str, Any]], stage1_weights: str | None = None,
               stage2_weights: str | None = None) -> pd.DataFrame:
    """One row per repeat: headline numbers and the provenance every figure must carry."""
    rows = []
    for run in runs:
        row: dict[str, Any] = {
            "dataset": run["dataset"]["name"], "experiment": run["key"], "repeat": run["repeat"],
            "seed": run["seed"], "protocol": run["describe"],
        }
        for method in METHODS:
            weights = stage1_weights if method == "stage1" else stage2_weights
            for split in SPLITS:
                row[f"{method}_{split}_accuracy"] = metric(run, method, split, weights)
            row[f"{method}_test_loss"] = metric(run, method, "test", weights, kind="loss")
            row[f"{method}_epochs"] = run[method]["epochs_run"]
            row[f"{method}_best_epoch"] = run[method]["best_epoch"]
            row[f"{method}_seconds"] = fit_seconds(run, method)
        row["features_seconds"] = run["features"]["seconds"]
        row.update({"backend": run["env"]["backend"], "device": run["env"]["device"],
                    "keras": run["env"]["versions"].get("keras"), "finished_at": run["finished_at"]})
        rows.append(row)
    return pd.DataFrame(rows)


def table1(runs: list[dict[str, Any]], stage1_weights: str | None = None,
           stage2_weights: str | None = None) -> pd.DataFrame:
    """Mean and standard deviation of accuracy per method and split, with the number of repeats."""
    frame = runs_frame(runs, stage1_weights, stage2_weights)
    rows = []
    for method, label in METHODS.items():
        row: dict[str, Any] = {"method": label, "repeats": len(frame)}
        for split in SPLITS:
            values = frame[f"{method}_{split}_accuracy"] if len(frame) else pd.Series(dtype=float)
            row[f"{split} mean"] = values.mean()
            row[f"{split} std"] = values.std(ddof=1) if len(values) > 1 else float("nan")
        rows.append(row)
    return pd.DataFrame(rows).set_index("method")


def paired_test(first: np.ndarray, second: np.ndarray, alpha: float = 0.05) -> dict[str, float]:
    """Paired comparison of two accuracy vectors (same repeats): t-test, 95% CI, Wilcoxon."""
    first, second = np.asarray(first, float), np.asarray(second, float)
    n = len(first)
    out = {"n": n, "mean first": first.mean() if n else np.nan, "mean second": second.mean() if n else np.nan,
           "mean difference": (second - first).mean() if n else np.nan,
           "ci low": np.nan, "ci high": np.nan, "t": np.nan, "p (t-test)": np.nan, "p (Wilcoxon)": np.nan}
    if n < 2:
        return out
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # zero-variance differences give nan, not noise
        result = sps.ttest_rel(second, first)
        ci = result.confidence_interval(confidence_level=1 - alpha)
    out.update({"t": float(result.statistic), "p (t-test)": float(result.pvalue),
                "ci low": float(ci.low), "ci high": float(ci.high)})
    if np.any(second != first):
        try:
            out["p (Wilcoxon)"] = float(sps.wilcoxon(second, first).pvalue)
        except ValueError:
            pass
    return out


def outlier_mask(values: np.ndarray, k: float = OUTLIER_K) -> np.ndarray:
    """True for values outside Tukey's fences ``[Q1 - k*IQR, Q3 + k*IQR]`` (needs at least 4 values)."""
    values = np.asarray(values, float)
    if len(values) < 4:
        return np.zeros(len(values), dtype=bool)
    q1, q3 = np.percentile(values, [25, 75])
    iqr = q3 - q1
    return (values < q1 - k * iqr) | (values > q3 + k * iqr)


def table2(runs: list[dict[str, Any]], stage1_weights: str | None = None, stage2_weights: str | None = None,
           alpha: float = 0.05) -> pd.DataFrame:
    """Paired tests of test accuracy, stage one vs each head; plus outlier-excluded rows when any."""
    frame = runs_frame(runs, stage1_weights, stage2_weights)
    if frame.empty:
        return pd.DataFrame()
    first = frame["stage1_test_accuracy"].to_numpy()
    outliers = outlier_mask(first)
    rows = []
    for head in ("adam", "sgd"):
        second = frame[f"{head}_test_accuracy"].to_numpy()
        subsets = [("all repeats", np.ones(len(first), bool))]
        if outliers.any():
            excluded = ", ".join(str(r) for r in frame["repeat"][outliers])
            subsets.append((f"excluding outlier repeat(s) {excluded}", ~outliers))
        for subset, mask in subsets:
            row = {"comparison": f"stage one vs {METHODS[head]}", "repeats used": subset}
            row.update(paired_test(first[mask], second[mask], alpha))
            row["significant"] = bool(row["p (t-test)"] < alpha)
            row["alpha"] = alpha
            rows.append(row)
    return pd.DataFrame(rows)


def option_effects(runs: list[dict[str, Any]]) -> pd.DataFrame:
    """Mean test-accuracy gain (Adam head minus stage one) under each weight choice, from the same runs.

    Every record holds both last-epoch and best-checkpoint evaluations, so this splits the reported gain into
    what the evaluation choice explains and what retraining the head adds.
    """
    rows = []
    for s1 in ("last", "best"):
        for s2 in ("last", "best"):
            frame = runs_frame(runs, s1, s2)
            if frame.empty:
                continue
            for head in ("adam", "sgd"):
                diff = frame[f"{head}_test_accuracy"] - frame["stage1_test_accuracy"]
                rows.append({"stage-one weights": s1, "stage-two weights": s2, "head": head,
                             "repeats": len(frame), "mean stage-one test": frame["stage1_test_accuracy"].mean(),
                             "mean stage-two test": frame[f"{head}_test_accuracy"].mean(),
                             "mean gain": diff.mean()})
    return pd.DataFrame(rows)
