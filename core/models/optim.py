"""Stage one's optimizer, as the protocol says: the paper's Adam, report 003's SGD, report 004's RMSprop.

Weight decay here is PyTorch's (report 003 trained with ``torch.optim.SGD(..., weight_decay=0.05)``): the
decay term is added to the gradient, ``g + wd * w``, before momentum, so momentum accumulates it. Keras' own
``weight_decay`` argument is decoupled (``w -= lr * wd * w`` after the step), which with momentum 0.99 acts
about a hundred times more weakly; the two are not interchangeable, so the coupled form is implemented with the
documented custom-optimizer hook (``update_step``). The default protocol gets exactly ``Adam(adam_lr)``.
"""

from __future__ import annotations

import keras
from keras import ops

from ..protocol.config import Protocol


class _CoupledDecay:
    """Mixin: add ``decay * variable`` to each gradient before the optimizer's own update rule."""

    def __init__(self, *args, decay: float = 0.0, **kwargs):
        super().__init__(*args, **kwargs)
        self.decay = float(decay)

    def update_step(self, gradient, variable, learning_rate):
        gradient = ops.add(ops.cast(gradient, variable.dtype), ops.multiply(variable, ops.cast(self.decay,
                                                                                               variable.dtype)))
        super().update_step(gradient, variable, learning_rate)

    def get_config(self):
        return {**super().get_config(), "decay": self.decay}


@keras.saving.register_keras_serializable(package="two_stage")
class CoupledSGD(_CoupledDecay, keras.optimizers.SGD):
    """``keras.optimizers.SGD`` with PyTorch's coupled weight decay."""


@keras.saving.register_keras_serializable(package="two_stage")
class CoupledAdam(_CoupledDecay, keras.optimizers.Adam):
    """``keras.optimizers.Adam`` with PyTorch's coupled weight decay (``torch.optim.Adam(weight_decay=...)``)."""


@keras.saving.register_keras_serializable(package="two_stage")
class CoupledRMSprop(_CoupledDecay, keras.optimizers.RMSprop):
    """``keras.optimizers.RMSprop`` with coupled weight decay."""


def stage1_optimizer(protocol: Protocol) -> keras.optimizers.Optimizer:
    """A fresh optimizer for stage one."""
    lr = protocol.stage1_lr
    decay = protocol.weight_decay
    if protocol.optimizer == "sgd":
        return CoupledSGD(lr, momentum=protocol.momentum, decay=decay) if decay else \
            keras.optimizers.SGD(lr, momentum=protocol.momentum)
    if protocol.optimizer == "rmsprop":
        return CoupledRMSprop(lr, decay=decay) if decay else keras.optimizers.RMSprop(lr)
    return CoupledAdam(lr, decay=decay) if decay else keras.optimizers.Adam(lr)
