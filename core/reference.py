"""The shipped reference results: a real run's records and one trained model set, read-only.

Why: a reader on a fresh clone or a hosted demo must see a real reproduction and classify a photo before
training anything. ``reference/<dataset>/`` holds ``records.json`` (every repeat's full record, histories
included), ``model.json`` (which repeat the models come from) and the repeat's ``stage1.keras``,
``head_adam.keras`` and ``head_sgd.keras``. :func:`build_bundle` (``python -m core bundle``) regenerates it
from any finished experiment in a cache, so anyone can replace it with a longer run.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from .store import PROJECT_ROOT, RunStore, export_json

REFERENCE_DIR = PROJECT_ROOT / "reference"
MODEL_FILES = {"stage1": "stage1.keras", "adam": "head_adam.keras", "sgd": "head_sgd.keras"}


def bundles(root: Path | None = None) -> list[Path]:
    """Shipped bundle folders, one per dataset."""
    root = root or REFERENCE_DIR
    return sorted(p for p in root.glob("*") if (p / "records.json").is_file()) if root.is_dir() else []


def load_runs(bundle: Path) -> list[dict[str, Any]]:
    return json.loads((bundle / "records.json").read_text())


def model_info(bundle: Path) -> dict[str, Any] | None:
    """``{"repeat", "key", "class_names", "input_shape", "paths"}`` or None when the bundle has no models."""
    meta_file = bundle / "model.json"
    if not meta_file.is_file():
        return None
    meta = json.loads(meta_file.read_text())
    paths = {name: bundle / file for name, file in MODEL_FILES.items()}
    if not all(p.is_file() for p in paths.values()):
        return None
    return {**meta, "paths": paths}


def build_bundle(store: RunStore, key: str, dest_root: Path = REFERENCE_DIR,
                 model_repeat: int | None = None) -> Path:
    """Copy an experiment's records and one repeat's models into ``dest_root/<dataset>/``.

    The model repeat defaults to the one whose stage-one test accuracy is the median, so the shipped model
    is typical of the run rather than its luckiest repeat.
    """
    runs = store.runs(key)
    if not runs:
        raise ValueError(f"no finished repeats for experiment {key} in {store.root}")
    with_models = [r for r in runs if store.model_paths(key, r["repeat"])]
    if model_repeat is None and with_models:
        ranked = sorted(with_models, key=lambda r: r["stage1"]["last"]["test_accuracy"])
        model_repeat = ranked[len(ranked) // 2]["repeat"]
    dest = dest_root / runs[0]["dataset"]["name"]
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    (dest / "records.json").write_text(export_json(runs))
    if model_repeat is not None:
        paths = store.model_paths(key, model_repeat)
        if paths is None:
            raise ValueError(f"repeat {model_repeat} of {key} kept no models")
        for name, file in MODEL_FILES.items():
            shutil.copy(paths[name], dest / file)
        run = next(r for r in runs if r["repeat"] == model_repeat)
        meta = {"repeat": model_repeat, "key": key, "class_names": run["dataset"]["class_names"],
                "input_shape": run["dataset"]["input_shape"], "dataset": run["dataset"]["name"]}
        (dest / "model.json").write_text(json.dumps(meta, indent=1))
    return dest
