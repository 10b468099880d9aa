"""Speed benchmark: our pipeline against the plain Keras baseline (:mod:`bench.reference`), same run, same machine.

    python -m bench.run [--quick] [--cases 1,2,3,4,5,6,7] [--out bench/out/results.json]

Every figure is a ratio against a reference measured in the same process, interleaved (A B B A ...) where
possible, because absolute timings on a shared machine drift. Cases:

1. stage-one training throughput (images/s per epoch, validation included) of the Fashion-MNIST and CIFAR-10
   models: ours (uint8 data, in-model rescaling, our callbacks incl. backup and epoch log) vs the reference
   (float32 /255 in numpy, EarlyStopping + ModelCheckpoint);
2. stage two (feature extraction + both heads, fit and evaluation) as a share of stage one, projected to the
   full Fashion-MNIST protocol from steady-state per-image costs measured on subsets;
3. classify latency (bytes -> three probability vectors), p50/p95, 12 MP JPEG and 128x128 PNG;
4. peak memory of loading a dataset (fresh subprocess each), per image, vs raw uint8 size;
5. app: ``streamlit run`` to first page served; Results page warm rerun (AppTest);
6. GPU only (KERAS_BACKEND=jax): the full 20-repeat Fashion-MNIST experiment with the lock-step engine vs the
   plain script on the same GPU, and 20 Face Mask repeats; "not measured" rows without a GPU;
7. stage one in bfloat16 (mixed_bfloat16) vs the float32 script, all four models.

Nothing here changes what is computed: batch 32, same model, same callbacks, same epochs (case 7 changes the
compute precision, which is what it measures).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
ROWS: list[dict[str, Any]] = []
FAST_SPE = 32
"""steps_per_execution of the fast path we recommend (results do not depend on it; see bench/README.md)."""


# ------------------------------------------------------------------------------------------------ output

def row(case: int, name: str, figure: float | None, unit: str, reference: float | None = None,
        ratio: float | None = None, target: str = "", ok: bool | None = None, note: str = "") -> None:
    item = {"case": case, "name": name, "figure": None if figure is None else float(figure), "unit": unit,
            "reference": None if reference is None else float(reference),
            "ratio": None if ratio is None else float(ratio), "target": target,
            "pass": None if ok is None else bool(ok), "note": note}
    ROWS.append(item)
    print(f"  [{case}] {name}: {_fmt(figure)} {unit}" + (f"  ref {_fmt(reference)}" if reference is not None
                                                          else "") +
          (f"  ratio {ratio:.3f}" if ratio is not None else "") + (f"  {note}" if note else ""), flush=True)


def skipped(case: int, name: str, why: str) -> None:
    row(case, name, None, "", note=f"skipped: {why}")


def _fmt(value: float | None) -> str:
    if value is None:
        return "-"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 1:
        return f"{value:.2f}"
    return f"{value:.3f}"


def table(rows: list[dict[str, Any]]) -> str:
    head = ["case", "measure", "ours", "unit", "reference", "ratio", "target", "result", "note"]
    body = [[str(r["case"]), r["name"], _fmt(r["figure"]), r["unit"], _fmt(r["reference"]),
             "-" if r["ratio"] is None else f"{r['ratio']:.3f}", r["target"] or "-",
             {True: "PASS", False: "FAIL", None: "-"}[r["pass"]], r["note"]] for r in rows]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(cells) + " |" for cells in body]
    return "\n".join(lines)


def machine() -> dict[str, Any]:
    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "host": socket.gethostname(),
            "platform": platform.platform(), "cpu": cpu, "cores": os.cpu_count(),
            "backend": os.environ.get("KERAS_BACKEND", "tensorflow"), "python": platform.python_version()}
    try:
        info["load_average"] = [round(x, 2) for x in os.getloadavg()]
    except OSError:
        pass
    try:
        import keras

        info["keras"] = keras.__version__
        info["backend"] = keras.backend.backend()
        if info["backend"] == "tensorflow":
            import tensorflow as tf

            info["tensorflow"] = tf.__version__
    except Exception:  # noqa: BLE001
        pass
    return info


# --------------------------------------------------------------------------------------- case 1: training

class _Clock:
    """Two callbacks sharing one clock: the first in the list marks the epoch start, the last its end, so the
    epoch time includes every callback's work (checkpoint, backup, log) and the validation pass."""

    def __init__(self):
        import keras

        clock = self
        self.times: list[float] = []
        self._t0 = 0.0

        class Start(keras.callbacks.Callback):
            def on_epoch_begin(self, epoch, logs=None):
                clock._t0 = time.perf_counter()

        class End(keras.callbacks.Callback):
            def on_epoch_end(self, epoch, logs=None):
                clock.times.append(time.perf_counter() - clock._t0)

        self.start, self.end = Start(), End()


