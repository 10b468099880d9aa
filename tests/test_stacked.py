"""core.training.stacked: the stacked formulations compute the paper's models exactly as Keras does, and the
``gemm`` one asks XLA for no grouped convolution (the GPU-slow kind) in either direction."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from core.protocol.config import Protocol
from core.training.stacked import CONV_FORMS, Monitors

pytest.importorskip("jax", reason="the stacked engine runs on JAX")
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def probe() -> dict:
    env = {**os.environ, "KERAS_BACKEND": "jax", "CUDA_VISIBLE_DEVICES": "", "TF_CPP_MIN_LOG_LEVEL": "3"}
    proc = subprocess.run([sys.executable, str(ROOT / "tests" / "stacked_probe.py")], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.slow
@pytest.mark.parametrize("model", ["fashion-mnist", "dogs-cats"])
def test_every_formulation_computes_the_keras_model(probe, model):
    """Against the whole Keras model mapped over members (Fashion-MNIST: an even kernel with 'same' padding;
    Dogs & Cats: augmentation, BatchNorm, valid convolutions; CIFAR-10's 'same' convolutions and BatchNorm are
    trained in the test below): the same probabilities (training and inference
    mode, with augmentation and dropout drawn from each member's own seed state), the same BatchNorm statistics
    and seed states after the step, the same gradients, up to float32 rounding of long sums."""
    found = probe["compare"][model]
    assert found["vmap"] == {"probs": 0.0, "state": 0.0, "grads": 0.0, "inference": 0.0}
    for form in CONV_FORMS:
        assert found[form]["probs"] < 1e-4 and found[form]["inference"] < 1e-5, (form, found[form])
        assert found[form]["state"] < 1e-5, (form, found[form])
        assert found[form]["grads"] < 1e-3, (form, found[form])


@pytest.mark.slow
def test_the_gemm_formulation_lowers_to_matrix_products_only(probe):
    """The finding of the GPU profile (bench/README.md): mapping a convolution over members makes XLA emit
    grouped convolutions, forward and backward; ``gemm`` has none at all, ``loop`` only ungrouped ones."""
    hlo = probe["hlo"]
    assert hlo["vmap"]["grouped"] == hlo["vmap"]["convolutions"] >= 6  # 3 forward + the backward ones
    assert hlo["gemm"]["convolutions"] == 0 and hlo["gemm"]["dots"] > hlo["vmap"]["dots"]
    assert hlo["loop"]["grouped"] == 0 and hlo["loop"]["convolutions"] > 0


@pytest.mark.slow
def test_same_seeds_train_the_same_numbers_in_every_formulation(probe):
    """Two CIFAR-10 CNNs trained 3 epochs by the lock-step trainer: the same validation accuracy every epoch,
    losses and weights apart only by rounding (Adam amplifies float32 differences in near-zero gradients)."""
    runs = probe["train"]
    for form in CONV_FORMS:
        for member, (ours, ref) in enumerate(zip(runs[form]["history"], runs["vmap"]["history"])):
            assert ours["val_accuracy"] == ref["val_accuracy"], (form, member)
            assert ours["epoch"] == ref["epoch"]
            np.testing.assert_allclose(ours["loss"], ref["loss"], rtol=0.02)
        for ours, ref in zip(runs[form]["weights"], runs["vmap"]["weights"]):
            for a, b in zip(ours, ref):
                np.testing.assert_allclose(a, b, atol=1e-2)


def test_the_callbacks_follow_keras_rules_without_jax():
    """Monitors alone (numpy): a curve that improves by less than ReduceLROnPlateau's min_delta still counts as
    an improvement for EarlyStopping/ModelCheckpoint (min_delta 0) but not for the learning rate."""
    protocol = Protocol(epochs=8, patience=3, reduce_lr=True, lr_patience=1, min_lr=2e-4, adam_lr=1e-3)
    monitors = Monitors.start(protocol, 1)
    lr = np.array([1e-3])
    decisions = []
    for epoch, value in enumerate([0.5, 0.50005, 0.50009, 0.4, 0.4, 0.4]):
        improved, lr = monitors.end_epoch(epoch, np.array([value]), lr)
        decisions.append((bool(improved[0]), float(lr[0]), bool(monitors.stopped[0])))
    assert [d[0] for d in decisions] == [True, True, True, False, False, False]
    assert [d[1] for d in decisions] == pytest.approx([1e-3, 5e-4, 2.5e-4, 2e-4, 2e-4, 2e-4])
    assert [d[2] for d in decisions] == [False, False, False, False, False, True]


def test_an_unknown_formulation_is_one_line(monkeypatch):
    from core.training import stacked

    monkeypatch.setenv(stacked.CONV_FORM_VAR, "winograd")
    with pytest.raises(stacked.EngineUnavailable, match="not one of vmap, gemm, loop"):
        stacked.conv_form()
    monkeypatch.delenv(stacked.CONV_FORM_VAR)
    assert stacked.conv_form() == "vmap"


def test_a_split_of_chosen_rows_per_member_pads_like_an_uploaded_one():
    """DeviceSplit.take (the BatchNorm sample-size readings): member m gets rows[m] of its own source, padded
    to the inference batch with label -1."""
    jnp = pytest.importorskip("jax.numpy")
    from core.training.record import EVAL_BATCH
    from core.training.stacked import DeviceSplit

    x = [np.arange(10 * 2).reshape(10, 2).astype(np.uint8) + 100 * s for s in range(2)]
    y = [np.arange(10) + 10 * s for s in range(2)]
    split = DeviceSplit.upload(x, y)
    subset = split.take(np.array([1, 0, 1]), np.array([[0, 3, 9], [2, 4, 5], [1, 1, 2]]))
    assert subset.n == 3 and subset.x.shape == (3, EVAL_BATCH, 2)
    assert np.asarray(subset.y)[:, :3].tolist() == [[10, 13, 19], [2, 4, 5], [11, 11, 12]]
    assert np.all(np.asarray(subset.y)[:, 3:] == -1)
    assert np.asarray(subset.x)[0, 1].tolist() == [106, 107] and isinstance(subset.x, jnp.ndarray)


@pytest.mark.slow
def test_the_gpu_profile_times_each_formulation_and_counts_the_arithmetic(probe):
    """bench/gpu_profile.py (the GPU session's first measurement), run here at 2 members and 2 steps: one row
    per formulation with its time and the model's multiply-adds (the Fashion-MNIST CNN: 3.48 million per
    image, the issue's ~3.5 M)."""
    rows = probe["profile"]
    assert [row["form"] for row in rows] == ["vmap", "gemm"]
    assert {row["macs_per_image"] for row in rows} == {3_482_240}
    assert all(row["ms_per_step"] > 0 and row["images_per_s"] > 0 and row["compile_s"] > 0 for row in rows)
