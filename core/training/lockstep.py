"""The lock-step engine: all claimed repeats of an experiment trained at once, as one compiled JAX program.

Why: the plain path (:mod:`core.training.two_stage`) runs one Keras ``fit`` per repeat, about 1.3 million batch-32 steps
for the paper's 20 Fashion-MNIST repeats, each a separate dispatch from Python. A GPU idles through most of
that. Here the R repeats' models are built with their own seeds (the same initial weights as the plain path's
repeats), their weights, BatchNorm statistics, dropout/augmentation seed states and optimizer slots are stacked
on a leading axis, and one jitted program trains them all: ``jax.vmap`` over repeats, ``jax.lax.scan`` over a
chunk of steps (on an accelerator; a CPU runs one step per call, see :func:`steps_per_call`), each step
``stateless_call`` + ``jax.value_and_grad`` + ``optimizer.stateless_apply``. The data sits on the device once,
as uint8 (with ``resplit``, every repeat's own split, stacked); each repeat draws its own shuffling every epoch.

The paper's callbacks run per repeat on the host between epochs, with Keras' own rules (:class:`Monitors`):
best ``val_accuracy`` and the weights of that epoch (ModelCheckpoint), a patience counter and a stopped mask
(EarlyStopping: a stopped repeat's updates are masked out, so its last weights are those at its own stop) and,
with ``reduce_lr``, a per-repeat learning rate (ReduceLROnPlateau). Stage two is the same program with 2R
members: features from the stacked stage-one extractors, then every repeat's Adam and SGD heads at once.

Records: stage one's evaluations and BatchNorm diagnostics run for all repeats at once on the device, with the
plain path's losses and re-estimation arithmetic, and are put into the plain path's record parts
(:func:`core.training.record.fit_summary`, :func:`core.training.record.add_diagnostics`); each head's weights
are set into an ordinary Keras model and evaluated by the plain path's own code
(:func:`core.training.record.summarise_fit`, predictions, :func:`core.training.record.make_record`), and the
second-stage readings are the plain path's fits (:mod:`core.training.ceiling`), so both engines store one
schema. What differs, besides
``protocol.engine``: a repeat's shuffling comes from JAX keys (its numbers match the plain path's in
distribution, not bit for bit); validation and stage one's evaluations run in batches of 256 (same values up to
rounding); and the time fields (``history.seconds``, ``fit_seconds``, ``features.seconds``, stage one's
``eval_seconds`` and ``batchnorm.seconds``) hold a repeat's share of the lock-step wall time (wall time / models
trained together), so summed over repeats they give the wall time.

Resuming: the stacked state is checkpointed after an epoch, at most every :data:`CHECKPOINT_EVERY_S` seconds,
in ``<folder>/lockstep-<first>-<last>/``, so a killed job restarts at its last checkpointed epoch. After each
stage every repeat's weights go to its own folder ``<folder>/<repeat:04d>`` under the plain path's file names,
so a later run that claims fewer repeats (some were stored meanwhile) starts from there. ``should_stop`` is
polled between chunks of steps and between repeats.

Needs ``KERAS_BACKEND=jax`` (:func:`check_available` says so in one line otherwise) and the paper's options
(``Protocol`` refuses the related reports' ones with this engine). On a GPU install ``jax[cuda12]``; the same
code runs on a CPU, where it is for tests, not speed.
"""

from __future__ import annotations

import json
import os
import shutil
import time
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable, Iterator

import keras
import numpy as np

from ..data.datasets import Dataset
from ..models.models import (batchnorm_layers, build_for_protocol, build_head, combine_moments, feature_extractor,
                             moments_of)
from ..models.optim import stage1_optimizer
from ..protocol.config import Protocol
from . import ceiling, env, record, two_stage
from ..protocol.vocabulary import HEADS, SPLITS
from .record import Cancelled, Progress
from .stacked import (CHUNK_STEPS, conv_form, Cohort, DeviceSplit, EngineUnavailable, epoch_batches, inference_program,
                      score_program, stack_members, steps_per_call, train_program, upload_split, variable_values)

try:  # JAX is a test/GPU requirement, not the hosted app's: check_available reports a missing one
    import jax
    import jax.numpy as jnp
except ImportError:  # pragma: no cover - depends on the environment
    jax = jnp = None

