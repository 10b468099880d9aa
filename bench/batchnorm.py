"""BatchNorm re-estimation (:func:`core.models.models.reestimate_batchnorm`) against the way it was first written.

Run by hand, from the repository root, with the Dogs & Cats photos (the repository does not ship them):

    python -m bench.batchnorm --dogs-cats ~/data/dogs-cats            # KERAS_BACKEND=jax on a GPU too

Why: re-estimating the shipped Dogs & Cats CNN's 4 BatchNorm layers on a repeat's 1,120 training photos was
most of the lock-step engine's time on an H100 (``bench/README.md``, case 6). The reference is the first
version: a probe model per layer built at every call, each batch's activations copied to the host and summed
there in float64. Ours computes each sample's channel means and variances where the model runs
(:class:`core.models.models.SampleMoments`) and keeps its compiled probes per model. Both run on the shipped model,
alternately, ``--rounds`` times each; the ratio is ours / reference, and the largest relative difference of the
statistics says they compute the same thing.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def reference(model, x: np.ndarray, batch_size: int = 256) -> None:
    """The first version of ``reestimate_batchnorm`` (top-level BatchNorm layers only)."""
    import keras
    from keras import layers

    found = [(layer, keras.Model(model.input, layer.input).predict_on_batch) for layer in model.layers
             if isinstance(layer, layers.BatchNormalization)]
    for bn, probe in found:
        axis = bn.axis if isinstance(bn.axis, int) else bn.axis[0]
        total, total_sq, count = 0.0, 0.0, 0
        for start in range(0, len(x), batch_size):
            a = np.asarray(probe(x[start:start + batch_size]), dtype=np.float64)
            a = np.moveaxis(a, axis, -1).reshape(-1, a.shape[axis])
            total, total_sq, count = total + a.sum(axis=0), total_sq + np.square(a).sum(axis=0), count + len(a)
        mean = total / count
        bn.moving_mean.assign(mean.astype(np.float32))
        bn.moving_variance.assign(np.maximum(total_sq / count - np.square(mean), 0.0).astype(np.float32))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dogs-cats", required=True, metavar="PATH")
    parser.add_argument("-n", type=int, default=1120, help="training photos (a repeat's training split: 1,120)")
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args(argv)

    import keras

    from core.models import compact
    from core.training import env
    from core.data.datasets import load_raw
    from core.models.models import batchnorm_layers, reestimate_batchnorm

    x = load_raw("dogs-cats", args.dogs_cats, 128).x_train[:args.n]
    model = compact.load(ROOT / "reference" / "dogs-cats" / "stage1.npz")
    layers, start = batchnorm_layers(model), model.get_weights()
    times: dict[str, list[float]] = {"reference": [], "ours": []}
    stats = {}
    for _ in range(args.rounds):
        for name, run in (("reference", reference), ("ours", reestimate_batchnorm)):
            model.set_weights(start)
            started = time.perf_counter()
            run(model, x)
            times[name].append(time.perf_counter() - started)
            stats[name] = [(bn.moving_mean.numpy(), bn.moving_variance.numpy()) for bn in layers]
    worst = max(float(np.max(np.abs(new - old) / (np.abs(old) + 1e-6)))
                for pair_new, pair_old in zip(stats["ours"], stats["reference"])
                for new, old in zip(pair_new, pair_old))
    ours, ref = np.median(times["ours"]), np.median(times["reference"])
    print(f"{keras.config.backend()} on {env.device()}: BatchNorm re-estimation of the shipped Dogs & Cats CNN "
          f"({len(layers)} layers, {len(x)} photos)")
    print(f"  ours {ours:.2f} s {[round(t, 2) for t in times['ours']]}, reference {ref:.2f} s "
          f"{[round(t, 2) for t in times['reference']]}, ratio {ours / ref:.3f}; largest relative difference of "
          f"the statistics {worst:.1e}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
