"""Add PreciseBN's reading to shipped records, from the stage-one models their experiment kept in a cache.

The records say how much re-estimating BatchNorm lifts stage one (:func:`core.models.models.reestimate_batchnorm`,
exact statistics of clean training images). PreciseBN (:func:`core.models.models.precise_bn`) averages the
statistics of training batches instead, so on the same model it splits that lift in two: what averaging alone
recovers (the moving averages' lag and noise), and what is left (training batches are augmented and pass
through dropout; test images do not). Nothing is retrained and no number of the record changes: each repeat's
kept model is checked to give the record's own stage-one test accuracy on the record's own split first.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..data.datasets import load_raw, split_raw
from ..protocol.config import Protocol
from ..results.store import RunStore
from ..training import env
from ..training.record import now_iso
from .identify import check_same_split


class ReadingMismatch(ValueError):
    """A repeat whose kept model or data is not the one its record was made with (or no model was kept)."""


def _accuracy(model: Any, x: np.ndarray, y: np.ndarray) -> float:
    return float(np.mean(np.argmax(model.predict(x, batch_size=256, verbose=0), axis=1) == y))


def precise_readings(runs: list[dict[str, Any]], store: RunStore, data_path: str | None = None,
                     report: Callable[[str], None] = lambda line: None,
                     iters: int | None = None) -> list[dict[str, Any]]:
    """The records with ``stage1["precise_bn"]`` added (test accuracies after PreciseBN as fvcore runs it, and
    with only BatchNorm in training mode, with how and where they were computed). Raises
    :class:`ReadingMismatch` naming the first repeat that cannot be read; the input is left as it was. ``iters``:
    training batches averaged (default fvcore's 200)."""
    from ..models.compact import load_model_file
    from ..models.models import PRECISE_BN_ITERS, precise_bn

    iters = iters or PRECISE_BN_ITERS
    protocol = Protocol.from_dict(runs[0]["protocol"])
    raw = load_raw(protocol.dataset, data_path or protocol.data_path, protocol.image_size)
    where = {"backend": env.backend(), "device": env.device(), "versions": env.versions(),
             "code": env.code_version()}
    out = []
    for run in runs:
        name = f"repeat {run['repeat'] + 1}"
        paths = store.model_paths(run["key"], run["repeat"])
        if paths is None:
            raise ReadingMismatch(f"{name}: the cache kept no models for it")
        run_protocol = Protocol.from_dict(run["protocol"])
        data = split_raw(raw, run_protocol, run["repeat"], copy=True)
        check_same_split(run, data)
        model = load_model_file(paths["stage1"])
        weights = run_protocol.features_from
        recorded = run["stage1"][weights]["test_accuracy"]
        measured = _accuracy(model, data.x_test, data.y_test)
        if abs(measured - recorded) > 1.5 / len(data.y_test):
            raise ReadingMismatch(f"{name}: the kept model scores {measured:.2%} on the test split, the record "
                                  f"{recorded:.2%}; it is not the model this record was made with")
        trained = model.get_weights()
        reading = {"iters": iters, "batch_size": protocol.batch_size, "weights": weights,
                   "seed": run["seed"], "added_at": now_iso(), **where}
        for field, bn_only in (("test_accuracy", False), ("bn_only_test_accuracy", True)):
            model.set_weights(trained)
            precise_bn(model, data.x_train, iters=iters, batch_size=protocol.batch_size, bn_only=bn_only,
                       seed=run["seed"])
            reading[field] = _accuracy(model, data.x_test, data.y_test)
        out.append({**run, "stage1": {**run["stage1"], "precise_bn": reading}})
        report(f"{name}: stage one {measured:.2%}, PreciseBN {reading['test_accuracy']:.2%}, BatchNorm only "
               f"{reading['bn_only_test_accuracy']:.2%}")
    return out


def precise_file(records: Path, store: RunStore, data_path: str | None = None,
                 report: Callable[[str], None] = lambda line: None, iters: int | None = None) -> int:
    """:func:`precise_readings` for a ``records.json`` (a bundle's), rewritten atomically; returns the records done."""
    import json

    from ..protocol.files import atomic_write

    runs = json.loads(records.read_text())
    done = precise_readings(runs, store, data_path, report, iters)
    with atomic_write(records, "w") as fh:
        json.dump(done, fh, indent=1, sort_keys=True)
    return len(done)
