"""Which shipped model a photo is meant for: Classify's preselection among the shipped reference models.

Why a learned chooser: each model's out-of-distribution check (:mod:`core.classify.ood`) measures how typical a photo is
of *that* model's images, and between the two photo models it tells little apart: the Dogs & Cats model
passes 96 % of face photos, the Face Mask model 97 % of pet photos. Preselecting the model whose own test images
the photo ranks best among (:func:`core.classify.classify.best_fit`) picked the photo's own model for only 71-86 % of
pets and of faces (docs/pages.md, "Classify"). The features the models compute for the photo anyway (the same depths
the check reads: every convolution averaged over the image, and the last hidden layer) do tell the datasets
apart when they are read *together*: a softmax regression over all shipped models' features, fitted on images of
each dataset, is the router. It is the paper's own second stage in miniature (a softmax-only model trained on
features of trained networks), with an L2 penalty: with the three shipped models it has 1,344 inputs and 700
images per dataset to fit them on.

The router reads the features of exactly the model sets it was fitted with, so it records their fingerprints
(dataset, experiment key, repeat) and Classify uses it only while the shipped bundles are still those; after
``python -m core bundle`` replaces a model, ``python -m core router`` must be run again (a repository test says
so). Its held-out accuracy, next to the rank rule's on the same images, is stored with it and shown on the page.
Stored as ``.npz`` read with ``allow_pickle=False``.
"""

from __future__ import annotations

import dataclasses
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from ..protocol.files import atomic_write

FILE = "router.npz"
L2 = 1e-2
"""Penalty on the squared weights (inputs are standardised, loss averaged over images); a fixed choice: on the
shipped models (700 images per dataset fitted, 300 held out), 1e-4 to 1e-1 moved the held-out accuracy by at
most 1.3 points and 1.0 cost up to 3."""


class RouterError(ValueError):
    """A router file that cannot be used; the message is one line for a visitor or the CLI."""


def fingerprint(dataset: str, key: str, repeat: int) -> str:
    """The identity of one shipped model set: the router is valid only for the sets it was fitted with."""
    return f"{dataset}:{key}:{int(repeat)}"


def design_row(features: Sequence[Sequence[np.ndarray]]) -> np.ndarray:
    """One photo's input to the router: every model's features at every depth, concatenated in model order."""
    return np.concatenate([np.ravel(np.asarray(f, dtype=np.float64)) for per_model in features for f in per_model])


@dataclass(frozen=True)
class Router:
    datasets: tuple[str, ...]
    """The classes: one per shipped model set, in the order of ``models``."""
    models: tuple[str, ...]
    """Fingerprints (:func:`fingerprint`) of the model sets whose features it reads, in that order."""
    mean: np.ndarray
    scale: np.ndarray
    weights: np.ndarray
    bias: np.ndarray
    accuracy: np.ndarray
    """Held-out images routed to their own dataset's model, per dataset."""
    rank_accuracy: np.ndarray
    """The rank rule (:func:`core.classify.classify.best_fit`) on the same held-out images, per dataset."""
    images: np.ndarray
    """Images per dataset: ``[[fitted on, held out], ...]``."""
    l2: float = L2
    provenance: str = ""
    """When and how it was fitted: date, images, seed, backend, device, library versions."""

    def probabilities(self, row: np.ndarray) -> np.ndarray:
        """Probability that the photo (its :func:`design_row`) belongs to each dataset."""
        row = np.asarray(row, dtype=np.float64)
        if row.shape != self.mean.shape:
            raise RouterError(f"the router expects {self.mean.size} features, got {row.size}: rebuild it "
                              "with `python -m core router`.")
        return _softmax(((row - self.mean) / self.scale) @ self.weights + self.bias)

    def route(self, predictions: Sequence[Any]) -> np.ndarray:
        """Probability per dataset for a photo, from its :class:`core.classify.classify.Prediction` by each model set
        the router reads, in the router's order (``for_choices`` gives that order)."""
        return self.probabilities(design_row([p.features for p in predictions]))

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        with atomic_write(path) as f:
            np.savez(f, datasets=np.array(self.datasets, dtype=str), models=np.array(self.models, dtype=str),
                     mean=self.mean, scale=self.scale, weights=self.weights, bias=self.bias, accuracy=self.accuracy,
                     rank_accuracy=self.rank_accuracy, images=self.images, l2=np.float64(self.l2),
                     provenance=np.array(self.provenance))
        return path

    @classmethod
    def load(cls, path: str | Path) -> Router:
        try:
            with np.load(path, allow_pickle=False) as z:
                fields = {k: z[k] for k in z.files}
            router = cls(tuple(str(s) for s in fields["datasets"]), tuple(str(s) for s in fields["models"]),
                         *(np.asarray(fields[k], dtype=np.float64) for k in
                           ("mean", "scale", "weights", "bias", "accuracy", "rank_accuracy", "images")),
                         float(fields["l2"]), str(fields.get("provenance", "")))
        except (OSError, EOFError, zipfile.BadZipFile, KeyError, ValueError, TypeError) as exc:
            raise RouterError(f"the model chooser {Path(path).name} cannot be read ({exc}).") from None
        k, d = len(router.datasets), router.mean.size
        if router.weights.shape != (d, k) or router.bias.shape != (k,) or len(router.models) != k:
            raise RouterError(f"the model chooser {Path(path).name} is inconsistent: rebuild it with "
                              "`python -m core router`.")
        return router


