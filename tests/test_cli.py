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


@pytest.mark.parametrize("unbuffered", ["1", ""])
def test_a_reader_that_goes_away_is_no_traceback(unbuffered):
    """``python -m core reports | head -1``: the pipe closes before the output is written."""
    read, write = os.pipe()
    os.close(read)
    try:
        result = subprocess.run([sys.executable, "-m", "core", "reports"], cwd=ROOT, stdout=write,
                                stderr=subprocess.PIPE, text=True, timeout=120,
                                env={**ENV, "PYTHONUNBUFFERED": unbuffered})
    finally:
        os.close(write)
    assert result.returncode == 1 and "Traceback" not in result.stderr and "Broken" not in result.stderr


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


@pytest.fixture
def default_sigint():
    """SIGINT raises KeyboardInterrupt, as at a terminal, whatever handler an earlier test in this process left
    (a worker run in-process installs its own); put back afterwards."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


@needs_fashion
@pytest.mark.slow
def test_ctrl_c_keeps_finished_repeats(tmp_path, capfd, monkeypatch, default_sigint):
    """A real SIGINT, sent at a definite point (as repeat 2 starts, after repeat 1 is stored) from inside the
    run, so the outcome cannot depend on how fast a loaded machine gets a signal across processes."""
    from core.cli import main as cli

    printer = cli.ProgressPrinter.__call__

    def ctrl_c_when_repeat_two_starts(self, event):
        printer(self, event)
        if event.get("stage") == "repeat" and event["repeat"] == 1:
            os.kill(os.getpid(), signal.SIGINT)  # Python raises KeyboardInterrupt right here, as on Ctrl-C

    monkeypatch.setattr(cli.ProgressPrinter, "__call__", ctrl_c_when_repeat_two_starts)
    args = ["run", "--repeats", "2", "--epochs", "1", "--limit", "200", "--test-limit", "100", "--cache",
            str(tmp_path / "c")]
    assert cli.main(args) == 130
    err = capfd.readouterr().err
    assert "interrupted: 1 finished repeat stored" in err
    monkeypatch.setattr(cli.ProgressPrinter, "__call__", printer)
    # running again only trains what is missing
    assert cli.main(args) == 0
    out, err = capfd.readouterr()
    assert "repeat 1/2" not in err and "repeat 2/2" in err and "Table 1 (ours): 2 repeats" in out


@pytest.mark.parametrize("command", ["run", "submit"])
@pytest.mark.parametrize("option,value", [("--repeats", "0"), ("--repeats", "-1"), ("--repeats", "100000000"),
                                          ("--image-size", "0"), ("--image-size", "100000"),
                                          ("--sgd-momentum", "-3")])
def test_bad_numbers_are_one_line_and_exit_2_before_anything_runs(tmp_path, capfd, command, option, value):
    from core.cli.main import main

    cache = tmp_path / "c"
    assert main([command, "--dataset", "fashion-mnist", option, value, "--cache", str(cache)]) == 2
    out, err = capfd.readouterr()
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and option.lstrip("-").split("-")[0] in lines[0]
    assert not out and not cache.exists(), "nothing was trained, queued or created"


@needs_fashion
@pytest.mark.slow
def test_two_identical_runs_at_once_train_each_repeat_once(tmp_path):
    from core.protocol.config import Protocol
    from core.results.store import RunStore

    args = ["run", "--repeats", "2", "--epochs", "1", "--limit", "200", "--test-limit", "100", "--cache",
            str(tmp_path / "c")]
    runs = [subprocess.Popen([sys.executable, "-m", "core", *args], cwd=ROOT, env=ENV, text=True,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE) for _ in range(2)]
    outputs = [run.communicate(timeout=600) for run in runs]
    assert [run.returncode for run in runs] == [0, 0], [err[-2000:] for _, err in outputs]
    progress = "".join(err for _, err in outputs)
    for repeat in (1, 2):  # each repeat's one stage-one epoch was trained by exactly one of the two processes
        assert progress.count(f"repeat {repeat} stage1 epoch 1/1") == 1, progress
    assert all("Table 1 (ours): 2 repeats" in out for out, _ in outputs)
    protocol = Protocol(dataset="fashion-mnist", epochs=1, limit=200, test_limit=100)
    assert [r["repeat"] for r in RunStore(tmp_path / "c").runs(protocol.key())] == [0, 1]


def test_table_3_of_one_repeat_prints_dashes_not_nan():
    """A one-repeat run (issue 25's quick checks) has no interval or p: the table says "-", not "+nan pp"."""
    import io

    from core.cli.main import print_table3
    from tests.test_why import record

    out = io.StringIO()
    print_table3([record(0, 0.60, 0.70, 0.65)], out=out)
    text = out.getvalue()
    assert "nan" not in text and "+5.00 pp" in text and "cannot be tested" in text