class Trainer:
    """One stage-one (or head) training set-up whose epochs can be timed repeatedly."""

    def __init__(self, label: str, model, x_train, y_train, x_val, y_val, callbacks: Callable[[], list]):
        self.label, self.model, self.callbacks = label, model, callbacks
        self.data = (x_train, y_train, x_val, y_val)
        self.images = len(x_train)
        self.times: list[float] = []

    def epoch(self, record: bool = True) -> float:
        x, y, xv, yv = self.data
        clock = _Clock()
        self.model.fit(x, y, validation_data=(xv, yv), epochs=1, batch_size=32, shuffle=True, verbose=0,
                       callbacks=[clock.start, *self.callbacks(), clock.end])
        if record:
            self.times.append(clock.times[-1])
        return clock.times[-1]

    @property
    def seconds(self) -> float:
        return statistics.median(self.times)


def _reference_trainer(arch: str, x, y, xv, yv, num_classes: int, workdir: Path):
    import keras

    from bench import reference

    keras.utils.set_random_seed(0)
    model = reference.build_model(arch, x.shape[1:], num_classes)
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="categorical_crossentropy", metrics=["accuracy"])
    path = str(workdir / "ref_best.weights.h5")
    return Trainer("reference", model, reference.preprocess(x), keras.utils.to_categorical(y, num_classes),
                   reference.preprocess(xv), keras.utils.to_categorical(yv, num_classes),
                   lambda: reference.callbacks(path))


def _our_callbacks(workdir: Path, stage: str, backup: bool = True) -> Callable[[], list]:
    """The callbacks ``core.training.two_stage._fit`` uses, fresh for each fit (the log starts empty)."""
    from core.protocol.config import Protocol
    from core.training.two_stage import paper_callbacks

    def make() -> list:
        (workdir / f"{stage}_epochs.jsonl").unlink(missing_ok=True)
        return paper_callbacks(Protocol(epochs=1), workdir, stage, backup=backup)
    return make


def _our_trainer(label: str, arch: str, x, y, xv, yv, num_classes: int, workdir: Path,
                 steps_per_execution: int = 1, jit_compile: bool | str = "auto", precision: str = "float32"):
    import keras

    from core.models.models import build_stage1

    keras.utils.set_random_seed(0)
    model = build_stage1(arch, x.shape[1:], num_classes, None, 0, precision)
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="categorical_crossentropy", metrics=["accuracy"],
                  steps_per_execution=steps_per_execution, jit_compile=jit_compile)
    sub = workdir / label.replace(" ", "_")
    sub.mkdir(parents=True, exist_ok=True)
    return Trainer(label, model, x, keras.utils.to_categorical(y, num_classes), xv,
                   keras.utils.to_categorical(yv, num_classes), _our_callbacks(sub, "stage1"))


def interleave(trainers: list[Trainer], rounds: int) -> None:
    """One warm-up epoch each (tracing), then ``rounds`` timed epochs in A B C, C B A, ... order."""
    for t in trainers:
        t.epoch(record=False)
    for r in range(rounds):
        for t in (trainers if r % 2 == 0 else trainers[::-1]):
            t.epoch()


def paired_ratio(t: Trainer, ref: Trainer) -> float:
    """Median over rounds of ours/reference, each pair measured back to back (cancels the other jobs' drift)."""
    return statistics.median(a / b for a, b in zip(t.times, ref.times))


def _fmnist_subset(n_train: int, n_val: int):
    from core.data.datasets import load_fashion_mnist

    raw = load_fashion_mnist()
    return (raw.x_train[:n_train], raw.y_train[:n_train], raw.x_train[n_train:n_train + n_val],
            raw.y_train[n_train:n_train + n_val], 10)


def _cifar_subset(n_train: int, n_val: int):
    """Real CIFAR-10 when it is installed, else uniform uint8 noise of the right shape (the compute is the same)."""
    try:  # only local copies: load_cifar10's last resort is a network download
        from core.data.datasets import KERAS_DATASETS_DIR, _cifar_folder, load_cifar10

        local = [p for p in KERAS_DATASETS_DIR.glob("**/cifar-10-batches-py") if _cifar_folder(p)]
        if not local:
            raise FileNotFoundError("no local CIFAR-10")
        raw = load_cifar10(str(local[0]))
        return (raw.x_train[:n_train], raw.y_train[:n_train], raw.x_train[n_train:n_train + n_val],
                raw.y_train[n_train:n_train + n_val], 10), "real"
    except Exception:  # noqa: BLE001 - any failure: synthetic data
        rng = np.random.default_rng(0)
        n = n_train + n_val
        x = rng.integers(0, 256, size=(n, 32, 32, 3), dtype=np.uint8)
        y = rng.integers(0, 10, size=n)
        return (x[:n_train], y[:n_train], x[n_train:], y[n_train:], 10), "synthetic"


THROUGHPUT: dict[str, dict[str, float]] = {}
"""Case 1's seconds per training image (validation included), reused by case 2."""


