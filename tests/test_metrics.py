"""Confusion matrices and per-class precision/recall/F1 against values worked out by hand."""

import numpy as np
import pytest

from core.results import predictions
from core.results.metrics import accuracy, confusion_matrix, experiment_confusion, per_class, record_confusion

# Ten images of three classes. True:      0 0 0 0 1 1 1 2 2 2
#                              Predicted: 0 0 1 2 1 1 0 2 2 2
Y_TRUE = np.array([0, 0, 0, 0, 1, 1, 1, 2, 2, 2])
Y_PRED = np.array([0, 0, 1, 2, 1, 1, 0, 2, 2, 2])


def test_confusion_matrix_counts_true_rows_against_predicted_columns():
    assert confusion_matrix(Y_TRUE, Y_PRED, 3).tolist() == [[2, 1, 1], [1, 2, 0], [0, 0, 3]]
    assert accuracy(confusion_matrix(Y_TRUE, Y_PRED, 3)) == pytest.approx(0.7)


def test_precision_recall_f1_by_hand():
    report = per_class(confusion_matrix(Y_TRUE, Y_PRED, 3), ["a", "b", "c"])
    # class a: TP 2, predicted 3, actual 4 -> P 2/3, R 1/2, F1 = 2*(2/3)(1/2)/(2/3+1/2) = 4/7
    assert report.loc["a"].tolist()[:3] == pytest.approx([2 / 3, 0.5, 4 / 7])
    # class b: TP 2, predicted 3, actual 3 -> P 2/3, R 2/3, F1 2/3;  class c: TP 3, predicted 4 -> P 3/4, R 1
    assert report.loc["b"].tolist()[:3] == pytest.approx([2 / 3, 2 / 3, 2 / 3])
    assert report.loc["c", "F1"] == pytest.approx(2 * 0.75 / 1.75)
    macro = report.loc["macro average"]
    assert macro["precision"] == pytest.approx((2 / 3 + 2 / 3 + 3 / 4) / 3)
    assert macro["support"] == 10 and report.loc["a", "support"] == 4


def test_a_class_never_predicted_scores_zero_not_nan():
    report = per_class(confusion_matrix([0, 1, 1], [1, 1, 1], 2), ["x", "y"])
    assert report.loc["x"].tolist()[:3] == [0.0, 0.0, 0.0]


def test_confusion_from_stored_predictions_and_summed_over_repeats():
    probs = {name: np.eye(3)[Y_PRED] for name in predictions.LABEL_SETS}
    probs["adam"] = np.eye(3)[Y_TRUE]
    block = predictions.encode(Y_TRUE, probs, "last", lambda rows: [f"img{r}" for r in rows])
    run = {"predictions": block}
    assert record_confusion(run, "stage1").tolist() == [[2, 1, 1], [1, 2, 0], [0, 0, 3]]
    assert np.array_equal(record_confusion(run, "adam"), np.diag([4, 3, 3]))
    total, n = experiment_confusion([run, run, {"stage1": {}}], "stage1")
    assert n == 2 and total.sum() == 20
    assert record_confusion({}, "adam") is None


def test_support_of_summed_matrices_is_per_repeat():
    """Repeats' matrices summed pool the rates; support stays the class's test images in one repeat."""
    one = confusion_matrix(Y_TRUE, Y_PRED, 3)
    report = per_class(3 * one, ["a", "b", "c"], repeats=3)
    assert report.equals(per_class(one, ["a", "b", "c"]))
    assert per_class(one + confusion_matrix([0], [0], 3), ["a", "b", "c"], repeats=2).loc["a", "support"] == 2.5
