"""Run-time estimates from the measured speed in stored records."""

from __future__ import annotations

import copy
import json
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from core.app import estimate
from core.protocol.config import Protocol

RECORDS = Path(__file__).resolve().parent / "data" / "dogs_cats_records.json"


def test_the_estimate_scales_with_images_epochs_and_repeats_from_real_records():
    runs = json.loads(RECORDS.read_text())
    protocol = Protocol(dataset="dogs-cats", data_path="/data", epochs=2, limit=200, test_limit=100)
    sizes = estimate.limited_sizes({"train": 1120, "val": 280, "test": 1600}, protocol)
    assert sizes == {"train": 160, "val": 40, "test": 100}  # what the recorded run used
    one = estimate.estimate(protocol, 1, sizes, runs, host=runs[0]["env"]["host"])
    assert one.rates.repeats == 2 and one.rates.basis == "this machine"
    # the recorded run took 195 s for its two repeats (its log); the estimate is built from its parts
    assert 60 < 2 * one.seconds < 400
    two = estimate.estimate(protocol, 2, sizes, runs, host=runs[0]["env"]["host"])
    assert two.seconds == pytest.approx(2 * one.seconds)
    longer = estimate.estimate(protocol.with_(epochs=4), 1, sizes, runs, host=runs[0]["env"]["host"])
    r = one.rates
    assert longer.seconds - one.seconds == pytest.approx(2 * 160 * (r.stage1 + 2 * r.head))
    assert estimate.estimate(Protocol(dataset="cifar10"), 1, sizes, runs) is None  # no record of that CNN


def test_records_from_elsewhere_are_named_as_such():
    runs = json.loads(RECORDS.read_text())
    found = estimate.rates(runs, "dogs-cats", host="another-host")
    assert found.basis == "another machine (CPU (2 cores))"


def test_a_gpu_machine_with_this_host_name_is_not_this_machine_and_lockstep_times_are_not_plain_ones():
    cpu = json.loads(RECORDS.read_text())
    host, device = cpu[0]["env"]["host"], cpu[0]["env"]["device"]
    gpu = copy.deepcopy(cpu)
    for run in gpu:  # the same host name on a lent GPU machine, 100x faster, lock-step engine
        run["env"]["device"], run["protocol"]["engine"] = "GPU: NVIDIA H100 80GB HBM3", "lockstep"
        for part in ("stage1", "adam", "sgd"):
            run[part]["history"]["seconds"] = [s / 100 for s in run[part]["history"]["seconds"]]
    here = estimate.rates(gpu + cpu, "dogs-cats", device=device, host=host)
    assert here.basis == "this machine" and here.stage1 == estimate.rates(cpu, "dogs-cats", host=host).stage1
    lockstep = estimate.rates(gpu + cpu, "dogs-cats", device=device, host=host, engine="lockstep")
    assert lockstep.basis == "another machine (GPU: NVIDIA H100 80GB HBM3)"
    assert lockstep.stage1 == pytest.approx(here.stage1 / 100)


def test_untimed_seconds_come_from_gaps_between_consecutive_repeats():
    runs = json.loads(RECORDS.read_text())
    first, second = runs
    later = copy.deepcopy(second)
    timed = estimate.measured_seconds(later)
    later["finished_at"] = "2026-11-22T06:52:08+00:00"  # repeat 0 finished at 06:52:08
    assert estimate.fixed_seconds([first, later]) == 0.0  # a gap shorter than the timed work: skipped
    start = datetime.fromisoformat(first["finished_at"])
    later["finished_at"] = (start + timedelta(seconds=timed + 12)).isoformat()
    assert estimate.fixed_seconds([first, later]) == pytest.approx(12, abs=1)