def case1(args) -> None:
    print("case 1: stage-one training throughput", flush=True)
    work = Path(tempfile.mkdtemp(prefix="bench_c1_"))
    plans = [("fashion-mnist", args.fm_steps), ("cifar10", args.cifar_steps)]
    for arch, steps in plans:
        n_train = steps * 32
        n_val = n_train // 4  # the protocol's 80/20 split
        if arch == "fashion-mnist":
            data, source = _fmnist_subset(n_train, n_val), "real"
        else:
            data, source = _cifar_subset(n_train, n_val)
        x, y, xv, yv, k = data
        trainers = [_reference_trainer(arch, x, y, xv, yv, k, work),
                    _our_trainer("ours", arch, x, y, xv, yv, k, work)]
        trainers.append(_our_trainer(f"ours spe={FAST_SPE}", arch, x, y, xv, yv, k, work, FAST_SPE))
        if args.xla:
            trainers.append(_our_trainer(f"ours spe={FAST_SPE} xla", arch, x, y, xv, yv, k, work, FAST_SPE, True))
        interleave(trainers, args.rounds)
        ref = trainers[0]
        THROUGHPUT[arch] = {t.label: t.seconds / t.images for t in trainers}
        for t in trainers[1:]:
            ratio = paired_ratio(t, ref)
            row(1, f"{arch} ({source}) stage-1 epoch, {t.label}", t.images / t.seconds, "img/s",
                ref.images / ref.seconds, ratio, "time ratio <= 1.05", ratio <= 1.05,
                f"{steps} steps + {n_val} val; ratio = median of {args.rounds} back-to-back pairs; s/epoch ours "
                f"{[round(s, 2) for s in t.times]} ref {[round(s, 2) for s in ref.times]}")
    shutil.rmtree(work, ignore_errors=True)


# -------------------------------------------------------------------------------------- case 2: stage two

