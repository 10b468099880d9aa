"""Every architecture's parameter count as its source publishes it: built at the source's input and class count.

Why a module of its own: :func:`core.models.models.parameter_counts` counts a model already built; this one
builds the architecture the way its paper or report describes it (a frozen backbone is the backbone plus the
new final layer), so that ``python -m core architectures`` and the Related reports page compare like with like.
It sits above :mod:`core.models.models`, which imports the backbones and report models it dispatches to.
"""

from __future__ import annotations

from ..protocol.arch_spec import info
from . import backbones
from .models import build_stage1, parameter_counts


def source_parameter_counts(architecture: str) -> dict[str, int]:
    """Total/trainable/non-trainable parameters at the source's input; a frozen backbone's count is the
    backbone's (frozen) plus the new final layer's."""
    arch = info(architecture)
    if not arch.frozen:
        return parameter_counts(build_stage1(architecture, arch.input_shape, arch.num_classes))
    backbone = backbones.build_backbone(architecture, None)
    dim = int(backbone.output_shape[-1])
    head = parameter_counts(build_stage1(architecture, (dim,), arch.num_classes))
    frozen = int(backbone.count_params())
    return {"total": frozen + head["total"], "trainable": head["trainable"],
            "non_trainable": frozen + head["non_trainable"]}
