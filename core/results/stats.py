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

from ..protocol.vocabulary import HEADS, READING_NAMES, SPLITS
from ..protocol.vocabulary import TABLE_METHOD_NAMES as METHODS
from ..protocol.words import count_text, repeats_named
OUTLIER_K = 1.5
"""Tukey's fence multiplier: a repeat is an outlier when its stage-one test accuracy lies more than 1.5
inter-quartile ranges outside the quartiles. This reproduces the paper's "exclude one outlier" row without
choosing the repeat by hand."""


TRAIN_SOURCES = {
    "inference": "training accuracy measured after training, in inference mode (dropout and augmentation off)",
    "fit": "training accuracy Keras reported during fit for that epoch (dropout and augmentation on)",
}
"""The two readings of Table 1's "training accuracy"; the paper does not say which it shows."""


def metric(run: dict[str, Any], method: str, split: str, weights: str | None = None,
           kind: str = "accuracy", train_source: str = "inference") -> float:
    """One number of one repeat: ``method`` in stage1/adam/sgd, ``split`` in train/val/test.

    ``weights`` is ``last``/``best`` (and, for stage one, ``last_bn``/``best_bn``); ``None`` = the protocol's
    choice. ``train_source="fit"`` gives the training accuracy Keras reported during ``fit`` for the epoch
    whose weights are evaluated (from the stored history), instead of the inference-mode one.
    """
    if method in run.get("readings", {}):  # a second stage that trains no network (core.training.ceiling)
        return float(run["readings"][method][f"{split}_{kind}"])
    if weights is None:
        weights = run["protocol"]["stage1_eval" if method == "stage1" else "stage2_eval"]
    if split == "train" and kind == "accuracy" and train_source == "fit":
        part = run[method]
        epoch = part["best_epoch"] if weights.startswith("best") else part["epochs_run"]
        return float(part["history"]["accuracy"][epoch - 1])
    return float(run[method][weights][f"{split}_{kind}"])


def fit_seconds(run: dict[str, Any], method: str) -> float:
    """Training time of one stage: the per-epoch times summed (records resumed after a crash stored only the
    resumed part as ``fit_seconds``; the epoch log always covers every epoch)."""
    epochs = run[method].get("history", {}).get("seconds")
    return float(sum(epochs)) if epochs else float(run[method]["fit_seconds"])


def runs_frame(runs: list[dict[str, Any]], stage1_weights: str | None = None,
               stage2_weights: str | None = None, train_source: str = "inference") -> pd.DataFrame:
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
                row[f"{method}_{split}_accuracy"] = metric(run, method, split, weights,
                                                           train_source=train_source)
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
           stage2_weights: str | None = None, train_source: str = "inference") -> pd.DataFrame:
    """Mean and standard deviation of accuracy per method and split, with the number of repeats.

    ``train_source`` picks the training-accuracy reading (:data:`TRAIN_SOURCES`)."""
    frame = runs_frame(runs, stage1_weights, stage2_weights, train_source)
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
    """Paired comparison of two accuracy vectors (same repeats): t-test, 95% CI, Wilcoxon.

    Fewer than two pairs, or differences that are all equal (common with 2-3 repeats on a small test set),
    give NaN statistics: scipy would report p = 0 for a constant non-zero difference, which is no evidence.
    """
    first, second = np.asarray(first, float), np.asarray(second, float)
    n = len(first)
    out = {"n": n, "mean first": first.mean() if n else np.nan, "mean second": second.mean() if n else np.nan,
           "mean difference": (second - first).mean() if n else np.nan,
           "ci low": np.nan, "ci high": np.nan, "t": np.nan, "p (t-test)": np.nan, "p (Wilcoxon)": np.nan}
    if n < 2:
        return out
    if np.ptp(second - first) == 0:  # identical differences: t is 0/0 or infinite, not evidence either way
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


