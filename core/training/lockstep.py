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
(:func:`core.training.two_stage.fit_summary`, :func:`core.training.two_stage.add_diagnostics`); each head's weights are set into
an ordinary Keras model and evaluated by the plain path's own code (:func:`core.training.two_stage.summarise_fit`,
predictions, :func:`core.training.two_stage.make_record`), so both engines store one schema. What differs, besides
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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import keras
import numpy as np

from . import env, two_stage
from ..protocol.config import Protocol
from ..data.datasets import Dataset
from ..models.models import (batchnorm_layers, build_for_protocol, build_head, combine_moments, feature_extractor,
                     moments_of)
from ..models.optim import stage1_optimizer
from .two_stage import EVAL_BATCH, HEADS, SPLITS, Cancelled, Progress

try:  # JAX is a test/GPU requirement, not the hosted app's: check_available reports a missing one
    import jax
    import jax.numpy as jnp
except ImportError:  # pragma: no cover - depends on the environment
    jax = jnp = None

CHUNK_STEPS = 50
"""Most training steps one compiled call runs on an accelerator (:func:`steps_per_call`), and how often, in
steps, ``should_stop`` is polled (the plain path polls every 50 batches too)."""
LR_MIN_DELTA = 1e-4
"""ReduceLROnPlateau's default ``min_delta`` (the plain path uses Keras' defaults; EarlyStopping's is 0)."""
CHECKPOINT_EVERY_S = 60.0
"""Least seconds between two checkpoints of the stacked state (taken after an epoch): 20 Dogs & Cats CNNs with
their best copies and Adam slots are about 4 GB, too much to write after every fast GPU epoch. A killed run
loses at most this much training."""
STAGE2_DONE = "lockstep_stage2.json"
"""Written to a repeat's folder once its heads are trained (their histories); marks stage two as done."""


class EngineUnavailable(ValueError):
    """The lock-step engine cannot run in this process (wrong backend, JAX missing, an unsupported option)."""


def check_available(protocol: Protocol) -> None:
    """Raise :class:`EngineUnavailable` with one line a user can act on, before any data is loaded."""
    backend = keras.config.backend()
    if backend != "jax":
        raise EngineUnavailable(f"the lockstep engine needs KERAS_BACKEND=jax (this process runs Keras on "
                                f"{backend}); run with KERAS_BACKEND=jax, or use --engine plain")
    if jax is None:
        raise EngineUnavailable("the lockstep engine needs JAX: pip install jax (or \"jax[cuda12]\" on a GPU)")


# --------------------------------------------------------------------------------------------- callbacks

