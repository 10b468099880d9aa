"""A repeat's run record, and the pieces of it both training engines compute the same way.

The plain engine (:mod:`core.training.two_stage`, one Keras ``fit`` per repeat) and the lock-step engine
(:mod:`core.training.lockstep`, all repeats as one JAX program) differ in how they train, not in what they
store: every record is built by :func:`make_record` from parts made here (:func:`fit_summary`,
:func:`summarise_fit`, :func:`add_diagnostics`), so one schema serves the store, the statistics and the pages.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import keras
import numpy as np

from ..data.datasets import Dataset
from ..protocol.config import Protocol
from ..protocol.vocabulary import SPLITS
from ..results import metrics, predictions
from . import env

Progress = Callable[[dict[str, Any]], None]









EVAL_BATCH = 256
"""Inference batch for evaluation and feature extraction: results do not depend on it, speed does."""



class Cancelled(Exception):
    """Raised out of :func:`run_repeat` when ``should_stop`` asked it to stop."""



def make_record(data: Dataset, protocol: Protocol, repeat: int, stage1: dict[str, Any],
                feature_info: dict[str, Any], heads: dict[str, Any],
                test_probs: dict[str, np.ndarray], started_at: str, formulation: str = "keras fit",
                readings: dict[str, Any] | None = None) -> dict[str, Any]:
    """One repeat's run record; shared with :mod:`core.training.lockstep`, so both engines store the same schema.

    ``started_at`` is when this process began work on the repeat (for the lock-step engine, on all the
    repeats it trains together): with ``finished_at`` it bounds the wall time, which the lock-step engine's
    per-repeat ``seconds`` (shares of a common wall time) cannot show. ``formulation`` says how the engine
    computed (the plain engine's Keras ``fit``; the lock-step engine's convolution formulation, which changes
    rounding, not the function: :mod:`core.training.stacked`). ``readings`` are the second-stage readings that
    train no network (:mod:`core.training.ceiling`)."""
    seed = protocol.seed + repeat
    return {
        "key": protocol.key(),
        "repeat": repeat,
        "seed": seed,
        "protocol": protocol.to_dict(),
        "describe": protocol.describe(),
        "dataset": {"name": data.name, "class_names": data.class_names, "sizes": data.sizes(),
                    "input_shape": list(data.input_shape), "source": data.info.get("source"),
                    "split_seed": data.split_seed, "skipped_files": len(data.info.get("skipped", [])),
                    **data.identity()},
        "stage1": stage1,
        "features": feature_info,
        "adam": heads["adam"],
        "sgd": heads["sgd"],
        "readings": readings or {},
        "per_class": metrics.record_per_class(
            data.y_test, {name: np.argmax(test_probs[f"stage1_{protocol.stage1_eval}" if name == "stage1" else name],
                                          axis=1) for name in ("stage1", "adam", "sgd")}, data.class_names),
        "predictions": predictions.encode(data.y_test, test_probs, protocol.stage1_eval,
                                          lambda rows: data.image_ids("test", rows)),
        "env": {**env.info(), "precision": env.precision_support(protocol.precision), "formulation": formulation},
        "started_at": started_at,
        "finished_at": now_iso(),
    }



def now_iso() -> str:
    """The current UTC time as the records store it."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")



BN_SAMPLE_SIZES = (100, 1000)
"""Training images stage one's BatchNorm statistics are also re-estimated on (besides all of them), to see how
many PreciseBN needs here (Wu & Johnson 2021 report 10^3-10^4 suffice)."""


def bn_sample_rows(n_train: int, images: int, seed: int) -> np.ndarray:
    """The training rows a re-estimation on ``images`` images uses: the first of a seeded permutation, sorted
    (the same rows in both engines)."""
    return np.sort(np.random.default_rng(seed).permutation(n_train)[:images])


