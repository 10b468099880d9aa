"""What stage one of a repeat trains on, given the repeat's loaded split.

Two options of the related reports change it, in this order:

1. report 003's GAN augmentation (:func:`core.models.gan.with_synthetic`): generated images added to the training split;
2. report 002's frozen backbones (:func:`core.models.backbones.cached_features`): every split's images replaced by the
   backbone's feature vectors, computed once and cached, so stage one is the new final layer on them.

Validation and test images are never generated or altered beyond the backbone's deterministic features, so
every method of a repeat is still scored on the same real images. Without these options the data passes
through untouched (the paper's experiments).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any, Callable

from ..data.datasets import Dataset
from ..models import backbones, gan
from ..protocol.arch_spec import info as arch_info
from ..protocol.config import Protocol

Progress = Callable[[dict[str, Any]], None]


def prepare(data: Dataset, protocol: Protocol, seed: int, workdir: str | Path,
            report: Progress = lambda event: None) -> tuple[Dataset, dict[str, Any] | None]:
    """The dataset stage one trains on, and what the record should say about how it was made (None when
    nothing changed)."""
    made: dict[str, Any] = {}
    data, synthetic = gan.with_synthetic(data, protocol, seed, Path(workdir), report)
    if synthetic is not None:
        made["synthetic"] = synthetic
    if arch_info(protocol.model_id).frozen:
        data, made["backbone"] = backbone_features(data, protocol, Path(workdir), report)
    return data, made or None


def backbone_features(data: Dataset, protocol: Protocol, workdir: Path,
                      report: Progress = lambda event: None) -> tuple[Dataset, dict[str, Any]]:
    """``data`` with each split's images replaced by the frozen backbone's (cached) features."""
    events: list[dict[str, Any]] = []

    def log(event: dict[str, Any]) -> None:
        events.append(event)
        report(event)

    splits = {"train": data.x_train, "val": data.x_val, "test": data.x_test}
    features = backbones.cached_features(protocol.model_id, protocol.weights, splits,
                                         backbones.feature_dir(workdir), log)
    described = {
        "architecture": protocol.model_id, "weights": protocol.weights or "random initialisation",
        "input_size": backbones.INPUT_SIZE, "normalisation": backbones.BACKBONES[protocol.model_id].normalisation,
        "dim": int(features["train"].shape[1]), "image_shape": list(data.input_shape),
        "cached": {e["split"]: e["cached"] for e in events},
        "seconds": float(sum(e["seconds"] for e in events)),
    }
    featured = replace(data, x_train=features["train"], x_val=features["val"], x_test=features["test"],
                       info={**data.info, "features_of": protocol.model_id})
    return featured, described