def _softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def fit(x: np.ndarray, y: np.ndarray, num_classes: int, l2: float = L2) -> tuple[np.ndarray, ...]:
    """Standardise ``x`` and fit a multinomial logistic regression by L-BFGS (scipy); returns
    ``(mean, scale, weights, bias)``. Deterministic: it starts from zeros."""
    from scipy.optimize import minimize

    mean = x.mean(axis=0)
    scale = x.std(axis=0)
    scale[scale < 1e-9] = 1.0  # a feature constant over every image carries nothing; keep it at 0
    z = (x - mean) / scale
    n, d = z.shape
    onehot = np.eye(num_classes)[y]

    def loss(theta: np.ndarray) -> tuple[float, np.ndarray]:
        w, b = theta[:d * num_classes].reshape(d, num_classes), theta[d * num_classes:]
        logits = z @ w + b
        logits -= logits.max(axis=1, keepdims=True)
        logp = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
        p = np.exp(logp)
        value = -np.sum(onehot * logp) / n + l2 * np.sum(w * w)
        grad_w = z.T @ (p - onehot) / n + 2 * l2 * w
        grad_b = (p - onehot).sum(axis=0) / n
        return value, np.concatenate([grad_w.ravel(), grad_b])

    theta = minimize(loss, np.zeros(d * num_classes + num_classes), jac=True, method="L-BFGS-B",
                     options={"maxiter": 2000}).x
    return mean, scale, theta[:d * num_classes].reshape(d, num_classes), theta[d * num_classes:]


def build(datasets: Sequence[str], fingerprints: Sequence[str], fitted: Sequence[np.ndarray],
          held_out: Sequence[np.ndarray], rank_picks: Sequence[np.ndarray], l2: float = L2,
          provenance: str = "") -> Router:
    """A router from each dataset's design rows (``fitted`` to fit, ``held_out`` to measure) and the rank
    rule's picks (dataset indices) on the held-out rows, for comparison."""
    if len(datasets) < 2:
        raise RouterError("a model chooser needs at least two shipped model sets.")
    if any(len(rows) == 0 for rows in (*fitted, *held_out)):
        raise RouterError("every dataset needs images to fit on and images held out.")
    x = np.concatenate(fitted)
    y = np.concatenate([np.full(len(rows), i) for i, rows in enumerate(fitted)])
    mean, scale, weights, bias = fit(x, y, len(datasets), l2)
    k = len(datasets)
    router = Router(tuple(datasets), tuple(fingerprints), mean, scale, weights, bias, np.zeros(k), np.zeros(k),
                    np.array([[len(a), len(b)] for a, b in zip(fitted, held_out)], dtype=np.float64), l2, provenance)
    accuracy = [np.mean([router.probabilities(r).argmax() == i for r in rows]) for i, rows in enumerate(held_out)]
    rank = [np.mean(np.asarray(picks) == i) for i, picks in enumerate(rank_picks)]
    return dataclasses.replace(router, accuracy=np.array(accuracy, dtype=np.float64),
                               rank_accuracy=np.array(rank, dtype=np.float64))


