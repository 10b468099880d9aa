"""One repeat of the paper's experiment: stage one (the CNN), then stage two (two fresh softmax heads).

:func:`run_repeat` is resumable. Everything it needs to pick up after a crash lives in its ``workdir``:
Keras' ``BackupAndRestore`` snapshot (weights, optimizer, epoch), a per-epoch log (the full learning curves and
the callbacks' counters, which ``BackupAndRestore`` does not keep), and a ``stage1.json`` written once stage one
is finished, so a crash during stage two does not retrain the CNN.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path
from typing import Any, Callable

import keras
import numpy as np

from ..data.datasets import Dataset
from ..models.models import batchnorm_layers, build_for_protocol, build_head, feature_extractor, reestimate_batchnorm
from ..models.optim import stage1_optimizer
from ..protocol.config import Protocol
from . import ceiling, env, training_data
from ..protocol.vocabulary import HEADS, SPLITS
from .record import (BN_SAMPLE_SIZES, EVAL_BATCH, Cancelled, Progress, add_diagnostics, bn_sample_rows,
                     evaluate, make_record, now_iso, predict_probabilities, summarise_fit, tidy_workdir, write_json)

STEPS_PER_EXECUTION = 32
"""Batches of 32 that one compiled call runs in stage one. The same updates in the same order (the batch size
stays 32); it only removes per-step Python/dispatch overhead (bench/: 0.80x the plain script's epoch time)."""


def run_repeat(data: Dataset, protocol: Protocol, repeat: int, workdir: str | Path, *,
               progress: Progress | None = None, should_stop: Callable[[], bool] | None = None,
               save_models: bool = True, steps_per_execution: int = STEPS_PER_EXECUTION) -> dict[str, Any]:
    """Train stage one and both stage-two heads for one repeat and return its record.

    ``progress`` receives small dicts (``stage``, ``epoch``, ``epochs``, ``logs``) after every epoch.
    ``should_stop`` is polled between batches; when it returns true the repeat raises :class:`Cancelled`.
    ``steps_per_execution`` only changes how many batches one compiled call runs, not what is computed; the
    heads, whose steps are almost free, run a whole epoch per call.
    """
    started_at = now_iso()
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    env.apply_precision(protocol.precision)
    seed = protocol.seed + repeat
    report = progress or (lambda event: None)
    for stage in repair_workdir(workdir):
        report({"stage": stage, "restarted": "a crash tore its checkpoint file; this stage starts again"})
    # What stage one trains on: ``data`` itself unless a related report's option adds GAN images (003) or
    # swaps pixels for a frozen backbone's cached features (002); the record still describes ``data``.
    trained, prepared = training_data.prepare(data, protocol, seed, workdir, report)
    labels = {split: keras.utils.to_categorical(getattr(trained, f"y_{split}"), data.num_classes)
              for split in SPLITS}
    inputs = {split: getattr(trained, f"x_{split}") for split in SPLITS}

    keras.utils.set_random_seed(seed)
    model = build_for_protocol(protocol, trained.input_shape, data.num_classes, seed, inputs["train"])
    compile_model(model, stage1_optimizer(protocol), steps_per_execution)
    stage1_file = workdir / "stage1.json"
    probs_file = workdir / "stage1_test_probs.npz"
    if stage1_file.exists() and probs_file.exists():  # resumed after stage one had finished
        stage1 = json.loads(stage1_file.read_text())
        with np.load(probs_file, allow_pickle=False) as stored:
            test_probs = {name: stored[name] for name in stored.files}
    else:
        stage1 = _fit(model, inputs, labels, protocol, workdir, "stage1", report, should_stop)
        report({"stage": "batchnorm", "layers": len(batchnorm_layers(model))})
        test_probs = stage1_diagnostics(model, inputs, labels, workdir, stage1, seed)
        np.savez(probs_file, **test_probs)
        write_json(stage1_file, stage1)

    model.load_weights(workdir / f"stage1_{protocol.features_from}.weights.h5")
    started = time.perf_counter()
    extractor = feature_extractor(model)
    features = {split: np.asarray(extractor.predict(inputs[split], batch_size=EVAL_BATCH, verbose=0),
                                  dtype=np.float32)
                for split in SPLITS}
    feature_info = {"dim": int(features["train"].shape[1]), "from": protocol.features_from,
                    "seconds": time.perf_counter() - started}
    report({"stage": "features", "seconds": feature_info["seconds"]})
    readings = stage2_readings(model, extractor, inputs, trained, features, seed)
    model.load_weights(workdir / f"stage1_{protocol.features_from}.weights.h5")  # re-estimation changed it

    heads: dict[str, Any] = {}
    head_models: dict[str, keras.Model] = {}
    for name in HEADS:
        keras.utils.set_random_seed(seed * 1000 + HEADS.index(name) + 1)
        head = build_head(feature_info["dim"], data.num_classes,
                          warm_from=model if protocol.head_init == "warm" else None)
        compile_model(head, head_optimizer(name, protocol), _steps_per_epoch(trained, protocol))
        heads[name] = _fit(head, features, labels, protocol, workdir, f"stage2_{name}", report, should_stop,
                           backup=False)
        head.load_weights(workdir / f"stage2_{name}_{protocol.stage2_eval}.weights.h5")
        head_models[name] = head
        test_probs[name] = predict_probabilities(head, features["test"])

    if save_models and not (prepared or {}).get("backbone"):  # a features-in model cannot classify photos
        model.save(workdir / "stage1.keras")
        for name, head in head_models.items():
            head.save(workdir / f"head_{name}.keras")
    tidy_workdir(workdir)
    record = make_record(data, protocol, repeat, stage1, feature_info, heads, test_probs, started_at,
                         readings=readings)
    return {**record, "training_data": prepared} if prepared else record


def stage2_readings(model: keras.Model, extractor: keras.Model, inputs: dict, data: Dataset,
                    features: dict[str, np.ndarray], seed: int) -> dict[str, Any]:
    """The second-stage readings that train no network (:mod:`core.training.ceiling`), on ``features`` and,
    for a network with BatchNorm, on the features after re-estimating its statistics (this changes
    ``model``'s statistics: the caller reloads its weights)."""
    bn_features = None
    if batchnorm_layers(model):
        reestimate_batchnorm(model, inputs["train"], EVAL_BATCH)
        bn_features = {split: np.asarray(extractor.predict(inputs[split], batch_size=EVAL_BATCH, verbose=0),
                                         dtype=np.float32) for split in SPLITS}
    labels = {split: getattr(data, f"y_{split}") for split in SPLITS}
    return ceiling.readings(features, labels, data.num_classes, bn_features, seed)


def stage1_diagnostics(model: keras.Model, inputs: dict, labels: dict, workdir: Path,
                        stage1: dict[str, Any], seed: int = 0) -> dict[str, np.ndarray]:
    """Add to ``stage1`` what explains its score (:func:`add_diagnostics`), and return its test-set
    probabilities: the last and best weights, each also after :func:`reestimate_batchnorm` on the training
    split (``stage1_last``, ``stage1_last_bn``, ...); the last weights also re-estimated on fewer training
    images (:data:`~core.training.record.BN_SAMPLE_SIZES`)."""
    count = len(batchnorm_layers(model))
    probs: dict[str, np.ndarray] = {}
    reestimated: dict[str, dict[str, float]] = {}
    sample_sizes: dict[int, float] = {}
    started = time.perf_counter()
    for weights in ("last", "best"):
        model.load_weights(workdir / f"stage1_{weights}.weights.h5")
        probs[f"stage1_{weights}"] = predict_probabilities(model, inputs["test"])
        if count and weights == "last":
            for images in (n for n in BN_SAMPLE_SIZES if n < len(inputs["train"])):
                rows = bn_sample_rows(len(inputs["train"]), images, seed)
                reestimate_batchnorm(model, inputs["train"][rows], EVAL_BATCH)
                sample_sizes[images] = float(model.evaluate(inputs["test"], labels["test"], batch_size=EVAL_BATCH,
                                                            verbose=0, return_dict=True)["accuracy"])
        if count:
            reestimate_batchnorm(model, inputs["train"], EVAL_BATCH)
            reestimated[weights] = evaluate(model, inputs, labels)
            probs[f"stage1_{weights}_bn"] = predict_probabilities(model, inputs["test"])
        else:
            probs[f"stage1_{weights}_bn"] = probs[f"stage1_{weights}"]
    add_diagnostics(stage1, count, reestimated, len(inputs["train"]), time.perf_counter() - started, sample_sizes)
    return probs


def repair_workdir(workdir: Path) -> list[str]:
    """Make a crashed repeat's workdir safe to resume; returns the stages that must restart from epoch 0.

    Keras writes ``BackupAndRestore``'s ``latest.weights.h5``/``training_metadata.json`` and
    ModelCheckpoint's ``*_best.weights.h5`` in place, so a SIGKILL during that write leaves a torn file and
    the resumed ``fit`` would fail with ``OSError: Unable to synchronously open file``. A stage whose backup or
    best checkpoint cannot be read loses its backup and log and restarts from scratch: slower, never wrong.
    """
    import h5py

    def readable_h5(path: Path) -> bool:
        try:
            with h5py.File(path, "r") as fh:
                fh.visititems(lambda name, obj: obj[()] if isinstance(obj, h5py.Dataset) else None)
            return True
        except Exception:  # noqa: BLE001 - any failure means the file is unusable
            return False

    restarted = []
    for backup in sorted(Path(workdir).glob("backup_*")):
        stage = backup.name[len("backup_"):]
        ok = True
        weights, meta = backup / "latest.weights.h5", backup / "training_metadata.json"
        if weights.exists() and not readable_h5(weights):
            ok = False
        if meta.exists():
            try:
                json.loads(meta.read_text())["epoch"]
            except (ValueError, KeyError, OSError):
                ok = False
        best = Path(workdir) / f"{stage}_best.weights.h5"
        if best.exists() and not readable_h5(best):
            ok = False
        if not ok:
            shutil.rmtree(backup, ignore_errors=True)
            for leftover in (best, Path(workdir) / f"{stage}_epochs.jsonl"):
                leftover.unlink(missing_ok=True)
            restarted.append(stage)
    return restarted


def _steps_per_epoch(data: Dataset, protocol: Protocol) -> int:
    return max(1, -(-len(data.y_train) // protocol.batch_size))


def compile_model(model: keras.Model, optimizer: keras.optimizers.Optimizer, steps_per_execution: int) -> None:
    model.compile(optimizer=optimizer, loss="categorical_crossentropy", metrics=["accuracy"],
                  steps_per_execution=steps_per_execution)


def head_optimizer(name: str, protocol: Protocol) -> keras.optimizers.Optimizer:
    if name == "adam":
        return keras.optimizers.Adam(protocol.adam_lr)
    return keras.optimizers.SGD(protocol.sgd_lr, momentum=protocol.sgd_momentum)


def _fit(model: keras.Model, inputs: dict, labels: dict, protocol: Protocol, workdir: Path, stage: str,
         report: Progress, should_stop: Callable[[], bool] | None, backup: bool = True) -> dict[str, Any]:
    """Fit with the paper's callbacks, then evaluate the last-epoch and the best-checkpoint weights."""
    log_path = workdir / f"{stage}_epochs.jsonl"
    if not backup:
        log_path.unlink(missing_ok=True)
    callbacks = paper_callbacks(protocol, workdir, stage, report, should_stop, backup)

    model.fit(inputs["train"], labels["train"], validation_data=(inputs["val"], labels["val"]),
              epochs=protocol.epochs, batch_size=protocol.batch_size, shuffle=True, verbose=0,
              callbacks=callbacks)
    return summarise_fit(model, inputs, labels, protocol, workdir, stage, _read_log(log_path))


def paper_callbacks(protocol: Protocol, workdir: Path, stage: str, report: Progress = lambda event: None,
                    should_stop: Callable[[], bool] | None = None, backup: bool = True) -> list:
    """The paper's monitors (EarlyStopping, ModelCheckpoint, optionally ReduceLROnPlateau, on val_accuracy)
    plus our epoch log and crash backup, for one stage whose files live in ``workdir``."""
    monitors = [
        keras.callbacks.EarlyStopping(monitor="val_accuracy", mode="max", patience=protocol.patience),
        keras.callbacks.ModelCheckpoint(str(workdir / f"{stage}_best.weights.h5"), monitor="val_accuracy",
                                        mode="max", save_best_only=True, save_weights_only=True),
    ]
    if protocol.reduce_lr:
        monitors.append(keras.callbacks.ReduceLROnPlateau(monitor="val_accuracy", mode="max",
                                                          factor=protocol.lr_factor,
                                                          patience=protocol.lr_patience,
                                                          min_lr=protocol.min_lr))
    # Order matters: the log is written before the backup at each epoch end, so a crash between the two
    # only makes the resumed fit redo (and re-log) one epoch; never loses one. The stop check comes last, so
    # an epoch that ends is backed up before a stop request is honoured.
    log = _EpochLog(workdir / f"{stage}_epochs.jsonl", monitors, stage, protocol.epochs, report)
    callbacks = [_DiskSpace(workdir)] + monitors + [log]  # first: it checks before anything is written
    if backup:
        callbacks.append(keras.callbacks.BackupAndRestore(str(workdir / f"backup_{stage}"),
                                                          double_checkpoint=True))
    if should_stop is not None:
        callbacks.append(_StopWhenAsked(should_stop, stage))
    return callbacks


class _DiskSpace(keras.callbacks.Callback):
    """Stops the fit with :class:`core.results.store.DiskFull` (one clear line) when the disk cannot take the next
    checkpoint: h5py segfaults on a full disk instead of raising. Checked before training and before each
    epoch's checkpoints, for the weights plus the optimizer state (see :func:`core.results.store.ensure_free_space`)."""

    def __init__(self, folder: Path):
        super().__init__()
        self.folder = folder

    def on_train_begin(self, logs=None):
        self.on_epoch_end(-1)

    def on_epoch_end(self, epoch, logs=None):
        from ..results.store import ensure_free_space

        variables = list(self.model.weights) + list(self.model.optimizer.variables)
        ensure_free_space(self.folder, 4 * sum(int(np.prod(v.shape)) for v in variables))  # float32 or less


class _EpochLog(keras.callbacks.Callback):
    """Appends each epoch's logs to a JSONL file, reports progress, and honours cancellation.

    On a resumed fit (after ``BackupAndRestore``), it restores the EarlyStopping/ModelCheckpoint/
    ReduceLROnPlateau counters from the log, so a crash does not reset the patience clock.
    """

    def __init__(self, path: Path, monitors: list, stage: str, epochs: int, report: Progress):
        super().__init__()
        self.path, self.monitors, self.stage, self.epochs = path, monitors, stage, epochs
        self.report = report
        self.started = 0.0

    def on_train_begin(self, logs=None):
        self.first_epoch = True

    def on_epoch_begin(self, epoch, logs=None):
        self.started = time.perf_counter()
        if self.first_epoch:
            self.first_epoch = False
            self._resume_counters(epoch)

    def _resume_counters(self, done: int) -> None:
        """Keep only the ``done`` epochs the restored weights have seen; replay them into the monitors."""
        history = _read_log(self.path, upto=done)
        _write_log(self.path, history)
        val_acc = history.get("val_accuracy", [])
        if not val_acc:
            return
        best = max(val_acc)
        since_best = len(val_acc) - 1 - int(np.argmax(val_acc))
        for cb in self.monitors:
            cb.best = best
            if hasattr(cb, "wait"):
                cb.wait = since_best
        self.report({"stage": self.stage, "resumed_at_epoch": done})

    def on_epoch_end(self, epoch, logs=None):
        row = {k: float(v) for k, v in (logs or {}).items()}
        row["learning_rate"] = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))
        row["epoch"] = epoch + 1
        row["seconds"] = time.perf_counter() - self.started
        with open(self.path, "a") as fh:
            fh.write(json.dumps(row) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        self.report({"stage": self.stage, "epoch": epoch + 1, "epochs": self.epochs, "logs": row})


class _StopWhenAsked(keras.callbacks.Callback):
    """Raises :class:`Cancelled` out of ``fit`` when ``should_stop`` turns true (a cancel, a worker's SIGTERM).

    It raises rather than setting ``stop_training``: Keras would then finish the epoch in flight as if it
    were whole (the monitors, the log and the backup would all take a partial epoch for a full one) and end
    the fit normally, and ``BackupAndRestore.on_train_end`` would delete the backup the next worker resumes
    from. An exception leaves the last completed epoch's backup as a crash would.
    """

    def __init__(self, should_stop: Callable[[], bool], stage: str):
        super().__init__()
        self.should_stop, self.stage = should_stop, stage
        self.polled = 0

    def on_epoch_begin(self, epoch, logs=None):
        self.polled = 0

    def on_train_batch_begin(self, batch, logs=None):
        # Polled at the *start* of a batch, which carries no logs: a batch-end hook would make Keras turn the
        # step's logs into Python floats, a host-device sync every step on JAX (and it would keep Keras from
        # dispatching the other callbacks' batch ends asynchronously). With steps_per_execution > 1 Keras
        # calls this only every spe-th batch: poll by distance, not modulo.
        if batch - self.polled < 50:
            return
        self.polled = batch
        if self.should_stop():
            raise Cancelled(self.stage)

    def on_epoch_end(self, epoch, logs=None):
        if self.should_stop():  # after this epoch's backup: the next worker resumes after it
            raise Cancelled(self.stage)


def _read_log(path: Path, upto: int | None = None) -> dict[str, list[float]]:
    """Per-epoch log as column lists; a torn last line (crash mid-write) is ignored, duplicates dropped."""
    rows: dict[int, dict] = {}
    if path.exists():
        for line in path.read_text().splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue
            if upto is None or row["epoch"] <= upto:
                rows[int(row["epoch"])] = row
    ordered = [rows[e] for e in sorted(rows)]
    keys = sorted({k for row in ordered for k in row})
    return {k: [row.get(k, float("nan")) for row in ordered] for k in keys}


def _write_log(path: Path, history: dict[str, list[float]]) -> None:
    n = len(history.get("epoch", []))
    lines = [json.dumps({k: v[i] for k, v in history.items()}) for i in range(n)]
    tmp = path.with_suffix(".tmp")
    tmp.write_text("".join(line + "\n" for line in lines))
    os.replace(tmp, path)


