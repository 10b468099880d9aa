"""The four related reports: their published numbers (as data, labelled) and what each one's experiment is.

Like :mod:`core.protocol.paper`, these are the only outside numbers in this part of the project, and every accessor
labels them with the report they come from. Accuracies are fractions. Each report's experiment is a list of
:class:`Step` (one protocol trained ``repeats`` times, or a :class:`~core.studies.sweeps.Sweep` of it) at two sizes:

- ``full``: the report's own recipe, as far as it states one (and our stated reading where it does not);
- ``small``: the same steps cut down to run on a 2-core CPU in under ten minutes (the measured times are in
  docs/reports.md).

Where a report's data is not available here (report 001's own photos; report 003's cows and horses) the small
plan runs on a set that is, and says so; CIFAR-10 is read from its official archive or a "CIFAR-10 images" copy
(``--data``); every plan runs on any dataset the app can load (``--dataset``/``--data``). A plan's note names
no dataset: the pages and the CLI say which one it runs on. Every run is also put through the paper's second
stage, which answers this part's question: does a two-stage head help these models too?
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from ..protocol.config import Protocol
from ..protocol.options import to_flags
from ..protocol.vocabulary import HEAD_NAMES, is_keras_dataset
from .sweeps import Sweep


@dataclass(frozen=True)
class Published:
    """A table as a report prints it (values as published; accuracies as fractions)."""

    title: str
    columns: tuple[str, ...]
    rows: tuple[tuple, ...]
    note: str = ""

    def frame(self) -> pd.DataFrame:
        """The table as a frame. A column that mixes numbers and words (report 001's epochs end in
        "average") is written as text: Arrow, and so the page's table, cannot hold the mix."""
        frame = pd.DataFrame(list(self.rows), columns=list(self.columns))
        for column in frame.columns:
            kinds = {type(v) for v in frame[column] if v is not None}
            if str in kinds and len(kinds) > 1:
                frame[column] = [None if v is None else str(v) for v in frame[column]]
        return frame


@dataclass(frozen=True)
class Step:
    """One experiment of a report: protocol options over the defaults, repeats, and an optional sweep."""

    title: str
    options: dict[str, Any]
    repeats: int
    sweep: Sweep | None = None
    published: tuple[tuple[str, Any], ...] = ()
    """The report's numbers for this step, ``(label, value)``; for a sweep, ``(swept value, test accuracy)``."""

    def protocol(self, dataset: str, data_path: str | None = None, **overrides: Any) -> Protocol:
        """The step's base protocol on ``dataset`` (a ValueError in one line when they do not fit)."""
        return Protocol(**{"dataset": dataset, "data_path": data_path, **self.options, **overrides})

    def command(self, dataset: str | None = None, data: str | None = None) -> str:
        """The equivalent single CLI command (``run`` or ``sweep``), for the pages and docs/reports.md."""
        args = [f"--dataset {dataset}"] if dataset else []
        if data:
            args.append(f"--data {data}")
        args += to_flags(self.options, Protocol, skip_defaults=False)  # flags as the options declare them
        if self.sweep:
            values = ",".join(str(v) for v in self.sweep.values)
            return (f"python -m core sweep {' '.join(args)} --param {self.sweep.param} --values {values} "
                    f"--repeats {self.repeats}")
        return f"python -m core run {' '.join(args)} --repeats {self.repeats}"


@dataclass(frozen=True)
class Report:
    """One related report: who, what it claims (published tables), its models, its experiment."""

    id: str
    title: str
    authors: str
    date: str
    task: str
    claims: str
    data_used: str
    data_here: str
    dataset: str
    """The dataset its plans run on by default (``--dataset`` overrides)."""
    models: dict[str, int | None]
    """Architecture id -> the parameter count the report publishes (None where it gives none)."""
    published: tuple[Published, ...]
    plans: dict[str, tuple[Step, ...]] = field(default_factory=dict)
    small_note: str = ""
    deviations: tuple[str, ...] = ()

    @property
    def label(self) -> str:
        return f"Report {self.id}: {self.title} ({self.authors}, {self.date})"

    def command(self, size: str = "small", data: str | None = None) -> str:
        """The one CLI command that runs this report's experiment."""
        data_arg = f" --data {data}" if data else ("" if is_keras_dataset(self.dataset) else " --data PATH")
        size_arg = "" if size == "small" else f" --size {size}"
        return f"python -m core report {self.id}{data_arg}{size_arg}"