def outlying_repeats(frame: pd.DataFrame) -> str:
    """The repeats :func:`outlier_mask` excludes from a :func:`runs_frame`, in words ("outlying repeats 3,
    19"), or "" when none: Table 2's row label and the verdict's sentence both name them from here."""
    mask = outlier_mask(frame["stage1_test_accuracy"].to_numpy()) if len(frame) else np.zeros(0, bool)
    return f"the outlying {repeats_named(frame['repeat'][mask])}" if mask.any() else ""


def table2(runs: list[dict[str, Any]], stage1_weights: str | None = None, stage2_weights: str | None = None,
           alpha: float = 0.05) -> pd.DataFrame:
    """Paired tests of test accuracy, stage one vs each head; plus outlier-excluded rows when any."""
    frame = runs_frame(runs, stage1_weights, stage2_weights)
    if frame.empty:
        return pd.DataFrame()
    first = frame["stage1_test_accuracy"].to_numpy()
    outliers = outlier_mask(first)
    rows = []
    for head in HEADS:
        second = frame[f"{head}_test_accuracy"].to_numpy()
        subsets = [("all repeats", np.ones(len(first), bool))]
        if outliers.any():
            subsets.append((f"without {outlying_repeats(frame)}", ~outliers))
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
            for head in HEADS:
                diff = frame[f"{head}_test_accuracy"] - frame["stage1_test_accuracy"]
                rows.append({"stage-one weights": s1, "stage-two weights": s2, "head": head,
                             "repeats": len(frame), "mean stage-one test": frame["stage1_test_accuracy"].mean(),
                             "mean stage-two test": frame[f"{head}_test_accuracy"].mean(),
                             "mean gain": diff.mean()})
    return pd.DataFrame(rows)


# ------------------------------------------------------------------------------------------- Table 3

BASELINES = {
    "reported": "stage one as the paper reports it",
    "best": "stage one at its best checkpoint",
    "bn": "stage one with BatchNorm re-estimated",
    "best_bn": "stage one, best checkpoint + BatchNorm re-estimated",
}
"""Table 3's rows: what the second stage is compared with. ``reported`` is the protocol's ``stage1_eval``
weights; ``bn`` is the same weights after re-estimating BatchNorm statistics on the training split."""


def baseline_weights(run: dict[str, Any], baseline: str) -> str:
    reported = run["protocol"]["stage1_eval"]
    return {"reported": reported, "best": "best", "bn": f"{reported}_bn", "best_bn": "best_bn"}[baseline]


PRIMARY = ("adam", "best_bn")
"""Table 3's declared primary comparison: the Adam head against stage one with both fixes (best checkpoint,
BatchNorm re-estimated), i.e. "is anything left once the known artefacts are removed". Its p-value stands as
it is; every other row's p-value is also given Holm-adjusted over the table (:func:`holm`)."""
READING_ROWS = tuple(READING_NAMES)
"""Second stages that train no network (:mod:`core.training.ceiling`), compared like the heads when every
repeat's record holds them."""


def holm(pvalues: list[float]) -> list[float]:
    """Holm's step-down adjustment (family-wise error): the k-th smallest of m p-values times (m - k + 1),
    made monotone, capped at 1. NaN stays NaN and does not count."""
    p = np.asarray(pvalues, float)
    finite = np.flatnonzero(np.isfinite(p))
    out = np.full(len(p), np.nan)
    order = finite[np.argsort(p[finite])]
    m, running = len(order), 0.0
    for k, i in enumerate(order):
        running = max(running, min(1.0, (m - k) * p[i]))
        out[i] = running
    return out.tolist()