CHECKPOINT_EVERY_S = float(os.environ.get("TWO_STAGE_CHECKPOINT_S", "60"))
"""Least seconds between two checkpoints of the stacked state (taken after an epoch): 20 Dogs & Cats CNNs with
their best copies and Adam slots are about 4 GB, too much to write after every fast GPU epoch. A killed run
loses at most this much training. ``TWO_STAGE_CHECKPOINT_S`` changes it (a borrowed GPU that is given back as a
whole gains nothing from checkpoints: :mod:`bench.gpu` sets it high)."""
STAGE2_DONE = "lockstep_stage2.json"
"""Written to a repeat's folder once its heads are trained (their histories); marks stage two as done."""


def check_available(protocol: Protocol) -> None:
    """Raise :class:`EngineUnavailable` with one line a user can act on, before any data is loaded."""
    backend = keras.config.backend()
    if backend != "jax":
        raise EngineUnavailable(f"the lockstep engine needs KERAS_BACKEND=jax (this process runs Keras on "
                                f"{backend}); run with KERAS_BACKEND=jax, or use --engine plain")
    if jax is None:
        raise EngineUnavailable("the lockstep engine needs JAX: pip install jax (or \"jax[cuda12]\" on a GPU)")


# --------------------------------------------------------------------------------------------- callbacks


# ---------------------------------------------------------------------------------------------- cohorts


# ------------------------------------------------------------------------------------- compiled programs


# ------------------------------------------------------------------------------------------------- data


# ------------------------------------------------------------------------------------------- the trainer