# ---------------------------------------------------------------------------------------------- report 001

_R001 = Report(
    id="001",
    title="A Convolutional Neural Network for facemask recognition",
    authors="C. Ghiglione, L. Perelli, G. Vecchione", date="20 Nov 2020",
    task="3 classes of group photos: all wear a mask / none do / not all do",
    claims=("From a 5-block baseline, tuning blocks, convolutions per block and kernels led to a VGG-like final "
            "model with BatchNorm, dropout and L2 that reaches a mean test score of 0.8764 over its 10 best "
            "epochs (peak 0.9111) from scratch, above a fine-tuned VGG-16 benchmark (0.85)."),
    data_used="its own 5,614 training images (1,897 / 1,900 / 1,817) and 450 test images at 256x256; not public",
    data_here=("the paper's Face Mask Detection set (with_mask / without_mask / mask_weared_incorrect, 128x128): "
               "three classes of single faces, not group photos"),
    dataset="face-mask",
    models={"001-baseline": 4_294_739, "001-final": 13_305_315},
    published=(
        Published("Baseline model (Keras summary)", ("model", "parameters", "non-trainable"),
                  (("baseline, 5 blocks", 4_294_739, 0), ("final model", 13_305_315, 960))),
        Published("Preliminary model: its 10 best epochs", ("epoch", "val accuracy", "test score"),
                  ((59, .8627, .8533), (60, .8565, .8511), (63, .8672, .8644), (66, .8672, .8644),
                   (67, .8654, .8489), (77, .8665, .8422), (80, .8690, .8756), (86, .8690, .8533),
                   (92, .8681, .8400), (97, .8725, .8356), ("average", .8664, .8529))),
        Published("Final model: its 10 best epochs", ("epoch", "val accuracy", "test score"),
                  ((61, .8734, .8644), (66, .8788, .8644), (68, .8815, .9111), (74, .8645, .8622),
                   (77, .8725, .8777), (82, .8725, .8755), (84, .8734, .8777), (87, .8699, .8644),
                   (90, .8743, .8844), (92, .8699, .8644), ("average", .8731, .8764)),
                  note="test score = accuracy on the 450 test images"),
        Published("Benchmark", ("model", "test score"),
                  (("VGG-16, last three conv layers fine-tuned, same classifier", .85),)),
    ),
    plans={
        "full": (
            Step("final model", dict(architecture="001-final", image_size=256, learning_rate=1e-4, batch_size=8,
                                     epochs=100, patience=100, augment=True), 5,
                 published=(("test score, mean of the 10 best epochs", .8764), ("best test score", .9111))),
            Step("baseline model", dict(architecture="001-baseline", image_size=256, learning_rate=1e-4,
                                        batch_size=8, epochs=100, patience=100, augment=True), 5),
        ),
        "small": (
            Step("final model", dict(architecture="001-final", image_size=128, learning_rate=1e-4, batch_size=8,
                                     epochs=3, patience=3, augment=True, limit=240, test_limit=120), 1,
                 published=(("test score, mean of the 10 best epochs", .8764), ("best test score", .9111))),
        ),
    },
    small_note=("the final model at the set's own 128x128 (its smallest valid input), 240 training images (192 "
                "after the validation split), 120 test images, 3 epochs, 1 repeat"),
    deviations=(
        "Batch size: the report studied 1-16 and kept it 'as low as possible' without naming the final value; "
        "we use 8.",
        "The report trained its first five epochs without augmentation and does not list its augmentation; we "
        "augment throughout with the paper's preset.",
        "The report averages its 10 best epochs' test scores (selection on the test set); we report the last "
        "and the best-val_accuracy epoch of each repeat.",
    ),
)

# ---------------------------------------------------------------------------------------------- report 002

_LR_VGG16 = ((0.1, .100), (0.01, .100), (0.001, .874), (0.0001, .887), (0.00001, .895), (0.000001, .878))
_EPOCHS_VGG16 = ((1, .842), (3, .861), (5, .864), (7, .871), (10, .870), (15, .862), (20, .874), (40, .868),
                 (80, .860))
