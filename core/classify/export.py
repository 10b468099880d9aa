"""Take a model set away: one Keras model with three outputs, as a ``.keras`` file and as a LiteRT ``.tflite``.

The exported model is Classify's own: input ``pixels``, a batch of ``HxWxC`` images holding uint8 values as
float32 (0-255; the model rescales them itself), outputs in the order of :data:`OUTPUTS`: stage one's class
probabilities, then the Adam head's and the SGD head's on stage one's features, named as
:data:`OUTPUT_NAMES` says. Augmentation layers, if the network has them, are inactive at inference and pass the
image through.

Why named outputs: a ``.tflite`` file lists its output tensors in the converter's order, which put the Adam
head first (Adam, stage one, SGD) while the page said stage one, Adam, SGD. The LiteRT file's signature now
names them, and the names sort into the page's order, so any tool that lists them by name agrees with it.

The ``.tflite`` file comes from Keras' own ``Model.export(path, format="litert")``, which needs the TensorFlow
backend. Under another backend the ``.keras`` file is converted in a child process started with
``KERAS_BACKEND=tensorflow`` (``python -m core.classify.export IN.keras OUT.tflite``).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any

import numpy as np

from ..protocol.vocabulary import METHODS

OUTPUTS = METHODS
OUTPUT_NAMES = {"stage1": "stage_one", "adam": "stage_two_adam", "sgd": "stage_two_sgd"}
"""Each output's name in both files; alphabetical order is :data:`OUTPUTS`' order (a LiteRT signature sorts
its outputs by name)."""
CONVERT_TIMEOUT_S = 300
_ONE_CONVERSION = threading.Lock()
"""A conversion holds a few hundred MB for a large model; the server runs one at a time."""


def export_model(models: Any, by_name: bool = False) -> Any:
    """The three-output model (no features output) sharing the loaded model set's layers, each output named
    by :data:`OUTPUT_NAMES`: a list in :data:`OUTPUTS` order, or with ``by_name`` a dict (what a LiteRT
    signature keeps the names of)."""
    import keras

    fused = models.fused
    named = {OUTPUT_NAMES[m]: keras.layers.Identity(name=OUTPUT_NAMES[m])(t)
             for m, t in zip(OUTPUTS, fused.outputs[: len(OUTPUTS)])}
    return keras.Model(fused.inputs, named if by_name else list(named.values()), name="two_stage_classifier")


def keras_bytes(models: Any) -> bytes:
    """The model set as one ``.keras`` file."""
    with tempfile.TemporaryDirectory(prefix="export_") as tmp:
        path = Path(tmp) / "model.keras"
        with models.lock:
            export_model(models).save(path)
        return path.read_bytes()


def tflite_bytes(models: Any) -> bytes:
    """The model set as one LiteRT ``.tflite`` file."""
    import keras

    with _ONE_CONVERSION, tempfile.TemporaryDirectory(prefix="export_") as tmp:
        out = Path(tmp) / "model.tflite"
        if keras.backend.backend() == "tensorflow":
            with models.lock:
                export_model(models, by_name=True).export(str(out), format="litert", verbose=False)
        else:
            source = Path(tmp) / "model.keras"
            source.write_bytes(keras_bytes(models))
            _convert_in_child(source, out)
        return out.read_bytes()


def _convert_in_child(source: Path, out: Path) -> None:
    env = {**os.environ, "KERAS_BACKEND": "tensorflow", "TF_CPP_MIN_LOG_LEVEL": "3"}
    done = subprocess.run([sys.executable, "-m", "core.classify.export", str(source), str(out)], env=env,
                          capture_output=True, text=True, timeout=CONVERT_TIMEOUT_S,
                          cwd=Path(__file__).resolve().parents[2])
    if done.returncode != 0 or not out.is_file():
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise RuntimeError(f"the LiteRT conversion failed: {last}")


def tflite_predict(model: bytes, x: np.ndarray) -> list[np.ndarray]:
    """Run a ``.tflite`` file's content on ``x`` (one or more images) with the LiteRT interpreter that ships
    with TensorFlow; returns the outputs in :data:`OUTPUTS` order."""
    import warnings

    import tensorflow as tf

    with warnings.catch_warnings():  # "use ai_edge_litert": not installed; TensorFlow's own still works
        warnings.simplefilter("ignore")
        interpreter = tf.lite.Interpreter(model_content=model)
    runner = interpreter.get_signature_runner()
    (input_name,) = interpreter.get_signature_list()[next(iter(interpreter.get_signature_list()))]["inputs"]
    rows = [runner(**{input_name: np.asarray(row[None], dtype=np.float32)}) for row in np.asarray(x)]
    names = ([OUTPUT_NAMES[m] for m in OUTPUTS] if set(OUTPUT_NAMES.values()) == set(rows[0])
             else sorted(rows[0], key=_output_index))
    return [np.concatenate([r[name] for r in rows]) for name in names]


def _output_index(name: str) -> int:
    """Signature outputs are named ``output_0``, ``output_1``, ... in the model's output order."""
    return int(name.rsplit("_", 1)[-1]) if name.rsplit("_", 1)[-1].isdigit() else 0


def main(argv: list[str]) -> int:
    """``python -m core.classify.export IN.keras OUT.tflite`` (run with ``KERAS_BACKEND=tensorflow``)."""
    import keras

    source, out = argv
    model = keras.saving.load_model(source, compile=False)
    named = keras.Model(model.inputs, dict(zip(model.output_names, model.outputs)), name=model.name)
    named.export(out, format="litert", verbose=False)  # a dict: the signature keeps the outputs' names
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
