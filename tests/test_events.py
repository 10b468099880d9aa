"""Progress events: every kind a run writes is recognised by its shape, and the readers agree on it."""

from __future__ import annotations

import io

import pytest

from core.cli.main import ProgressPrinter
from core.protocol.events import event_kind

EVENTS = [
    ({"stage": "stage1", "epoch": 2, "epochs": 5, "logs": {"accuracy": 0.5, "val_accuracy": 0.4, "seconds": 1.0},
      "repeat": 0}, "epoch", "repeat 1 stage1 epoch 2/5: acc 0.5000 val_acc 0.4000 (1.0s)"),
    ({"stage": "stage2_adam", "resumed_at_epoch": 3, "repeat": 1}, "resumed", "resumed stage2_adam after epoch 3"),
    ({"stage": "stage1", "restarted": "torn checkpoint"}, "restarted", None),
    ({"stage": "plan", "todo": [0, 1], "repeats": 2, "repeats_done": 0}, "plan", None),
    ({"stage": "loading", "dataset": "fashion-mnist"}, "loading", "loading fashion-mnist ..."),
    ({"stage": "repeat", "repeat": 0, "repeats": 2}, "repeat", "repeat 1/2"),
    ({"stage": "stored", "repeat": 1, "by": "another process"}, "stored", "repeat 2 stored (by another process)"),
    ({"stage": "waiting", "repeat": 0, "holder_pid": 7, "holder_host": "h"}, "waiting", "waiting for it"),
    ({"stage": "batchnorm", "layers": 4, "repeat": 0}, "batchnorm", "re-estimating 4 BatchNorm layer(s)"),
    ({"stage": "features", "seconds": 1.5}, "features", None),
    ({"stage": "sweep_point", "sweep_index": 0, "points": 2, "param": "epochs", "sweep_value": 3}, "sweep_point",
     None),
    ({"stage": "backbone", "split": "train", "cached": True, "seconds": 0.1}, "backbone", None),
    ({"stage": "gan", "reused": True, "images": 10}, "gan", None),
    ({"stage": "something new"}, "other", None),
]


@pytest.mark.parametrize("event,kind,line", EVENTS, ids=[k for _, k, _ in EVENTS])
def test_each_event_has_one_kind_and_the_cli_prints_the_ones_it_knows(event, kind, line):
    assert event_kind(event) == kind
    out = io.StringIO()
    ProgressPrinter(out)(event)
    if line is None:
        assert out.getvalue() == ""
    else:
        assert line in out.getvalue()