_R002 = Report(
    id="002",
    title="Convolutional Neural Networks For Image Classification",
    authors="S. Gilbert", date="2024",
    task="CIFAR-10 with frozen ImageNet backbones and a new 10-way final layer",
    claims=("ResNet-34 is the best frozen backbone (0.907 accuracy), VGG-19 the best VGG (0.882); for VGG16, 20 "
            "epochs and a learning rate of 1e-5 work best (0.895), 0.1 and 0.01 fail (0.100), and accuracy "
            "rises with the batch size."),
    data_used="CIFAR-10 (50,000 training, 10,000 test images) resized to 224x224, PyTorch ImageNet weights",
    data_here=("CIFAR-10 from its official archive or a 'CIFAR-10 images' copy (--data; the shipped runs read the "
               "JPEG copy); no ImageNet weights are available offline, so the small plan's frozen ResNet-18 is "
               "randomly initialised: give --weights for the report's setting"),
    dataset="cifar10",
    models={"002-vgg16": None, "002-vgg19": None, "002-resnet18": None, "002-resnet34": None,
            "002-resnet50": None},
    published=(
        Published("Table 1: baseline (10 epochs, lr 1e-3, batch 32)",
                  ("model", "accuracy", "precision", "recall", "F1"),
                  (("VGG16", .870, .875, .870, .872), ("VGG19", .882, .885, .882, .883),
                   ("ResNet18", .903, .904, .903, .902), ("ResNet34", .907, .910, .908, .908),
                   ("ResNet50", .892, .894, .892, .892))),
        Published("Table 2: epochs, VGG16", ("epochs", "accuracy", "precision", "recall", "F1"),
                  ((1, .842, .852, .842, .843), (3, .861, .868, .861, .862), (5, .864, .872, .864, .866),
                   (7, .871, .877, .871, .872), (10, .870, .875, .870, .872), (15, .862, .883, .862, .866),
                   (20, .874, .880, .874, .875), (40, .868, .882, .868, .873), (80, .860, .884, .861, .867))),
        Published("Table 3: learning rate, VGG16 (20 epochs)", ("learning rate", "accuracy", "precision",
                                                                 "recall", "F1"),
                  ((0.1, .100, .110, .100, .018), (0.01, .100, .110, .100, .019), (0.001, .874, .880, .874, .875),
                   (0.0001, .887, .889, .887, .887), (0.00001, .895, .896, .895, .895),
                   (0.000001, .878, .878, .878, .877))),
        Published("Batch size (figure 6 only)", ("batch sizes", "finding"),
                  (("8, 16, 32, 64 (VGG16, lr 1e-5, 20 epochs)", "accuracy trends upwards with batch size"),)),
    ),
    plans={
        "full": (
            Step("baseline: five frozen backbones", dict(architecture="002-vgg16", weights="imagenet", epochs=10,
                                                         learning_rate=1e-3, batch_size=32, patience=1000), 1,
                 sweep=Sweep("architecture", ("002-vgg16", "002-vgg19", "002-resnet18", "002-resnet34",
                                              "002-resnet50")),
                 published=(("002-vgg16", .870), ("002-vgg19", .882), ("002-resnet18", .903),
                            ("002-resnet34", .907), ("002-resnet50", .892))),
            Step("epochs, VGG16", dict(architecture="002-vgg16", weights="imagenet", learning_rate=1e-3,
                                       patience=1000), 1,
                 sweep=Sweep("epochs", tuple(e for e, _ in _EPOCHS_VGG16)), published=_EPOCHS_VGG16),
            Step("learning rate, VGG16", dict(architecture="002-vgg16", weights="imagenet", epochs=20,
                                              patience=1000), 1,
                 sweep=Sweep("learning_rate", tuple(lr for lr, _ in _LR_VGG16)), published=_LR_VGG16),
            Step("batch size, VGG16", dict(architecture="002-vgg16", weights="imagenet", epochs=20,
                                           learning_rate=1e-5, patience=1000), 1,
                 sweep=Sweep("batch_size", (8, 16, 32, 64))),
            Step("epochs, ResNet18", dict(architecture="002-resnet18", weights="imagenet", learning_rate=1e-3,
                                          patience=1000), 1,
                 sweep=Sweep("epochs", (1, 3, 5, 7, 10, 15, 20, 40, 80))),
        ),
        "small": (
            Step("learning rate, ResNet18 (random init)", dict(
                architecture="002-resnet18", image_size=64, epochs=10, patience=1000, limit=300, test_limit=200),
                 1, sweep=Sweep("learning_rate", (0.1, 0.01, 0.001, 0.0001)), published=_LR_VGG16[:4]),
            Step("epochs, ResNet18 (random init)", dict(
                architecture="002-resnet18", image_size=64, learning_rate=1e-3, patience=1000, limit=300,
                test_limit=200), 1, sweep=Sweep("epochs", (1, 3, 10))),
        ),
    },
    small_note=("ResNet-18 (random initialisation: no ImageNet weights offline) frozen, on 300 training images "
                "(240 after the validation split) and 200 test images; each image is enlarged to the backbone's "
                "224x224 (from CIFAR-10's 32x32, or from the 64x64 a photo folder is read at: --image-size 64) "
                "and its features are computed once, so every sweep point after the first trains only the "
                "linear layer"),
    deviations=(
        "The report names no optimizer; we use Adam (consistent with its divergence at learning rates 0.1 and "
        "0.01).",
        "Our pipeline holds out 20% of the training set for validation (the report had none) and stops early "
        "only if asked: these plans set patience 1000, so every epoch budget is run in full.",
        "The backbone's features are computed in inference mode once (cached): the dropout inside torchvision's "
        "frozen VGG classifier does not act; only the dropout before the new layer does.",
        "Keras' ImageNet VGG and ResNet-50 weights expect Caffe normalisation, so they get it; ResNet-18/34 (our "
        "torchvision-layout builder) get torchvision's.",
    ),
)