class Trainer:
    """Trains cohorts together over the protocol's epochs, with per-epoch checkpoints and progress events.

    All cohorts read the same ``train``/``val`` inputs (the images for stage one, the stacked features for the
    heads) and the same labels; each member picks its rows through its cohort's ``sources``.
    """

    def __init__(self, cohorts: list[Cohort], train: DeviceSplit, val: DeviceSplit, num_classes: int,
                 protocol: Protocol, checkpoint: Path, meta: dict[str, Any], report: Progress,
                 should_stop: Callable[[], bool], conv: str = "vmap"):
        self.cohorts, self.train, self.val, self.protocol = cohorts, train, val, protocol
        self.checkpoint, self.meta, self.report, self.should_stop = checkpoint, meta, report, should_stop
        self.program = train_program(cohorts, num_classes, conv)
        self.scores = [score_program(c.model, num_classes, conv=conv) for c in cohorts]
        self.sources = tuple(jnp.asarray(c.sources) for c in cohorts)

    def run(self) -> None:
        """Train until every member has stopped or the epoch budget is spent; raises Cancelled when asked."""
        saved_at = time.monotonic()
        for epoch in range(self._restore(), self.protocol.epochs):
            if all(c.monitors.stopped.all() for c in self.cohorts):
                break
            started = time.perf_counter()
            active = [~c.monitors.stopped for c in self.cohorts]
            sums = self._train_epoch(epoch, active)
            validation = [self._validate(cohort, score) for cohort, score in zip(self.cohorts, self.scores)]
            # One wall time for the whole program: each member gets its share, so that summing a stage's
            # seconds over the repeats gives the wall time.
            share = (time.perf_counter() - started) / sum(len(c.repeats) for c in self.cohorts)
            for cohort, was_active, total, (val_loss, val_acc) in zip(self.cohorts, active, sums, validation):
                self._end_epoch(cohort, epoch, was_active, total, val_loss, val_acc, share)
            if time.monotonic() - saved_at >= CHECKPOINT_EVERY_S:
                self._save(epoch + 1)
                saved_at = time.monotonic()

    def _train_epoch(self, epoch: int, active: list[np.ndarray]) -> list[np.ndarray]:
        """Every step of one epoch; returns each cohort's ``(M, 3)`` training-metric sums. ``should_stop`` is
        polled every CHUNK_STEPS steps, after waiting for the device, so a cancel is never queued behind work."""
        n, batch = self.train.n, self.protocol.batch_size
        per_call = steps_per_call(n // batch)
        plans = [epoch_batches(c.shuffle_seeds, epoch, n, batch, per_call) for c in self.cohorts]
        members = [jnp.asarray(a) for a in active]
        states = tuple((c.state["trainable"], c.state["non_trainable"], c.state["optimizer"])
                       for c in self.cohorts)
        sums = tuple(jnp.zeros((len(c.repeats), 3), jnp.float32) for c in self.cohorts)
        xs = (self.train.x,) * len(self.cohorts)
        unpolled = CHUNK_STEPS
        for first in range(0, plans[0][0].shape[0], per_call):
            if unpolled >= CHUNK_STEPS:
                jax.block_until_ready(sums)
                if self.should_stop():
                    raise Cancelled(self.cohorts[0].stage)
                unpolled = 0
            batches = tuple(p[0][first:first + per_call] for p in plans)
            keeps = tuple(p[1][first:first + per_call, None] & m[None] for p, m in zip(plans, members))
            states, sums = self.program(states, sums, xs, self.train.y, self.sources, batches, keeps)
            unpolled += per_call
        if plans[0][2].shape[-1]:  # the epoch's short last batch: one more call, compiled for its size
            states, sums = self.program(states, sums, xs, self.train.y, self.sources,
                                        tuple(p[2] for p in plans), tuple(m[None] for m in members))
        for cohort, (trainable, non_trainable, slots) in zip(self.cohorts, states):
            cohort.state.update(trainable=list(trainable), non_trainable=list(non_trainable),
                                optimizer=list(slots))
        return [np.asarray(s, np.float64) for s in sums]

    def _validate(self, cohort: Cohort, score: Callable) -> tuple[np.ndarray, np.ndarray]:
        loss, accuracy = score(cohort.state["trainable"], cohort.state["non_trainable"], self.val.x,
                               jnp.asarray(cohort.sources), self.val.y)
        return np.asarray(loss, np.float64), np.asarray(accuracy, np.float64)

    def _end_epoch(self, cohort: Cohort, epoch: int, was_active: np.ndarray, total: np.ndarray,
                   val_loss: np.ndarray, val_acc: np.ndarray, seconds: float) -> None:
        """The callbacks (best weights, stopping, learning rate), history rows and progress events."""
        slots = cohort.state["optimizer"]
        lr_index = cohort.lr_index
        improved, lr = cohort.monitors.end_epoch(epoch, val_acc, np.asarray(slots[lr_index]))
        slots[lr_index] = jnp.asarray(lr, slots[lr_index].dtype)
        chosen = jnp.asarray(improved)
        for group in ("trainable", "non_trainable"):
            cohort.state[f"best_{group}"] = [
                jnp.where(chosen.reshape((-1,) + (1,) * (new.ndim - 1)), new, old)
                for new, old in zip(cohort.state[group], cohort.state[f"best_{group}"])]
        for m in np.flatnonzero(was_active):
            row: dict[str, Any] = {
                "loss": total[m, 0] / total[m, 2], "accuracy": total[m, 1] / total[m, 2],
                "val_loss": val_loss[m], "val_accuracy": val_acc[m], "learning_rate": lr[m], "seconds": seconds}
            row = {k: float(v) for k, v in row.items()}
            row["epoch"] = epoch + 1
            for key, value in row.items():
                cohort.history[m].setdefault(key, []).append(value)
            self.report({"stage": cohort.stage, "epoch": epoch + 1, "epochs": self.protocol.epochs,
                         "logs": row, "repeat": cohort.repeats[m]})

    # ------------------------------------------------------------------------------------ checkpoints
    def _save(self, epochs_done: int) -> None:
        """Write the stacked state atomically: a kill at any moment leaves the previous epoch's checkpoint."""
        info = {**self.meta, "epochs_done": epochs_done,
                "cohorts": [{"stage": c.stage, "history": c.history, "monitors": c.monitors.to_json()}
                            for c in self.cohorts]}
        arrays = {"meta": np.frombuffer(json.dumps(info).encode(), np.uint8)}
        for ci, cohort in enumerate(self.cohorts):
            for group, values in cohort.state.items():
                for i, value in enumerate(values):
                    arrays[f"{ci}/{group}/{i}"] = np.asarray(value)
        self.checkpoint.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.checkpoint.with_name(self.checkpoint.name + ".tmp")
        with open(tmp, "wb") as fh:
            np.savez(fh, **arrays)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self.checkpoint)

    def _restore(self) -> int:
        """Load the checkpoint if it is this run's (same experiment, stage and members); returns the epochs
        it has done. A torn or foreign checkpoint is ignored: the stage starts again, slower but never wrong."""
        if not self.checkpoint.exists():
            return 0
        try:
            with np.load(self.checkpoint, allow_pickle=False) as stored:
                info = json.loads(stored["meta"].tobytes().decode())
                if any(info.get(k) != v for k, v in self.meta.items()):
                    return 0
                states = [{group: [jnp.asarray(stored[f"{ci}/{group}/{i}"]) for i in range(len(values))]
                           for group, values in cohort.state.items()} for ci, cohort in enumerate(self.cohorts)]
        except (OSError, ValueError, KeyError, zipfile.BadZipFile):
            return 0
        for cohort, state, saved in zip(self.cohorts, states, info["cohorts"]):
            cohort.state = state
            cohort.history = saved["history"]
            cohort.monitors.restore(saved["monitors"])
            for repeat in cohort.repeats:
                self.report({"stage": cohort.stage, "resumed_at_epoch": info["epochs_done"], "repeat": repeat})
        return int(info["epochs_done"])


