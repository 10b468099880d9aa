"""Many Keras models of one architecture trained as one JAX program: the members' weights stacked on a
leading axis, one compiled step for all of them.

This is the machinery of the lock-step engine (:mod:`core.training.lockstep`), with nothing of the two-stage
experiment in it: a :class:`Cohort` is M models of one kind with their optimizer state and the paper's
callbacks (:class:`Monitors`); :func:`train_program` trains cohorts together over chunks of steps;
:func:`inference_program` and :func:`score_program` evaluate them; :class:`DeviceSplit` holds the data on the
device. Every function here sees members' arrays stacked member-first and never mixes two members.

How the members are stacked inside the model (:class:`StackedNet`) is a choice of formulation, not of numbers:
``vmap`` maps the Keras model itself over the members, which XLA lowers to grouped convolutions; ``gemm``
computes each convolution as shifted slices times a batched matrix product (one large kernel for all members,
forward and backward); ``loop`` runs one ordinary convolution per member. All three compute the same function
(tested to float rounding); which is fastest depends on the hardware (see ``bench/README.md``).
"""

from __future__ import annotations

import inspect
import os

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import keras
import numpy as np

from ..data.datasets import Dataset
from ..protocol.config import Protocol
from .record import EVAL_BATCH

try:  # JAX is a test/GPU requirement, not the hosted app's: lockstep.check_available reports a missing one
    import jax
    import jax.numpy as jnp
except ImportError:  # pragma: no cover - depends on the environment
    jax = jnp = None


CHUNK_STEPS = 50
"""Most training steps one compiled call runs on an accelerator (:func:`steps_per_call`), and how often, in
steps, ``should_stop`` is polled (the plain path polls every 50 batches too)."""



LR_MIN_DELTA = 1e-4
"""ReduceLROnPlateau's default ``min_delta`` (the plain path uses Keras' defaults; EarlyStopping's is 0)."""



class EngineUnavailable(ValueError):
    """The lock-step engine cannot run in this process (wrong backend, JAX missing, an unsupported option)."""



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



CONV_FORMS = ("vmap", "gemm", "loop")
"""How :class:`StackedNet` computes the members' convolutions (the module docstring says why there are three)."""
CONV_FORM_VAR = "TWO_STAGE_STACKED_CONV"
"""Environment variable choosing the formulation for a process (default ``vmap``); records store the one used."""


def conv_form() -> str:
    """The formulation this process trains with: :data:`CONV_FORM_VAR`, else ``vmap``. A bad value is one line."""
    form = os.environ.get(CONV_FORM_VAR, "").strip() or "vmap"
    if form not in CONV_FORMS:
        raise EngineUnavailable(f"{CONV_FORM_VAR}={form!r} is not one of {', '.join(CONV_FORMS)}")
    return form


