"""Stage one's optimizers: the paper's Adam by default; report 003's SGD with PyTorch's weight decay."""

from __future__ import annotations

import keras
import numpy as np

from core.protocol.config import Protocol
from core.models.optim import CoupledSGD, stage1_optimizer


def test_the_default_is_exactly_the_papers_adam():
    opt = stage1_optimizer(Protocol())
    assert type(opt) is keras.optimizers.Adam and np.isclose(float(opt.learning_rate), 1e-3)


def test_coupled_weight_decay_is_pytorchs_sgd():
    """torch.optim.SGD(lr, momentum=m, weight_decay=wd): buf = m * buf + (g + wd * w); w -= lr * buf."""
    lr, m, wd = 0.01, 0.99, 0.05
    opt = stage1_optimizer(Protocol(optimizer="sgd", learning_rate=lr, momentum=m, weight_decay=wd))
    assert isinstance(opt, CoupledSGD)
    w = keras.Variable(np.array([1.0, -2.0], dtype="float32"))
    grads = [np.array([0.5, 0.25], dtype="float32"), np.array([-1.0, 0.0], dtype="float32")]
    expected, buf = np.array([1.0, -2.0]), np.zeros(2)
    for g in grads:
        opt.apply([g], [w])
        buf = m * buf + (g + wd * expected)
        expected = expected - lr * buf
    assert np.allclose(w.numpy(), expected, atol=1e-6)
