"""The shipped reference results: real runs' records and one trained model set per experiment, read-only.

Why: a reader on a fresh clone or a hosted demo must see a real reproduction and classify a photo before
training anything. ``reference/<name>/`` (``fashion-mnist``, ``dogs-cats``, ``face-mask-v1``,
``face-mask-v2``: :func:`bundle_name`) holds

- ``records.json``: every repeat's full record, histories included;
- ``model.json``: which repeat the models come from, their files, the test accuracy of the shipped models, the
  agreement of the compact stage one with the float32 one, and a summary of the out-of-distribution statistics;
- ``stage1.npz`` (stage one, float16 weights: :mod:`core.models.compact`; ``stage1.keras`` in float32 in the rare case
  where float16 would change more than 0.5 % of the test answers), ``head_adam.keras``, ``head_sgd.keras``;
- ``ood.npz``: the statistics of :mod:`core.classify.ood`, computed from the training images at bundle time.

Bundles written before this layout (``stage1.keras``, no ``ood.npz``) are still read.

:func:`build_bundle` (``python -m core bundle``) makes one from a finished experiment in a cache. It validates
everything first, builds into a hidden temporary folder next to the destination and only then swaps it in, so
a failure at any step leaves the bundle that was there untouched.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..models import compact
from ..protocol.config import Protocol
from ..protocol.paper import paper_column
from ..protocol.vocabulary import HEADS, dataset_title
from ..protocol.words import repeat_name, repeats_named
from ..results.store import PROJECT_ROOT, RunStore, export_json

REFERENCE_ENV = "TWO_STAGE_REFERENCE"
REFERENCE_DIR = Path(os.environ.get(REFERENCE_ENV) or PROJECT_ROOT / "reference")
"""The shipped bundles; ``$TWO_STAGE_REFERENCE`` points the app at another folder (a deployment's own bundles,
or a test's)."""
MODEL_FILES = {"stage1": "stage1.npz", "adam": "head_adam.keras", "sgd": "head_sgd.keras"}
LEGACY_MODEL_FILES = {"stage1": "stage1.keras", "adam": "head_adam.keras", "sgd": "head_sgd.keras"}
SIZE_BUDGET_MB = 60.0
"""What ``reference/`` may hold in total: it ships inside the repository."""
ACCURACY_TOLERANCE = 0.01
"""How far the float32 model's test accuracy, measured at bundle time, may be from its record's before the
data is judged not to be the data the run was tested on (a GPU run scored on this CPU may differ slightly)."""
_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")

Report = Callable[[str], None]


# ------------------------------------------------------------------------------------------------ reading

def bundles(root: Path | None = None) -> list[Path]:
    """Shipped bundle folders (hidden folders are bundles being built or replaced, never listed)."""
    root = root or REFERENCE_DIR
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if not p.name.startswith(".") and (p / "records.json").is_file())


def load_runs(bundle: Path) -> list[dict[str, Any]]:
    return json.loads((bundle / "records.json").read_text())


REPORTS_DIR = "reports"
"""``reference/reports/<id>/records.json``: each related report's small plan, records only (every experiment
of the plan in one file). Kept apart from the bundles above, which are the paper's experiments: the Related
reports page reads these, the Overview and Results pages do not."""


def report_runs(report_id: str, root: Path | None = None) -> list[dict[str, Any]]:
    """Every shipped record of a related report's small plan (several experiments), or [] when none ships."""
    file = (root or REFERENCE_DIR) / REPORTS_DIR / str(report_id) / "records.json"
    return json.loads(file.read_text()) if file.is_file() else []


def ship_report_runs(runs: list[dict[str, Any]], report_id: str, root: Path | None = None) -> Path:
    """Write a report's records as ``reports/<id>/records.json`` under ``root`` (atomically: a failed write
    leaves the previous file); returns the file."""
    from ..protocol.files import atomic_write

    folder = (root or REFERENCE_DIR) / REPORTS_DIR / str(report_id)
    folder.mkdir(parents=True, exist_ok=True)
    file = folder / "records.json"
    with atomic_write(file, "w") as out:
        out.write(export_json(runs))
    for path in (folder.parent, folder, file):
        path.chmod(0o644 if path.is_file() else 0o755)
    return file


