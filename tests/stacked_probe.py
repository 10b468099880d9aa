"""JAX-side checks of :mod:`core.training.stacked`, run by ``tests/test_stacked.py`` in a subprocess (the test
suite runs Keras on TensorFlow, and Keras picks its backend once per process). Prints one JSON object.

    KERAS_BACKEND=jax python tests/stacked_probe.py
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

os.environ["KERAS_BACKEND"] = "jax"
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import keras  # noqa: E402
import numpy as np  # noqa: E402

from core.models.models import build_stage1  # noqa: E402
from core.protocol.config import Augmentation  # noqa: E402
from core.training import stacked  # noqa: E402

MEMBERS, BATCH = 3, 4
MODELS = {  # the paper's four CNNs at small inputs: 'same' and 'valid' convolutions, even and odd kernels, BN
    "fashion-mnist": ((28, 28, 1), 10, None),
    "cifar10": ((16, 16, 3), 10, None),
    "dogs-cats": ((40, 40, 3), 2, Augmentation()),
}


def members(name: str) -> tuple[keras.Model, list, list]:
    """MEMBERS models of one architecture with their own seeds, and their variables stacked."""
    shape, classes, aug = MODELS[name]
    built = []
    for seed in range(MEMBERS):
        keras.utils.set_random_seed(seed)
        built.append(build_stage1(name, shape, classes, aug, seed))
    trainable, non_trainable = stacked.stack_members([stacked.variable_values(m) for m in built])
    return built[0], trainable, non_trainable


def compare(name: str) -> dict:
    """Largest differences of every formulation from ``vmap``: training-mode outputs, updated non-trainable
    state (BatchNorm statistics, seed states), gradients (relative), inference outputs."""
    model, trainable, non_trainable = members(name)
    shape, classes, _ = MODELS[name]
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.integers(0, 256, (MEMBERS, BATCH, *shape)), jnp.uint8)
    labels = jnp.asarray(rng.integers(0, classes, (MEMBERS, BATCH)))

    def run(form):
        net = stacked.StackedNet(model, form)

        def loss(trainable):
            probs, after = net(trainable, non_trainable, x, training=True)
            return jnp.sum(stacked._member_losses(probs, labels, classes)), (probs, after)

        (_, (probs, after)), grads = jax.jit(jax.value_and_grad(loss, has_aux=True))(trainable)
        inference = jax.jit(lambda t, n: net(t, n, x, training=False)[0])(trainable, non_trainable)
        return probs, after, grads, inference

    reference = run("vmap")
    out = {}
    for form in stacked.CONV_FORMS:
        probs, after, grads, inference = run(form)
        out[form] = {
            "probs": float(jnp.max(jnp.abs(probs - reference[0]))),
            "state": max(float(jnp.max(jnp.abs(a.astype(jnp.float32) - b.astype(jnp.float32))))
                         for a, b in zip(after, reference[1])),
            "grads": max(float(jnp.max(jnp.abs(a - b)) / (jnp.max(jnp.abs(b)) + 1e-12))
                         for a, b in zip(grads, reference[2])),
            "inference": float(jnp.max(jnp.abs(inference - reference[3]))),
        }
    return out


def convolutions(name: str) -> dict:
    """What one lowered training step (forward and backward) asks of XLA, per formulation: its convolutions,
    how many of them are grouped (one group per member: ``feature_group_count`` or ``batch_group_count`` > 1),
    and its matrix products."""
    model, trainable, non_trainable = members(name)
    shape, classes, _ = MODELS[name]
    x = jnp.zeros((MEMBERS, BATCH, *shape), jnp.uint8)
    labels = jnp.zeros((MEMBERS, BATCH), jnp.int32)
    out = {}
    for form in stacked.CONV_FORMS:
        net = stacked.StackedNet(model, form)

        def loss(trainable):
            probs, _ = net(trainable, non_trainable, x, training=True)
            return jnp.sum(stacked._member_losses(probs, labels, classes))

        text = jax.jit(jax.grad(loss)).lower(trainable).as_text()
        lines = [line for line in text.splitlines() if "stablehlo.convolution" in line]
        grouped = [line for line in lines if "feature_group_count = 1 " not in line + " "
                   or "batch_group_count = 1 " not in line + " "]
        out[form] = {"convolutions": len(lines), "grouped": len(grouped),
                     "dots": text.count("stablehlo.dot_general")}
    return out


def train(form: str, folder: Path) -> dict:
    """Two CIFAR-10 CNNs (BatchNorm, 'same' convolutions) trained side by side for 3 epochs on 96 synthetic
    images with the paper's Adam and callbacks, through the lock-step engine's trainer: the histories and
    final weights, to compare formulations."""
    from core.models.optim import stage1_optimizer
    from core.protocol.config import Protocol
    from core.training.lockstep import Trainer

    protocol = Protocol(dataset="cifar10", epochs=3, patience=2)
    model, trainable, non_trainable = members("cifar10")
    shape, classes, _ = MODELS["cifar10"]
    rng = np.random.default_rng(1)
    y = rng.integers(0, classes, 128)
    x = rng.integers(0, 80, (128, *shape)).astype(np.uint8)
    x[np.arange(128), :, :, y % 3] += 120  # learnable: the class lifts a colour channel
    optimizer = stage1_optimizer(protocol)
    optimizer.build(model.trainable_variables)
    weights = [([t[m] for t in trainable], [n[m] for n in non_trainable]) for m in range(2)]
    cohort = stacked.Cohort.create("stage1", model, optimizer, [0, 1], [0, 1], [0, 0], weights, protocol)
    Trainer([cohort], stacked.DeviceSplit.upload([x[:96]], [y[:96]]), stacked.DeviceSplit.upload([x[96:]], [y[96:]]),
            classes, protocol, folder / f"{form}.npz", {"form": form}, lambda event: None, lambda: False,
            form).run()
    return {"history": [{k: v for k, v in h.items() if k != "seconds"} for h in cohort.history],
            "weights": [[np.asarray(a).tolist() for a in cohort.member_weights(m)[0][-2:]] for m in range(2)]}


def main() -> None:
    import tempfile

    folder = Path(tempfile.mkdtemp())
    print(json.dumps({"compare": {name: compare(name) for name in ("fashion-mnist", "dogs-cats")},
                      "hlo": convolutions("dogs-cats"),
                      "train": {form: train(form, folder) for form in stacked.CONV_FORMS},
                      "profile": profile()}))


def profile() -> list[dict]:
    """bench.gpu_profile's timed variants, at 2 members and 2 steps (the code, not a measurement)."""
    from bench import gpu_profile

    gpu_profile.MEMBERS, gpu_profile.STEPS = 2, 2
    return gpu_profile._variants("fashion-mnist", ["vmap", "gemm"], "float32", False)


if __name__ == "__main__":
    main()
