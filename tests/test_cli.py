"""``python -m core``: help, a real headless run, clear errors, and Ctrl-C keeping finished repeats."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import needs_fashion

ROOT = Path(__file__).resolve().parent.parent
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONUNBUFFERED": "1"}


def core(*args, **kwargs):
    return subprocess.run([sys.executable, "-m", "core", *args], cwd=ROOT, env=ENV, capture_output=True,
                          text=True, timeout=300, **kwargs)


def test_help_documents_the_commands_and_options():
    out = core("--help").stdout
    assert "run" in out
    run_help = core("run", "--help").stdout
    for option in ("--dataset", "--data", "--repeats", "--epochs", "--limit", "--stage1-eval",
                   "--features-from", "--head-init", "--out", "--paper-v2"):
        assert option in run_help


def test_missing_folder_is_a_clear_error(tmp_path):
    result = core("run", "--dataset", "face-mask", "--data", str(tmp_path / "nowhere"), "--cache", str(tmp_path))
    assert result.returncode == 2
    assert "is not a folder" in result.stderr and "Traceback" not in result.stderr


@needs_fashion
@pytest.mark.slow
def test_run_prints_both_tables_and_writes_json(tmp_path):
    out = tmp_path / "runs.json"
    result = core("run", "--repeats", "2", "--epochs", "1", "--limit", "300", "--test-limit", "100",
                  "--cache", str(tmp_path / "c"), "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert "Table 1 (ours): 2 repeats" in result.stdout and "Table 1 (paper, Fashion-MNIST" in result.stdout
    assert "Table 2 (ours)" in result.stdout and "stage1 epoch 1/1" in result.stderr
    runs = json.loads(out.read_text())
    assert [r["repeat"] for r in runs] == [0, 1]


@needs_fashion
@pytest.mark.slow
def test_ctrl_c_keeps_finished_repeats(tmp_path):
    cache = str(tmp_path / "c")
    args = ["run", "--repeats", "3", "--epochs", "1", "--limit", "300", "--test-limit", "100", "--cache", cache]
    proc = subprocess.Popen([sys.executable, "-m", "core", *args], cwd=ROOT, env=ENV, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    for line in proc.stderr:
        if "repeat 1 stored" in line:
            proc.send_signal(signal.SIGINT)
            break
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130
    assert "finished repeat(s) are stored" in err
    # running again only trains what is missing
    again = core(*args)
    assert again.returncode == 0 and "repeat 1/3" not in again.stderr and "repeat 3/3" in again.stderr