def _time_call(fn: Callable[[], Any], warm: bool = True) -> float:
    if warm:
        fn()
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def case2(args) -> None:
    """Project the full Fashion-MNIST repeat (48k/12k/10k, both stages capped at the same E epochs) from
    steady-state costs measured on subsets: stage one = E epochs + evaluation of last and best weights on all
    three splits; stage two = feature extraction + per head (E epochs + the same two evaluations)."""
    import keras

    from bench import reference
    from core.training import two_stage
    from core.training.record import EVAL_BATCH
    from core.models.models import build_head, build_stage1, feature_extractor

    print("case 2: stage two as a share of stage one (full Fashion-MNIST repeat, projected)", flush=True)
    full = {"train": 48000, "val": 12000, "test": 10000}
    n_all = sum(full.values())
    epochs = 50
    work = Path(tempfile.mkdtemp(prefix="bench_c2_"))
    if "fashion-mnist" not in THROUGHPUT:  # case 1 not run: measure stage one's epoch here
        x, y, xv, yv, k = _fmnist_subset(args.fm_steps * 32, args.fm_steps * 8)
        ts = [_reference_trainer("fashion-mnist", x, y, xv, yv, k, work),
              _our_trainer("ours", "fashion-mnist", x, y, xv, yv, k, work),
              _our_trainer(f"ours spe={FAST_SPE}", "fashion-mnist", x, y, xv, yv, k, work, FAST_SPE)]
        interleave(ts, max(1, args.rounds - 1))
        THROUGHPUT["fashion-mnist"] = {t.label: t.seconds / t.images for t in ts}
    s1 = THROUGHPUT["fashion-mnist"]

    # Inference costs per image: evaluate (ours, batch 256) and feature extraction (ours: predict at 256 on
    # uint8; reference: predict at its default batch on float32).
    n_inf = args.infer_images
    x, y, _, _, k = _fmnist_subset(n_inf, 0)
    onehot = keras.utils.to_categorical(y, k)
    model = build_stage1("fashion-mnist", x.shape[1:], k)
    model.compile(optimizer="adam", loss="categorical_crossentropy", metrics=["accuracy"])
    extractor = feature_extractor(model)
    ref_model = reference.build_model("fashion-mnist", x.shape[1:], k)
    ref_model.compile(optimizer="adam", loss="categorical_crossentropy", metrics=["accuracy"])
    ref_extractor = keras.Model(ref_model.inputs, ref_model.get_layer("features").output)
    xf = reference.preprocess(x)
    costs = {}
    for _ in range(2):  # interleaved twice, keep the faster of each (less disturbed by the other jobs)
        for name, fn in (
            ("eval", lambda: model.evaluate(x, onehot, batch_size=EVAL_BATCH, verbose=0)),
            ("extract", lambda: extractor.predict(x, batch_size=EVAL_BATCH, verbose=0)),
            ("ref_extract", lambda: ref_extractor.predict(xf, verbose=0)),
            ("ref_predict", lambda: ref_model.predict(xf, verbose=0)),
        ):
            t = _time_call(fn) / n_inf
            costs[name] = min(costs.get(name, t), t)

    # Heads: one epoch on features (train + 1/4 as val), current default vs fast path; plus head evaluation.
    n_head = args.head_images
    rng = np.random.default_rng(0)
    f_train = rng.random((n_head, 64), dtype=np.float32)
    f_val = rng.random((n_head // 4, 64), dtype=np.float32)
    y_h = rng.integers(0, k, n_head)
    yv_h = rng.integers(0, k, n_head // 4)
    heads = []
    epoch_steps = -(-n_head // 32)
    for label, spe in (("reference", None), ("ours", 1), ("ours epoch", epoch_steps)):
        keras.utils.set_random_seed(1)
        if spe is None:
            head = reference.build_head(64, k)
            head.compile(optimizer=keras.optimizers.Adam(1e-3), loss="categorical_crossentropy",
                         metrics=["accuracy"])
            cbs = (lambda p=str(work / "h_ref.weights.h5"): reference.callbacks(p))
        else:
            head = build_head(64, k)
            two_stage.compile_model(head, keras.optimizers.Adam(1e-3), spe)
            sub = work / f"head_{spe}"
            sub.mkdir(exist_ok=True)
            cbs = _our_callbacks(sub, "stage2_adam", backup=False)
        heads.append(Trainer(label, head, f_train, keras.utils.to_categorical(y_h, k), f_val,
                             keras.utils.to_categorical(yv_h, k), cbs))
    interleave(heads, args.rounds)
    head_eval = min(_time_call(lambda: heads[1].model.evaluate(f_train, keras.utils.to_categorical(y_h, k),
                                                                batch_size=EVAL_BATCH, verbose=0))
                    for _ in range(2)) / n_head
    head_epoch = {h.label: h.seconds / h.images for h in heads}

    def share(label: str, head_label: str) -> tuple[float, float, float]:
        s1_epoch = s1[label] * full["train"]
        if label == "reference":  # tutorial: predict for test accuracy, features at predict's default batch
            stage1 = epochs * s1_epoch + costs["ref_predict"] * full["test"]
            stage2 = costs["ref_extract"] * n_all + 2 * (epochs * head_epoch[head_label] * full["train"]
                                                         + head_eval * full["test"])
        else:  # run_repeat: evaluate last + best on all splits, extract all splits, same per head
            stage1 = epochs * s1_epoch + 2 * costs["eval"] * n_all
            stage2 = costs["extract"] * n_all + 2 * (epochs * head_epoch[head_label] * full["train"]
                                                     + 2 * head_eval * n_all)
        return stage2 / stage1, stage1, stage2

    ref_share, ref_s1, ref_s2 = share("reference", "reference")
    variants = (("ours, one batch per call", "ours", "ours"),
                (f"ours as core runs it (stage one spe={FAST_SPE}, heads an epoch per call)",
                 f"ours spe={FAST_SPE}", "ours epoch"))
    for title, label, head_label in variants:
        value, st1, st2 = share(label, head_label)
        row(2, f"stage two / stage one, {title}", 100 * value, "%", 100 * ref_share, value / ref_share,
            "<= 5 %", value <= 0.05,
            f"projected full FMNIST repeat, both stages {epochs} epochs: stage one {st1 / 60:.1f} min, stage two "
            f"{st2 / 60:.2f} min (ref {ref_s1 / 60:.1f} / {ref_s2 / 60:.2f}); head epoch "
            f"{1e3 * head_epoch[head_label] * full['train'] / 1500:.2f} ms/step vs ref "
            f"{1e3 * head_epoch['reference'] * full['train'] / 1500:.2f}")
    row(2, "feature extraction, ours (predict @256, uint8)", 1 / costs["extract"], "img/s",
        1 / costs["ref_extract"], costs["extract"] / costs["ref_extract"], "", None,
        "reference: predict at default batch 32 on float32; ratio = time ratio")
    shutil.rmtree(work, ignore_errors=True)


# -------------------------------------------------------------------------------------- case 3: classify

def _test_images() -> dict[str, bytes]:
    import cv2

    h, w = 3000, 4000
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    rng = np.random.default_rng(0)
    img = np.stack([xx / w * 255, yy / h * 255, (xx + yy) / (w + h) * 255], axis=-1)
    img = np.clip(img + rng.normal(0, 12, img.shape), 0, 255).astype(np.uint8)
    ok, jpeg = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 90])
    small = cv2.resize(img, (128, 128), interpolation=cv2.INTER_AREA)
    ok2, png = cv2.imencode(".png", small)
    assert ok and ok2
    return {"12 MP JPEG": jpeg.tobytes(), "128x128 PNG": png.tobytes()}


def _tiny_model_set(arch: str, shape: tuple[int, int, int], folder: Path) -> dict[str, Path]:
    """Untrained models of the real architecture (latency does not depend on the weights)."""
    import keras

    from core.models.models import build_head, build_stage1

    keras.utils.set_random_seed(0)
    stage1 = build_stage1(arch, shape, 10)
    dim = int(stage1.get_layer("features").output.shape[-1])
    paths = {"stage1": folder / f"{arch}_stage1.keras", "adam": folder / f"{arch}_adam.keras",
             "sgd": folder / f"{arch}_sgd.keras"}
    stage1.save(paths["stage1"])
    build_head(dim, 10).save(paths["adam"])
    build_head(dim, 10).save(paths["sgd"])
    return paths


def _reference_classify(models, data: bytes) -> dict[str, np.ndarray]:
    """The tutorial way: decode the whole photo, resize, scale, three ``predict`` calls."""
    import cv2

    h, w, c = models.input_shape
    img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_GRAYSCALE if c == 1 else cv2.IMREAD_COLOR)
    if c == 3:
        img = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
    img = cv2.resize(img, (w, h), interpolation=cv2.INTER_AREA).reshape(h, w, c)
    x = img[None].astype("float32")  # the saved models rescale in-model, so no /255 here
    feats = models.extractor.predict(x, verbose=0)
    return {"stage1": models.stage1.predict(x, verbose=0)[0],
            **{name: head.predict(feats, verbose=0)[0] for name, head in models.heads.items()}}


def case3(args) -> None:
    print("case 3: classify latency", flush=True)
    try:
        from core.classify import classify as cl
    except Exception as exc:  # noqa: BLE001
        skipped(3, "classify latency", f"core.classify.classify not available ({type(exc).__name__})")
        return
    folder = Path(tempfile.mkdtemp(prefix="bench_c3_"))
    images = _test_images()
    n = args.classify_calls
    for arch, shape in (("fashion-mnist", (28, 28, 1)), ("dogs-cats", (128, 128, 3))):
        models = cl.load_models(_tiny_model_set(arch, shape, folder))
        for label, data in images.items():
            pred = cl.classify(models, data)  # warm-up (tracing)
            assert set(pred.probabilities) == {"stage1", "adam", "sgd"}
            _reference_classify(models, data)
            ours, ref = [], []
            calls = ((lambda: cl.classify(models, data), ours), (lambda: _reference_classify(models, data), ref))
            for i in range(n):  # interleaved; the slow reference only on the first ref_calls rounds
                for fn, out in calls[:: 1 if i % 2 else -1]:
                    if out is ref and i >= args.ref_calls:
                        continue
                    started = time.perf_counter()
                    fn()
                    out.append(time.perf_counter() - started)
            limit = 40.0 if "JPEG" in label else 10.0
            p50, p95 = 1e3 * np.percentile(ours, 50), 1e3 * np.percentile(ours, 95)
            r50, r95 = 1e3 * np.percentile(ref, 50), 1e3 * np.percentile(ref, 95)
            row(3, f"classify {label}, {arch} model ({shape[0]}x{shape[1]}x{shape[2]}), p50", p50, "ms", r50,
                p50 / r50, f"<= {limit:.0f} ms", p50 <= limit, f"{n} calls (reference {min(n, args.ref_calls)}); {len(data) / 1e6:.2f} MB file")
            row(3, f"classify {label}, {arch} model, p95", p95, "ms", r95, p95 / r95, "", None, "")
    shutil.rmtree(folder, ignore_errors=True)


# ---------------------------------------------------------------------------------------- case 4: memory

_MEMORY_PROBE = r"""
import json, sys, threading, time
import numpy as np
from core.protocol.config import Protocol
from core.data.datasets import load_dataset
# Anonymous resident memory (heap, arrays): file-backed pages (shared-library code faulted in on first use)
# are not data and would dominate the small folder set.
def anon():
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("RssAnon:"):
                return int(line.split()[1]) * 1024
spec = json.loads(sys.argv[1])
# Decode one image first: OpenCV's/Pillow's one-off buffers and thread pools are not per-image memory.
from core.data.imageio import decode_image
import cv2
decode_image(cv2.imencode(".png", np.zeros((64, 64, 3), np.uint8))[1].tobytes(), size=32)
peak = [0]
stop = threading.Event()
def sample():
    while not stop.is_set():
        peak[0] = max(peak[0], anon())
        time.sleep(0.001)
base = anon()
t = threading.Thread(target=sample, daemon=True); t.start()
data = load_dataset(Protocol(**spec["protocol"]))
arrays = [data.x_train, data.x_val, data.x_test]
if spec["kind"] == "reference":  # the tutorial: float32 /255 copies of every split, uint8 originals dropped
    arrays = [a.astype("float32") / 255.0 for a in arrays]
    del data
peak[0] = max(peak[0], anon())
stop.set(); t.join()
n = sum(len(a) for a in arrays)
print(json.dumps({"delta": peak[0] - base, "final": anon() - base, "images": n,
                  "raw_per_image": int(np.prod(arrays[0].shape[1:]))}))
"""


def _synthetic_folder(root: Path, n: int = 600) -> Path:
    import cv2

    rng = np.random.default_rng(0)
    for i in range(n):
        folder = root / f"class_{i % 2}"
        folder.mkdir(parents=True, exist_ok=True)
        img = cv2.GaussianBlur(rng.integers(0, 256, (160, 200, 3), dtype=np.uint8), (5, 5), 0)
        cv2.imwrite(str(folder / f"img_{i:04d}.png"), img)
    return root


def case4(args) -> None:
    print("case 4: dataset memory", flush=True)
    folder = _synthetic_folder(Path(tempfile.mkdtemp(prefix="bench_c4_")) / "photos", args.folder_images)
    specs = [("fashion-mnist (real, 70k)", {"dataset": "fashion-mnist"}),
             (f"class folder ({args.folder_images} PNGs -> 128x128x3)",
              {"dataset": "folder", "data_path": str(folder)})]
    for label, protocol in specs:
        got = {}
        for kind in ("ours", "reference"):
            proc = subprocess.run([sys.executable, "-c", _MEMORY_PROBE,
                                   json.dumps({"protocol": protocol, "kind": kind})],
                                  cwd=ROOT, capture_output=True, text=True, timeout=600)
            if proc.returncode != 0:
                skipped(4, label, proc.stderr.strip().splitlines()[-1] if proc.stderr else "probe failed")
                break
            got[kind] = json.loads(proc.stdout.strip().splitlines()[-1])
        else:
            ours, ref = got["ours"], got["reference"]
            per, ref_per = ours["delta"] / ours["images"], ref["delta"] / ref["images"]
            raw = ours["raw_per_image"]
            row(4, f"load {label}: peak RSS per image / raw uint8", per / raw, "x raw", ref_per / raw,
                per / ref_per, "<= 1.2 x raw", per / raw <= 1.2,
                f"peak {per:,.0f} B/img (held after load {ours['final'] / ours['images']:,.0f}) vs raw {raw:,} B/img; "
                "anonymous RSS, fresh process; ref: tutorial float32 /255 copy")
    shutil.rmtree(folder.parent, ignore_errors=True)


# -------------------------------------------------------------------------------------------- case 5: app

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def case5(args) -> None:
    print("case 5: app", flush=True)
    if not (ROOT / "app.py").is_file():
        skipped(5, "streamlit start", "app.py not there yet")
        return
    port = _free_port()
    env = {**os.environ, "STREAMLIT_BROWSER_GATHER_USAGE_STATS": "false"}
    started = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "streamlit", "run", "app.py", "--server.headless", "true",
                             "--server.port", str(port)], cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    served = None
    try:
        while time.perf_counter() - started < 120 and proc.poll() is None:
            try:
                with urllib.request.urlopen(f"http://localhost:{port}/", timeout=2) as resp:
                    if resp.status == 200 and resp.read(64):
                        served = time.perf_counter() - started
                        break
            except OSError:
                time.sleep(0.05)
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
    if served is None:
        skipped(5, "streamlit run -> first page served", "server did not answer within 120 s")
    else:
        row(5, "streamlit run -> first page served", served, "s", note="HTTP 200 on / (index page)")
    try:
        from streamlit.testing.v1 import AppTest
    except Exception:  # noqa: BLE001
        skipped(5, "Results page", "streamlit.testing not available")
        return
    # The app's first script run and the Results page, in a fresh interpreter each (AppTest runs in-process).
    probe = r"""
import json, sys, time
from streamlit.testing.v1 import AppTest
out = {}
for name in sys.argv[1:]:
    at = AppTest.from_file(name, default_timeout=300)
    t = time.perf_counter(); at.run(); cold = time.perf_counter() - t
    t = time.perf_counter(); at.run(); warm = time.perf_counter() - t
    out[name] = {"cold": cold, "warm": warm, "exceptions": [str(e.value)[:200] for e in at.exception]}
print(json.dumps(out))
"""
    targets = [p for p in ("app.py", "app_pages/results.py") if (ROOT / p).is_file()]
    proc2 = subprocess.run([sys.executable, "-c", probe, *targets], cwd=ROOT, capture_output=True, text=True,
                           timeout=900)
    if proc2.returncode != 0:
        skipped(5, "AppTest runs", (proc2.stderr.strip().splitlines() or ["failed"])[-1])
        return
    for name, got in json.loads(proc2.stdout.strip().splitlines()[-1]).items():
        note = f"first run {got['cold']:.2f} s" + (f"; exceptions: {got['exceptions']}" if got["exceptions"]
                                                    else "")
        row(5, f"{name} warm rerun (AppTest)", got["warm"], "s", got["cold"], got["warm"] / got["cold"], "", None,
            note + "; reference column = first (cold) run")