def table3(runs: list[dict[str, Any]], alpha: float = 0.05) -> pd.DataFrame:
    """What explains the gain: each head (protocol's ``stage2_eval`` weights), and each second-stage reading
    the records hold (:data:`READING_ROWS`), against four stage-one baselines (:data:`BASELINES`), as paired
    tests of test accuracy over the same repeats. ``primary`` marks :data:`PRIMARY`; ``p (Holm)`` adjusts
    every other row's p-value for the table's many tests.

    ``share of gain`` is how much of the head's gain over the reported stage one the baseline's fix recovers
    on its own: ``(mean baseline - mean reported) / (mean head - mean reported)``. It can exceed 100% (the
    fixed stage one beats the head) or be negative (the fix hurts). It is NaN unless that gain is positive and
    significant: a share of a gain that may be noise can be any size (200 % of +0.1 pp says nothing).
    """
    runs = with_bn_evaluations(runs)
    if not runs:
        return pd.DataFrame()
    seconds = list(HEADS) + [k for k in READING_ROWS if all(k in r.get("readings", {}) for r in runs)]
    rows = []
    for head in seconds:
        second = np.array([metric(r, head, "test") for r in runs])
        reported = np.array([metric(r, "stage1", "test", baseline_weights(r, "reported")) for r in runs])
        gain = float(np.mean(second - reported))
        stated = gain > 0 and paired_test(reported, second, alpha)["p (t-test)"] < alpha
        for baseline, label in BASELINES.items():
            first = np.array([metric(r, "stage1", "test", baseline_weights(r, baseline)) for r in runs])
            row = {"head": head, "baseline": baseline, "comparison": f"{SECOND_STAGES[head]} vs {label}",
                   "primary": (head, baseline) == PRIMARY}
            row.update(paired_test(first, second, alpha))
            row["significant"] = bool(row["p (t-test)"] < alpha)
            row["share of gain"] = float(np.mean(first - reported)) / gain if stated else float("nan")
            rows.append(row)
    frame = pd.DataFrame(rows)
    others = ~frame["primary"]
    frame["p (Holm)"] = np.nan
    frame.loc[others, "p (Holm)"] = holm(frame.loc[others, "p (t-test)"].tolist())
    return frame


SECOND_STAGES = {**METHODS, **READING_NAMES}
"""Table 3's second stages: the paper's heads and the readings that train no network."""


