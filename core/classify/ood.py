"""How unlike a model's training images an input is: the out-of-distribution check behind Classify's warning.

Method (Lee et al., 2018, "A simple unified framework for detecting out-of-distribution samples and
adversarial attacks", with their feature ensemble): at several depths of the stage-one network (every
convolution's output averaged over the image, and the last hidden layer whose features stage two trains on)
fit one mean per class and one covariance shared by all classes on the training images, and measure an input
by its Mahalanobis distance to the nearest class mean. Each depth's distance is divided by that depth's 99th
percentile over the test images, and the input's score is the largest of these ratios: an input is unusual if
it is unusual at any depth. The threshold is the 99th percentile of the test images' scores, so by
construction about 1 % of real test images are flagged.

Why several depths: the last hidden layer alone misses a lot. For the shipped Fashion-MNIST model (the
5-repeat reference run's median repeat) it flagged none of 300 dog/cat photos and none of 300 face photos,
grey-scaled and shrunk to 28x28 as Classify does: training squeezes any input into the region of the classes
it knows. The first convolution's averaged responses (contrast, texture, background) tell them apart; the
ensemble of all depths flagged 95.0 % of the dog/cat photos and 93.3 % of the face photos, and 1.3 % of 300
test images it was not calibrated on (our measurement, November 2026). Between two photo sets the check is
only as sharp as the model's features: barely trained stand-ins for the Dogs & Cats and Face Mask models
flagged only 1-3 % of each other's photos (docs/pages.md, "Classify"). The maximum softmax
probability (MSP) is recorded beside it: a confident answer on an input far from the training data is
exactly what this check exists for, so the MSP is shown, not used to clear the warning.

Shrinkage: a covariance is estimated from few images in many dimensions (512 features from about 1,100
Dogs & Cats training images), and ReLU/dropout features have dead dimensions, so the sample covariance ``S``
is singular or badly conditioned. We use Ledoit and Wolf's (2004) shrinkage towards a scaled identity,
``(1 - a) S + a (trace(S) / d) I``, with ``a`` their closed-form, data-chosen intensity (the formula
scikit-learn's ``ledoit_wolf_shrinkage`` implements), never below :data:`MIN_SHRINKAGE`. A dimension that is
dead on every training image then keeps a small variance, and an input that lights it up scores far away,
which is what an out-of-distribution input does.

Statistics are computed once, when a model is bundled (:func:`fit_model`), and stored as an ``.npz`` read
with ``allow_pickle=False`` (:meth:`OodStats.save`/:meth:`OodStats.load`).
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..protocol.files import atomic_write

PERCENTILE = 99.0
"""Percentile of the test images' scores used as the threshold (and as each depth's normaliser)."""
MIN_SHRINKAGE = 1e-3
FILE = "ood.npz"


class OodError(ValueError):
    """A statistics file that cannot be read: the model still classifies, without the check."""


WHAT_IT_KNOWS = {
    "fashion-mnist": "10 kinds of clothing (T-shirts, trousers, pullovers, dresses, coats, sandals, shirts, "
                     "sneakers, bags, ankle boots), each photographed alone on a plain background and shrunk "
                     "to 28x28 grey pixels",
    "cifar10": "10 kinds of objects in tiny 32x32 colour photos (aeroplanes, cars, birds, cats, deer, dogs, "
               "frogs, horses, ships, lorries)",
    "dogs-cats": "photos of dogs and cats (one animal, seen by a pet owner's camera)",
    "face-mask": "close-up photos of one face, cropped to the face: with a mask, without a mask, or with a mask "
                 "worn incorrectly",
}
"""What each dataset's model has seen, in a visitor's words (Classify's out-of-distribution warning)."""


def what_it_knows(dataset: str, class_names: list[str]) -> str:
    """The sentence for ``dataset``, or the class list for a user's own folder of classes."""
    return WHAT_IT_KNOWS.get(dataset) or f"{len(class_names)} classes: {', '.join(class_names)}"


@dataclass
class Verdict:
    """One input against one model's statistics."""

    score: float
    """The largest, over the depths, of the input's distance to the nearest class mean divided by that depth's
    99th percentile on the test images."""
    threshold: float
    msp: float
    """Maximum softmax probability of the model's answer."""
    score_rank: float
    """Share of test images that scored lower (0.5: a typical test image; 1.0: further than all)."""
    msp_rank: float
    """Share of test images whose answer was less confident."""
    layer: str
    """The depth at which the input is most unusual."""

    @property
    def ratio(self) -> float:
        """Score relative to the threshold: below 1 looks like the test images, above 1 is flagged."""
        return self.score / self.threshold if self.threshold > 0 else float("inf")

    @property
    def flagged(self) -> bool:
        return self.score > self.threshold


@dataclass
class Gaussian:
    """Class means and the inverse of the shrunk shared covariance of one depth's features."""

    means: np.ndarray
    """``(classes, d)``."""
    precision: np.ndarray
    """``(d, d)``."""
    shrinkage: float
    scale: float = 1.0
    """The depth's 99th-percentile test distance, which its distances are divided by."""

    def distances(self, features: np.ndarray) -> np.ndarray:
        """Mahalanobis distance of each row to its nearest class mean."""
        f = np.asarray(features, dtype=np.float64).reshape(len(features), -1)
        precision = self.precision.astype(np.float64)
        squared = np.full(len(f), np.inf)
        for mean in self.means.astype(np.float64):  # one class at a time: memory stays n x d
            diff = f - mean
            squared = np.minimum(squared, np.einsum("nd,nd->n", diff @ precision, diff))
        return np.sqrt(np.maximum(squared, 0.0))


@dataclass
class OodStats:
    """A model's per-depth training statistics and its test images' scores."""

    layers: list[str]
    """Layer names, in the order :func:`probe_outputs` returns their features."""
    gaussians: list[Gaussian]
    threshold: float
    test_scores: np.ndarray
    test_msp: np.ndarray
    train_images: int
    percentile: float = PERCENTILE

    def ratios(self, features: list[np.ndarray]) -> np.ndarray:
        """``(depths, n)``: each depth's distances divided by its test percentile."""
        return np.stack([g.distances(f) / g.scale for g, f in zip(self.gaussians, features)])

    def scores(self, features: list[np.ndarray]) -> np.ndarray:
        return self.ratios(features).max(axis=0)

    def check(self, features: list[np.ndarray], probabilities: np.ndarray) -> Verdict:
        """The verdict for one input: its features at every depth (1-D each) and the model's probabilities."""
        ratios = self.ratios([np.asarray(f)[None] for f in features])[:, 0]
        score = float(ratios.max())
        msp = float(np.max(probabilities))
        return Verdict(score, self.threshold, msp, float(np.mean(self.test_scores < score)),
                       float(np.mean(self.test_msp < msp)), self.layers[int(ratios.argmax())])

    def summary(self) -> dict[str, Any]:
        """The numbers a reader of ``model.json`` wants to see."""
        return {"method": "Mahalanobis distance to the nearest training class mean at every convolution (averaged "
                          "over the image) and at the last hidden layer, shared covariance with Ledoit-Wolf "
                          "shrinkage; score = the largest distance relative to its depth's 99th test percentile "
                          "(core/classify/ood.py)",
                "layers": {name: {"dim": int(g.means.shape[1]), "shrinkage": g.shrinkage, "scale": g.scale}
                           for name, g in zip(self.layers, self.gaussians)},
                "threshold": self.threshold, "percentile": self.percentile, "train_images": self.train_images,
                "test_images": int(len(self.test_scores)),
                "test_flagged": float(np.mean(self.test_scores > self.threshold)),
                "test_msp_median": float(np.median(self.test_msp)) if len(self.test_msp) else None}

    def save(self, path: str | Path) -> Path:
        """Write the statistics (``.npz``, no pickles) whole or not at all: a bundle being rebuilt is read meanwhile."""
        arrays: dict[str, Any] = {"layers": np.array(self.layers), "threshold": self.threshold,
                                  "test_scores": self.test_scores.astype(np.float32),
                                  "test_msp": self.test_msp.astype(np.float32), "train_images": self.train_images,
                                  "percentile": self.percentile}
        for i, g in enumerate(self.gaussians):
            arrays.update({f"means_{i}": g.means.astype(np.float32), f"precision_{i}": g.precision.astype(np.float32),
                           f"shrinkage_{i}": g.shrinkage, f"scale_{i}": g.scale})
        path = Path(path)
        with atomic_write(path) as f:
            np.savez_compressed(f, **arrays)
        return path

    @classmethod
    def load(cls, path: str | Path) -> OodStats:
        """Read :meth:`save`'s file; a damaged or foreign one raises :class:`OodError` with one line."""
        try:
            with np.load(path, allow_pickle=False) as s:
                layers = [str(name) for name in s["layers"]]
                gaussians = [Gaussian(s[f"means_{i}"], s[f"precision_{i}"], float(s[f"shrinkage_{i}"]),
                                      float(s[f"scale_{i}"])) for i in range(len(layers))]
                return cls(layers, gaussians, float(s["threshold"]), s["test_scores"], s["test_msp"],
                           int(s["train_images"]), float(s["percentile"]))
        except (OSError, EOFError, zipfile.BadZipFile, KeyError, ValueError, TypeError) as exc:
            raise OodError(f"its statistics file {Path(path).name} cannot be read ({exc}); "
                           "`python -m core bundle` writes it again") from None


def shrunk_covariance(centred: np.ndarray) -> tuple[np.ndarray, float]:
    """Ledoit-Wolf shrunk covariance of already centred rows, and the shrinkage intensity used."""
    x = np.asarray(centred, dtype=np.float64)
    n, d = x.shape
    sample = x.T @ x / n
    mu = float(np.trace(sample)) / d
    x2 = x ** 2
    beta_ = float(np.sum(x2.T @ x2)) / n
    delta_ = float(np.sum(sample ** 2))
    beta = (beta_ - delta_) / (d * n)
    delta = (delta_ - 2.0 * mu * float(np.trace(sample)) + d * mu ** 2) / d
    shrinkage = 1.0 if delta <= 0 else min(max(beta, 0.0), delta) / delta
    shrinkage = max(shrinkage, MIN_SHRINKAGE)
    return (1.0 - shrinkage) * sample + shrinkage * mu * np.eye(d), shrinkage


def fit_gaussian(features: np.ndarray, labels: np.ndarray, num_classes: int) -> Gaussian:
    """Class means and the shrunk shared covariance of one depth's training features."""
    f = np.asarray(features, dtype=np.float64).reshape(len(features), -1)
    y = np.asarray(labels)
    missing = [c for c in range(num_classes) if not np.any(y == c)]
    if missing:
        raise ValueError(f"no training image of class(es) {missing}: cannot fit the out-of-distribution check")
    means = np.stack([f[y == c].mean(axis=0) for c in range(num_classes)])
    covariance, shrinkage = shrunk_covariance(f - means[y])
    if not np.any(covariance):  # a depth that is zero on every training image: nothing to learn from
        covariance = np.eye(covariance.shape[0])
    return Gaussian(means, np.linalg.inv(covariance), shrinkage)


def fit(layers: list[str], train_features: list[np.ndarray], train_labels: np.ndarray, num_classes: int,
        test_features: list[np.ndarray], test_probabilities: np.ndarray,
        percentile: float = PERCENTILE) -> OodStats:
    """Per-depth statistics from the training features; normalisers and threshold from the test images."""
    gaussians = []
    for train, test in zip(train_features, test_features):
        g = fit_gaussian(train, train_labels, num_classes)
        g.scale = max(float(np.percentile(g.distances(test), percentile)), 1e-12)
        gaussians.append(g)
    stats = OodStats(list(layers), gaussians, 0.0, np.zeros(0), np.max(np.asarray(test_probabilities), axis=1),
                     int(len(train_labels)), percentile)
    stats.test_scores = stats.scores(test_features)
    stats.threshold = float(np.percentile(stats.test_scores, percentile))
    return stats


# ------------------------------------------------------------------------------------------- Keras side

def probe_layers(stage1: Any) -> list[str]:
    """The depths the check looks at: every convolution, then the last hidden layer."""
    import keras

    from ..models.models import FEATURE_LAYER

    return [layer.name for layer in stage1.layers if isinstance(layer, keras.layers.Conv2D)] + [FEATURE_LAYER]


def probe_outputs(stage1: Any, layers: list[str]) -> list[Any]:
    """Symbolic outputs of ``layers`` in ``stage1``'s graph, image-shaped ones averaged over the image."""
    from keras import ops

    out = []
    for name in layers:
        tensor = stage1.get_layer(name).output
        out.append(ops.mean(tensor, axis=(1, 2)) if len(tensor.shape) == 4 else tensor)
    return out


def fit_model(stage1: Any, data: Any, batch_size: int = 256) -> tuple[OodStats, np.ndarray]:
    """:func:`fit` for a stage-one Keras model on a :class:`core.data.datasets.Dataset`; also returns the model's
    test-set probabilities (bundling reuses them for the accuracy it shows)."""
    import keras

    layers = probe_layers(stage1)
    probe = keras.Model(stage1.input, probe_outputs(stage1, layers) + [stage1.output])
    train = probe.predict(data.x_train, batch_size=batch_size, verbose=0)[:-1]
    *test, test_probs = probe.predict(data.x_test, batch_size=batch_size, verbose=0)
    stats = fit(layers, [np.asarray(a) for a in train], data.y_train, data.num_classes,
                [np.asarray(a) for a in test], np.asarray(test_probs))
    return stats, np.asarray(test_probs)