# -------------------------------------------------------------------------------------------- case 6: GPU

def _gpu() -> tuple[str | None, str]:
    """The GPU JAX sees (its name), or None and why not."""
    try:
        import jax

        gpus = [d for d in jax.devices() if d.platform == "gpu"]
    except Exception as exc:  # noqa: BLE001 - no JAX, or no GPU plugin
        return None, f"no GPU available (JAX: {type(exc).__name__})"
    if not gpus:
        return None, "no GPU available"
    if os.environ.get("KERAS_BACKEND") != "jax":
        return None, f"a GPU is there ({gpus[0].device_kind}) but the lock-step engine needs KERAS_BACKEND=jax"
    return gpus[0].device_kind, ""


def case6(args) -> None:
    """The paper's full 20-repeat experiment on one GPU: the lock-step engine (all repeats as one JAX program,
    stage one and both heads, records stored) against the plain Keras script on the same GPU, measured on
    ``gpu_ref_repeats`` repeats and scaled (the note says so). Without a GPU: "not measured", never an estimate."""
    print("case 6: full 20-repeat experiments on a GPU (lock-step engine)", flush=True)
    info = machine()
    where = f"{info['date']}, {info['cpu']} x{info['cores']}"
    fmnist = f"{args.gpu_repeats}-repeat Fashion-MNIST experiment, lock-step engine"
    face = f"{args.gpu_repeats}-repeat Face Mask experiment, lock-step engine"
    gpu, why = _gpu()
    if gpu is None:
        row(6, fmnist, None, "s", target="<= 300 s and ratio <= 0.1", note=f"not measured: {why} ({where})")
        row(6, face, None, "s", target="<= 600 s", note=f"not measured: {why} ({where})")
        return
    from core.results.store import RunStore

    work = Path(tempfile.mkdtemp(prefix="bench_c6_"))
    store = RunStore(Path(args.gpu_cache) if args.gpu_cache else work / "cache")
    if "fashion-mnist" in args.gpu_datasets:
        _case6_fashion_mnist(args, store, work, gpu, fmnist)
    if "face-mask" in args.gpu_datasets and not args.face_mask:
        row(6, face, None, "s", target="<= 600 s", note="not measured: no Face Mask data (pass --face-mask PATH)")
    elif "face-mask" in args.gpu_datasets:
        _case6_face_mask(args, store, gpu, face)
    shutil.rmtree(work, ignore_errors=True)


