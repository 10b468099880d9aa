"""JAX-side checks of the lock-step engine, run by ``tests/test_lockstep.py`` in a subprocess.

The test suite runs Keras on TensorFlow (``tests/conftest.py``) and Keras picks its backend once per process, so
the lock-step engine is exercised here, under ``KERAS_BACKEND=jax``, on tiny synthetic stage-two problems
(softmax heads on 12-dimensional features: they compile in seconds on a CPU). Prints one JSON object.

    KERAS_BACKEND=jax python tests/lockstep_probe.py CURVES_JSON
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path

os.environ["KERAS_BACKEND"] = "jax"
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import keras  # noqa: E402
import numpy as np  # noqa: E402

from core.training import lockstep  # noqa: E402
from core.protocol.config import Protocol  # noqa: E402
from core.models.models import build_head  # noqa: E402
from core.training.two_stage import Cancelled  # noqa: E402

TRAIN, VAL, DIM, CLASSES = 64, 32, 12, 3


def synthetic_features(seed: int = 0) -> tuple[np.ndarray, ...]:
    """Three learnable classes of 12-dimensional features (each class lifts its own four dimensions)."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, CLASSES, TRAIN + VAL)
    x = rng.normal(0, 1, (TRAIN + VAL, DIM)).astype(np.float32)
    for label in range(CLASSES):
        x[y == label, 4 * label:4 * label + 4] += 2.0
    return x[:TRAIN], y[:TRAIN], x[TRAIN:], y[TRAIN:]


def head_trainer(protocol: Protocol, members: int, checkpoint: Path, report=lambda event: None,
                 should_stop=lambda: False) -> lockstep.Trainer:
    """``members`` Adam heads (seeds 1, 2, ...) trained side by side on the synthetic features, every member
    reading the same features (source 0)."""
    x, y, xv, yv = synthetic_features()
    template = build_head(DIM, CLASSES)
    optimizer = keras.optimizers.Adam(protocol.adam_lr)
    optimizer.build(template.trainable_variables)
    weights = []
    for seed in range(1, members + 1):
        keras.utils.set_random_seed(seed)
        weights.append(lockstep.variable_values(build_head(DIM, CLASSES)))
    cohort = lockstep.Cohort.create("stage2_adam", template, optimizer, list(range(members)),
                                    list(range(1, members + 1)), [0] * members, weights, protocol)
    meta = {"key": protocol.key(), "stages": [cohort.stage], "repeats": cohort.repeats}
    return lockstep.Trainer([cohort], lockstep.DeviceSplit.upload([x], [y]), lockstep.DeviceSplit.upload([xv], [yv]),
                            CLASSES, protocol, checkpoint, meta, report, should_stop)


def weights_of(cohort: lockstep.Cohort, m: int, best: bool = False) -> list[list]:
    return [np.asarray(a).tolist() for a in cohort.member_weights(m, best)[0]]


def iterations(cohort: lockstep.Cohort) -> list[int]:
    index = [v.name for v in cohort.optimizer.variables].index("iteration")
    return np.asarray(cohort.state["optimizer"][index]).tolist()


def follow_curves(curves: list[list[float]], protocol: Protocol) -> dict:
    """Train with the validation accuracy replaced by hand-made curves (member m sees ``curves[m][epoch]``):
    what each member's callbacks decided, and its weights at each of its epochs."""
    calls = {"epoch": 0}

    def fake_scores(model, num_classes, **options):
        def run(trainable, non_trainable, x, sources, y):
            epoch = calls["epoch"]
            calls["epoch"] += 1
            accuracy = np.array([curve[epoch] for curve in curves])
            return 1.0 - accuracy, accuracy
        return run

    lockstep.score_program = fake_scores
    snapshots: dict[int, dict[int, list]] = {m: {} for m in range(len(curves))}
    holder: dict = {}

    def report(event):
        if "epoch" in event:
            snapshots[event["repeat"]][event["epoch"]] = weights_of(holder["cohort"], event["repeat"])

    trainer = head_trainer(protocol, len(curves), Path(tempfile.mkdtemp()) / "state.npz", report)
    cohort = holder["cohort"] = trainer.cohorts[0]
    trainer.run()
    runs = [len(h["val_accuracy"]) for h in cohort.history]
    best = [int(np.argmax(h["val_accuracy"])) + 1 for h in cohort.history]
    return {
        "epochs_run": runs,
        "learning_rate": [h["learning_rate"] for h in cohort.history],
        "iterations": iterations(cohort),
        "steps_per_epoch": TRAIN // protocol.batch_size,
        "last_is_own_stop": [weights_of(cohort, m) == snapshots[m][runs[m]] for m in range(len(curves))],
        "best_is_best_epoch": [weights_of(cohort, m, best=True) == snapshots[m][best[m]] for m in range(len(curves))],
        "weights_changed_each_epoch": [all(snapshots[m][e] != snapshots[m][e - 1] for e in range(2, runs[m] + 1))
                                       for m in range(len(curves))],
    }


def without_seconds(history: dict) -> dict:
    return {k: v for k, v in history.items() if k != "seconds"}


def resume_after_kill(protocol: Protocol) -> dict:
    """An uninterrupted run against one killed after epoch 2 and resumed from its checkpoint."""
    lockstep.CHECKPOINT_EVERY_S = 0.0  # a checkpoint after every epoch, so the kill leaves epoch 1's
    folder = Path(tempfile.mkdtemp())
    whole = head_trainer(protocol, 2, folder / "whole.npz")
    whole.run()

    def kill_after_epoch_2(event):
        if event.get("epoch") == 2:
            raise KeyboardInterrupt("simulated kill")

    try:
        head_trainer(protocol, 2, folder / "killed.npz", kill_after_epoch_2).run()
    except KeyboardInterrupt:
        pass
    events: list[dict] = []
    resumed = head_trainer(protocol, 2, folder / "killed.npz", events.append)
    resumed.run()
    a, b = whole.cohorts[0], resumed.cohorts[0]
    return {"resumed_at": sorted({e["resumed_at_epoch"] for e in events if "resumed_at_epoch" in e}),
            "trained_epochs": sorted({e["epoch"] for e in events if "epoch" in e}),
            "same_weights": all(weights_of(a, m) == weights_of(b, m) for m in range(2)),
            "same_history": [without_seconds(h) for h in a.history] == [without_seconds(h) for h in b.history],
            "val_accuracy": [h["val_accuracy"] for h in b.history]}


def cancel(protocol: Protocol) -> dict:
    try:
        head_trainer(protocol, 2, Path(tempfile.mkdtemp()) / "state.npz", should_stop=lambda: True).run()
    except Cancelled as exc:
        return {"cancelled": str(exc)}
    return {"cancelled": None}


def main() -> None:
    spec = json.loads(sys.argv[1])
    protocol = Protocol(epochs=spec["epochs"], patience=spec["patience"], reduce_lr=spec["reduce_lr"],
                        lr_patience=spec["lr_patience"], min_lr=spec["min_lr"], adam_lr=spec["adam_lr"])
    out = {"resume": resume_after_kill(protocol.with_(reduce_lr=False, adam_lr=0.05, patience=8)),
           "cancel": cancel(protocol)}
    out["curves"] = follow_curves(spec["curves"], protocol)  # last: it replaces score_program
    print(json.dumps(out))


if __name__ == "__main__":
    main()