def model_info(bundle: Path) -> dict[str, Any] | None:
    """``model.json``'s content plus ``paths`` (stage1/adam/sgd) and ``ood_path`` (None when the bundle has
    no out-of-distribution statistics); None when the bundle has no models."""
    meta_file = bundle / "model.json"
    if not meta_file.is_file():
        return None
    meta = json.loads(meta_file.read_text())
    files = meta.get("files") or LEGACY_MODEL_FILES
    paths = {name: bundle / file for name, file in files.items()}
    if set(paths) != set(MODEL_FILES) or not all(p.is_file() for p in paths.values()):
        return None
    ood_file = bundle / "ood.npz"
    return {"name": bundle.name, **meta, "paths": paths, "ood_path": ood_file if ood_file.is_file() else None}


def bundle_name(protocol: Protocol) -> str:
    """The folder an experiment ships in: its dataset, and for Face Mask the paper's version (v2 is the one
    with ReduceLROnPlateau, as :func:`core.protocol.paper.paper_column` reads it)."""
    if protocol.dataset == "face-mask":
        return "face-mask-v2" if protocol.reduce_lr else "face-mask-v1"
    return protocol.dataset


def experiment_title(protocol: Protocol) -> str:
    """"Fashion-MNIST", "Dogs & Cats", "Face Mask Detection v1"/"v2", "Your own folder": the paper's column
    name where there is one."""
    return paper_column(protocol) or dataset_title(protocol.dataset)


def total_size_mb(root: Path | None = None) -> float:
    root = root or REFERENCE_DIR
    return sum(f.stat().st_size for f in root.rglob("*") if f.is_file()) / 1e6 if root.is_dir() else 0.0


def describe(bundle: Path) -> list[str]:
    """What ``python -m core bundle`` prints about a bundle it wrote: size, the shipped models' accuracy, how
    stage one is stored, the out-of-distribution threshold, and the whole folder's size against the budget."""
    lines = [f"{total_size_mb(bundle):.1f} MB"]
    info = model_info(bundle)
    if info and "stage1_storage" in info:
        storage, accuracy = info["stage1_storage"], info["test_accuracy"]
        lines.append(f"models of {repeat_name(info['repeat'])}: test accuracy {accuracy['stage1']:.2%} (CNN), "
                     f"{accuracy['adam']:.2%} (Adam head), {accuracy['sgd']:.2%} (SGD head) on "
                     f"{accuracy['images']} test images")
        lines.append(f"stage one stored as {storage['format']}, {storage['shipped_mb']:.1f} MB (trained file "
                     f"{storage['trained_file_mb']:.1f} MB); float16 agrees with float32 on "
                     f"{storage['agreement_with_float32']:.2%} of the test images")
        lines.append(f"out-of-distribution threshold {info['ood']['threshold']:.2f} "
                     f"({info['ood']['test_flagged']:.1%} of the test images beyond it)")
    total = total_size_mb(bundle.parent)
    over = total > SIZE_BUDGET_MB
    lines.append(f"{bundle.parent} holds {total:.1f} MB in total"
                 + (f": OVER the {SIZE_BUDGET_MB:.0f} MB budget" if over else f" (budget {SIZE_BUDGET_MB:.0f} MB)"))
    return lines


# ----------------------------------------------------------------------------------------------- building

def check_name(name: str) -> str:
    """``name`` if it can be a bundle folder (no path separators, no hidden or parent folder)."""
    if not _NAME.match(name):
        raise ValueError(f"bundle name {name!r}: use lower-case letters, digits, '-', '.' or '_' (at most 64), "
                         "starting with a letter or digit")
    return name


def choose_experiment(store: RunStore, name: str | None = None) -> str:
    """The key to bundle when none is given: among the experiments that would ship as ``name`` (all, when no
    name is given), the one with the most finished repeats."""
    if name is not None:
        check_name(name)
    found = store.experiments()
    if not found:
        raise ValueError(f"no finished experiment in {store.root}")
    candidates = [k for k, p in found.items() if name is None or bundle_name(p) == name]
    if not candidates:
        listing = "; ".join(f"{k} ({bundle_name(p)}, {len(store.runs(k))} repeats)" for k, p in found.items())
        raise ValueError(f"no experiment in {store.root} ships as {name!r}; give --key (experiments: {listing})")
    return max(candidates, key=lambda k: len(store.runs(k)))