def _require_untrained(store, protocol, repeats: int) -> None:
    """Case 6 times training: a cache that already holds some of the repeats would make it look fast."""
    from core.training.experiment import missing_repeats

    if missing_repeats(store, protocol, repeats) != list(range(repeats)):
        raise ValueError(f"{store.root} already holds repeats of {protocol.describe()}: give case 6 a fresh cache")


def _case6_fashion_mnist(args, store, work: Path, gpu: str, fmnist: str) -> None:
    """The 20-repeat Fashion-MNIST experiment with the lock-step engine, then the plain script's repeats."""
    from bench import reference
    from core.protocol.config import Protocol
    from core.data.datasets import load_dataset
    from core.training.experiment import run_experiment
    from core.protocol.words import count_text

    protocol = Protocol(dataset="fashion-mnist", epochs=args.gpu_epochs, engine="lockstep")
    _require_untrained(store, protocol, args.gpu_repeats)
    data = load_dataset(protocol)
    started = time.perf_counter()
    runs = run_experiment(protocol, args.gpu_repeats, store, data=data)
    ours = time.perf_counter() - started
    x = {s: reference.preprocess(getattr(data, f"x_{s}")) for s in ("train", "val", "test")}
    n_ref = max(1, min(args.gpu_ref_repeats, args.gpu_repeats))
    started = time.perf_counter()
    for r in range(n_ref):
        reference.run_repeat(x["train"], data.y_train, x["val"], data.y_val, x["test"], data.y_test,
                             architecture="fashion-mnist", num_classes=10, seed=r, epochs=args.gpu_epochs,
                             workdir=str(work / f"ref{r}"))
    ref = (time.perf_counter() - started) * args.gpu_repeats / n_ref
    accuracy = np.mean([run["stage1"]["last"]["test_accuracy"] for run in runs])
    row(6, f"{fmnist}, {gpu}", ours, "s", ref, ours / ref, "<= 300 s and ratio <= 0.1",
        ours <= 300 and ours / ref <= 0.1,
        f"reference: the plain Keras script on the same GPU, measured on {count_text(n_ref, 'repeat')} and scaled "
        f"x{args.gpu_repeats / n_ref:g}; ours includes compilation and storing the records; stage-one test "
        f"accuracy mean {accuracy:.4f}")


