"""The paper's reproduction on one GPU, as one command: ``KERAS_BACKEND=jax python -m bench.gpu ...``.

A borrowed GPU is billed by the minute, so everything that needs it happens in one process tree, with no pause
for a person: a profile of the lock-step engine's formulations (which convolution formulation and precision
is fastest on this GPU, measured, never assumed), then the experiments, in parallel lanes that share the GPU
(one lane's host work, compilation and file writing fill another's gaps), each an ordinary
``python -m core run`` whose records land in ``--cache`` exactly as anywhere else, then the finished
experiment bundled for ``reference/`` as soon as it ends. A deadline (``--budget-s``, movable through
``--deadline-file``) is kept: an experiment still running then is stopped (its repeats are lost, the others
are kept).

    KERAS_BACKEND=jax python -m bench.gpu --out OUT --cache CACHE --budget-s 780 \\
        --data dogs-cats=/data/dogs-cats-paper --data cifar10=/data/cifar10-jpg --data fashion-mnist=/data/fmnist

A dataset folder may appear while the command runs: its lane waits (until the deadline) for the folder's
``.ready`` file, so a device reached through a small upload limit can get its data in parts while the first
lanes train. ``OUT`` receives ``profile.json`` and
``profile.md`` (the formulation table for ``bench/README.md``), one log per experiment, ``summary.json``
(wall times, repeats stored, what was stopped) and the bundles.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
READY = ".ready"
"""A file that marks a dataset folder as completely copied (when the data arrives while the command runs)."""


@dataclass
class Experiment:
    """One ``python -m core run`` of a lane: its options, the dataset it needs, how it ships."""

    name: str
    dataset: str
    options: list[str]
    repeats: int = 20
    env: dict[str, str] = field(default_factory=dict)
    bundle: str | None = None
    """Bundle folder name; None ships nothing."""
    models: bool = False
    """Ship one repeat's models (Classify's photo models) or records only."""


SMOKE = ["--epochs", "1", "--limit", "120", "--test-limit", "60", "--image-size", "32"]
"""``--smoke``: every experiment this small (a test of the command on a CPU, not a measurement)."""


def plan(data: dict[str, str], smoke: bool = False, only: set[str] | None = None) -> list[list[Experiment]]:
    """The lanes, most important experiment first in each (issue 25's shipped runs, issue 23's measurements,
    issue 27's intervention and dose); every run in float32 unless it is the fast-mode check. ``smoke`` makes
    every experiment tiny with 2 repeats; ``only`` keeps the named experiments."""
    lanes = _lanes(data)
    for lane in lanes:
        for experiment in lane:
            if smoke:
                experiment.options = [*experiment.options, *SMOKE]
                experiment.repeats = 2
    return [[e for e in lane if only is None or e.name in only] for lane in lanes]


def _lanes(data: dict[str, str]) -> list[list[Experiment]]:
    dogs = ["--dataset", "dogs-cats", "--data", data.get("dogs-cats", ""), "--resplit"]
    return [
        [Experiment("dogs-cats", "dogs-cats", dogs, bundle="dogs-cats", models=True),
         Experiment("dogs-cats-bn0.9", "dogs-cats", [*dogs, "--bn-momentum", "0.9"], bundle="dogs-cats-bn0.9"),
         *[Experiment(f"dogs-cats-limit{n}", "dogs-cats", [*dogs, "--limit", str(n)], repeats=5,
                      bundle=f"dogs-cats-limit{n}") for n in (1000, 2000, 4000)]],
        [Experiment("cifar10", "cifar10", ["--dataset", "cifar10", "--data", data.get("cifar10", "")],
                    bundle="cifar10", models=True),
         Experiment("face-mask-v1", "face-mask", ["--dataset", "face-mask", "--data", data.get("face-mask", ""),
                                                  "--resplit"], bundle="face-mask-v1", models=True)],
        [Experiment("fashion-mnist", "fashion-mnist", ["--dataset", "fashion-mnist", *_fmnist(data)],
                    bundle="fashion-mnist", models=True),
         Experiment("fashion-mnist-tf32", "fashion-mnist",
                    ["--dataset", "fashion-mnist", *_fmnist(data), "--precision", "tf32"],
                    bundle="fashion-mnist-tf32"),
         Experiment("plain-reference", "fashion-mnist",
                    ["--dataset", "fashion-mnist", *_fmnist(data), "--engine", "plain", "--epochs", "2"],
                    repeats=2, bundle="plain-reference"),
         Experiment("fashion-mnist-bf16", "fashion-mnist",
                    ["--dataset", "fashion-mnist", *_fmnist(data), "--precision", "bfloat16"],
                    bundle="fashion-mnist-bf16")],
    ]


def _fmnist(data: dict[str, str]) -> list[str]:
    return ["--data", data["fashion-mnist"]] if data.get("fashion-mnist") else []


class Runner:
    """Runs the lanes against one deadline; a lane waits for its dataset, then runs its experiments in turn."""

    def __init__(self, args: argparse.Namespace, data: dict[str, str], forms: dict[str, str]):
        self.args, self.data, self.forms = args, data, forms
        self.deadline = START + args.budget_s - args.reserve_s
        self.summary: dict[str, dict] = {}
        self.lock = threading.Lock()

    def lane(self, experiments: list[Experiment]) -> None:
        for experiment in experiments:
            if not self._wait_for(experiment.dataset):
                self._note(experiment, state="no data")
                continue
            if self.remaining() < 30:
                self._note(experiment, state="not started: out of time")
                continue
            self.run(experiment)

    def run(self, experiment: Experiment) -> None:
        env = {**os.environ, "KERAS_BACKEND": "jax", "XLA_PYTHON_CLIENT_PREALLOCATE": "false",
               "TWO_STAGE_CHECKPOINT_S": "100000", "TWO_STAGE_STACKED_CONV": self.forms.get(experiment.dataset, "gemm"),
               **experiment.env}
        engine = [] if "--engine" in experiment.options else ["--engine", "lockstep"]  # the plain reference's own
        command = [sys.executable, "-m", "core", "run", *experiment.options, *engine,
                   "--repeats", str(experiment.repeats), "--cache", self.args.cache]
        log = Path(self.args.out) / f"{experiment.name}.log"
        started = time.time()
        with open(log, "w") as fh:
            proc = subprocess.Popen(command, cwd=ROOT, env=env, stdout=fh, stderr=subprocess.STDOUT)
            while proc.poll() is None and self.remaining() > 0:
                time.sleep(1)
            code = proc.poll()
            if code is None:
                proc.terminate()
                try:
                    proc.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    proc.kill()
                code = "stopped at the deadline"
        self._note(experiment, state="done" if code == 0 else f"exit {code}", seconds=round(time.time() - started, 1),
                   started=round(started - START, 1), form=env["TWO_STAGE_STACKED_CONV"], command=command[2:])
        if code == 0 and experiment.bundle:  # now, while the other lanes train, not after the deadline
            bundle(self.args, experiment)

    def remaining(self) -> float:
        """Seconds to the deadline; a ``--deadline-file`` (a Unix time, written while the command runs) moves
        it, e.g. once the device's own clock of what is left is known."""
        if self.args.deadline_file and Path(self.args.deadline_file).exists():
            try:
                self.deadline = float(Path(self.args.deadline_file).read_text()) - self.args.reserve_s
            except ValueError:
                pass
        return self.deadline - time.time()

    def _wait_for(self, dataset: str) -> bool:
        if dataset == "fashion-mnist" and "fashion-mnist" not in self.data:
            return True  # the system copy or Keras' download
        path = self.data.get(dataset)
        if not path:
            return False
        while self.remaining() > 60:
            if Path(path).is_dir() and (Path(path) / READY).exists():
                return True
            time.sleep(2)
        return False

    def _note(self, experiment: Experiment, **info) -> None:
        with self.lock:
            self.summary[experiment.name] = info
            Path(self.args.out, "summary.json").write_text(json.dumps(self.summary, indent=1))
        print(f"[{time.time() - START:7.1f} s] {experiment.name}: {info}", flush=True)


def bundle(args: argparse.Namespace, experiment: Experiment) -> None:
    """Bundle a finished experiment under OUT/reference (records, and one repeat's models where they ship)."""
    from core.results.store import RunStore

    keys = [k for k, p in RunStore(args.cache).experiments().items() if _matches(p, experiment)]
    if not keys:
        return
    command = [sys.executable, "-m", "core", "bundle", "--cache", args.cache, "--key", keys[0], "--name",
               experiment.bundle, "--dest", str(Path(args.out) / "reference")]
    if not experiment.models:
        command.append("--records-only")
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, env={**os.environ, "KERAS_BACKEND": "jax"})
    print(f"bundle {experiment.bundle}: {done.stdout.strip() or done.stderr.strip()[-400:]}", flush=True)


