"""Our BatchNorm re-estimation against PreciseBN's, on the stage-one models a finished experiment kept.

Run by hand, from the repository root, on a cache whose experiment kept its models (``artefacts/``) and whose
data is on this machine:

    python -m bench.precise_bn --cache /work/two_stage_cache --key ad5ca30464161a84

Why: the app's answer on Dogs & Cats is that re-estimating stage one's BatchNorm statistics
(:func:`core.models.models.reestimate_batchnorm`) matches the second stage's gain. Ours computes each layer's
exact population statistics with every other layer in inference mode. PreciseBN (Wu & Johnson 2021; fvcore's
``update_bn_stats``) instead runs the model in training mode over training batches and averages the batches'
statistics. This is not a speed case: it asks whether the two agree, and what training mode's augmentation and
dropout do to the estimate. Per repeat, with the experiment's own split of the data:

- ``stage one``: the kept model as trained (its moving averages);
- ``ours``: :func:`~core.models.models.reestimate_batchnorm` on the training split;
- ``PreciseBN``: :func:`core.models.models.precise_bn`, fvcore's procedure: ``--iters`` training batches of the
  protocol's batch size, the model in training mode (augmentation and dropout on, as the batches training saw),
  each layer's moving mean and variance the plain average of the batches' (momentum ``1 - 1/i`` at batch ``i``);
- ``PreciseBN, BN only``: the same with augmentation and dropout off, only the BatchNorm layers in training mode.

Every figure is a test accuracy of the experiment's test split; the records' own stage-one and re-estimated
accuracies are printed beside the recomputed ones as a check.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

COLUMNS = ("stage one", "ours", "PreciseBN", "PreciseBN, BN only")


def accuracy(model, x: np.ndarray, y: np.ndarray) -> float:
    return float(np.mean(np.argmax(model.predict(x, batch_size=256, verbose=0), axis=1) == y))


def one_repeat(record: dict, model_path: Path, iters: int) -> dict:
    import keras

    from core.data.datasets import load_dataset
    from core.models.models import precise_bn, reestimate_batchnorm
    from core.protocol.config import Protocol

    protocol = Protocol.from_dict(record["protocol"])
    data = load_dataset(protocol, repeat=record["repeat"])
    model = keras.saving.load_model(model_path, compile=False)
    trained = model.get_weights()
    row = {"repeat": record["repeat"], "recorded stage one": record["stage1"][protocol.features_from]["test_accuracy"],
           "recorded ours": record["stage1"].get(f"{protocol.features_from}_bn", {}).get("test_accuracy"),
           "stage one": accuracy(model, data.x_test, data.y_test)}
    reestimate_batchnorm(model, data.x_train)
    row["ours"] = accuracy(model, data.x_test, data.y_test)
    for column, bn_only in (("PreciseBN", False), ("PreciseBN, BN only", True)):
        model.set_weights(trained)
        precise_bn(model, data.x_train, iters=iters, batch_size=protocol.batch_size, bn_only=bn_only,
                   seed=record["seed"])
        row[column] = accuracy(model, data.x_test, data.y_test)
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", required=True, type=Path, help="the cache that holds the experiment")
    parser.add_argument("--key", required=True, help="the experiment (its models must have been kept)")
    parser.add_argument("--iters", type=int, default=200, help="training batches (fvcore's default: 200)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "out" / "precise_bn.json")
    args = parser.parse_args(argv)

    from core.results.store import RunStore

    store = RunStore(args.cache)
    records = store.runs(args.key)
    kept = [(r, store.model_paths(args.key, r["repeat"])) for r in records]
    kept = [(r, paths["stage1"]) for r, paths in kept if paths]
    if not kept:
        print(f"error: experiment {args.key} has no kept stage-one models in {args.cache}")
        return 2
    print(f"{records[0]['describe']}: {len(kept)} of {len(records)} repeats kept their models")
    rows = []
    for record, path in kept:
        rows.append(one_repeat(record, path, args.iters))
        print("  repeat {repeat}: ".format(**rows[-1]) + ", ".join(f"{c} {100 * rows[-1][c]:.2f} %" for c in COLUMNS)
              + f" (recorded: stage one {100 * rows[-1]['recorded stage one']:.2f} %, ours "
              + (f"{100 * rows[-1]['recorded ours']:.2f} %)" if rows[-1]["recorded ours"] is not None else "-)"),
              flush=True)
    means = {c: float(np.mean([r[c] for r in rows])) for c in COLUMNS}
    print("mean test accuracy: " + ", ".join(f"{c} {100 * v:.2f} %" for c, v in means.items()))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"key": args.key, "iters": args.iters, "rows": rows, "means": means}, indent=1))
    print(f"written: {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