# ---------------------------------------------------------------------------------------------- report 003

_SGD_003 = dict(architecture="003-cows-horses", image_size=64, optimizer="sgd", learning_rate=0.01,
                momentum=0.99, weight_decay=0.05, batch_size=4, epochs=20, patience=20, per_class=41,
                test_limit=82)
_R003 = Report(
    id="003",
    title="Improving a CNN based Image Classifier",
    authors="A. Abdelaziz", date="2023",
    task="cows vs horses from 41 training images per class",
    claims=("The small CNN reaches 95% train and 55% test accuracy; random transformations add 5%; 500 DCGAN "
            "images per class change nothing."),
    data_used="41 cows and 41 horses for training (and a test folder of the same size), 256x256, not public",
    data_here=("any two-class folder (Dogs & Cats by default) with 41 images per class drawn for training and "
               "82 test images"),
    dataset="dogs-cats",
    models={"003-cows-horses": None},
    published=(
        Published("Result", ("model", "train accuracy", "test accuracy"),
                  (("CNN", .95, .55), ("CNN + random transformations", None, .60),
                   ("CNN + 1,000 DCGAN images (500 per class)", None, None)),
                  note="+5% with transformations (0.60 is 0.55 + 5 points, our reading); with GAN images the "
                       "report 'did not notice any change'"),
    ),
    plans={
        "full": (
            Step("CNN", {**_SGD_003, "augment": False}, 5, published=(("train accuracy", .95), ("test accuracy", .55))),
            Step("CNN + random transformations", {**_SGD_003, "augment_preset": "cows-horses"}, 5,
                 published=(("test accuracy", .60),)),
            Step("CNN + DCGAN images", {**_SGD_003, "augment": False, "gan_images": 500, "gan_epochs": 200}, 5,
                 published=(("test accuracy (no change reported)", None),)),
        ),
        "small": (
            Step("CNN", {**_SGD_003, "augment": False}, 2, published=(("train accuracy", .95), ("test accuracy", .55))),
            Step("CNN + random transformations", {**_SGD_003, "augment_preset": "cows-horses"}, 2,
                 published=(("test accuracy", .60),)),
            Step("CNN + DCGAN images", {**_SGD_003, "augment": False, "gan_images": 100, "gan_epochs": 40}, 1,
                 published=(("test accuracy (no change reported)", None),)),
        ),
    },
    small_note=("the report's own size (41 + 41 images, read at 64x64, 20 epochs, batch 4) with 2 repeats per "
                "variant, and a smaller GAN (40 epochs, 100 images per class instead of 200 iterations and 500)"),
    deviations=(
        "The report's flattened size (1,352) does not match its layers (1,568); we follow the layers.",
        "The report has no validation split; ours takes 20% of the 41 images per class (8) for it.",
        "Weight decay is PyTorch's (added to the gradient, then momentum), which with momentum 0.99 is strong.",
        "The DCGAN is narrower than the tutorial's (16 filters, not 64) to run on a CPU; latent length 10 as the "
        "report says.",
    ),
)

