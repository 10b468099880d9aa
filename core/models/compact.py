"""Compact model files: a Keras model's architecture with its weights in float16, loaded back as float32.

Why: ``reference/`` ships inside the repository, which must stay under 60 MB with all four datasets, and the
Dogs & Cats CNN alone is 52 MB in float32. Storing the weights in half precision halves every shipped model.
On load they are cast back to float32, so the network computes exactly as it was trained, only with weights
rounded to 11 significant bits; :func:`core.app.reference.build_bundle` measures how often the compact model's
answer agrees with the float32 model's on the real test set and ships stage one in float32 instead when it
is below :data:`MIN_AGREEMENT` (possible for a barely trained model whose answers are near-ties).

Format: one ``.npz`` (read with ``allow_pickle=False``, so loading runs no code) holding ``architecture``, the
model's JSON configuration (``keras.Model.to_json``, read back with Keras' safe-mode deserialiser), and
``w0000``, ``w0001``, ... in ``Model.get_weights()`` order. Floating weights are stored as float16; anything
else (a random layer's integer seed state) as it is.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

SUFFIX = ".npz"
MIN_AGREEMENT = 0.995
"""Share of test images on which the compact model must give the float32 model's top class."""
_FLOAT16_MAX = float(np.finfo(np.float16).max)


def save(model: Any, path: str | Path) -> Path:
    """Write ``model`` as a compact ``.npz``; raises ValueError if a weight does not fit in float16."""
    path = Path(path)
    arrays: dict[str, np.ndarray] = {"architecture": np.array(model.to_json())}
    for i, weight in enumerate(model.get_weights()):
        weight = np.asarray(weight)
        if np.issubdtype(weight.dtype, np.floating):
            if weight.size and float(np.max(np.abs(weight))) > _FLOAT16_MAX:
                raise ValueError(f"weight {i} of {model.name} exceeds float16's range; ship it in float32")
            weight = weight.astype(np.float16)
        arrays[f"w{i:04d}"] = weight
    with open(path, "wb") as f:
        np.savez_compressed(f, **arrays)
    return path


def load(path: str | Path) -> Any:
    """The model saved by :func:`save`, with float32 weights (uncompiled).

    Built with zero initialisers and filled one weight at a time: drawing the Dogs & Cats CNN's 13 M random
    initial weights only to overwrite them, and holding every weight twice more (Keras' ``get_weights``, then
    the converted list ``set_weights`` takes) raised a process's peak memory by 254 MB to load the shipped
    Dogs & Cats CNN (52 MB of weights); this way by 179 MB, of which 57 MB stay (docs/reference.md, the demo)."""
    import json

    import keras

    with np.load(path, allow_pickle=False) as stored:
        config = _without_initialisers(json.loads(str(stored["architecture"])))
        model = keras.models.model_from_json(json.dumps(config))
        names = sorted(n for n in stored.files if n.startswith("w"))
        if len(names) != len(model.weights):
            raise ValueError(f"{Path(path).name} holds {len(names)} weights for a model with {len(model.weights)}")
        for variable, name in zip(model.weights, names):
            value = stored[name]
            if tuple(value.shape) != tuple(variable.shape):
                raise ValueError(f"{Path(path).name}: weight {name} has shape {value.shape}, the model's "
                                 f"{variable.path} {tuple(variable.shape)}")
            variable.assign(keras.ops.cast(value, variable.dtype))  # cast as a tensor: one float32 copy fewer
    return model


_ZEROS = {"module": "keras.initializers", "class_name": "Zeros", "config": {}, "registered_name": None}


def _without_initialisers(config: Any) -> Any:
    """A model configuration with every ``*_initializer`` replaced by zeros (the stored weights replace them)."""
    if isinstance(config, dict):
        return {key: _ZEROS if key.endswith("_initializer") and isinstance(value, dict)
                else _without_initialisers(value) for key, value in config.items()}
    if isinstance(config, list):
        return [_without_initialisers(item) for item in config]
    return config


class UnloadableModel(ValueError):
    """A model file Keras' safe loader refuses or cannot read (a class it does not know, a damaged archive);
    the message is one line that names the file."""


def load_model_file(path: str | Path) -> Any:
    """A stage-one model or head from a ``.keras`` file or a compact ``.npz``, uncompiled.

    Why the wrapping: a crafted file (its configuration naming ``os.system``, say) is refused by Keras' safe
    mode with a long TypeError that quotes the whole configuration; the caller gets one line instead."""
    import zipfile

    import keras

    path = Path(path)
    try:
        if path.suffix == SUFFIX:
            return load(path)
        return keras.saving.load_model(path, compile=False)
    except (TypeError, ValueError, KeyError, AttributeError, OSError, zipfile.BadZipFile) as exc:
        reason = str(exc).split(". ")[0].strip().rstrip(".") or type(exc).__name__
        raise UnloadableModel(f"{path.name} cannot be loaded as a model ({reason[:200]}); it was not "
                              "used") from exc


def agreement(a: np.ndarray, b: np.ndarray) -> float:
    """Share of rows on which two probability arrays pick the same class."""
    return float(np.mean(np.argmax(a, axis=-1) == np.argmax(b, axis=-1))) if len(a) else float("nan")