class StackedNet:
    """A Keras model (a chain of layers) applied to M members at once: ``net(trainable, non_trainable, x,
    training) -> (outputs, non_trainable)``, with ``x`` ``(M, batch, ...)`` and every variable ``(M, ...)`` in
    the order of ``model.trainable_variables``/``model.non_trainable_variables``.

    With ``conv="vmap"`` the whole model's ``stateless_call`` is mapped over the members (the engine's first
    formulation). Otherwise the chain is walked layer by layer: every layer but a convolution is mapped over the
    members with its own variables (its ``__call__`` inside a ``keras.StatelessScope``, so dtype policies, the
    ``training`` flag and seed-generator states behave exactly as in the model), and each ``Conv2D`` is computed
    by :func:`stacked_conv` for all members at once.
    """

    def __init__(self, model: keras.Model, conv: str = "vmap"):
        if conv not in CONV_FORMS:
            raise EngineUnavailable(f"unknown convolution formulation {conv!r}; choose one of {', '.join(CONV_FORMS)}")
        self.model, self.conv = model, conv
        trainable_at = {id(v): i for i, v in enumerate(model.trainable_variables)}
        non_trainable_at = {id(v): i for i, v in enumerate(model.non_trainable_variables)}
        chain = [layer for layer in model.layers if not isinstance(layer, keras.layers.InputLayer)]
        for before, layer in zip(chain, chain[1:]):
            if layer.input is not before.output:
                raise EngineUnavailable(f"{model.name} is not a chain of layers ({layer.name} does not take "
                                        f"{before.name}'s output); the lockstep engine runs the paper's models")
        self.layers = [(layer, [trainable_at[id(v)] for v in layer.trainable_variables],
                        [non_trainable_at[id(v)] for v in layer.non_trainable_variables]) for layer in chain]

    def __call__(self, trainable: list, non_trainable: list, x: Any, training: bool) -> tuple[Any, list]:
        if self.conv == "vmap":
            def member(t, n, x):
                return self.model.stateless_call(t, n, x, training=training)
            return jax.vmap(member)(trainable, non_trainable, x)
        non_trainable = list(non_trainable)
        for layer, t_at, n_at in self.layers:
            t, n = [trainable[i] for i in t_at], [non_trainable[i] for i in n_at]
            if isinstance(layer, keras.layers.Conv2D):
                x = _conv_layer(layer, t, x, self.conv)
                continue
            x, n = jax.vmap(lambda t, n, x, layer=layer: _layer_call(layer, t, n, x, training))(t, n, x)
            for i, value in zip(n_at, n):
                non_trainable[i] = value
        return x, non_trainable


def _layer_call(layer: keras.layers.Layer, trainable: list, non_trainable: list, x: Any,
                training: bool) -> tuple[Any, list]:
    """One member through one layer, statelessly; returns its output and its non-trainable values after."""
    mapping = list(zip(layer.trainable_variables, trainable)) + list(zip(layer.non_trainable_variables,
                                                                        non_trainable))
    kwargs = {"training": training} if "training" in inspect.signature(layer.call).parameters else {}
    with keras.StatelessScope(state_mapping=mapping) as scope:
        out = layer(x, **kwargs)
    after = [scope.get_current_value(v) for v in layer.non_trainable_variables]
    return out, [old if new is None else new for new, old in zip(after, non_trainable)]


def _conv_layer(layer: keras.layers.Conv2D, weights: list, x: Any, form: str) -> Any:
    """A Conv2D layer for all members: the convolution, its bias and its activation, in its compute dtype."""
    config = layer.get_config()
    if config["data_format"] != "channels_last" or config["groups"] != 1:
        raise EngineUnavailable(f"{layer.name}: the stacked convolution supports channels_last, groups=1 only")
    dtype = layer.compute_dtype
    kernel = weights[0].astype(dtype)
    y = stacked_conv(x.astype(dtype), kernel, tuple(config["strides"]), config["padding"],
                     tuple(config["dilation_rate"]), form)
    if config["use_bias"]:
        y = y + weights[1].astype(dtype)[:, None, None, None, :]
    return layer.activation(y)


def stacked_conv(x: Any, kernel: Any, strides: tuple[int, int], padding: str, dilation: tuple[int, int],
                 form: str) -> Any:
    """``x`` ``(M, B, H, W, C)`` convolved with each member's ``kernel`` ``(M, kh, kw, C, O)``: ``(M, B, H', W',
    O)``, as Keras' Conv2D computes it (``padding`` "valid" or "same", TensorFlow's rule for odd padding).

    ``gemm``: the ``kh*kw`` shifted (strided, dilated) slices of the padded input are concatenated on the
    channel axis and multiplied by the flattened kernels in one batched matrix product over the members; its
    gradients are batched matrix products and sums of shifted slices, all plain dense GPU work. ``loop``: one
    ``lax.conv_general_dilated`` per member."""
    numbers = ("NHWC", "HWIO", "NHWC")
    if form == "loop":
        return jnp.stack([jax.lax.conv_general_dilated(x[m], kernel[m], strides, padding.upper(),
                                                       rhs_dilation=dilation, dimension_numbers=numbers)
                          for m in range(x.shape[0])])
    members, batch, height, width, channels = x.shape
    kh, kw, _, out = kernel.shape[1:]
    span = ((kh - 1) * dilation[0] + 1, (kw - 1) * dilation[1] + 1)
    pads = jax.lax.padtype_to_pads((height, width), span, strides, padding.upper())
    x = jnp.pad(x, ((0, 0), (0, 0), tuple(pads[0]), tuple(pads[1]), (0, 0)))
    rows = (x.shape[2] - span[0]) // strides[0] + 1
    cols = (x.shape[3] - span[1]) // strides[1] + 1
    slices = [x[:, :, i * dilation[0]:i * dilation[0] + (rows - 1) * strides[0] + 1:strides[0],
                j * dilation[1]:j * dilation[1] + (cols - 1) * strides[1] + 1:strides[1], :]
              for i in range(kh) for j in range(kw)]
    patches = jnp.concatenate(slices, axis=-1)  # channels ordered (kernel row, kernel column, input channel)
    return jnp.einsum("mbhwk,mko->mbhwo", patches, kernel.reshape(members, kh * kw * channels, out))