def sample_images(dataset: str, data_path: str | None, count: int, seed: int = 0) -> list[bytes]:
    """Up to ``count`` encoded images of a dataset, drawn at random, as a visitor would upload them: the files
    of a photo folder (any depth), or Fashion-MNIST/CIFAR-10 arrays encoded as PNG."""
    import cv2

    from ..data.datasets import load_raw
    from ..data.imageio import IMAGE_SUFFIXES
    from ..protocol.vocabulary import is_keras_dataset

    rng = np.random.default_rng(seed)
    if is_keras_dataset(dataset):
        raw = load_raw(dataset, data_path)
        x = np.concatenate([raw.x_train, raw.x_test])
        picks = rng.choice(len(x), min(count, len(x)), replace=False)
        return [cv2.imencode(".png", x[i][..., ::-1] if x[i].shape[-1] == 3 else x[i])[1].tobytes() for i in picks]
    if not data_path or not Path(data_path).is_dir():
        raise RouterError(f"no folder of {dataset} images at {data_path!r}: give it with --data {dataset}=PATH.")
    files = sorted(f for f in Path(data_path).expanduser().rglob("*")
                   if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise RouterError(f"no images under {data_path}.")
    picks = rng.choice(len(files), min(count, len(files)), replace=False)
    return [files[i].read_bytes() for i in picks]


def photo_rows(models: Sequence[Any], images: Sequence[bytes]) -> tuple[np.ndarray, np.ndarray]:
    """Each readable image's design row through ``models`` (loaded :class:`core.classify.classify.Models`, all with
    statistics) and the model the rank rule (:func:`core.classify.classify.best_fit`) picks for it."""
    from .classify import best_fit, fit_predictions
    from ..data.imageio import ImageError

    rows, picks = [], []
    for data in images:
        try:
            preds = fit_predictions(models, data)
        except ImageError:
            continue  # an unreadable file in a dataset folder says nothing about routing
        rows.append(design_row([p.features for p in preds]))
        picks.append(best_fit([p.ood for p in preds]))
    return np.array(rows), np.array(picks)


def build_for(models: Sequence[Any], datasets: Sequence[str], fingerprints: Sequence[str],
              images: Sequence[Sequence[bytes]], held_out: float = 0.3,
              report: Callable[[str], None] | None = None, provenance: str = "") -> Router:
    """Fit a router for ``models`` on each dataset's ``images``, measuring it on the last ``held_out`` share."""
    fitted, held, rank = [], [], []
    for name, batch in zip(datasets, images):
        rows, picks = photo_rows(models, batch)
        cut = int(round(len(rows) * (1 - held_out)))
        fitted.append(rows[:cut])
        held.append(rows[cut:])
        rank.append(picks[cut:])
        if report:
            report(f"{name}: {cut} images to fit on, {len(rows) - cut} held out")
    return build(datasets, fingerprints, fitted, held, rank, provenance=provenance)


def for_choices(choices: Sequence[Any], root: Path) -> tuple[Router, list[int]] | None:
    """The router shipped in the folder of bundles ``root`` and, per dataset it routes to, the index of that
    model set in ``choices`` (model choices as :func:`core.app.catalog.models` lists them); None when there is
    none, or it was fitted with other model sets than the ones shipped now (then the rank rule preselects).
    :func:`core.app.catalog.model_chooser` reads the app's own ``reference/``."""
    file = Path(root) / FILE
    if not file.is_file():
        return None
    router = Router.load(file)
    index = {fingerprint(c.dataset, c.key, c.repeat): i for i, c in enumerate(choices) if c.shipped}
    if not all(f in index for f in router.models):
        return None
    return router, [index[f] for f in router.models]
