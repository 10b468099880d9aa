"""The baseline: the paper's protocol as a plain, straightforward Keras script, the way a tutorial writes it.

Nothing here is tuned. Pixels are converted to float32 and divided by 255 in numpy (so the data costs 4x its
uint8 size), the model is a ``Sequential`` of the same layers as :mod:`core.models.models` (without the in-model
``Rescaling``, since the data is already scaled), ``model.fit`` runs once per repeat with EarlyStopping and
ModelCheckpoint on ``val_accuracy`` (patience 10), and inference goes through ``model.predict`` at its default
batch size. Stage two extracts the last hidden layer's output and trains a fresh softmax layer with Adam and
with SGD + momentum, with the same callbacks.

The benchmark (:mod:`bench.run`) measures our pipeline against this script in the same process, and
``tests/test_bench_equivalence.py`` checks that both reach the same accuracy band.

    python -m bench.reference --repeats 2 --epochs 3 --limit 2000
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402

from core.models.models import ARCHITECTURES, FEATURE_LAYER  # noqa: E402
from core.protocol.words import count_text  # noqa: E402


def preprocess(x: np.ndarray) -> np.ndarray:
    """What every tutorial does: float32 in [0, 1], in numpy."""
    return x.astype("float32") / 255.0


def build_model(architecture: str, input_shape, num_classes: int) -> keras.Model:
    """The same layers as :func:`core.models.models.build_stage1`, minus the in-model rescaling (data is pre-scaled)."""
    return keras.Sequential([keras.Input(shape=tuple(input_shape)), *ARCHITECTURES[architecture](num_classes)],
                            name=f"reference_{architecture.replace('-', '_')}")


def build_head(feature_dim: int, num_classes: int) -> keras.Model:
    return keras.Sequential([keras.Input(shape=(feature_dim,)), keras.layers.Dense(num_classes, activation="softmax")])


def callbacks(path: str, patience: int = 10) -> list:
    return [keras.callbacks.EarlyStopping(monitor="val_accuracy", mode="max", patience=patience),
            keras.callbacks.ModelCheckpoint(path, monitor="val_accuracy", mode="max", save_best_only=True,
                                            save_weights_only=True)]


def accuracy(model: keras.Model, x: np.ndarray, y: np.ndarray) -> float:
    return float(np.mean(np.argmax(model.predict(x, verbose=0), axis=1) == y))


def run_repeat(x_train, y_train, x_val, y_val, x_test, y_test, *, architecture: str, num_classes: int,
               seed: int, epochs: int = 50, batch_size: int = 32, patience: int = 10,
               workdir: str | None = None) -> dict:
    """One repeat of the protocol on already-preprocessed float arrays; returns test accuracies and times."""
    workdir = workdir or tempfile.mkdtemp(prefix="bench_ref_")
    onehot = {name: keras.utils.to_categorical(y, num_classes)
              for name, y in (("train", y_train), ("val", y_val))}
    out: dict = {"seed": seed}

    started = time.perf_counter()
    keras.utils.set_random_seed(seed)
    model = build_model(architecture, x_train.shape[1:], num_classes)
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="categorical_crossentropy", metrics=["accuracy"])
    history = model.fit(x_train, onehot["train"], validation_data=(x_val, onehot["val"]), epochs=epochs,
                        batch_size=batch_size, shuffle=True, verbose=0,
                        callbacks=callbacks(str(Path(workdir) / "stage1_best.weights.h5"), patience))
    out["stage1_epochs"] = len(history.history["val_accuracy"])
    out["stage1_test_accuracy"] = accuracy(model, x_test, y_test)  # last-epoch weights, like ours
    out["stage1_seconds"] = time.perf_counter() - started

    started = time.perf_counter()
    extractor = keras.Model(model.inputs, model.get_layer(FEATURE_LAYER).output)
    feats = {name: extractor.predict(x, verbose=0) for name, x in (("train", x_train), ("val", x_val),
                                                                   ("test", x_test))}
    for i, (name, optimizer) in enumerate((("adam", keras.optimizers.Adam(1e-3)),
                                           ("sgd", keras.optimizers.SGD(0.01, momentum=0.9)))):
        keras.utils.set_random_seed(seed * 1000 + i + 1)
        head = build_head(feats["train"].shape[1], num_classes)
        head.compile(optimizer=optimizer, loss="categorical_crossentropy", metrics=["accuracy"])
        history = head.fit(feats["train"], onehot["train"], validation_data=(feats["val"], onehot["val"]),
                           epochs=epochs, batch_size=batch_size, shuffle=True, verbose=0,
                           callbacks=callbacks(str(Path(workdir) / f"{name}_best.weights.h5"), patience))
        out[f"{name}_epochs"] = len(history.history["val_accuracy"])
        out[f"{name}_test_accuracy"] = accuracy(head, feats["test"], y_test)
    out["stage2_seconds"] = time.perf_counter() - started
    return out


def main(argv: list[str] | None = None) -> int:
    from core.protocol.config import Protocol
    from core.data.datasets import load_dataset

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", default="fashion-mnist", choices=["fashion-mnist", "cifar10"])
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--epochs", type=int, default=50)
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--test-limit", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    protocol = Protocol(dataset=args.dataset, epochs=args.epochs, limit=args.limit, test_limit=args.test_limit,
                        seed=args.seed)
    data = load_dataset(protocol)  # same split as ours, then the tutorial's float conversion
    x = {s: preprocess(getattr(data, f"x_{s}")) for s in ("train", "val", "test")}
    started = time.perf_counter()
    for r in range(args.repeats):
        result = run_repeat(x["train"], data.y_train, x["val"], data.y_val, x["test"], data.y_test,
                            architecture=protocol.model_id, num_classes=data.num_classes,
                            seed=protocol.seed + r, epochs=args.epochs)
        print(json.dumps(result), flush=True)
    print(f"total {time.perf_counter() - started:.1f} s for {count_text(args.repeats, 'repeat')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