def _member_losses(probs: Any, labels: Any, num_classes: int) -> Any:
    """Each member's mean categorical cross-entropy over its batch, ``(M,)`` (Keras' loss, per member)."""
    return jnp.mean(keras.losses.categorical_crossentropy(jax.nn.one_hot(labels, num_classes), probs), axis=1)


def _stacked_step(net: StackedNet, optimizer: keras.optimizers.Optimizer, num_classes: int) -> Callable:
    """One training step of every member: forward in training mode, each member's loss and gradients (the
    gradient of the summed losses is each member's own, as members share nothing), the optimizer's update
    mapped over members; everything kept unchanged where ``keep`` is false (a stopped member, a padding
    step). Returns the new state and per member ``[loss * batch, correct, batch]`` for the epoch's metrics."""

    def loss_fn(trainable, non_trainable, x, labels):
        probs, non_trainable = net(trainable, non_trainable, x, training=True)
        losses = _member_losses(probs, labels, num_classes)
        return jnp.sum(losses), (losses, non_trainable, probs)

    gradient = jax.value_and_grad(loss_fn, has_aux=True)

    def step(trainable, non_trainable, slots, source, index, keep, x, y):
        labels = y[source[:, None], index]
        (_, (losses, new_non_trainable, probs)), grads = gradient(trainable, non_trainable,
                                                                  x[source[:, None], index], labels)
        new_trainable, new_slots = jax.vmap(optimizer.stateless_apply)(slots, grads, trainable)

        def kept(new, old):
            return jnp.where(keep.reshape((-1,) + (1,) * (new.ndim - 1)), new, old)

        state = jax.tree.map(kept, (new_trainable, new_non_trainable, new_slots), (trainable, non_trainable, slots))
        batch = index.shape[1]
        correct = jnp.sum(jnp.argmax(probs, axis=-1) == labels, axis=1).astype(jnp.float32)
        sums = jnp.stack([losses * batch, correct, jnp.full_like(correct, batch)], axis=1)
        return (*state, jnp.where(keep[:, None], sums, 0.0))

    return step


def _check_no_losses(model: keras.Model) -> None:
    """The stacked step adds no layer losses: refuse a model that has them (none of the paper's CNNs does)."""
    if any(getattr(layer, attr, None) is not None for layer in model.layers
           for attr in ("kernel_regularizer", "bias_regularizer", "activity_regularizer")):
        raise EngineUnavailable(f"{model.name} has weight regularizers; the lockstep engine does not add them")


def train_program(cohorts: list[Cohort], num_classes: int, conv: str = "vmap") -> Callable:
    """A jitted function running T training steps for every member of every cohort.

    ``run(states, sums, xs, y, sources, batches, keeps)``: per cohort its ``(trainable, non_trainable,
    optimizer)`` state, its ``(M, 3)`` metric sums, its stacked input, its sources; ``y`` the stacked labels;
    per cohort ``batches`` ``(T, M, b)`` row indices and ``keeps`` ``(T, M)``. The T steps are a
    ``jax.lax.scan``; a single step is unrolled (see :func:`steps_per_call`). Compiled once per shape: the
    epoch's full calls and its short last batch.
    """
    for cohort in cohorts:
        _check_no_losses(cohort.model)
    steps = [_stacked_step(StackedNet(c.model, conv), c.optimizer, num_classes) for c in cohorts]

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


