"""Second-stage readings that train no network: how good a softmax on stage one's features can be.

The paper's second stage is a fresh softmax layer trained by Adam or SGD with early stopping. Whether that is a
good second stage is a separate question from whether a second stage helps, so every record also holds three
readings of the same last-hidden-layer features, each a multinomial logistic regression fitted to
convergence (L-BFGS, ``scipy.optimize.minimize``) on standardised features with a small L2 penalty:

- ``logistic``: fitted on the training split's features, the penalty chosen on the validation split: the
  convex optimum of the paper's head, classifier re-training on frozen features (cRT, Kang et al. 2020);
- ``heldout``: fitted on the validation split's features only, features stage one never trained on
  (last-layer retraining on held-out data, DFR, Kirichenko et al. 2022); its penalty is chosen on one half of
  the validation split and then refitted on all of it, so the test split is never looked at;
- ``logistic_bn``: ``logistic`` on the features of the network whose BatchNorm statistics were re-estimated
  on the training split (PreciseBN, Wu & Johnson 2021): what is left of the head's gain once the statistics
  no longer lag behind the weights.

Each reading stores its accuracy and loss on every split, the chosen penalty and whether L-BFGS converged.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
from scipy.optimize import minimize
from scipy.special import log_softmax

from ..protocol.vocabulary import SPLITS

PENALTIES = (1e-4, 1e-3, 1e-2, 1e-1, 1.0)
"""L2 penalties tried (on standardised features, per sample: ``loss = mean cross-entropy + l2/2 * |W|^2``),
largest first so each fit starts from the previous solution."""
MAX_ITERATIONS = 500


def logistic_fit(x: np.ndarray, y: np.ndarray, num_classes: int, l2: float,
                 start: np.ndarray | None = None) -> tuple[np.ndarray, bool]:
    """Weights ``(dim + 1, classes)`` (the last row is the bias, not penalised) minimising the mean softmax
    cross-entropy of ``x`` plus ``l2/2`` times the squared weights, and whether L-BFGS converged."""
    n, dim = x.shape
    design = np.hstack([x, np.ones((n, 1))])
    onehot = np.eye(num_classes)[y]
    mask = np.ones((dim + 1, 1))
    mask[-1] = 0.0

    def objective(flat: np.ndarray) -> tuple[float, np.ndarray]:
        w = flat.reshape(dim + 1, num_classes)
        logp = log_softmax(design @ w, axis=1)
        loss = -np.sum(onehot * logp) / n + 0.5 * l2 * np.sum((w * mask) ** 2)
        grad = design.T @ (np.exp(logp) - onehot) / n + l2 * w * mask
        return loss, grad.ravel()

    w0 = np.zeros((dim + 1) * num_classes) if start is None else start.ravel()
    result = minimize(objective, w0, jac=True, method="L-BFGS-B",
                      options={"maxiter": MAX_ITERATIONS, "gtol": 1e-6})
    return result.x.reshape(dim + 1, num_classes), bool(result.success)


def score(w: np.ndarray, x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Accuracy and mean cross-entropy of the fitted weights on ``x``."""
    logp = log_softmax(np.hstack([x, np.ones((len(x), 1))]) @ w, axis=1)
    return float(np.mean(np.argmax(logp, axis=1) == y)), float(-np.mean(logp[np.arange(len(y)), y]))


class Standardiser:
    """Each feature centred and scaled by the fitting set's mean and standard deviation (a constant feature,
    such as a dead ReLU unit, is left at zero)."""

    def __init__(self, x: np.ndarray):
        self.mean = x.mean(axis=0)
        std = x.std(axis=0)
        self.scale = np.where(std > 1e-12, std, 1.0)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return (np.asarray(x, np.float64) - self.mean) / self.scale


def fit_reading(fit_x: np.ndarray, fit_y: np.ndarray, choose_x: np.ndarray, choose_y: np.ndarray,
                features: dict[str, np.ndarray], labels: dict[str, np.ndarray], num_classes: int,
                refit: tuple[np.ndarray, np.ndarray] | None = None) -> dict[str, Any]:
    """Fit on ``fit``, choose the penalty by accuracy (then loss) on ``choose``, optionally refit with it on
    ``refit``; score every split of ``features``."""
    started = time.perf_counter()
    standardise = Standardiser(np.asarray(refit[0] if refit else fit_x, np.float64))
    fit_z, choose_z = standardise(fit_x), standardise(choose_x)
    best, w = None, None
    for l2 in PENALTIES:
        w, converged = logistic_fit(fit_z, fit_y, num_classes, l2, start=w)
        accuracy, loss = score(w, choose_z, choose_y)
        if best is None or (accuracy, -loss) > (best["accuracy"], -best["loss"]):
            best = {"l2": l2, "accuracy": accuracy, "loss": loss, "w": w, "converged": converged}
    w, converged = best["w"], best["converged"]
    if refit is not None:
        w, converged = logistic_fit(standardise(refit[0]), refit[1], num_classes, best["l2"], start=w)
    out: dict[str, Any] = {"l2": best["l2"], "converged": converged}
    for split in SPLITS:
        accuracy, loss = score(w, standardise(features[split]), labels[split])
        out[f"{split}_accuracy"], out[f"{split}_loss"] = accuracy, loss
    out["seconds"] = time.perf_counter() - started
    return out


def readings(features: dict[str, np.ndarray], labels: dict[str, np.ndarray], num_classes: int,
             bn_features: dict[str, np.ndarray] | None = None, seed: int = 0) -> dict[str, Any]:
    """The three readings of the module docstring for one repeat (``logistic_bn`` only with ``bn_features``,
    i.e. for a network with BatchNorm layers). ``labels`` are integer class labels per split. A reading whose
    fitting or choosing rows would be empty (a tiny job's validation split) is left out, not fitted on nothing."""
    y = {split: np.asarray(labels[split], np.int64) for split in SPLITS}
    if not (len(y["train"]) and len(y["val"])):
        return {}
    out = {"logistic": fit_reading(features["train"], y["train"], features["val"], y["val"], features, y,
                                   num_classes)}
    half = _half(y["val"], seed)
    val = features["val"]
    if half.any() and not half.all():
        out["heldout"] = fit_reading(val[half], y["val"][half], val[~half], y["val"][~half], features, y,
                                     num_classes, refit=(val, y["val"]))
    if bn_features is not None:
        out["logistic_bn"] = fit_reading(bn_features["train"], y["train"], bn_features["val"], y["val"],
                                         bn_features, y, num_classes)
    return out


def _half(y: np.ndarray, seed: int) -> np.ndarray:
    """A stratified random half of the validation rows (the held-out head's penalty is chosen on the other)."""
    rng = np.random.default_rng(seed)
    mask = np.zeros(len(y), bool)
    for label in np.unique(y):
        rows = rng.permutation(np.flatnonzero(y == label))
        mask[rows[:len(rows) // 2]] = True
    return mask