def build_bundle(store: RunStore, key: str, dest_root: Path = REFERENCE_DIR, model_repeat: int | None = None,
                 *, name: str | None = None, data_path: str | None = None, records_only: bool = False,
                 report: Report = lambda line: None) -> Path:
    """Ship an experiment's records and one repeat's models as ``dest_root/<name>/``; returns that folder.

    The model repeat defaults to the one whose stage-one test accuracy is the median, so the shipped model is
    typical of the run rather than its luckiest repeat. Shipping models needs the experiment's data
    (``data_path`` overrides the recorded path): the training images give the out-of-distribution
    statistics, the test images the shipped models' accuracy and the compact model's agreement with float32.
    ``records_only`` ships the records without models: for a second protocol of a dataset whose model set
    another bundle already ships (Face Mask v2 beside v1), so ``reference/`` stays within its size budget.
    Raises ValueError (or :class:`core.data.datasets.DatasetUnavailable`) before anything in ``dest_root/<name>``
    has changed.
    """
    runs = store.runs(key)
    if not runs:
        raise ValueError(f"no finished repeats for experiment {key} in {store.root}")
    protocol = Protocol.from_dict(runs[0]["protocol"])
    name = check_name(name or bundle_name(protocol))
    if records_only and model_repeat is not None:
        raise ValueError("--repeat chooses the models to ship; --records-only ships none")
    model_repeat = None if records_only else _model_repeat(store, key, runs, model_repeat)
    dest_root = Path(dest_root)
    made = _missing_folders(dest_root)
    dest_root.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{name}.building-", dir=dest_root))
    try:
        (work / "records.json").write_text(export_json(runs))
        if model_repeat is not None:
            run = next(r for r in runs if r["repeat"] == model_repeat)
            if data_path:
                protocol = protocol.with_(data_path=data_path)
            meta = _write_models(work, store.model_paths(key, model_repeat), run, protocol, report)
            meta.update(name=name, title=experiment_title(protocol), repeats=len(runs),
                        bundled_at=datetime.now(timezone.utc).isoformat(timespec="seconds"))
            (work / "model.json").write_text(json.dumps(meta, indent=1))
        _publishable(work)
        dest = _swap_in(work, dest_root / name)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        for folder in made:  # a refused bundle leaves nothing behind, not even an empty destination
            with contextlib.suppress(OSError):
                folder.rmdir()
        raise
    return dest


def _missing_folders(folder: Path) -> list[Path]:
    """``folder`` and those of its parents that do not exist yet, deepest first (what a failure removes)."""
    missing = []
    while not folder.exists() and folder != folder.parent:
        missing.append(folder)
        folder = folder.parent
    return missing