# ---------------------------------------------------------------------------------------------- report 004

_TABLE1_004 = (
    ("model 1", .799, .003, .795, .804, 25.8), ("model 1 aug 1", .729, .015, .715, .751, 32.6),
    ("model 1 aug 2", .708, .018, .690, .733, 30.2), ("model 2", .843, .007, .835, .852, 33.6),
    ("model 2 aug 1", .798, .019, .764, .813, 43.8), ("model 2 aug 2", .781, .020, .765, .812, 52.0),
    ("model 3", .679, .007, .666, .686, 24.2), ("model 3 aug 1", .653, .010, .634, .686, 45.2),
    ("model 3 aug 2", .629, .014, .616, .645, 43.4),
)
_CUSTOM_004 = dict(epochs=100, patience=10, learning_rate=1e-3, batch_size=32, image_size=32)


def _table1_004(model: int) -> tuple[tuple[str, float], ...]:
    names = {"": "none", " aug 1": "aug1", " aug 2": "aug2"}
    return tuple((names[row[0][len(f"model {model}"):]], row[1]) for row in _TABLE1_004
                 if row[0].startswith(f"model {model}"))


_R004 = Report(
    id="004",
    title="Image classification with convolutional neural networks (Deep Learning project 1)",
    authors="E. Jowik, A. Makarewicz", date="12 Apr 2022",
    task="CIFAR-10 with three custom CNNs (two augmentations each) and fine-tuned ResNet50/VGG16",
    claims=("Model 2 is the best custom model (0.843 mean of 5 runs); augmentation lowers accuracy but delays "
            "overfitting; learning rates 1e-3/1e-4 are best; fine-tuned VGG16 reaches 0.84 and ResNet50 0.67 "
            "(lr 1e-3) without early stopping."),
    data_used="CIFAR-10 (50,000 / 10,000) at 32x32, pixels scaled to [0, 1]",
    data_here=("CIFAR-10 from its official archive or a 'CIFAR-10 images' copy (--data; the shipped runs read the "
               "JPEG copy, whose pixels differ slightly from the official ones); any other dataset the app loads "
               "works too (--dataset), its images resized to 32x32"),
    dataset="cifar10",
    models={"004-model1": None, "004-model2": None, "004-model3": None, "004-resnet50": 23_608_202,
            "004-vgg16": 14_719_818},
    published=(
        Published("Table 1: custom models, 5 runs each", ("model", "mean acc", "std dev acc", "min acc",
                                                          "max acc", "mean n of epochs"), _TABLE1_004),
        Published("Pretrained models (lr 1e-3, 10 epochs)", ("model", "early stopping", "accuracy",
                                                            "macro precision", "macro recall", "macro F1"),
                  (("ResNet50", "no", .67, .68, .67, .66), ("VGG16", "no", .84, .84, .84, .84),
                   ("ResNet50", "yes", .37, .45, .37, .35), ("VGG16", "yes", .77, .77, .77, .77))),
        Published("Learning rate (figure 3 only)", ("model", "best learning rate"),
                  (("model 1", 1e-3), ("model 2", 1e-3), ("model 3", 1e-4))),
        Published("Parameters", ("model", "parameters", "non-trainable"),
                  (("ResNet50 + Flatten + Dense 10", 23_608_202, 53_120),
                   ("VGG16 + Flatten + Dense 10", 14_719_818, 0))),
    ),
    plans={
        "full": tuple(
            Step(f"learning rate, model {m}", {"architecture": f"004-model{m}", "augment_preset": "none",
                                               **_CUSTOM_004}, 1,
                 sweep=Sweep("learning_rate", (1e-2, 1e-3, 1e-4, 1e-5, 1e-6))) for m in (1, 2, 3)
        ) + tuple(
            Step(f"Table 1, model {m}", {"architecture": f"004-model{m}", **_CUSTOM_004}, 5,
                 sweep=Sweep("augment_preset", ("none", "aug1", "aug2")), published=_table1_004(m))
            for m in (1, 2, 3)
        ) + (
            Step("ResNet50, RMSprop", dict(architecture="004-resnet50", weights="imagenet", optimizer="rmsprop",
                                           epochs=10, patience=1000, augment_preset="none", image_size=32), 1,
                 sweep=Sweep("learning_rate", (1e-3, 2e-5)), published=((1e-3, .67),)),
            Step("VGG16, SGD", dict(architecture="004-vgg16", weights="imagenet", optimizer="sgd",
                                    learning_rate=1e-3, momentum=0.9, epochs=10, patience=1000,
                                    augment_preset="none", image_size=32), 1, published=(("accuracy", .84),)),
        ),
        "small": (
            Step("learning rate, model 2", {"architecture": "004-model2", "augment_preset": "none",
                                            "image_size": 32, "epochs": 6, "patience": 10, "limit": 500,
                                            "test_limit": 200}, 1,
                 sweep=Sweep("learning_rate", (1e-2, 1e-3, 1e-4))),
            Step("Table 1, model 2", {"architecture": "004-model2", "image_size": 32, "epochs": 6, "patience": 10,
                                      "learning_rate": 1e-3, "limit": 500, "test_limit": 200}, 1,
                 sweep=Sweep("augment_preset", ("none", "aug1", "aug2")), published=_table1_004(2)),
        ),
    },
    small_note=("model 2 at 32x32, 500 training images (400 after the validation split), 200 test images, 6 "
                "epochs: its learning-rate sweep and its Table 1 row (basic, aug1 with ZCA, aug2), 1 run per point "
                "(the lr 1e-3 point is shared, so 5 runs in all)"),
    deviations=(
        "Filter counts and dense sizes are not in the report; ours are in core/models/report_models.py (model 1 is the "
        "Keras CIFAR-10 example, which its layer order matches).",
        "The report used binary cross-entropy and Adam's legacy decay 1e-6 for the custom models and EarlyStopping "
        "min_delta 0.01; we use categorical cross-entropy, plain Adam and the paper's callbacks (min_delta 0).",
        "ZCA whitening is a model layer here, fitted on the training split and applied to test images too.",
    ),
)

