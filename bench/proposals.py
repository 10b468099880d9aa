"""Speed-ups measured by the benchmark but not (yet) in ``core``: each is a drop-in for a core function.

They compute exactly what core computes; the benchmark times them next to core's version so the change can be
judged on numbers. See bench/README.md, "Recommended changes".
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

# ------------------------------------------------------------------ datasets: one buffer for all splits


def split_tail(x: np.ndarray, y: np.ndarray, pick: np.ndarray, chunk: int = 4096):
    """Rows ``pick`` (in that order) to the tail of ``x``, the others (ascending) to the front, in place.

    Returns ``(x_rest, y_rest, x_pick, y_pick)`` as views of the same buffer, so a split costs no memory once
    done; the only temporary is a copy of the picked rows (the split's own size).
    Same arrays as ``x[pick]`` and ``compact(x, y, setdiff(arange, pick))``.
    """
    pick = np.asarray(pick)
    if not x.flags.writeable:
        x = x.copy()
    mask = np.zeros(len(y), dtype=bool)
    mask[pick] = True
    keep = np.flatnonzero(~mask)
    picked_x, picked_y = x[pick], y[pick]
    for start in range(0, len(keep), chunk):  # keep[k] >= k: a row is read before it is overwritten
        rows = keep[start:start + chunk]
        x[start:start + len(rows)] = x[rows]
    n = len(keep)
    x[n:] = picked_x
    del picked_x
    return x[:n], y[keep].copy(), x[n:], picked_y


def load_dataset_partitioned(protocol):
    """``core.datasets.load_dataset`` with :func:`split_tail` for the test and validation splits."""
    from core.datasets import Dataset, _require_all_classes, compact, load_raw, stratified_pick

    raw = load_raw(protocol.dataset, protocol.data_path, protocol.image_size, None)
    rng = np.random.default_rng(protocol.seed)
    x, y = raw.x_train, raw.y_train
    if not x.flags.writeable:
        x = x.copy()
    if raw.x_test is None:
        x, y, x_test, y_test = split_tail(x, y, stratified_pick(y, protocol.test_split, rng))
    else:
        x_test, y_test = raw.x_test, raw.y_test
    if protocol.limit and protocol.limit < len(y):
        x, y = compact(x, y, np.sort(stratified_pick(y, protocol.limit / len(y), rng)))
    if protocol.test_limit and protocol.test_limit < len(y_test):
        keep = np.sort(stratified_pick(y_test, protocol.test_limit / len(y_test), rng))
        x_test, y_test = x_test[keep], y_test[keep]
    x_train, y_train, x_val, y_val = split_tail(x, y, stratified_pick(y, protocol.validation_split, rng))
    _require_all_classes(raw.class_names, y_train, protocol.dataset)
    return Dataset(protocol.dataset, raw.class_names, x_train, y_train, x_val, y_val, x_test, y_test,
                   info=raw.info)


# --------------------------------------------------------------------- classify: one fused, compiled call


def fused_predictor(models) -> Callable[[np.ndarray], dict[str, np.ndarray]]:
    """One model with three outputs (stage one's softmax and both heads on the shared features), called through
    its compiled predict step: one CNN pass instead of two, and no per-layer eager dispatch.

    Same numbers as ``core.classify.predict_array`` (same weights, same uint8->float input, inference mode).
    """
    import keras

    from core.models import FEATURE_LAYER

    stage1 = models.stage1
    features = stage1.get_layer(FEATURE_LAYER).output
    outputs: dict[str, Any] = {"stage1": stage1.output}
    for name, head in models.heads.items():
        layer = head.layers[-1]
        copy = keras.layers.Dense(layer.units, activation=layer.activation, name=f"head_{name}")
        outputs[name] = copy(features)
        copy.set_weights(layer.get_weights())
    fused = keras.Model(stage1.input, list(outputs.values()), name="classify_fused")
    names = list(outputs)

    def predict(image: np.ndarray) -> dict[str, np.ndarray]:
        got = fused.predict_on_batch(image[None].astype(np.float32))
        return {k: np.asarray(v[0], dtype=np.float64) for k, v in zip(names, got)}
    return predict
