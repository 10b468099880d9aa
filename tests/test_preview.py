"""Duplicate image files in a folder dataset: found by content, and counted where they leak into the test
split (counted for a pre-split folder, expected over random splits for a flat one)."""

from __future__ import annotations

import shutil

import pytest

from core.app.preview import find_duplicates
from tests.conftest import synthetic_images, write_class_folders


def test_copies_are_grouped_by_content_and_their_expected_leak_worked_out_by_hand(tmp_path):
    images, labels = synthetic_images(4, 2, seed=1)
    root = write_class_folders(tmp_path / "flat", images, labels, ["a", "b"])
    first = sorted((root / "a").iterdir())[0]
    shutil.copy(first, root / "a" / "copy_1.png")
    shutil.copy(first, root / "a" / "copy_2.png")  # one image three times in its own class
    shutil.copy(sorted((root / "b").iterdir())[0], root / "a" / "relabelled.png")  # one image in both classes
    found = find_duplicates(str(root), test_split=0.2)
    assert sorted(len(g) for g in found.groups) == [2, 3] and found.copies == 3
    assert found.across_classes == 1 and not found.exact
    assert ["a/copy_1.png", "a/copy_2.png", f"a/{first.name}"] in found.groups
    # g * q * (1 - q^(g-1)): 3 * 0.2 * (1 - 0.04) + 2 * 0.2 * (1 - 0.2) = 0.576 + 0.32
    assert found.test_with_copy == pytest.approx(0.896)


def test_a_pre_split_folder_counts_the_test_images_with_a_copy_in_training(tmp_path):
    images, labels = synthetic_images(3, 2, seed=2)
    root = tmp_path / "pets"
    write_class_folders(root / "training_set", images, labels, ["cats", "dogs"])
    write_class_folders(root / "test_set", images // 2, labels, ["cats", "dogs"])  # other pixels
    for name in ("img_0000.png", "img_0001.jpg"):
        shutil.copy(root / "training_set" / "cats" / name, root / "test_set" / "cats" / f"leaked_{name}")
    found = find_duplicates(str(root))
    assert found.exact and found.test_with_copy == 2 and found.copies == 2 and found.across_classes == 0


def test_no_duplicates_in_distinct_images(tmp_path):
    images, labels = synthetic_images(3, 2, seed=3)
    found = find_duplicates(str(write_class_folders(tmp_path / "x", images, labels, ["a", "b"])))
    assert found.groups == [] and found.copies == 0 and found.test_with_copy == 0


def test_samples_are_copies_that_do_not_keep_the_whole_set_alive():
    """A view would keep all of Fashion-MNIST (55 MB) in the server for as long as a page held its samples."""
    import numpy as np

    from core.app.preview import array_samples

    x = np.arange(40 * 4 * 4, dtype=np.uint8).reshape(40, 4, 4, 1)
    y = np.arange(40) % 4
    grid = array_samples(x, y, 4, per_class=3, seed=0)
    assert [len(row) for row in grid] == [3, 3, 3, 3]
    for label, row in enumerate(grid):
        for image in row:
            assert image.base is None and not np.shares_memory(image, x)
            assert any(np.array_equal(image, x[i]) for i in np.flatnonzero(y == label))