def with_bn_evaluations(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The runs whose records hold the BatchNorm-re-estimated evaluations (records made before they existed
    cannot take part in Table 3; ``n`` in its rows says how many did)."""
    return [r for r in runs if "last_bn" in r["stage1"] and "best_bn" in r["stage1"]]


def bn_layers(runs: list[dict[str, Any]]) -> int:
    """BatchNormalization layers in the runs' stage-one model (0 when the records predate the count)."""
    return int(max((r["stage1"].get("batchnorm", {}).get("layers", 0) for r in runs), default=0))


def verdict(runs: list[dict[str, Any]], head: str = "adam", alpha: float = 0.05) -> str:
    """One sentence on Table 3, by a fixed rule (so every dataset is judged the same way):

    1. The gain is the head's mean test accuracy minus stage one's as reported. It is "reproduced" when the
       paired t-test gives p < alpha and the gain is positive, "reversed" when p < alpha and it is negative,
       and "not significant" otherwise (the number of repeats is named).
    2. When the gain is reproduced, the sentence says how much of it each fix recovers alone (re-estimating
       BatchNorm statistics, where the model has BN layers; evaluating the best checkpoint) and both together.
       (Shares of a gain that may be noise are not stated: they can be any size.)
    3. Where the signed-rank test (Wilcoxon, on the same pairs) and the t-test disagree on significance, it
       says so: a mean can be carried by one repeat where the head collapsed or soared, which a rank test
       weighs as one repeat among many (:func:`_rank_test_note`). Where Tukey's fences mark outlying repeats,
       it gives the gain without them, Table 2's second row (:func:`outlier_note`).
    4. It ends with the head against stage one with both fixes: whether anything significant is left, and
       (for a reproduced gain) which explanation that leaves standing.
    5. Where the records hold the second-stage readings, how the convex optimum on the same features compares
       with the paper's head (:func:`_ceiling_note`).
    """
    table = table3(runs, alpha)
    if table.empty:
        return ("No repeat holds the BatchNorm-re-estimated evaluations Table 3 needs." if runs
                else "No repeats yet.")
    rows = {r["baseline"]: r for r in table[table["head"] == head].to_dict("records")}
    main = rows["reported"]
    n, gain, p = int(main["n"]), float(main["mean difference"]), float(main["p (t-test)"])
    head_name = {"adam": "Adam", "sgd": "SGD"}[head]
    if not np.isfinite(p):
        repeats = count_text(n, "repeat")
        return (f"With {repeats} the {head_name} head's gain ({100 * gain:+.2f} pp) cannot be tested; "
                "at least 2 repeats with differing results are needed.")
    if p < alpha:
        state = "is reproduced" if gain > 0 else "is reversed (the second stage is worse)"
    else:
        state = f"is not significant with {n} repeats"
    text = f"The second stage's ({head_name} head) gain {state}: {100 * gain:+.2f} pp, p = {p:.2g}."
    text += _rank_test_note(with_bn_evaluations(runs), head, main, alpha)
    text += outlier_note(with_bn_evaluations(runs), head, alpha)
    if gain > 0 and p < alpha:
        parts = []
        if bn_layers(runs):
            parts.append(f"re-estimating BatchNorm statistics alone recovers {_share(rows['bn'])} of it")
        else:
            parts.append("the model has no BatchNorm layer, so only the checkpoint choice can explain it")
        parts.append(f"evaluating the best checkpoint alone recovers {_share(rows['best'])}")
        if bn_layers(runs):
            parts.append(f"both together {_share(rows['best_bn'])}")
        joined = "; ".join(parts)
        text += f" {joined[0].upper()}{joined[1:]}."
    rest = rows["best_bn"]
    left_p = float(rest["p (t-test)"])
    if np.isfinite(left_p):
        judged = "significant" if left_p < alpha else "not significant"
        against = "stage one with both fixes" if bn_layers(runs) else "stage one's best checkpoint"
        text += (f" Against {against} the head is {100 * float(rest['mean difference']):+.2f} pp "
                 f"(p = {left_p:.2g}, {judged}).")
        if gain > 0 and p < alpha:
            cause = ("the BatchNorm statistics stage one uses at inference and the checkpoint choice" if bn_layers(runs)
                     else "the checkpoint choice")
            text += (f" Left standing: {cause} explain the gain." if left_p >= alpha else
                     " Left standing: a gain of the second stage beyond the known artefacts.")
    text += _ceiling_note(table, head)
    return text


def outlier_note(runs: list[dict[str, Any]], head: str = "adam", alpha: float = 0.05) -> str:
    """The head's gain without the outlying repeats, as :func:`table2`'s second row for ``head`` states it
    (protocol's weights), in one sentence; "" when no repeat is outlying. The Results page's Table 2 and the
    docs' verdicts (the paper's "excluding one outlier" column) then say the same thing from the same rows."""
    if not outlier_mask([metric(r, "stage1", "test") for r in runs]).any():  # the common case, cheaply
        return ""
    table = table2(runs, alpha=alpha)
    rows = table[(table["comparison"] == f"stage one vs {METHODS[head]}") & (table["repeats used"] != "all repeats")]
    if rows.empty:
        return ""
    row = rows.iloc[0]
    p = float(row["p (t-test)"])
    tested = f"p = {p:.2g}, {'significant' if p < alpha else 'not significant'}" if np.isfinite(p) else "untestable"
    return (f" {row['repeats used'][0].upper()}{row['repeats used'][1:]} (Tukey's fences on stage one's test "
            f"accuracy; {count_text(int(row['n']), 'repeat')} left) the gain is "
            f"{100 * float(row['mean difference']):+.2f} pp ({tested}).")


def _ceiling_note(table: pd.DataFrame, head: str) -> str:
    """Rule 5 of :func:`verdict`: where the records hold the convex head (:mod:`core.training.ceiling`), how
    the paper's head compares with the best softmax on the same features."""
    convex = table[(table["head"] == "logistic") & (table["baseline"] == "reported")]
    ours = table[(table["head"] == head) & (table["baseline"] == "reported")]
    if convex.empty or ours.empty:
        return ""
    gap = float(convex["mean second"].iloc[0] - ours["mean second"].iloc[0])
    return (f" The convex optimum on the same features (a logistic regression fitted to convergence) scores "
            f"{100 * gap:+.2f} pp against the {'Adam' if head == 'adam' else 'SGD'} head.")


def _rank_test_note(runs: list[dict[str, Any]], head: str, row: dict[str, Any], alpha: float) -> str:
    """Rule 3 of :func:`verdict`: a sentence when the Wilcoxon signed-rank test and the t-test of Table 3's
    first row disagree, with how many repeats the head is ahead in and the repeat that moves the mean most
    against the majority (``runs`` in the row's order); empty otherwise."""
    p_t, p_w = float(row["p (t-test)"]), float(row["p (Wilcoxon)"])
    if not (np.isfinite(p_t) and np.isfinite(p_w)) or (p_t < alpha) == (p_w < alpha):
        return ""
    if 2.0 / 2 ** len(runs) >= alpha:  # too few pairs for any signed-rank p below alpha: no disagreement
        return ""
    diffs = np.array([metric(r, head, "test") - metric(r, "stage1", "test", baseline_weights(r, "reported"))
                      for r in runs])
    n, ahead, median = len(diffs), int(np.sum(diffs > 0)), float(np.median(diffs))
    if p_t < alpha:
        return (f" The signed-rank test does not confirm it (Wilcoxon p = {p_w:.2g}; the head is ahead in "
                f"{ahead} of {n} repeats).")
    majority, count = ("ahead", ahead) if median > 0 else ("behind", int(np.sum(diffs < 0)))
    extreme = int(np.argmin(diffs) if median > 0 else np.argmax(diffs))
    return (f" The signed-rank test, which no single repeat can dominate, disagrees: the head is {majority} in "
            f"{count} of {n} repeats (median {100 * median:+.2f} pp, Wilcoxon p = {p_w:.2g}); the mean is moved "
            f"most by {repeats_named([runs[extreme]['repeat']])} ({100 * diffs[extreme]:+.2f} pp).")


CHANCE_MARGIN = 0.02
"""A stage scores "at chance" when its mean test accuracy is at most this far above 1 / number of classes."""


def at_chance(runs: list[dict[str, Any]]) -> list[str]:
    """One line per stage whose mean test accuracy is no better than guessing, with its optimizer steps.

    Tiny demo runs (a few epochs on a few hundred images) give a head a few dozen steps, which can leave it
    below chance; comparing such a head with stage one says nothing about the paper's claim, so the app says
    so next to the numbers rather than letting a "reversed" verdict stand alone.
    """
    if not runs or not runs[0].get("dataset", {}).get("class_names"):
        return []
    classes = len(runs[0]["dataset"]["class_names"])
    chance = 1.0 / classes
    train_images = runs[0]["dataset"].get("sizes", {}).get("train")
    batch = runs[0]["protocol"].get("batch_size", 32)
    lines = []
    for method, label in METHODS.items():
        mean = float(np.mean([metric(r, method, "test") for r in runs]))
        if mean > chance + CHANCE_MARGIN:
            continue
        line = (f"{label} ends at {100 * mean:.1f}% test accuracy, no better than chance ({100 * chance:.0f}% "
                f"for {classes} classes)")
        if train_images:
            epochs = float(np.mean([r[method]["epochs_run"] for r in runs]))
            steps = epochs * -(-int(train_images) // int(batch))
            line += f" after about {steps:.0f} optimizer steps ({epochs:.0f} epochs of {train_images} images)"
        lines.append(line + ": too little training to judge the second stage; use more epochs or images.")
    return lines


def _share(row: dict[str, Any]) -> str:
    share = float(row["share of gain"])
    return "an undefined share" if not np.isfinite(share) else f"{100 * share:.0f}%"
