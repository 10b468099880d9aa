"""bench.gpu, the one-command GPU run, exercised end to end on this CPU in its smoke mode (tiny experiments,
2 repeats, a 2-member profile): the profile table, the experiments in their lanes, the summary and the bundles
land where the device session and ``bundle`` expect them. The GPU's numbers themselves are in bench/README.md."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import synthetic_images, write_class_folders

ROOT = Path(__file__).resolve().parent.parent
pytest.importorskip("jax", reason="the lock-step engine runs on JAX")


@pytest.mark.slow
def test_the_gpu_command_runs_its_lanes_and_bundles(tmp_path):
    images, labels = synthetic_images(16, 2)
    for part in ("training_set", "test_set"):
        write_class_folders(tmp_path / "dogs" / part, images, labels, ["cats", "dogs"], fmt=".jpg")
    (tmp_path / "dogs" / ".ready").touch()  # the device session marks a dataset as completely copied
    out = tmp_path / "out"
    env = {**os.environ, "KERAS_BACKEND": "jax", "CUDA_VISIBLE_DEVICES": "", "TF_CPP_MIN_LOG_LEVEL": "3"}
    done = subprocess.run([sys.executable, "-m", "bench.gpu", "--smoke", "--skip-profile", "--form", "loop",
                           "--out", str(out), "--cache", str(tmp_path / "cache"), "--budget-s", "800",
                           "--only", "dogs-cats,cifar10", "--data", f"dogs-cats={tmp_path / 'dogs'}"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["dogs-cats"]["state"] == "done" and summary["dogs-cats"]["form"] == "loop"
    assert summary["cifar10"]["state"] == "no data"  # its lane waited for data that never came, then moved on
    records = json.loads((out / "reference" / "dogs-cats" / "records.json").read_text())
    assert [r["repeat"] for r in records] == [0, 1]
    assert records[0]["env"]["formulation"] == "stacked, loop convolutions"
    assert (out / "reference" / "dogs-cats" / "stage1.npz").exists()  # Classify's photo model ships
    assert "dogs-cats.log" in {p.name for p in out.iterdir()}
