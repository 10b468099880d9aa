"""core.app.identify: older records get their data's identity only from the very data that made them."""

from __future__ import annotations

import json

import numpy as np
import pytest

from core.app.identify import IdentityMismatch, identify, identify_file
from core.data.datasets import load_dataset
from core.protocol.config import Protocol
from core.results import predictions

from .conftest import synthetic_images, write_class_folders


def old_records(root, protocol: Protocol, repeats: int) -> list[dict]:
    """Records as an older version stored them: sizes and test labels, no identity."""
    out = []
    for repeat in range(repeats):
        data = load_dataset(protocol, repeat=repeat)
        probs = np.eye(data.num_classes)[data.y_test].astype(np.float32)
        block = predictions.encode(data.y_test, {"adam": probs, "sgd": probs, **{
            f"stage1_{w}": probs for w in ("last", "best", "last_bn", "best_bn")}}, "last",
            lambda rows: data.image_ids("test", rows))
        out.append({"repeat": repeat, "protocol": protocol.to_dict(), "predictions": block,
                    "dataset": {"name": "folder", "sizes": data.sizes(), "split_seed": data.split_seed}})
    return out


def test_identity_is_added_only_when_the_data_reproduces_every_split(tmp_path):
    import shutil

    images, labels = synthetic_images(10, 2)
    root = write_class_folders(tmp_path / "data", images, labels, ["a", "b"])
    copy = sorted((root / "a").iterdir())[0]
    shutil.copy(copy, root / "b" / "dup.png")  # one image in both classes' folders: a cross-class copy
    protocol = Protocol(dataset="folder", data_path=str(root), resplit=True, test_split=0.3)
    runs = old_records(root, protocol, 3)
    done = identify(runs, None)
    assert all("fingerprint" in r["dataset"] and r["dataset"]["form"] == "folder" for r in done)
    assert done[0]["dataset"]["fingerprint"] == done[2]["dataset"]["fingerprint"]
    assert all("fingerprint" not in r["dataset"] for r in runs)  # the input is left alone
    file = tmp_path / "records.json"
    file.write_text(json.dumps(runs))
    assert identify_file(file, None) == 3 and json.loads(file.read_text())[1]["dataset"]["image_size"] == 128
    (root / "a" / copy.name).unlink()  # other data: the splits no longer match
    with pytest.raises(IdentityMismatch, match="repeat 1: the data gives splits"):
        identify(runs, str(root))
