"""The project's words, declared once: datasets, methods, heads, splits and training stages, with their titles.

Why one module: the pages, the CLI and core all name the same things, and every list that was written again in
a page drifted a little (another order, a missing dataset, "Stage two, Adam head" beside "stage two, Adam
head"). Everything here is plain data with no library import, so the lowest module may use it.

What an architecture is (its input shape and class count) is :data:`core.protocol.arch_spec.ARCH_INFO`'s; the
shapes and class counts per dataset below are read from it, not written again.
"""

from __future__ import annotations

from typing import Any

from .arch_spec import ARCH_INFO

# ------------------------------------------------------------------------------------------------ datasets

DATASETS = ("fashion-mnist", "cifar10", "dogs-cats", "face-mask", "folder")
"""Dataset ids accepted everywhere (CLI, jobs, pages), in the order every list shows them."""
KERAS_DATASETS = ("fashion-mnist", "cifar10")
"""Datasets Keras ships as arrays: the same data wherever they are read from."""
PHOTO_DATASETS = ("dogs-cats", "face-mask", "folder")
"""Datasets read from class folders with OpenCV; the paper augments these (small photo sets)."""
PAPER_DATASETS = tuple(d for d in DATASETS if d in ARCH_INFO)
"""The paper's four datasets, each with its own CNN (``folder`` borrows the Dogs & Cats one)."""

DATASET_TITLES = {"fashion-mnist": "Fashion-MNIST", "cifar10": "CIFAR-10", "dogs-cats": "Dogs & Cats",
                  "face-mask": "Face Mask Detection", "folder": "Your own folder"}
INPUT_SHAPES = {d: ARCH_INFO[d].input_shape for d in PAPER_DATASETS}
"""The input each paper dataset's CNN takes (folder images are resized to the protocol's ``image_size``)."""
NUM_CLASSES = {d: ARCH_INFO[d].num_classes for d in PAPER_DATASETS}

FASHION_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                   "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
CIFAR_CLASSES = ["airplane", "automobile", "bird", "cat", "deer",
                 "dog", "frog", "horse", "ship", "truck"]
KNOWN_CLASSES = {"fashion-mnist": FASHION_CLASSES, "cifar10": CIFAR_CLASSES, "dogs-cats": ["cats", "dogs"],
                 "face-mask": ["mask_weared_incorrect", "with_mask", "without_mask"]}
"""Class names in label order; a folder dataset's come from its sub-folders (sorted, as the loader reads them)."""


def is_keras_dataset(name: str) -> bool:
    """Fashion-MNIST or CIFAR-10: arrays found in the usual places, never a folder of photos."""
    return name in KERAS_DATASETS


def is_photo_dataset(name: str) -> bool:
    """A dataset read from a folder of photos the user points at."""
    return name in PHOTO_DATASETS


def dataset_title(name: str) -> str:
    """"Dogs & Cats" for ``dogs-cats``; an unknown id is shown as it is."""
    return DATASET_TITLES.get(name, name)


# ---------------------------------------------------------------------------------- methods, heads, splits

METHODS = ("stage1", "adam", "sgd")
"""Stage one (the CNN) and the two stage-two heads, in the order every table lists them."""
HEADS = ("adam", "sgd")
SPLITS = ("train", "val", "test")

STAGE_ONE = "stage one"
HEAD_NAMES = {"adam": "Adam head", "sgd": "SGD head"}
METHOD_NAMES = {"stage1": f"{STAGE_ONE} (CNN)", **{h: f"stage two, {n}" for h, n in HEAD_NAMES.items()}}
"""A method in running text: "stage one (CNN)", "stage two, Adam head"."""
READING_NAMES = {"logistic": "convex head (cRT)", "heldout": "held-out head (DFR)",
                 "logistic_bn": "convex head on BN-re-estimated features"}
"""Second stages that train no network (:mod:`core.training.ceiling`), keyed as records' ``readings`` hold them."""
SECOND_STAGE_NAMES = {**HEAD_NAMES, **READING_NAMES}
"""Every second stage Table 3 compares with stage one, named once for the pages and the docs."""
TABLE_METHOD_NAMES = {"stage1": "CNN (Adam)", "adam": "CNN + second stage (Adam)", "sgd": "CNN + second stage (SGD)"}
"""A method as the paper's Table 1 names its rows (ours use the same names, so the two tables line up)."""


def method_title(method: str) -> str:
    """:data:`METHOD_NAMES` capitalised, for a heading or a metric's label: "Stage two, Adam head"."""
    name = METHOD_NAMES[method]
    return name[:1].upper() + name[1:]


# --------------------------------------------------------------------------------------- training stages

TRAINING_STAGES = ("stage1", "stage2_adam", "stage2_sgd")
"""The stages that train epoch by epoch; their ids are the ``stage`` of an epoch's progress event."""
STAGE_WORDS = {"stage1": METHOD_NAMES["stage1"],
               "batchnorm": "evaluating stage one and re-estimating its BatchNorm statistics",
               "evaluating": "evaluating stage one", "features": "second-stage readings on the extracted features",
               "stage2_adam": METHOD_NAMES["adam"],
               "stage2_sgd": METHOD_NAMES["sgd"], "stored": "repeat stored", "loading": "loading the data",
               "plan": "planning", "repeat": "starting the repeat", "waiting": "waiting for another process",
               "queued": "queued", "finished": "finished"}


def head_stage(head: str) -> str:
    """The training stage of a head: ``stage2_adam`` for ``adam``."""
    return f"stage2_{head}"


def stage_words(stage: Any) -> str:
    """A job stage in words ("stage two, Adam head"), never its id ("stage2_adam")."""
    if not stage:
        return ""
    text = str(stage)
    return STAGE_WORDS.get(text, text.replace("_", " "))