def add_diagnostics(stage1: dict[str, Any], layers: int, reestimated: dict[str, dict[str, float]],
                    images: int, seconds: float, sample_sizes: dict[int, float] | None = None) -> None:
    """The record's explanation of stage one's score, the same for both engines:

    - ``last_bn``/``best_bn``: ``reestimated["last"/"best"]``, the evaluations after re-estimating the
      BatchNormalization statistics on the training split (a copy of ``last``/``best`` for a model without
      BatchNormalization, and ``batchnorm`` says so);
    - ``fit_train_accuracy``: the training accuracy Keras reported during ``fit`` (dropout and augmentation
      on, weights changing through the epoch) for the last and the best epoch, beside the inference-mode
      ``train_accuracy`` of ``last``/``best``. The paper does not say which of the two its Table 1 shows;
    - ``batchnorm.sample_sizes``: the last weights' test accuracy after re-estimating on ``images`` training
      images (:data:`BN_SAMPLE_SIZES`, then all of them), from ``sample_sizes`` (images -> test accuracy).
    """
    for weights in ("last", "best"):
        stage1[f"{weights}_bn"] = dict(reestimated[weights]) if layers else dict(stage1[weights])
    stage1["batchnorm"] = {
        "layers": layers, "reestimated_on": "train" if layers else None,
        "images": int(images) if layers else 0, "seconds": seconds,
        "note": ("moving mean and variance of every BatchNormalization layer recomputed on the training split "
                 "(inference mode, no augmentation, no weight update)") if layers else
                "the model has no BatchNormalization layer, so *_bn equal the plain evaluations",
    }
    if layers:
        sizes = {**(sample_sizes or {}), int(images): reestimated["last"]["test_accuracy"]}
        stage1["batchnorm"]["sample_sizes"] = [{"images": n, "test_accuracy": float(acc)}
                                               for n, acc in sorted(sizes.items())]
    acc = stage1["history"].get("accuracy", [])
    best_epoch = stage1["best_epoch"]
    stage1["fit_train_accuracy"] = {
        "last": float(acc[-1]) if acc else float("nan"),
        "best": float(acc[best_epoch - 1]) if acc and best_epoch else float("nan"),
        "note": "training accuracy as Keras reports it during fit (dropout/augmentation on, averaged over "
                "the epoch while the weights change)",
    }



def predict_probabilities(model: keras.Model, x: np.ndarray) -> np.ndarray:
    return np.asarray(model.predict(x, batch_size=EVAL_BATCH, verbose=0), dtype=np.float32)



def summarise_fit(model: keras.Model, inputs: dict, labels: dict, protocol: Protocol, workdir: Path, stage: str,
                  history: dict[str, list[float]]) -> dict[str, Any]:
    """A trained stage's record part: its last-epoch and best-checkpoint evaluations and its history.

    ``model`` holds the last-epoch weights; the best ones are in ``<stage>_best.weights.h5``. Shared by the
    plain path and :mod:`core.training.lockstep` (the heads), so both engines' records have one schema.
    """
    best_path = workdir / f"{stage}_best.weights.h5"
    model.save_weights(workdir / f"{stage}_last.weights.h5")

    started = time.perf_counter()
    last = evaluate(model, inputs, labels)
    if best_path.exists():
        model.load_weights(best_path)
        best = evaluate(model, inputs, labels)
    else:  # val_accuracy never defined an improvement (cannot happen with >= 1 epoch, kept for safety)
        best = last
        shutil.copy(workdir / f"{stage}_last.weights.h5", best_path)
    return fit_summary(last, best, history, protocol, time.perf_counter() - started)



def fit_summary(last: dict[str, float], best: dict[str, float], history: dict[str, list[float]],
                protocol: Protocol, eval_seconds: float) -> dict[str, Any]:
    """A stage's record part from its evaluations (``{split}_accuracy``/``{split}_loss``) and history."""
    val_acc = history.get("val_accuracy", [])
    return {
        "last": last,
        "best": best,
        "history": history,
        "epochs_run": len(val_acc),
        "best_epoch": int(np.argmax(val_acc)) + 1 if val_acc else 0,
        "stopped_early": len(val_acc) < protocol.epochs,
        # Summed per epoch from the log, so a repeat resumed after a crash still reports its whole training.
        "fit_seconds": float(sum(history.get("seconds", []))),
        "eval_seconds": eval_seconds,
    }


def evaluate(model: keras.Model, inputs: dict, labels: dict) -> dict[str, float]:
    out = {}
    for split in SPLITS:
        scores = model.evaluate(inputs[split], labels[split], batch_size=EVAL_BATCH, verbose=0,
                                return_dict=True)
        out[f"{split}_accuracy"] = float(scores["accuracy"])
        out[f"{split}_loss"] = float(scores["loss"])
    return out



def write_json(path: Path, data: Any) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data))
    os.replace(tmp, path)



def tidy_workdir(workdir: Path) -> None:
    """Drop crash-recovery files once the repeat is complete; keep the ``.keras`` models."""
    for item in workdir.iterdir():
        if item.is_dir() and item.name.startswith("backup_"):
            shutil.rmtree(item, ignore_errors=True)
        elif item.suffix in (".h5", ".jsonl", ".json", ".npz"):
            item.unlink(missing_ok=True)
