import gzip
import pickle
import tarfile

import cv2
import numpy as np
import pytest

from core.data import datasets
from core.protocol.config import Protocol
from core.data.datasets import DatasetUnavailable, compact, load_dataset, load_raw
from core.data.folders import scan_image_folder

from .conftest import needs_fashion, synthetic_images, write_class_folders


def _write_idx(path, array: np.ndarray, gz: bool):
    header = bytes([0, 0, 8, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    opener = gzip.open if gz else open
    with opener(str(path) + (".gz" if gz else ""), "wb") as fh:
        fh.write(header + array.astype(np.uint8).tobytes())


@pytest.mark.parametrize("gz", [True, False])
def test_fashion_mnist_from_a_user_folder(tmp_path, gz):
    rng = np.random.default_rng(1)
    x = rng.integers(0, 255, (50, 28, 28), dtype=np.uint8)
    y = np.arange(50) % 10
    for name, arr in (("train-images-idx3-ubyte", x), ("train-labels-idx1-ubyte", y),
                      ("t10k-images-idx3-ubyte", x[:20]), ("t10k-labels-idx1-ubyte", y[:20])):
        _write_idx(tmp_path / name, arr, gz)
    raw = load_raw("fashion-mnist", str(tmp_path))
    assert raw.x_train.shape == (50, 28, 28, 1) and raw.x_train.dtype == np.uint8
    assert np.array_equal(raw.x_train[..., 0], x) and np.array_equal(raw.y_test, y[:20])


def test_truncated_idx_is_reported(tmp_path):
    _write_idx(tmp_path / "x", np.zeros((4, 28, 28)), gz=False)
    data = (tmp_path / "x").read_bytes()
    (tmp_path / "x").write_bytes(data[:-100])
    with pytest.raises(DatasetUnavailable, match="truncated"):
        datasets.read_idx(tmp_path / "x")


def test_missing_dataset_says_where_it_looked_and_how_to_get_it(tmp_path, monkeypatch):
    import keras

    def offline():
        raise OSError("no network")

    monkeypatch.setattr(datasets, "FASHION_SYSTEM_DIR", tmp_path / "none")
    monkeypatch.setattr(datasets, "KERAS_DATASETS_DIR", tmp_path / "none")
    monkeypatch.setattr(keras.datasets.fashion_mnist, "load_data", offline)
    monkeypatch.setattr(keras.datasets.cifar10, "load_data", offline)
    with pytest.raises(DatasetUnavailable, match="apt-get install dataset-fashion-mnist"):
        load_raw("fashion-mnist", str(tmp_path))
    with pytest.raises(DatasetUnavailable, match="cifar-10-python.tar.gz"):
        load_raw("cifar10", str(tmp_path))
    with pytest.raises(DatasetUnavailable, match="--data"):
        load_raw("dogs-cats", None)


@needs_fashion
def test_real_fashion_mnist_split_is_stratified_and_deterministic():
    p = Protocol(limit=1000, test_limit=500, seed=3)
    a, b = load_dataset(p), load_dataset(p)
    assert a.sizes() == {"train": 800, "val": 200, "test": 500}
    assert np.array_equal(a.x_val, b.x_val) and np.array_equal(a.y_train, b.y_train)
    assert set(np.bincount(a.y_val)) == {20}  # 20% of 100 per class
    assert a.x_train.dtype == np.uint8 and a.input_shape == (28, 28, 1)
    assert not np.array_equal(load_dataset(p.with_(seed=4)).y_val, a.y_val)


def _cifar_batch(n, seed):
    """The real batches' layout: a uint8 array, labels as a list of Python ints, a label and file names."""
    rng = np.random.default_rng(seed)
    return {b"batch_label": b"training batch", b"data": rng.integers(0, 255, (n, 3072), dtype=np.uint8),
            b"labels": [int(v) for v in np.arange(n) % 10], b"filenames": [b"x_%d.png" % i for i in range(n)]}


def _write_cifar(folder):
    folder.mkdir(parents=True)
    for i in range(1, 6):
        (folder / f"data_batch_{i}").write_bytes(pickle.dumps(_cifar_batch(20, i)))
    (folder / "test_batch").write_bytes(pickle.dumps(_cifar_batch(10, 9)))
    return folder


def test_cifar_from_folder_and_from_archive(tmp_path):
    folder = _write_cifar(tmp_path / "cifar-10-batches-py")
    archive = tmp_path / "cifar-10-python.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(folder, arcname="cifar-10-batches-py")
    from_folder = load_raw("cifar10", str(tmp_path))  # the parent of the batches folder works too
    from_archive = load_raw("cifar10", str(archive))
    assert from_folder.x_train.shape == (100, 32, 32, 3) and from_folder.x_test.shape == (10, 32, 32, 3)
    assert np.array_equal(from_folder.x_train, from_archive.x_train)
    # channel-first rows become HWC: pixel (0,0) red is the first of the 1024 red values
    first = _cifar_batch(20, 1)[b"data"][0]
    assert from_folder.x_train[0, 0, 0].tolist() == [first[0], first[1024], first[2048]]


def test_flat_folder_with_dirt_is_read_and_split_like_the_paper(photo_folder):
    scan = scan_image_folder(photo_folder)
    assert scan.layout == "flat" and scan.class_names == ["incorrect", "with_mask", "without_mask"]
    assert scan.ignored == ["incorrect/notes.txt"]
    p = Protocol(dataset="folder", data_path=str(photo_folder), image_size=32)
    data = load_dataset(p)
    assert data.info["skipped"] and "broken.jpg" in data.info["skipped"][0]
    total = sum(data.sizes().values())
    assert total == 3 * 12 + 1  # the grayscale image is kept, the corrupt one skipped
    assert data.sizes()["test"] == pytest.approx(0.2 * total, abs=3)
    assert data.input_shape == (32, 32, 3) and data.x_train.dtype == np.uint8
    assert all(n > 0 for n in data.class_counts()["test"].values())


def test_pre_split_kaggle_layout_with_wrapper_folders(tmp_path):
    images, labels = synthetic_images(5, 2)
    root = tmp_path / "dogs"
    write_class_folders(root / "training_set" / "training_set", images, labels, ["cats", "dogs"], ".jpg")
    write_class_folders(root / "test_set" / "test_set", images[:6], labels[:6] * 0 + np.arange(6) % 2,
                        ["cats", "dogs"], ".jpg")
    scan = scan_image_folder(root)
    assert scan.layout == "pre-split" and len(scan.train) == 10 and len(scan.test) == 6
    data = load_dataset(Protocol(dataset="dogs-cats", data_path=str(root), image_size=24))
    assert data.sizes() == {"train": 8, "val": 2, "test": 6}


def test_empty_or_single_class_folder_is_a_clear_error(tmp_path):
    (tmp_path / "only").mkdir()
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetUnavailable, match="at least two"):
        scan_image_folder(tmp_path)
    with pytest.raises(DatasetUnavailable, match="not a folder"):
        scan_image_folder(tmp_path / "nope")


def test_compact_moves_rows_in_place_without_copying_the_pool():
    x = np.arange(20 * 3, dtype=np.uint8).reshape(20, 3)
    expected = x[[1, 4, 5, 19]].copy()
    out, y = compact(x, np.arange(20), np.array([1, 4, 5, 19]), chunk=2)
    assert np.array_equal(out, expected) and y.tolist() == [1, 4, 5, 19]
    assert np.shares_memory(out, x)


def test_split_tail_gives_both_parts_as_views_of_one_buffer():
    x = np.arange(10 * 2, dtype=np.uint8).reshape(10, 2, 1)
    original = x.copy()
    rest, y_rest, picked, y_picked = datasets.split_tail(x, np.arange(10), np.array([7, 2, 5]))
    assert y_picked.tolist() == [7, 2, 5] and np.array_equal(picked, original[[7, 2, 5]])
    assert y_rest.tolist() == [0, 1, 3, 4, 6, 8, 9] and np.array_equal(rest, original[y_rest])
    assert np.shares_memory(rest, x) and np.shares_memory(picked, x)


def test_resplit_draws_a_new_split_per_repeat_and_the_same_split_for_the_same_seed(photo_folder):
    p = Protocol(dataset="folder", data_path=str(photo_folder), image_size=16, resplit=True)
    first, second, again = load_dataset(p, repeat=0), load_dataset(p, repeat=1), load_dataset(p, repeat=1)
    assert (first.split_seed, second.split_seed) == (0, 1)
    names = {name: set(data.image_ids("test", np.arange(len(data.y_test))))
             for name, data in (("first", first), ("second", second), ("again", again))}
    assert names["first"] != names["second"] and names["second"] == names["again"]
    assert np.array_equal(second.x_val, again.x_val) and np.array_equal(second.ids["val"], again.ids["val"])
    # every split's pixels belong to the image its id names: rows stay tied to their source files
    fixed = p.with_(resplit=False)
    assert load_dataset(fixed, repeat=0).split_seed == load_dataset(fixed, repeat=5).split_seed == 0
    assert names["first"] == set(load_dataset(fixed, repeat=3).image_ids("test", np.arange(len(first.y_test))))


def test_image_ids_name_the_source_image_of_each_row(photo_folder):
    from core.data.imageio import decode_image

    data = load_dataset(Protocol(dataset="folder", data_path=str(photo_folder), image_size=16))
    for split, x in (("train", data.x_train), ("test", data.x_test)):
        name = data.image_ids(split, [3])[0]
        assert np.array_equal(x[3], decode_image((photo_folder / name).read_bytes(), size=16))


def test_one_image_per_class_is_refused_before_training(tmp_path):
    images, labels = synthetic_images(1, 3)
    root = write_class_folders(tmp_path / "tiny", images, labels, ["a", "b", "c"])
    with pytest.raises(DatasetUnavailable, match="at least 3 readable images"):
        load_dataset(Protocol(dataset="folder", data_path=str(root), image_size=16))


def test_single_class_and_all_corrupt_folders_say_what_is_wrong(tmp_path):
    images, labels = synthetic_images(4, 1)
    one = write_class_folders(tmp_path / "one", images, labels, ["cats"])
    with pytest.raises(DatasetUnavailable, match=r"only sub-folder|1 class folder"):
        scan_image_folder(one)
    bad = tmp_path / "bad"
    for name in ("cats", "dogs"):
        (bad / name).mkdir(parents=True)
        for i in range(3):
            (bad / name / f"{i}.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    with pytest.raises(DatasetUnavailable, match="none of the image files"):
        load_dataset(Protocol(dataset="folder", data_path=str(bad), image_size=16))


@pytest.mark.parametrize("dataset", ["fashion-mnist", "cifar10"])
def test_a_given_data_path_that_is_unusable_is_an_error_not_a_fallback(tmp_path, dataset):
    (tmp_path / "garbage").mkdir()
    (tmp_path / "garbage" / "train-images-idx3-ubyte.gz").write_bytes(b"not gzip")
    for path in (tmp_path / "missing", tmp_path / "empty", tmp_path / "garbage"):
        path.mkdir(exist_ok=True)
        with pytest.raises(DatasetUnavailable, match=str(path.name)):
            load_raw(dataset, str(path))


def test_garbage_idx_and_cifar_archives_are_one_clear_error(tmp_path):
    folder = tmp_path / "fm"
    folder.mkdir()
    for name in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
                 "t10k-labels-idx1-ubyte"):
        (folder / f"{name}.gz").write_bytes(b"\x1f\x8b garbage")
    with pytest.raises(DatasetUnavailable, match="could not be read"):
        load_raw("fashion-mnist", str(folder))
    junk = tmp_path / "cifar-10-python.tar.gz"
    junk.write_bytes(b"definitely not a tarball")
    with pytest.raises(DatasetUnavailable, match="not a readable"):
        load_raw("cifar10", str(junk))
    wrong = tmp_path / "wrong.tar.gz"
    with tarfile.open(wrong, "w:gz") as tar:
        tar.add(__file__, arcname="cifar-10-batches-py/readme.txt")
    with pytest.raises(DatasetUnavailable, match="has no cifar-10-batches-py/data_batch_1"):
        load_raw("cifar10", str(wrong))


def test_per_class_cap_keeps_n_images_of_each_class_before_the_validation_split(tmp_path):
    """Report 003's regime: N images per class from any class folder, the rest of the pool unused."""
    images, labels = synthetic_images(20, 2, size=16)
    root = write_class_folders(tmp_path / "two", images, labels, ["cows", "horses"])
    p = Protocol(dataset="folder", data_path=str(root), image_size=16, per_class=10, validation_split=0.2)
    data = load_dataset(p)
    pool = np.bincount(np.concatenate([data.y_train, data.y_val]), minlength=2)
    test = np.bincount(data.y_test, minlength=2)
    assert pool.tolist() == [10, 10]  # flat folder: 4 per class went to test first, then 10 of the 16 left
    assert test.tolist() == [4, 4] and np.bincount(data.y_val).tolist() == [2, 2]
    again = load_dataset(p)
    assert np.array_equal(data.ids["train"], again.ids["train"])  # drawn with the split seed
    assert not set(data.ids["train"]) & set(data.ids["test"])


def test_cifar10_from_a_jpeg_copy_keeps_the_official_classes_and_test_set_and_says_it_is_a_copy(tmp_path):
    """The common "CIFAR-10 images" layout (train/<class>/, test/<class>/, 32x32 JPEG): the official class
    order and numbers whatever order the folders list in, the test folder as the test split, the paper's
    validation split of the rest, and an identity that no other copy shares."""
    from core.data.datasets import CIFAR_CLASSES, load_dataset

    images, labels = synthetic_images(4, 10, size=32)
    order = list(reversed(CIFAR_CLASSES))  # folder order must not decide the label numbers
    renamed = np.array([order.index(CIFAR_CLASSES[label]) for label in labels])
    for part in ("train", "test"):
        write_class_folders(tmp_path / "cifar10-jpg" / part, images, renamed, order, fmt=".jpg")
    protocol = Protocol(dataset="cifar10", data_path=str(tmp_path / "cifar10-jpg"), validation_split=0.25)
    data = load_dataset(protocol)
    assert data.class_names == CIFAR_CLASSES and data.input_shape == (32, 32, 3)
    assert data.sizes() == {"train": 30, "val": 10, "test": 40}
    assert sorted(np.bincount(data.y_test).tolist()) == [4] * 10
    first = data.image_ids("test", np.flatnonzero(data.y_test == CIFAR_CLASSES.index("airplane"))[:1])[0]
    assert first.startswith("test/airplane/")
    identity = data.identity()
    assert identity["form"] == "jpeg-copy" and identity["image_size"] == 32
    assert identity["source_sizes"] == {"train": 40, "test": 40}
    assert identity["test_duplicates_of_train"]  # this toy copy's test folder repeats its training files
    # the same files elsewhere are the same data; one re-encoded file makes another copy
    import shutil

    shutil.copytree(tmp_path / "cifar10-jpg", tmp_path / "elsewhere")
    assert load_dataset(protocol.with_(data_path=str(tmp_path / "elsewhere"))).identity()["fingerprint"] == \
        identity["fingerprint"]
    victim = next((tmp_path / "elsewhere" / "train" / "cat").iterdir())
    cv2.imwrite(str(victim), cv2.imread(str(victim)), [cv2.IMWRITE_JPEG_QUALITY, 50])
    assert load_dataset(protocol.with_(data_path=str(tmp_path / "elsewhere"))).identity()["fingerprint"] != \
        identity["fingerprint"]


def test_test_images_that_copy_training_files_are_found_per_split(tmp_path):
    """Face Mask ships byte-identical copies of some images: the record names the test rows whose file
    equals a training or validation file of the same repeat's split, so a score can be read without them."""
    import shutil

    from core.data.datasets import load_dataset

    images, labels = synthetic_images(10, 2)
    root = write_class_folders(tmp_path / "flat", images, labels, ["a", "b"])
    for i, src in enumerate(sorted((root / "a").iterdir())[:3]):
        shutil.copy(src, root / "a" / f"copy_{i}{src.suffix}")
    protocol = Protocol(dataset="folder", data_path=str(root), test_split=0.3, validation_split=0.2)
    for repeat in range(3):
        data = load_dataset(protocol.with_(resplit=True), repeat=repeat)
        rows = data.identity()["test_duplicates_of_train"]
        names = data.image_ids("test", np.arange(len(data.y_test)))
        pool = data.info["pool_files"]
        for row, name in enumerate(names):
            content = (root / name).read_bytes()
            in_training = any((root / pool[i]).read_bytes() == content
                              for split in ("train", "val") for i in data.ids[split])
            assert (row in rows) == in_training, (repeat, name)