def _case6_face_mask(args, store, gpu: str, face: str) -> None:
    """The 20-repeat Face Mask experiment with the lock-step engine, in the paper's v1 recipe as shipped (a new
    train/validation/test split for every repeat); timed from loading the images to the stored records."""
    from core.protocol.config import Protocol
    from core.training.experiment import run_experiment

    protocol = Protocol(dataset="face-mask", data_path=args.face_mask, epochs=args.gpu_epochs, resplit=True,
                        engine="lockstep")
    _require_untrained(store, protocol, args.gpu_repeats)
    started = time.perf_counter()
    runs = run_experiment(protocol, args.gpu_repeats, store)
    seconds = time.perf_counter() - started
    accuracy = np.mean([run["stage1"]["last"]["test_accuracy"] for run in runs])
    row(6, f"{face}, {gpu}", seconds, "s", target="<= 600 s", ok=seconds <= 600,
        note=f"new split per repeat; includes loading the images; stage-one test accuracy mean {accuracy:.4f}")


# ------------------------------------------------------------------------------------------ case 7: bfloat16

BF16_TARGETS = {"fashion-mnist": 0.6, "cifar10": None, "dogs-cats": 0.5, "face-mask": 0.5}
"""Time-ratio targets of a bfloat16 stage-one epoch against the float32 script (issue 10; none for CIFAR-10)."""


def _photo_subset(n_train: int, n_val: int, classes: int):
    """128x128x3 uint8 noise in the shape of the Kaggle photo sets (the compute does not depend on content)."""
    rng = np.random.default_rng(0)
    n = n_train + n_val
    x = rng.integers(0, 256, size=(n, 128, 128, 3), dtype=np.uint8)
    y = rng.integers(0, classes, size=n)
    return x[:n_train], y[:n_train], x[n_train:], y[n_train:], classes