@dataclass
class Monitors:
    """The paper's callbacks for M models side by side, with the rules of Keras' own (mode "max" on
    ``val_accuracy``): EarlyStopping and ModelCheckpoint(save_best_only) share ``best`` (``min_delta`` 0);
    ReduceLROnPlateau keeps its own (``min_delta`` 1e-4, no cooldown), as in :func:`two_stage.paper_callbacks`."""

    patience: int
    reduce_lr: bool
    lr_factor: float
    lr_patience: int
    min_lr: float
    best: np.ndarray
    wait: np.ndarray
    stopped: np.ndarray
    lr_best: np.ndarray
    lr_wait: np.ndarray

    @classmethod
    def start(cls, protocol: Protocol, members: int) -> Monitors:
        return cls(protocol.patience, protocol.reduce_lr, protocol.lr_factor, protocol.lr_patience,
                   protocol.min_lr, best=np.full(members, -np.inf), wait=np.zeros(members, np.int64),
                   stopped=np.zeros(members, bool), lr_best=np.full(members, -np.inf),
                   lr_wait=np.zeros(members, np.int64))

    def end_epoch(self, epoch: int, val_accuracy: np.ndarray,
                  learning_rate: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Apply one epoch's ``val_accuracy`` to the members still training (0-based ``epoch``).

        Returns which members improved (their weights become the best checkpoint) and the learning rates
        after ReduceLROnPlateau. Members that reach their patience are marked stopped.
        """
        active = ~self.stopped
        improved = active & (val_accuracy > self.best)
        self.wait[active] += 1  # EarlyStopping counts the epoch, then resets on an improvement
        self.best[improved] = val_accuracy[improved]
        self.wait[improved] = 0
        stop_now = active & ~improved & (self.wait >= self.patience) & (epoch > 0)
        learning_rate = np.asarray(learning_rate, np.float64).copy()
        if self.reduce_lr:
            lr_improved = active & (val_accuracy - LR_MIN_DELTA > self.lr_best)
            self.lr_best[lr_improved] = val_accuracy[lr_improved]
            self.lr_wait[lr_improved] = 0
            plateau = active & ~lr_improved
            self.lr_wait[plateau] += 1
            reduce = plateau & (self.lr_wait >= self.lr_patience) & (learning_rate > np.float32(self.min_lr))
            learning_rate[reduce] = np.maximum(learning_rate[reduce] * self.lr_factor, self.min_lr)
            self.lr_wait[reduce] = 0
        self.stopped |= stop_now
        return improved, learning_rate

    def to_json(self) -> dict[str, list]:
        return {name: getattr(self, name).tolist() for name in ("best", "wait", "stopped", "lr_best", "lr_wait")}

    def restore(self, saved: dict[str, list]) -> None:
        for name, values in saved.items():
            setattr(self, name, np.asarray(values, dtype=getattr(self, name).dtype))


# ---------------------------------------------------------------------------------------------- cohorts

@dataclass
class Cohort:
    """Models of one kind trained side by side (stage one's CNNs, or all heads of one optimizer): one Keras
    model and optimizer whose stateless functions serve every member, and the members' state stacked on axis 0.

    ``state`` holds lists of stacked arrays, in the order of ``model.trainable_variables``,
    ``model.non_trainable_variables`` and ``optimizer.variables``, plus the best-epoch copies of the first two.
    ``sources[m]`` is the row of the stacked input member ``m`` trains on (stage one: 0, the images; heads:
    its repeat's features).
    """

    stage: str
    model: keras.Model
    optimizer: keras.optimizers.Optimizer
    repeats: list[int]
    shuffle_seeds: list[int]
    sources: np.ndarray
    state: dict[str, list]
    monitors: Monitors
    history: list[dict[str, list]] = field(default_factory=list)

    @classmethod
    def create(cls, stage: str, model: keras.Model, optimizer: keras.optimizers.Optimizer, repeats: list[int],
               shuffle_seeds: list[int], sources: list[int], weights: list[tuple[list, list]],
               protocol: Protocol) -> Cohort:
        """Stack the members' ``(trainable, non_trainable)`` values; every member starts with fresh optimizer
        slots (``optimizer`` must be built on ``model.trainable_variables``)."""
        members = len(repeats)
        trainable, non_trainable = stack_members(weights)
        slots = [jnp.stack([v.value] * members) for v in optimizer.variables]
        state = {"trainable": trainable, "non_trainable": non_trainable, "optimizer": slots,
                 "best_trainable": list(trainable), "best_non_trainable": list(non_trainable)}
        return cls(stage, model, optimizer, list(repeats), list(shuffle_seeds), np.asarray(sources, np.int32),
                   state, Monitors.start(protocol, members), [{} for _ in repeats])

    @property
    def lr_index(self) -> int:
        return [v.name for v in self.optimizer.variables].index("learning_rate")

    def member_weights(self, m: int, best: bool = False) -> tuple[list, list]:
        prefix = "best_" if best else ""
        return ([a[m] for a in self.state[f"{prefix}trainable"]],
                [a[m] for a in self.state[f"{prefix}non_trainable"]])

    def write_member(self, m: int, folder: Path) -> None:
        """Save member ``m``'s last and best weights as the plain path's ``<stage>_{last,best}.weights.h5``."""
        for kind in ("best", "last"):
            assign(self.model, self.member_weights(m, best=kind == "best"))
            self.model.save_weights(folder / f"{self.stage}_{kind}.weights.h5")


def assign(model: keras.Model, weights: tuple[list, list]) -> None:
    """Set one member's ``(trainable, non_trainable)`` values into an ordinary Keras model."""
    trainable, non_trainable = weights
    for variable, value in zip(model.trainable_variables, trainable):
        variable.assign(value)
    for variable, value in zip(model.non_trainable_variables, non_trainable):
        variable.assign(value)


def stack_members(weights: list[tuple[list, list]]) -> tuple[list, list]:
    """Members' ``(trainable, non_trainable)`` values stacked variable by variable on a leading member axis."""
    return ([jnp.stack(values) for values in zip(*(w[0] for w in weights))],
            [jnp.stack(values) for values in zip(*(w[1] for w in weights))])


def variable_values(model: keras.Model) -> tuple[list, list]:
    return [v.value for v in model.trainable_variables], [v.value for v in model.non_trainable_variables]


# ------------------------------------------------------------------------------------- compiled programs

def _member_step(model: keras.Model, optimizer: keras.optimizers.Optimizer, num_classes: int) -> Callable:
    """One training step of one member (vmapped over members): forward in training mode, loss and gradients,
    the optimizer's update; everything kept unchanged where ``keep`` is false (a stopped member, a padding
    step). Returns the new state and ``[loss * batch, correct, batch]`` for the epoch's training metrics."""

    def loss_fn(trainable, non_trainable, x, y):
        probs, non_trainable, losses = model.stateless_call(trainable, non_trainable, x, training=True,
                                                            return_losses=True)
        loss = jnp.mean(keras.losses.categorical_crossentropy(y, probs))
        for extra in losses:  # layer regularisers, as Keras' train step adds them (none in our models)
            loss = loss + extra
        return loss, (non_trainable, probs)

    gradient = jax.value_and_grad(loss_fn, has_aux=True)

    def step(trainable, non_trainable, slots, source, index, keep, x, y):
        labels = y[source, index]
        (loss, (new_non_trainable, probs)), grads = gradient(
            trainable, non_trainable, x[source, index], jax.nn.one_hot(labels, num_classes))
        new_trainable, new_slots = optimizer.stateless_apply(slots, grads, trainable)
        kept = jax.tree.map(lambda new, old: jnp.where(keep, new, old),
                            (new_trainable, new_non_trainable, new_slots), (trainable, non_trainable, slots))
        correct = jnp.sum(jnp.argmax(probs, axis=-1) == labels)
        batch = index.shape[0]
        sums = jnp.stack([loss * batch, correct.astype(jnp.float32), jnp.float32(batch)])
        return (*kept, jnp.where(keep, sums, 0.0))

    return jax.vmap(step, in_axes=(0, 0, 0, 0, 0, 0, None, None))


def train_program(cohorts: list[Cohort], num_classes: int) -> Callable:
    """A jitted function running T training steps for every member of every cohort.

    ``run(states, sums, xs, y, sources, batches, keeps)``: per cohort its ``(trainable, non_trainable,
    optimizer)`` state, its ``(M, 3)`` metric sums, its stacked input, its sources; ``y`` the stacked labels;
    per cohort ``batches`` ``(T, M, b)`` row indices and ``keeps`` ``(T, M)``. The T steps are a
    ``jax.lax.scan``; a single step is unrolled (see :func:`steps_per_call`). Compiled once per shape: the
    epoch's full calls and its short last batch.
    """
    steps = [_member_step(c.model, c.optimizer, num_classes) for c in cohorts]

    def run(states, sums, xs, y, sources, batches, keeps):
        def body(carry, per_step):
            states, sums = carry
            new_states, new_sums = [], []
            for step, state, total, x, source, (index, keep) in zip(steps, states, sums, xs, sources, per_step):
                *state, got = step(*state, source, index, keep, x, y)
                new_states.append(tuple(state))
                new_sums.append(total + got)
            return (tuple(new_states), tuple(new_sums)), None

        length = batches[0].shape[0]
        (states, sums), _ = jax.lax.scan(body, (states, sums), tuple(zip(batches, keeps)),
                                         unroll=True if length == 1 else 1)
        return states, sums

    return jax.jit(run)


def inference_program(model: keras.Model, batch: int = EVAL_BATCH) -> Callable:
    """``run(trainable, non_trainable, x, sources) -> (M, N, ...)``: every member's inference-mode outputs
    (float32; a model with several outputs gives each so) on its source rows of ``x``, whose length must be a
    multiple of ``batch``.

    One jitted call per batch from a Python loop, not a loop inside the program: XLA's CPU backend runs loop
    bodies several times slower (see :func:`steps_per_call`), and on a GPU a few hundred dispatches are cheap.
    """

    def member(trainable, non_trainable, x):
        out, _ = model.stateless_call(trainable, non_trainable, x, training=False)
        return jax.tree.map(lambda a: a.astype(jnp.float32), out)

    @jax.jit
    def one_batch(trainable, non_trainable, x, sources, start):
        rows = jax.lax.dynamic_slice_in_dim(x, start, batch, axis=1)[sources]
        return jax.vmap(member)(trainable, non_trainable, rows)

    def run(trainable, non_trainable, x, sources):
        parts = [one_batch(trainable, non_trainable, x, sources, start) for start in range(0, x.shape[1], batch)]
        return jax.tree.map(lambda *blocks: jnp.concatenate(blocks, axis=1), *parts)

    return run


def score_program(model: keras.Model, num_classes: int, batch: int = EVAL_BATCH) -> Callable:
    """``run(trainable, non_trainable, x, sources, y) -> (loss, accuracy)``, each ``(M,)``: what Keras'
    validation reports (mean categorical cross-entropy and accuracy), on the rows where ``y >= 0`` (the rest
    is padding). Batched like :func:`inference_program`; only the two vectors leave the device."""

    def member(trainable, non_trainable, x, y):
        probs, _ = model.stateless_call(trainable, non_trainable, x, training=False)
        probs = probs.astype(jnp.float32)
        valid = y >= 0
        loss = keras.losses.categorical_crossentropy(jax.nn.one_hot(y, num_classes), probs)
        correct = (jnp.argmax(probs, axis=-1) == y) & valid
        return jnp.stack([jnp.sum(jnp.where(valid, loss, 0.0)), jnp.sum(correct).astype(jnp.float32)])

    @jax.jit
    def one_batch(trainable, non_trainable, x, sources, y, start):
        rows = jax.lax.dynamic_slice_in_dim(x, start, batch, axis=1)[sources]
        labels = jax.lax.dynamic_slice_in_dim(y, start, batch, axis=1)[sources]
        return jax.vmap(member)(trainable, non_trainable, rows, labels)

    def run(trainable, non_trainable, x, sources, y):
        total = sum(one_batch(trainable, non_trainable, x, sources, y, start)
                    for start in range(0, x.shape[1], batch))
        count = jnp.sum(y[0] >= 0)  # every source has the same number of rows
        return total[:, 0] / count, total[:, 1] / count

    return run


# ------------------------------------------------------------------------------------------------- data

@dataclass
class DeviceSplit:
    """One split on the device: ``x`` stacked ``(sources, N_padded, ...)`` (images stay uint8), ``y``
    ``(sources, N_padded)`` int32 with -1 on the padding; ``n`` real rows, the same for every source. Padded
    to a multiple of EVAL_BATCH so inference runs in fixed-size batches; training only ever draws rows below
    ``n``. Several sources: every repeat's own split (``resplit``), or every repeat's own features."""

    x: Any
    y: Any
    n: int

    @classmethod
    def upload(cls, xs: list[np.ndarray], ys: list[np.ndarray]) -> DeviceSplit:
        """Every source's ``x`` ``(N, ...)`` and ``y`` ``(N,)``, stacked and padded in one host buffer (no
        intermediate copy: 20 re-split Face Mask repeats are 9 GB), then copied to the device."""
        n = len(ys[0])
        rows = n + (-n % EVAL_BATCH)
        x = np.zeros((len(xs), rows, *xs[0].shape[1:]), xs[0].dtype)
        y = np.full((len(ys), rows), -1, np.int32)
        for source, (x_source, y_source) in enumerate(zip(xs, ys)):
            x[source, :n], y[source, :n] = x_source, y_source
        return cls(jnp.asarray(x), jnp.asarray(y), n)


def epoch_batches(seeds: list[int], epoch: int, n: int, batch: int, per_call: int) -> tuple[Any, Any, Any]:
    """Each member's shuffled batches for one epoch, from its own key (``seed``, ``epoch``): ``(steps, M,
    batch)`` full batches padded with dummy steps to a multiple of ``per_call``, their validity ``(steps,)``,
    and the ``(1, M, n % batch)`` short last batch (Keras keeps it too)."""
    keys = jax.vmap(lambda s: jax.random.fold_in(jax.random.key(s), epoch))(jnp.asarray(seeds, jnp.uint32))
    order = jax.vmap(lambda k: jax.random.permutation(k, n))(keys).astype(jnp.int32)  # (M, n)
    full = n // batch
    steps = -(-full // per_call) * per_call
    batches = jnp.swapaxes(order[:, :full * batch].reshape(len(seeds), full, batch), 0, 1)
    batches = jnp.concatenate([batches, jnp.zeros((steps - full, len(seeds), batch), jnp.int32)])
    valid = jnp.arange(steps) < full
    return batches, valid, order[None, :, full * batch:]


def steps_per_call(full_steps: int) -> int:
    """Training steps one compiled call runs.

    On an accelerator: up to CHUNK_STEPS, split evenly so that few padding steps are wasted. On a CPU: one.
    XLA's CPU backend runs a step inside a loop about four times slower than the same step on its own
    (measured on this project's 2-core machine, Fashion-MNIST model: 31 vs 119 img/s, ``lax.scan`` of 1 and 5
    steps alike; fully unrolled: 119), and unrolling many steps multiplies the compile time.
    """
    if jax.default_backend() == "cpu":
        return 1
    calls = max(1, -(-full_steps // CHUNK_STEPS))
    return max(1, -(-full_steps // calls))


def upload_split(sources: list[Dataset], split: str) -> DeviceSplit:
    """One split of every source, stacked on the device. Re-split repeats draw the same split sizes from the
    same pool (stratified fractions), so their rows stack; anything else is refused in one line."""
    sizes = sorted({len(getattr(d, f"y_{split}")) for d in sources})
    if len(sizes) > 1:
        raise EngineUnavailable(f"the re-split repeats' {split} splits differ in size ({sizes}); the lockstep "
                                f"engine needs equal sizes, use --engine plain")
    return DeviceSplit.upload([getattr(d, f"x_{split}") for d in sources], [getattr(d, f"y_{split}") for d in sources])


# ------------------------------------------------------------------------------------------- the trainer

class Trainer:
    """Trains cohorts together over the protocol's epochs, with per-epoch checkpoints and progress events.

    All cohorts read the same ``train``/``val`` inputs (the images for stage one, the stacked features for the
    heads) and the same labels; each member picks its rows through its cohort's ``sources``.
    """

    def __init__(self, cohorts: list[Cohort], train: DeviceSplit, val: DeviceSplit, num_classes: int,
                 protocol: Protocol, checkpoint: Path, meta: dict[str, Any], report: Progress,
                 should_stop: Callable[[], bool]):
        self.cohorts, self.train, self.val, self.protocol = cohorts, train, val, protocol
        self.checkpoint, self.meta, self.report, self.should_stop = checkpoint, meta, report, should_stop
        self.program = train_program(cohorts, num_classes)
        self.scores = [score_program(c.model, num_classes) for c in cohorts]
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
    with its ``repeat``. Raises :class:`core.training.two_stage.Cancelled` once ``should_stop`` returns true.
    """
    check_available(protocol)
    env.use_exact_float32(protocol.precision)
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
        self.started_at = two_stage.now_iso()
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
        features, seconds = self._features()
        untrained = [r for r in self.repeats if not self._has(r, STAGE2_DONE)]
        if untrained:
            self._train_heads(untrained, features)
        for repeat in self.repeats:
            if self.should_stop():
                raise Cancelled("records")
            yield self._record(repeat, features, seconds)
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
            two_stage.write_json(self.folders[repeat] / "lockstep_stage1.json", cohort.history[m])
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
        score, predict = score_program(self.model, self.data.num_classes), inference_program(self.model)
        test = self.device["test"]
        evaluations: dict[str, dict[str, list]] = {}  # "last", "last_bn", ... -> "test_accuracy" -> (M,)
        probs: dict[str, np.ndarray] = {}
        seconds = {"plain": 0.0, "batchnorm": 0.0}
        for weights in ("last", "best"):
            started = time.perf_counter()
            trainable, statistics = self._stacked(repeats, f"stage1_{weights}.weights.h5")
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
            stage1 = two_stage.fit_summary(own["last"], own["best"], history, self.protocol,
                                           seconds["plain"] / len(repeats))
            reestimated = {w: own[f"{w}_bn"] for w in ("last", "best") if layers}
            two_stage.add_diagnostics(stage1, layers, reestimated, len(self.datasets[repeat].y_train),
                                      seconds["batchnorm"] / len(repeats))
            test_probs = {name: block[m] for name, block in probs.items()}
            for weights in ("last", "best"):
                test_probs.setdefault(f"stage1_{weights}_bn", test_probs[f"stage1_{weights}"])
            np.savez(folder / "stage1_test_probs.npz", **test_probs)
            two_stage.write_json(folder / "stage1.json", stage1)

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

    def _reestimated(self, trainable: list, non_trainable: list, sources: Any) -> list:
        """``non_trainable`` with every BatchNormalization layer's moving mean and variance replaced, member by
        member, by the statistics of its input over the member's own training split: the plain path's
        :func:`core.models.models.reestimate_batchnorm` (layers in order, upstream layers in inference mode and
        already re-estimated), stacked. A probe per layer returns each sample's channel moments
        (:class:`core.models.models.SampleMoments`); they are combined on the host in float64."""
        trainable_at = {id(v): i for i, v in enumerate(self.model.trainable_variables)}
        non_trainable_at = {id(v): i for i, v in enumerate(self.model.non_trainable_variables)}
        statistics = list(non_trainable)
        train = self.device["train"]
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
                    self._probe_models.append((layer, probe, inference_program(probe)))
        return self._probe_models

    # ------------------------------------------------------------------------------------------ stage two
    def _features(self) -> tuple[dict[str, DeviceSplit], float]:
        """Every repeat's features of every split from the stacked extractors (``features_from`` weights):
        ``(R, N, dim)`` float32 on the device; row ``i`` belongs to ``self.repeats[i]``."""
        extractor = feature_extractor(self.model)
        trainable, non_trainable = self._stacked(self.repeats, f"stage1_{self.protocol.features_from}.weights.h5",
                                                 extractor)
        infer = inference_program(extractor)
        sources = jnp.asarray([self._source(r) for r in self.repeats], jnp.int32)
        started = time.perf_counter()
        features = {split: DeviceSplit(infer(trainable, non_trainable, d.x, sources), d.y[sources], d.n)
                    for split, d in self.device.items()}
        jax.block_until_ready([f.x for f in features.values()])
        seconds = time.perf_counter() - started
        for repeat in self.repeats:
            self.report({"stage": "features", "seconds": seconds / len(self.repeats), "repeat": repeat})
        return features, seconds

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
            two_stage.write_json(self.folders[repeat] / STAGE2_DONE, {c.stage: c.history[m] for c in cohorts})
        checkpoint.unlink(missing_ok=True)

    def _trainer(self, cohorts: list[Cohort], train: DeviceSplit, val: DeviceSplit, checkpoint: Path) -> Trainer:
        meta = {"key": self.protocol.key(), "stages": [c.stage for c in cohorts], "repeats": cohorts[0].repeats}
        return Trainer(cohorts, train, val, self.data.num_classes, self.protocol, checkpoint, meta, self.report,
                       self.should_stop)

    # ------------------------------------------------------------------------------------------- records
    def _record(self, repeat: int, features: dict[str, DeviceSplit], seconds: float) -> dict[str, Any]:
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
            heads[name] = two_stage.summarise_fit(head, own, self.labels[repeat], p, folder, stage,
                                                  histories[stage])
            head.load_weights(folder / f"{stage}_{p.stage2_eval}.weights.h5")
            test_probs[name] = two_stage.predict_probabilities(head, own["test"])
            head.save(folder / f"head_{name}.keras")
        self.model.load_weights(folder / f"stage1_{p.features_from}.weights.h5")
        self.model.save(folder / "stage1.keras")
        two_stage.tidy_workdir(folder)
        feature_info = {"dim": dim, "from": p.features_from, "seconds": seconds / len(self.repeats)}
        return two_stage.make_record(self.datasets[repeat], p, repeat, stage1, feature_info, heads, test_probs,
                                     self.started_at)