REPORTS: dict[str, Report] = {r.id: r for r in (_R001, _R002, _R003, _R004)}
SIZES = ("small", "full")


def get(report_id: str) -> Report:
    """The report by id (``"1"`` and ``"001"`` both work); a ValueError listing the ids otherwise."""
    key = str(report_id).strip().zfill(3)
    if key not in REPORTS:
        raise ValueError(f"unknown report {report_id!r}; choose one of {', '.join(REPORTS)}")
    return REPORTS[key]


def published_params(architecture: str) -> tuple[str, int] | None:
    """``(report id, parameter count)`` where a report publishes the architecture's size."""
    for report in REPORTS.values():
        if report.models.get(architecture):
            return report.id, report.models[architecture]  # type: ignore[return-value]
    return None


# ------------------------------------------------------------------------------------------ plan -> protocols

@dataclass(frozen=True)
class PlannedStep:
    """One step of a chosen plan, made concrete: its base protocol and repeats, or why it cannot run."""

    step: Step
    protocol: Protocol | None
    repeats: int
    problem: str | None = None
    """The protocol's one-line ValueError when this dataset or these options do not fit the step."""


def plan(report: Report, size: str = "small", dataset: str | None = None, data_path: str | None = None,
         weights: str | None = None, seed: int = 0, repeats: int | None = None) -> list[PlannedStep]:
    """Every step of ``report``'s ``size`` plan as a protocol, each validated before anything trains.

    The one translation of a plan and the user's choices into protocols, shared by ``python -m core report``
    and the Related reports page. ``weights`` (``"imagenet"``, a file, or ``"none"`` for random initialisation)
    goes only to the steps whose model has ImageNet weights: a step that trains a CNN from scratch ignores it,
    as a protocol must (:class:`~core.protocol.config.Protocol` refuses weights for a CNN). ``repeats``
    overrides every step's own.
    """
    if size not in SIZES:
        raise ValueError(f"unknown plan size {size!r}; choose one of {', '.join(SIZES)}")
    dataset = dataset or report.dataset
    out = []
    for step in report.plans[size]:
        try:
            base = step.protocol(dataset, data_path, **_step_overrides(step, dataset, weights, seed))
            if step.sweep is not None:
                step.sweep.protocols(base)
            out.append(PlannedStep(step, base, repeats or step.repeats))
        except ValueError as exc:
            out.append(PlannedStep(step, None, repeats or step.repeats, str(exc)))
    return out