def _model_repeat(store: RunStore, key: str, runs: list[dict[str, Any]], wanted: int | None) -> int | None:
    if wanted is not None:  # the stored index; the CLI takes the repeat's number (index + 1)
        if not any(r["repeat"] == wanted for r in runs):
            raise ValueError(f"--repeat {wanted + 1}: experiment {key} has no such finished repeat (finished: "
                             f"{repeats_named(r['repeat'] for r in runs)})")
        if store.model_paths(key, wanted) is None:
            raise ValueError(f"--repeat {wanted + 1}: that repeat of {key} kept no models; choose another")
        return wanted
    with_models = [r for r in runs if store.model_paths(key, r["repeat"])]
    if not with_models:
        return None
    ranked = sorted(with_models, key=lambda r: r["stage1"]["last"]["test_accuracy"])
    return ranked[len(ranked) // 2]["repeat"]


def _write_models(work: Path, paths: dict[str, Path] | None, run: dict[str, Any], protocol: Protocol,
                  report: Report) -> dict[str, Any]:
    """Store stage one (compact when faithful), copy the heads, fit the out-of-distribution statistics and
    measure the shipped models on the test split; returns ``model.json``'s content."""
    from ..classify import ood
    from ..data.datasets import load_dataset

    assert paths is not None
    stage1 = compact.load_model_file(paths["stage1"])  # a file Keras refuses fails here, before the data loads
    report(f"loading {protocol.dataset} (the split of {repeat_name(run['repeat'])}) for the statistics ...")
    data = load_dataset(protocol, repeat=run["repeat"])
    _check_same_split(data, run)
    report("fitting the out-of-distribution statistics and measuring the shipped models ...")
    stats, probs32 = ood.fit_model(stage1, data)
    _check_same_accuracy(probs32, data.y_test, run)
    files = dict(MODEL_FILES)
    compact.save(stage1, work / files["stage1"])
    shipped = compact.load(work / files["stage1"])
    probs = {"stage1": np.asarray(shipped.predict(data.x_test, batch_size=256, verbose=0))}
    agreement = compact.agreement(probs["stage1"], probs32)
    if agreement < compact.MIN_AGREEMENT:  # near-ties flip in float16: ship this one as trained
        report(f"float16 stage one agrees with float32 on only {agreement:.2%} of the test images: shipping float32")
        (work / files["stage1"]).unlink()
        files["stage1"] = LEGACY_MODEL_FILES["stage1"]
        stage1.save(work / files["stage1"])  # loaded uncompiled: no optimizer state is written
        shipped, probs["stage1"] = stage1, probs32
    probs.update(_head_probabilities(shipped, paths, work, data.x_test))
    stats.save(work / ood.FILE)
    accuracy = {m: float(np.mean(np.argmax(p, axis=1) == data.y_test)) for m, p in probs.items()}
    return {
        "repeat": run["repeat"], "key": run["key"], "dataset": run["dataset"]["name"],
        "class_names": run["dataset"]["class_names"], "input_shape": run["dataset"]["input_shape"],
        "files": files,
        "test_accuracy": {**accuracy, "images": int(len(data.y_test)),
                          "note": "the shipped models on the repeat's test split, measured when bundled"},
        "stage1_storage": {"format": ("float16 weights + architecture (core/models/compact.py)"
                                      if files["stage1"].endswith(compact.SUFFIX) else "float32 .keras"),
                           "agreement_with_float32": agreement, "test_images": int(len(data.y_test)),
                           "float32_test_accuracy": float(np.mean(np.argmax(probs32, axis=1) == data.y_test)),
                           "trained_file_mb": round(paths["stage1"].stat().st_size / 1e6, 2),
                           "shipped_mb": round((work / files["stage1"]).stat().st_size / 1e6, 2)},
        "ood": stats.summary(),
    }


def _head_probabilities(stage1: Any, paths: dict[str, Path], work: Path, x: np.ndarray) -> dict[str, np.ndarray]:
    """Copy both heads into the bundle and return their test probabilities on the shipped stage one's
    features."""
    from ..models.models import feature_extractor

    features = np.asarray(feature_extractor(stage1).predict(x, batch_size=256, verbose=0))
    out = {}
    for head in HEADS:
        shutil.copy(paths[head], work / MODEL_FILES[head])
        out[head] = np.asarray(compact.load_model_file(paths[head]).predict(features, batch_size=256, verbose=0))
    return out


def _check_same_split(data: Any, run: dict[str, Any]) -> None:
    seed = run["dataset"].get("split_seed")
    if seed is not None and seed != data.split_seed:
        raise ValueError(f"the run used split seed {seed}, the data was split with {data.split_seed}")
    recorded = run["dataset"].get("sizes")
    if recorded and recorded != data.sizes():
        raise ValueError(f"the data found gives splits {data.sizes()}, but the run was made with {recorded}: "
                         "point --data at the dataset the experiment used")


def _check_same_accuracy(probs: np.ndarray, y_test: np.ndarray, run: dict[str, Any]) -> None:
    weights = run["protocol"].get("features_from", "last")  # the weights the repeat saved its model with
    recorded = run["stage1"][weights]["test_accuracy"]
    measured = float(np.mean(np.argmax(probs, axis=1) == y_test))
    if abs(measured - recorded) > ACCURACY_TOLERANCE:
        raise ValueError(f"the saved model scores {measured:.2%} on the test split found, but {recorded:.2%} in "
                         "its record: this is not the data (or the split) the run was tested on")


def _publishable(folder: Path) -> None:
    """Readable by everyone, like the rest of the repository (temporary folders and the private cache's files
    are owner-only)."""
    folder.chmod(0o755)
    for f in folder.iterdir():
        f.chmod(0o644)


def _swap_in(work: Path, dest: Path) -> Path:
    """Replace ``dest`` by ``work`` with renames only: the old folder is moved aside, the new one moved in,
    the old one deleted last; if the second rename fails, the old folder is put back."""
    old = None
    if dest.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{dest.name}.old-", dir=dest.parent))
        os.replace(dest, old)  # onto the empty placeholder
    try:
        os.replace(work, dest)
    except BaseException:
        if old is not None:
            os.replace(old, dest)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    return dest