def case7(args) -> None:
    """Stage one in bfloat16 (Keras ``mixed_bfloat16``: our model, callbacks and steps per call) against the
    plain float32 Keras script, one epoch at a time, interleaved, for all four models."""
    from core.training import env
    from core.training.two_stage import STEPS_PER_EXECUTION

    units = env.bf16_units()
    print(f"case 7: bfloat16 stage-one epoch (bf16 units: {units or 'none'})", flush=True)
    hardware = (f"bf16 units: {units}" if units else
                "this CPU has no bf16 units (no amx_bf16/avx512_bf16 flag): bfloat16 is emulated in software, "
                "hence slower")
    work = Path(tempfile.mkdtemp(prefix="bench_c7_"))
    for arch, steps in args.bf16_steps.items():
        n_train, n_val = steps * 32, steps * 8
        if arch == "fashion-mnist":
            data, source = _fmnist_subset(n_train, n_val), "real"
        elif arch == "cifar10":
            data, source = _cifar_subset(n_train, n_val)
        else:
            data, source = _photo_subset(n_train, n_val, 3 if arch == "face-mask" else 2), "synthetic 128x128"
        x, y, xv, yv, k = data
        trainers = [_reference_trainer(arch, x, y, xv, yv, k, work),
                    _our_trainer("ours bfloat16", arch, x, y, xv, yv, k, work, STEPS_PER_EXECUTION,
                                 precision="bfloat16")]
        interleave(trainers, args.bf16_rounds)
        ref, ours = trainers
        ratio = paired_ratio(ours, ref)
        target = BF16_TARGETS[arch]
        row(7, f"{arch} ({source}) stage-1 epoch, ours bfloat16 vs reference float32", ours.images / ours.seconds,
            "img/s", ref.images / ref.seconds, ratio, f"time ratio <= {target}" if target else "",
            None if target is None else ratio <= target,
            f"{steps} steps + {n_val} val, no augmentation on either side; ratio = median of {args.bf16_rounds} "
            f"back-to-back pairs; s/epoch ours {[round(t, 2) for t in ours.times]} ref "
            f"{[round(t, 2) for t in ref.times]}; {hardware}")
    shutil.rmtree(work, ignore_errors=True)


# ------------------------------------------------------------------------------------------------- main

CASES = {1: case1, 2: case2, 3: case3, 4: case4, 5: case5, 6: case6, 7: case7}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Speed benchmark against the plain Keras baseline.")
    parser.add_argument("--quick", action="store_true", help="fewer steps and calls (about 8 min on 2 cores)")
    parser.add_argument("--cases", default="1,2,3,4,5,6,7")
    parser.add_argument("--out", default=str(ROOT / "bench" / "out" / "results.json"))
    parser.add_argument("--xla", action="store_true", help="case 1 also times jit_compile=True")
    parser.add_argument("--face-mask", metavar="PATH", help="case 6 on a GPU: the Face Mask folder, for its run")
    parser.add_argument("--gpu-datasets", default="fashion-mnist,face-mask",
                        help="case 6: which 20-repeat experiments to time (comma-separated)")
    parser.add_argument("--gpu-cache", metavar="DIR",
                        help="case 6: keep the experiments' records and models in this (empty) cache, e.g. to "
                             "bundle them, instead of a temporary folder")
    parser.add_argument("--gpu-ref-repeats", type=int, default=2,
                        help="case 6: plain-script repeats measured on the GPU and scaled to the experiment")
    args = parser.parse_args(argv)
    quick = args.quick
    args.fm_steps = 300 if quick else 1500
    args.cifar_steps = 40 if quick else 300
    args.rounds = 4 if quick else 6
    args.infer_images = 4096 if quick else 16384
    args.head_images = 8000 if quick else 48000
    args.classify_calls = 50 if quick else 200
    args.ref_calls = 15 if quick else 50
    args.folder_images = 600
    args.gpu_repeats, args.gpu_epochs = 20, 50
    args.gpu_datasets = [d.strip() for d in args.gpu_datasets.split(",") if d.strip()]
    # Case 7: bfloat16 is emulated (slow) on CPUs without bf16 units, so the photo models get few steps.
    args.bf16_steps = ({"fashion-mnist": 60, "cifar10": 20, "dogs-cats": 6, "face-mask": 6} if quick else
                       {"fashion-mnist": 300, "cifar10": 80, "dogs-cats": 20, "face-mask": 20})
    args.bf16_rounds = 2 if quick else 4

    cases = [int(c) for c in args.cases.split(",") if c.strip()]
    info = machine()
    print(f"bench: {info['date']} {info.get('cpu')} x{info['cores']} backend {info['backend']} "
          f"load {info.get('load_average')}", flush=True)
    started = time.perf_counter()
    for case in cases:
        try:
            CASES[case](args)
        except Exception as exc:  # noqa: BLE001 - one broken case must not hide the others
            skipped(case, f"case {case}", f"error {type(exc).__name__}: {exc}")
    info["seconds"] = round(time.perf_counter() - started, 1)
    info["quick"] = quick
    info["load_average_end"] = [round(x, 2) for x in os.getloadavg()]
    print()
    print(f"{info['date']} · {info['cpu']} · {info['cores']} cores · {info['platform']} · backend "
          f"{info['backend']} (keras {info.get('keras')}) · load {info.get('load_average')} -> "
          f"{info['load_average_end']} · {'quick' if quick else 'full'} · {info['seconds']} s")
    print(table(ROWS))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"machine": info, "rows": ROWS}, indent=1))
    print(f"\nwritten {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