def _step_overrides(step: Step, dataset: str, weights: str | None, seed: int) -> dict[str, Any]:
    """The user's choices as protocol overrides of one step (see :func:`plan`)."""
    from ..protocol.arch_spec import info

    options: dict[str, Any] = {"seed": seed}
    if is_keras_dataset(dataset):
        options["image_size"] = 128  # ignored by the Keras datasets; keeps the key independent of the plan
    if weights is not None:
        chosen = None if weights.lower() == "none" else weights
        architecture = step.options.get("architecture")
        if chosen is None or architecture is None or info(architecture).kind != "cnn":
            options["weights"] = chosen
    return options


# ------------------------------------------------------------------------------------- ours beside theirs

def experiments_of(report: Report, experiments: list[Any]) -> list[Any]:
    """The stored experiments (:class:`core.app.catalog.Experiment`) that trained one of the report's models."""
    return [exp for exp in experiments if exp.protocol.model_id in report.models]


def published_sweep(report: Report, architecture: str, param: str) -> list[tuple[Any, float]]:
    """The report's published ``(swept value, test accuracy)`` pairs for one model and swept field."""
    out = []
    for step in report.plans.get("full", ()):
        if step.sweep is None or step.sweep.param != param:
            continue
        if param == "architecture" or step.options.get("architecture") == architecture:
            out += [(value, acc) for value, acc in step.published if isinstance(acc, float)]
    return out


def published_for(report: Report, architecture: str) -> list[tuple[str, Any]]:
    """The report's published numbers for single runs of ``architecture`` (labelled as the report labels them)."""
    out = []
    for step in report.plans.get("full", ()):
        if step.sweep is None and step.options.get("architecture") == architecture:
            out += [(f"{step.title}: {label}", value) for label, value in step.published]
    return out


def two_stage_rows(experiments: list[Any]) -> pd.DataFrame:
    """Does a two-stage head help this model too? One row per experiment: stage one's and both heads' mean
    test accuracy, their gains, the paired t-test's p when there are two repeats or more, and stage one with
    its BatchNorm statistics re-estimated (NaN without BatchNorm): the paper's Table 3 explanation."""
    from ..results import stats

    rows = []
    for exp in experiments:
        table = stats.table1(exp.runs)
        tests = stats.table2(exp.runs)
        row = {"model": exp.protocol.model_id, "protocol": exp.protocol.describe(), "repeats": len(exp.runs),
               "stage one": table.iloc[0]["test mean"], "Adam head": table.iloc[1]["test mean"],
               "SGD head": table.iloc[2]["test mean"]}
        bn = stats.bn_layers(exp.runs)
        row["stage one, BatchNorm re-estimated"] = float("nan") if not bn else float(sum(
            stats.metric(run, "stage1", "test", f"{run['protocol']['stage1_eval']}_bn") for run in exp.runs)
            / len(exp.runs))
        row["Adam gain"] = row["Adam head"] - row["stage one"]
        row["SGD gain"] = row["SGD head"] - row["stage one"]
        first = tests[tests["repeats used"] == "all repeats"] if not tests.empty else tests
        for head, name in HEAD_NAMES.items():
            label = name.removesuffix(" head")
            match = first[first["comparison"].str.contains(label)] if not first.empty else first
            row[f"p ({label})"] = float(match["p (t-test)"].iloc[0]) if len(match) else float("nan")
        rows.append(row)
    return pd.DataFrame(rows)