def _matches(protocol, experiment: Experiment) -> bool:
    """Whether a stored experiment is this plan entry (dataset, precision, momentum, limit, engine)."""
    options = experiment.options
    want = {"dataset": experiment.dataset,
            "precision": options[options.index("--precision") + 1] if "--precision" in options else "float32",
            "bn_momentum": float(options[options.index("--bn-momentum") + 1]) if "--bn-momentum" in options else 0.99,
            "limit": int(options[options.index("--limit") + 1]) if "--limit" in options else None,
            "engine": "plain" if "plain" in options else "lockstep"}
    return all(getattr(protocol, k) == v for k, v in want.items())


START = time.time()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="folder for the profile, logs, summary and bundles")
    parser.add_argument("--cache", required=True, help="run cache (records and models)")
    parser.add_argument("--data", action="append", default=[], metavar="DATASET=PATH")
    parser.add_argument("--budget-s", type=float, default=780.0, help="wall-clock budget of the whole command")
    parser.add_argument("--reserve-s", type=float, default=30.0, help="kept before the deadline for the last bundle")
    parser.add_argument("--deadline-file", help="a file that may hold a new deadline (Unix time) while running")
    parser.add_argument("--skip-profile", action="store_true", help="use --form instead of measuring")
    parser.add_argument("--form", default="gemm", help="formulation when the profile is skipped")
    parser.add_argument("--only", type=lambda text: set(text.split(",")), help="run only these experiments")
    parser.add_argument("--smoke", action="store_true", help="tiny experiments, 2 repeats (a test on a CPU)")
    args = parser.parse_args(argv)
    Path(args.out).mkdir(parents=True, exist_ok=True)
    data = dict(item.split("=", 1) for item in args.data)
    if args.skip_profile:
        forms = {name: args.form for name in ("fashion-mnist", "cifar10", "dogs-cats", "face-mask")}
    else:
        from bench import gpu_profile

        forms = gpu_profile.run(Path(args.out), budget_s=min(240.0, args.budget_s / 4), smoke=args.smoke)
    runner = Runner(args, data, forms)
    lanes = [threading.Thread(target=runner.lane, args=(lane,)) for lane in plan(data, args.smoke, args.only)]
    for lane in lanes:
        lane.start()
    for lane in lanes:
        lane.join()
    print(f"[{time.time() - START:7.1f} s] done", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