def inference_program(model: keras.Model, batch: int = EVAL_BATCH, conv: str = "vmap") -> Callable:
    """``run(trainable, non_trainable, x, sources) -> (M, N, ...)``: every member's inference-mode outputs
    (float32; a model with several outputs gives each so) on its source rows of ``x``, whose length must be a
    multiple of ``batch``.

    One jitted call per batch from a Python loop, not a loop inside the program: XLA's CPU backend runs loop
    bodies several times slower (see :func:`steps_per_call`), and on a GPU a few hundred dispatches are cheap.
    """
    net = StackedNet(model, conv)

    @jax.jit
    def one_batch(trainable, non_trainable, x, sources, start):
        rows = jax.lax.dynamic_slice_in_dim(x, start, batch, axis=1)[sources]
        out, _ = net(trainable, non_trainable, rows, training=False)
        return jax.tree.map(lambda a: a.astype(jnp.float32), out)

    def run(trainable, non_trainable, x, sources):
        parts = [one_batch(trainable, non_trainable, x, sources, start) for start in range(0, x.shape[1], batch)]
        return jax.tree.map(lambda *blocks: jnp.concatenate(blocks, axis=1), *parts)

    return run


def score_program(model: keras.Model, num_classes: int, batch: int = EVAL_BATCH, conv: str = "vmap") -> Callable:
    """``run(trainable, non_trainable, x, sources, y) -> (loss, accuracy)``, each ``(M,)``: what Keras'
    validation reports (mean categorical cross-entropy and accuracy), on the rows where ``y >= 0`` (the rest
    is padding). Batched like :func:`inference_program`; only the two vectors leave the device."""
    net = StackedNet(model, conv)

    @jax.jit
    def one_batch(trainable, non_trainable, x, sources, y, start):
        rows = jax.lax.dynamic_slice_in_dim(x, start, batch, axis=1)[sources]
        labels = jax.lax.dynamic_slice_in_dim(y, start, batch, axis=1)[sources]
        probs, _ = net(trainable, non_trainable, rows, training=False)
        probs = probs.astype(jnp.float32)
        valid = labels >= 0
        loss = keras.losses.categorical_crossentropy(jax.nn.one_hot(labels, num_classes), probs)
        correct = (jnp.argmax(probs, axis=-1) == labels) & valid
        return jnp.stack([jnp.sum(jnp.where(valid, loss, 0.0), axis=1),
                          jnp.sum(correct, axis=1).astype(jnp.float32)], axis=1)

    def run(trainable, non_trainable, x, sources, y):
        total = sum(one_batch(trainable, non_trainable, x, sources, y, start)
                    for start in range(0, x.shape[1], batch))
        count = jnp.sum(y[0] >= 0)  # every source has the same number of rows
        return total[:, 0] / count, total[:, 1] / count

    return run


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

    def take(self, sources: np.ndarray, rows: np.ndarray) -> DeviceSplit:
        """A split of one source per member: member ``m``'s ``rows[m]`` of source ``sources[m]``, padded to a
        multiple of EVAL_BATCH like an uploaded split (all members take the same number of rows)."""
        n = rows.shape[1]
        padded = np.zeros((rows.shape[0], n + (-n % EVAL_BATCH)), np.int64)
        padded[:, :n] = rows
        valid = np.arange(padded.shape[1]) < n
        src = jnp.asarray(sources)[:, None]
        x = self.x[src, jnp.asarray(padded)]
        y = jnp.where(jnp.asarray(valid)[None], self.y[src, jnp.asarray(padded)], -1)
        return DeviceSplit(x, y, n)



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