# ----------------------------------------------------------------------------------------- the experiment

def run_repeats(data_for: Callable[[int], Dataset], protocol: Protocol, repeats: list[int],
                folder: str | Path, *, progress: Progress | None = None,
                should_stop: Callable[[], bool] | None = None) -> Iterator[dict[str, Any]]:
    """Train ``repeats`` of ``protocol`` together and yield each one's record, in the plain path's schema.

    ``data_for(repeat)`` gives a repeat's split (one shared split, or with ``resplit`` each repeat's own).
    ``folder`` is the experiment's artefact folder (``RunStore.artefacts / key``): each repeat keeps its
    models in ``<folder>/<repeat:04d>`` as the plain path does. Progress events are the plain path's, each
    with its ``repeat``. Raises :class:`core.training.record.Cancelled` once ``should_stop`` returns true.
    """
    check_available(protocol)
    env.apply_precision(protocol.precision)
    repeats = sorted(repeats)
    datasets = {repeat: data_for(repeat) for repeat in repeats}
    run = LockstepRun(datasets, protocol, repeats, Path(folder), progress or (lambda event: None),
                      should_stop or (lambda: False))
    yield from run.records()


class LockstepRun:
    """One lock-step run: stage one for every repeat, the features, both heads, then one record per repeat.

    Between the phases, everything lives in files of the plain path's layout, so each phase can be resumed:
    a repeat whose folder has ``lockstep_stage1.json`` has its stage one trained (weights in
    ``stage1_{last,best}.weights.h5``), ``stage1.json`` means diagnosed too, :data:`STAGE2_DONE` means its
    heads are trained.
    """

    def __init__(self, datasets: dict[int, Dataset], protocol: Protocol, repeats: list[int], folder: Path,
                 report: Progress, should_stop: Callable[[], bool]):
        self.datasets, self.protocol, self.repeats = datasets, protocol, repeats
        self.started_at = record.now_iso()
        self.conv = conv_form()
        self.data = datasets[repeats[0]]  # classes and shapes, the same in every repeat's split
        self.report, self.should_stop = report, should_stop
        self.workdir = folder / f"lockstep-{repeats[0]:04d}-{repeats[-1]:04d}"
        self.folders = {r: folder / f"{r:04d}" for r in repeats}  # RunStore.workdir's layout
        for path in self.folders.values():
            path.mkdir(parents=True, exist_ok=True)
        # One source (the shared split) or, with resplit, one per repeat in the order of ``repeats``.
        sources = [datasets[r] for r in repeats] if protocol.resplit else [self.data]
        labels = [{split: keras.utils.to_categorical(getattr(d, f"y_{split}"), d.num_classes) for split in SPLITS}
                  for d in sources]
        self.labels = {r: labels[self._source(r)] for r in repeats}
        self.device = {split: upload_split(sources, split) for split in SPLITS}
        self.model = self._stage1_model(repeats[0])  # the template: every repeat's weights pass through it
        two_stage.compile_model(self.model, stage1_optimizer(protocol), 1)
        self._heads: dict[str, keras.Model] = {}
        self._probe_models: list[tuple[keras.layers.BatchNormalization, keras.Model, Callable]] | None = None

    def records(self) -> Iterator[dict[str, Any]]:
        untrained = [r for r in self.repeats if not self._has(r, "lockstep_stage1.json", "stage1.json")]
        if untrained:
            self._train_stage1(untrained)
        undiagnosed = [r for r in self.repeats if not self._has(r, "stage1.json")]
        if undiagnosed:
            self._diagnose_stage1(undiagnosed)
        features, bn_features, seconds = self._features()
        untrained = [r for r in self.repeats if not self._has(r, STAGE2_DONE)]
        if untrained:
            self._train_heads(untrained, features)
        readings = self._readings(features, bn_features)
        for repeat in self.repeats:
            if self.should_stop():
                raise Cancelled("records")
            yield self._record(repeat, features, seconds, readings[repeat])
        shutil.rmtree(self.workdir, ignore_errors=True)

    def _has(self, repeat: int, *names: str) -> bool:
        return any((self.folders[repeat] / name).exists() for name in names)

    def _seed(self, repeat: int) -> int:
        return self.protocol.seed + repeat

    def _source(self, repeat: int) -> int:
        """The row of the uploaded splits that holds ``repeat``'s images."""
        return self.repeats.index(repeat) if self.protocol.resplit else 0

    # ------------------------------------------------------------------------------------------ stage one
    def _stage1_model(self, repeat: int) -> keras.Model:
        """Repeat ``repeat``'s CNN exactly as the plain path builds it (same seed, so same initial weights).

        The protocol refuses the related reports' options with this engine (``Protocol`` checks it), so the
        plain path's ``training_data.prepare`` would hand back ``data`` unchanged: there is nothing to prepare."""
        seed, data = self._seed(repeat), self.datasets[repeat]
        keras.utils.set_random_seed(seed)
        return build_for_protocol(self.protocol, data.input_shape, data.num_classes, seed, data.x_train)

    def _train_stage1(self, repeats: list[int]) -> None:
        """All ``repeats``' CNNs at once; then each one's last/best weights and history into its folder."""
        optimizer = stage1_optimizer(self.protocol)
        optimizer.build(self.model.trainable_variables)
        weights = [variable_values(self._stage1_model(r)) for r in repeats]
        cohort = Cohort.create("stage1", self.model, optimizer, repeats, [self._seed(r) for r in repeats],
                               [self._source(r) for r in repeats], weights, self.protocol)
        checkpoint = self.workdir / "stage1.npz"
        self._trainer([cohort], self.device["train"], self.device["val"], checkpoint).run()
        for m, repeat in enumerate(repeats):
            cohort.write_member(m, self.folders[repeat])
            record.write_json(self.folders[repeat] / "lockstep_stage1.json", cohort.history[m])
        checkpoint.unlink(missing_ok=True)

    def _diagnose_stage1(self, repeats: list[int]) -> None:
        """The plain path's evaluation of stage one (:func:`two_stage.stage1_diagnostics`), for all
        ``repeats`` at once on the device: the last and best weights on every split, each again after
        re-estimating BatchNorm on the repeat's own training split, and the test probabilities of all four.

        Why not the plain path's Keras calls, one repeat at a time: they took 26 s a repeat on the H100 (20
        Dogs & Cats repeats: 9 of the run's 13 minutes), mostly dispatching batches from the host; stacked, 20
        Face Mask repeats take 20 s. The numbers are the same: the validation's loss and accuracy
        (:func:`score_program`) and the re-estimation's arithmetic (:func:`core.models.models.combine_moments`)."""
        if self.should_stop():
            raise Cancelled("stage1")
        layers = len(batchnorm_layers(self.model))
        for repeat in repeats:
            self.report({"stage": "batchnorm", "layers": layers, "repeat": repeat})
        sources = jnp.asarray([self._source(r) for r in repeats], jnp.int32)
        score = score_program(self.model, self.data.num_classes, conv=self.conv)
        predict = inference_program(self.model, conv=self.conv)
        test = self.device["test"]
        evaluations: dict[str, dict[str, list]] = {}  # "last", "last_bn", ... -> "test_accuracy" -> (M,)
        probs: dict[str, np.ndarray] = {}
        seconds = {"plain": 0.0, "batchnorm": 0.0}
        sample_sizes: dict[int, np.ndarray] = {}  # images -> (M,) test accuracy after re-estimating on them
        for weights in ("last", "best"):
            started = time.perf_counter()
            trainable, statistics = self._stacked(repeats, f"stage1_{weights}.weights.h5")
            if layers and weights == "last":
                sample_sizes = self._sample_sizes(repeats, score, trainable, statistics, sources)
            for kind in ([weights, f"{weights}_bn"] if layers else [weights]):
                if kind.endswith("_bn"):
                    statistics = self._reestimated(trainable, statistics, sources)
                evaluations[kind] = self._evaluate(score, trainable, statistics, sources)
                probs[f"stage1_{kind}"] = np.asarray(predict(trainable, statistics, test.x, sources)[:, :test.n])
                seconds["batchnorm" if kind.endswith("_bn") else "plain"] += time.perf_counter() - started
                started = time.perf_counter()
        for m, repeat in enumerate(repeats):
            folder = self.folders[repeat]
            history = json.loads((folder / "lockstep_stage1.json").read_text())
            own = {kind: {name: values[m] for name, values in splits.items()} for kind, splits in evaluations.items()}
            stage1 = record.fit_summary(own["last"], own["best"], history, self.protocol,
                                        seconds["plain"] / len(repeats))
            reestimated = {w: own[f"{w}_bn"] for w in ("last", "best") if layers}
            record.add_diagnostics(stage1, layers, reestimated, len(self.datasets[repeat].y_train),
                                   seconds["batchnorm"] / len(repeats),
                                   {images: float(accuracy[m]) for images, accuracy in sample_sizes.items()})
            test_probs = {name: block[m] for name, block in probs.items()}
            for weights in ("last", "best"):
                test_probs.setdefault(f"stage1_{weights}_bn", test_probs[f"stage1_{weights}"])
            np.savez(folder / "stage1_test_probs.npz", **test_probs)
            record.write_json(folder / "stage1.json", stage1)

    def _sample_sizes(self, repeats: list[int], score: Callable, trainable: list, statistics: list,
                      sources: Any) -> dict[int, np.ndarray]:
        """Test accuracy of each member after re-estimating its BatchNorm statistics on only ``images`` of its
        training images (:data:`~core.training.record.BN_SAMPLE_SIZES`; the plain path's rows, per repeat)."""
        train, test = self.device["train"], self.device["test"]
        members = jnp.arange(len(repeats), dtype=jnp.int32)
        out = {}
        for images in (n for n in record.BN_SAMPLE_SIZES if n < train.n):
            rows = [record.bn_sample_rows(train.n, images, self._seed(r)) for r in repeats]
            subset = train.take(np.asarray(sources), np.stack(rows))
            reestimated = self._reestimated(trainable, statistics, members, subset)
            _, accuracy = score(trainable, reestimated, test.x, sources, test.y)
            out[images] = np.asarray(accuracy, np.float64)
        return out

    def _stacked(self, repeats: list[int], filename: str, model: keras.Model | None = None) -> tuple[list, list]:
        """``repeats``' weights from their ``filename`` (loaded through ``self.model``; ``model``, a part
        sharing its layers, picks which variables), stacked member-first on the device."""
        weights = []
        for repeat in repeats:
            self.model.load_weights(self.folders[repeat] / filename)
            weights.append(variable_values(model or self.model))
        return stack_members(weights)

    def _evaluate(self, score: Callable, trainable: list, non_trainable: list, sources: Any) -> dict[str, list]:
        """Each split's ``{split}_loss``/``{split}_accuracy`` as ``(M,)`` lists (Keras' evaluate's numbers)."""
        out: dict[str, list] = {}
        for split, data in self.device.items():
            loss, accuracy = score(trainable, non_trainable, data.x, sources, data.y)
            out[f"{split}_accuracy"] = np.asarray(accuracy, np.float64).tolist()
            out[f"{split}_loss"] = np.asarray(loss, np.float64).tolist()
        return out

    def _reestimated(self, trainable: list, non_trainable: list, sources: Any,
                     train: DeviceSplit | None = None) -> list:
        """``non_trainable`` with every BatchNormalization layer's moving mean and variance replaced, member by
        member, by the statistics of its input over the member's own training split: the plain path's
        :func:`core.models.models.reestimate_batchnorm` (layers in order, upstream layers in inference mode and
        already re-estimated), stacked. A probe per layer returns each sample's channel moments
        (:class:`core.models.models.SampleMoments`); they are combined on the host in float64."""
        trainable_at = {id(v): i for i, v in enumerate(self.model.trainable_variables)}
        non_trainable_at = {id(v): i for i, v in enumerate(self.model.non_trainable_variables)}
        statistics = list(non_trainable)
        train = train or self.device["train"]
        for bn, probe, moments in self._probes():
            probe_trainable = [trainable[trainable_at[id(v)]] for v in probe.trainable_variables]
            probe_non_trainable = [statistics[non_trainable_at[id(v)]] for v in probe.non_trainable_variables]
            means, variances = moments(probe_trainable, probe_non_trainable, train.x, sources)
            mean, variance = combine_moments(np.asarray(means[:, :train.n]), np.asarray(variances[:, :train.n]))
            for variable, value in ((bn.moving_mean, mean), (bn.moving_variance, variance)):
                at = non_trainable_at[id(variable)]
                statistics[at] = jnp.asarray(value, statistics[at].dtype)
        return statistics

    def _probes(self) -> list[tuple[keras.layers.BatchNormalization, keras.Model, Callable]]:
        """``(layer, probe, program)`` per BatchNormalization layer: a model from the input to its input's
        per-sample moments, sharing ``self.model``'s variables, and its stacked inference program (built once,
        so compiled once). The paper's CNNs keep BN at the top level (a nested backbone's is the plain path's
        business: ``Protocol`` refuses the reports' options here)."""
        if self._probe_models is None:
            self._probe_models = []
            for layer in self.model.layers:
                if isinstance(layer, keras.layers.BatchNormalization):
                    probe = keras.Model(self.model.input, moments_of(layer, layer.input))
                    self._probe_models.append((layer, probe, inference_program(probe, conv=self.conv)))
        return self._probe_models

    # ------------------------------------------------------------------------------------------ stage two
    def _features(self) -> tuple[dict[str, DeviceSplit], float]:
        """Every repeat's features of every split from the stacked extractors (``features_from`` weights):
        ``(R, N, dim)`` float32 on the device; row ``i`` belongs to ``self.repeats[i]``."""
        extractor = feature_extractor(self.model)
        trainable, non_trainable = self._stacked(self.repeats, f"stage1_{self.protocol.features_from}.weights.h5",
                                                 extractor)
        infer = inference_program(extractor, conv=self.conv)
        sources = jnp.asarray([self._source(r) for r in self.repeats], jnp.int32)
        started = time.perf_counter()
        features = {split: DeviceSplit(infer(trainable, non_trainable, d.x, sources), d.y[sources], d.n)
                    for split, d in self.device.items()}
        jax.block_until_ready([f.x for f in features.values()])
        seconds = time.perf_counter() - started
        for repeat in self.repeats:
            self.report({"stage": "features", "seconds": seconds / len(self.repeats), "repeat": repeat})
        bn_features = None
        if batchnorm_layers(self.model):  # the same features after re-estimating BatchNorm (for the readings)
            full, statistics = self._stacked(self.repeats, f"stage1_{self.protocol.features_from}.weights.h5")
            statistics = self._reestimated(full, statistics, sources)
            at = {id(v): i for i, v in enumerate(self.model.non_trainable_variables)}
            bn_statistics = [statistics[at[id(v)]] for v in extractor.non_trainable_variables]
            bn_features = {split: np.asarray(infer(trainable, bn_statistics, d.x, sources)[:, :d.n])
                           for split, d in self.device.items()}
        return features, bn_features, seconds

    def _readings(self, features: dict[str, DeviceSplit], bn_features: dict[str, np.ndarray] | None
                  ) -> dict[int, dict[str, Any]]:
        """Every repeat's second-stage readings (:mod:`core.training.ceiling`), fitted on the host in a thread
        pool (the fits are NumPy/SciPy work, which releases the GIL) while nothing else needs the CPU."""
        def one(repeat: int) -> dict[str, Any]:
            row, data = self.repeats.index(repeat), self.datasets[repeat]
            own = {split: np.asarray(f.x[row, :f.n], np.float32) for split, f in features.items()}
            bn = {split: block[row] for split, block in bn_features.items()} if bn_features else None
            labels = {split: getattr(data, f"y_{split}") for split in SPLITS}
            return ceiling.readings(own, labels, data.num_classes, bn, self._seed(repeat))

        with ThreadPoolExecutor(min(8, os.cpu_count() or 1)) as pool:
            return dict(zip(self.repeats, pool.map(one, self.repeats)))

    def _head_model(self, name: str, dim: int) -> keras.Model:
        """A compiled head for evaluating and saving any repeat's trained weights (the plain path's compile)."""
        if name not in self._heads:
            head = build_head(dim, self.data.num_classes)
            two_stage.compile_model(head, two_stage.head_optimizer(name, self.protocol), 1)
            self._heads[name] = head
        return self._heads[name]

    def _train_heads(self, repeats: list[int], features: dict[str, DeviceSplit]) -> None:
        """Both heads of every repeat at once (2R models, one program); then their weights into each folder.

        Each head starts as in the plain path: seeded with ``seed * 1000 + i + 1`` and, with
        ``head_init="warm"``, copied from its own repeat's stage-one softmax."""
        dim = int(features["train"].x.shape[-1])
        warm = self.protocol.head_init == "warm"
        rows = [self.repeats.index(r) for r in repeats]
        cohorts = []
        for i, name in enumerate(HEADS):
            seeds = [self._seed(r) * 1000 + i + 1 for r in repeats]
            weights = []
            for repeat, seed in zip(repeats, seeds):
                if warm:
                    self.model.load_weights(self.folders[repeat] /
                                            f"stage1_{self.protocol.features_from}.weights.h5")
                keras.utils.set_random_seed(seed)
                weights.append(variable_values(build_head(dim, self.data.num_classes,
                                                          warm_from=self.model if warm else None)))
            template = self._head_model(name, dim)
            optimizer = two_stage.head_optimizer(name, self.protocol)
            optimizer.build(template.trainable_variables)
            cohorts.append(Cohort.create(f"stage2_{name}", template, optimizer, repeats, seeds, rows, weights,
                                         self.protocol))
        checkpoint = self.workdir / "stage2.npz"
        self._trainer(cohorts, features["train"], features["val"], checkpoint).run()
        for m, repeat in enumerate(repeats):
            for cohort in cohorts:
                cohort.write_member(m, self.folders[repeat])
            record.write_json(self.folders[repeat] / STAGE2_DONE, {c.stage: c.history[m] for c in cohorts})
        checkpoint.unlink(missing_ok=True)

    def _trainer(self, cohorts: list[Cohort], train: DeviceSplit, val: DeviceSplit, checkpoint: Path) -> Trainer:
        meta = {"key": self.protocol.key(), "stages": [c.stage for c in cohorts], "repeats": cohorts[0].repeats}
        return Trainer(cohorts, train, val, self.data.num_classes, self.protocol, checkpoint, meta, self.report,
                       self.should_stop, self.conv)

    # ------------------------------------------------------------------------------------------- records
    def _record(self, repeat: int, features: dict[str, DeviceSplit], seconds: float,
                readings: dict[str, Any]) -> dict[str, Any]:
        """The plain path's evaluation of both heads, the models Classify loads, and the record."""
        folder, p = self.folders[repeat], self.protocol
        stage1 = json.loads((folder / "stage1.json").read_text())
        with np.load(folder / "stage1_test_probs.npz", allow_pickle=False) as stored:
            test_probs = {name: stored[name] for name in stored.files}
        histories = json.loads((folder / STAGE2_DONE).read_text())
        row = self.repeats.index(repeat)
        own = {split: np.asarray(f.x[row, :f.n], np.float32) for split, f in features.items()}
        dim = own["train"].shape[1]
        heads = {}
        for name in HEADS:
            stage, head = f"stage2_{name}", self._head_model(name, dim)
            head.load_weights(folder / f"{stage}_last.weights.h5")
            heads[name] = record.summarise_fit(head, own, self.labels[repeat], p, folder, stage,
                                                  histories[stage])
            head.load_weights(folder / f"{stage}_{p.stage2_eval}.weights.h5")
            test_probs[name] = record.predict_probabilities(head, own["test"])
            head.save(folder / f"head_{name}.keras")
        self.model.load_weights(folder / f"stage1_{p.features_from}.weights.h5")
        self.model.save(folder / "stage1.keras")
        record.tidy_workdir(folder)
        feature_info = {"dim": dim, "from": p.features_from, "seconds": seconds / len(self.repeats)}
        return record.make_record(self.datasets[repeat], p, repeat, stage1, feature_info, heads, test_probs,
                                  self.started_at, formulation=f"stacked, {self.conv} convolutions",
                                  readings=readings)
