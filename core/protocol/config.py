"""Experiment protocol as data.

One frozen dataclass, :class:`Protocol`, holds every choice of an experiment. Its defaults are the paper's
values (section 4); every point the paper leaves open is an explicit field with the paper's most likely reading
as default, so that a run record always says exactly what was done and the app can compare choices.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Literal

from .arch_spec import info as arch_info

DATASETS = ("fashion-mnist", "cifar10", "dogs-cats", "face-mask", "folder")
"""Dataset ids accepted everywhere (CLI, jobs, pages)."""

PHOTO_DATASETS = ("dogs-cats", "face-mask", "folder")
"""Datasets read from class folders with OpenCV; the paper augments these (small photo sets)."""

WeightChoice = Literal["last", "best"]
PRECISIONS = ("float32", "tf32", "bfloat16")
ENGINES = ("plain", "lockstep")
MAX_REPEATS = 1000
"""Upper bound on repeats per experiment (the paper ran 20); it keeps a typo from queueing years of work."""
MAX_EPOCHS = 1000
IMAGE_SIZES = (8, 512)
"""Smallest and largest side folder images may be resized to (512x512x3 uint8 is 0.8 MB per image)."""
OPTIMIZERS = ("adam", "sgd", "rmsprop")
"""Stage one's optimizer choices: the paper's Adam, report 003's SGD, report 004's RMSprop (its ResNet)."""
AUGMENT_PRESETS = ("paper", "none", "aug1", "aug2", "cows-horses")
"""Augmentation recipes by name; :data:`core.data.augment.PRESETS` says what each one does and where it is from."""
MAX_GAN_IMAGES = 10000
ZCA_MAX_DIMS = 4096
"""Largest image (height x width x channels) ZCA whitening accepts: its matrix is that size squared
(4,096 values: a 64 MB matrix; CIFAR-10's 32x32x3 is 3,072)."""


@dataclass(frozen=True)
class Augmentation:
    """The paper's ImageDataGenerator ranges, re-expressed as Keras preprocessing layers.

    ``rotation_deg`` is ImageDataGenerator's ``rotation_range`` (degrees, both ways), ``zoom`` its
    ``zoom_range`` (scale in ``[1 - zoom, 1 + zoom]``), ``shift`` its width/height shift as a fraction of
    the side. ``fill_mode="nearest"`` is ImageDataGenerator's default (Keras layers default to "reflect").
    """

    rotation_deg: float = 10.0
    zoom: float = 0.1
    shift: float = 0.2
    horizontal_flip: bool = True
    fill_mode: str = "nearest"


@dataclass(frozen=True)
class Protocol:
    """Everything that determines one experiment's numbers (except the repeat's seed).

    Paper values: Adam, categorical cross-entropy, batch 32, up to 50 epochs, 20% validation split,
    EarlyStopping + ModelCheckpoint on ``val_accuracy`` with patience 10, augmentation for the photo sets.
    Face Mask "version 2" is ``patience=5, reduce_lr=True`` (:meth:`paper_v2`).
    """

    dataset: str = "fashion-mnist"
    data_path: str | None = None
    """Where the data is; ``None`` means the loader's standard places (see :mod:`core.data.datasets`)."""
    architecture: str | None = None
    """Model builder id from :mod:`core.models.models`; ``None`` = the dataset's own (``folder`` uses ``dogs-cats``)."""
    image_size: int = 128
    """Side that folder images are resized to (the paper: 128x128x3). Ignored for the Keras datasets."""

    epochs: int = 50
    batch_size: int = 32
    validation_split: float = 0.2
    test_split: float = 0.2
    """Test share for flat class-folder datasets that ship no test split (the paper's Face Mask recipe)."""
    patience: int = 10
    reduce_lr: bool = False
    """Face Mask version 2: ReduceLROnPlateau(factor 0.5, patience 3, min 1e-5) on ``val_accuracy``."""
    lr_factor: float = 0.5
    lr_patience: int = 3
    min_lr: float = 1e-5
    adam_lr: float = 1e-3
    sgd_lr: float = 0.01
    sgd_momentum: float = 0.9
    """The paper says "SGD with momentum" without a value; 0.9 is the usual choice."""

    augment: bool | None = None
    """``None``: the paper's choice (on for the photo datasets, off for Fashion-MNIST and CIFAR-10)."""
    augmentation: Augmentation = field(default_factory=Augmentation)

    stage1_eval: WeightChoice = "last"
    """Which stage-one weights Table 1 reports: the last epoch's (the paper's reading of section 5) or the
    best ``val_accuracy`` checkpoint. Both are always measured and recorded."""
    features_from: WeightChoice = "last"
    """Which stage-one weights extract the features that stage two trains on."""
    head_init: Literal["fresh", "warm"] = "fresh"
    """Stage two's softmax layer: freshly initialised (the paper's "brand-new model") or started from
    stage one's softmax weights."""
    stage2_eval: WeightChoice = "last"
    """Which stage-two weights are reported. Both are recorded; the paper does not say."""

    bn_momentum: float = 0.99
    """Momentum of every BatchNormalization layer's moving mean and variance in stage one: Keras' default
    0.99 (what the paper's Keras models used; the statistics average over roughly the last 100 steps). Lower
    values make the inference-mode statistics follow the weights more closely: the intervention that tests
    whether the second stage's gain is BatchNorm statistics lagging behind the weights."""

    resplit: bool = False
    """Draw a new train/validation(/test) split for every repeat (seed ``seed + repeat``), as the paper's
    ``train_test_split(shuffle=True)`` without a fixed seed did, instead of one split shared by all repeats.
    Stage one and stage two of a repeat always share its split, so comparisons stay paired."""
    precision: str = "float32"
    """Stage one's compute type: ``float32`` (the paper's: float32 arithmetic throughout, TF32 switched off
    on GPUs), ``tf32`` (float32 weights and activations, matrix products and convolutions on a GPU's TF32
    tensor cores: 10-bit mantissa inputs, float32 accumulation; the same as float32 on a CPU) or ``bfloat16``
    (Keras ``mixed_bfloat16``: bf16 compute, float32 weights, softmax and loss). Stage two's heads always run
    in float32."""
    engine: str = "plain"
    """``plain``: one Keras ``fit`` per repeat (every backend). ``lockstep``: all repeats as one compiled
    JAX program (:mod:`core.training.lockstep`, ``KERAS_BACKEND=jax``)."""

    optimizer: str = "adam"
    """Stage one's optimizer: ``adam`` (the paper's), ``sgd`` (with :attr:`momentum` and :attr:`weight_decay`,
    report 003) or ``rmsprop`` (report 004's ResNet). The stage-two heads are always the paper's Adam and SGD."""
    learning_rate: float | None = None
    """Stage one's learning rate; ``None`` = the optimizer's paper value: ``adam_lr`` (1e-3) for Adam,
    ``sgd_lr`` (0.01) for SGD, 1e-3 for RMSprop. This is what a learning-rate sweep varies."""
    momentum: float = 0.9
    """Stage one's SGD momentum (report 003: 0.99). The SGD head keeps :attr:`sgd_momentum`."""
    weight_decay: float = 0.0
    """Stage one's weight decay, added to the gradient as PyTorch's SGD does (``g + wd * w``, which momentum
    then carries; report 003: 0.05). Applies to every weight, as there; 0 = none."""
    augment_preset: str = "paper"
    """Augmentation recipe when augmentation is on (:data:`AUGMENT_PRESETS`): ``paper`` uses
    :attr:`augmentation`'s ranges; ``none`` trains without augmentation on any dataset (report 004's "basic
    version"); ``aug1``/``aug2`` are report 004's approaches (``aug1`` includes ZCA whitening fitted on the
    training split), ``cows-horses`` report 003's random transforms. Choosing a preset other than ``paper``
    and ``none`` turns augmentation on unless ``augment`` says otherwise."""
    per_class: int | None = None
    """Keep only this many images per class of the training pool (before the validation split; after the test
    split of a flat folder), drawn with the split seed: report 003's tiny regime is 41 per class."""
    weights: str | None = None
    """Backbone weights of the ImageNet architectures (reports 002 and 004): ``None`` = random initialisation,
    ``"imagenet"`` = Keras' download, or the path of a local weights file."""
    gan_images: int = 0
    """Report 003's GAN augmentation: a DCGAN per class is trained on the training split and this many of its
    images per class are added to the training set (:mod:`core.models.gan`). 0 = off."""
    gan_epochs: int = 50
    """Passes of each class's DCGAN over that class's training images."""
    gan_latent: int = 10
    """Length of the DCGAN's latent vector (report 003: "a random latent vector z of length 10")."""
    gan_filters: int = 16
    """Width of the DCGAN (filters of its widest-resolution layer; the PyTorch tutorial's 64 is 16x the work)."""

    limit: int | None = None
    """Use only this many training images (stratified), for quick looks. ``None`` = all."""
    test_limit: int | None = None
    """Use only this many test images (stratified). ``None`` = all."""
    seed: int = 0
    """Seed of the data split; repeat ``i`` trains with seed ``seed + i``."""

    def __post_init__(self) -> None:
        if self.dataset not in DATASETS:
            raise ValueError(f"unknown dataset {self.dataset!r}; choose one of {', '.join(DATASETS)}")
        if self.dataset == "folder" and not self.data_path:
            raise ValueError("the 'folder' dataset needs a data path (a folder with one sub-folder per class)")
        _check_range("epochs", self.epochs, 1, MAX_EPOCHS)
        _check_range("batch_size", self.batch_size, 1, 65536)
        _check_range("patience", self.patience, 1, MAX_EPOCHS)
        _check_range("lr_patience", self.lr_patience, 1, MAX_EPOCHS)
        _check_range("image_size", self.image_size, *IMAGE_SIZES)
        for name in ("validation_split", "test_split"):
            if not 0.0 < getattr(self, name) < 1.0:
                raise ValueError(f"{name} must be between 0 and 1 (got {getattr(self, name)})")
        for name in ("adam_lr", "sgd_lr", "min_lr"):
            if not 0.0 < getattr(self, name) <= 10.0:
                raise ValueError(f"{name} must be a positive learning rate of at most 10 (got {getattr(self, name)})")
        if not 0.0 <= self.sgd_momentum < 1.0:
            raise ValueError(f"sgd_momentum must be in [0, 1) (got {self.sgd_momentum})")
        if isinstance(self.bn_momentum, bool) or not 0.0 <= self.bn_momentum < 1.0:
            raise ValueError(f"bn_momentum must be in [0, 1) (got {self.bn_momentum})")
        if not 0.0 < self.lr_factor < 1.0:
            raise ValueError(f"lr_factor must be between 0 and 1 (got {self.lr_factor})")
        for name in ("limit", "test_limit"):
            value = getattr(self, name)
            if value is not None and value < 10:
                raise ValueError(f"{name} must be at least 10 images")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)} (got {self.precision!r})")
        if self.engine not in ENGINES:
            raise ValueError(f"engine must be one of {', '.join(ENGINES)} (got {self.engine!r})")
        for name in ("stage1_eval", "features_from", "stage2_eval"):
            if getattr(self, name) not in ("last", "best"):
                raise ValueError(f"{name} must be 'last' or 'best' (got {getattr(self, name)!r})")
        if self.head_init not in ("fresh", "warm"):
            raise ValueError(f"head_init must be 'fresh' or 'warm' (got {self.head_init!r})")
        self._check_stage1_options()

    def _check_stage1_options(self) -> None:
        """The options of the related reports' systems (fields after ``head_init``'s checks)."""
        arch = arch_info(self.model_id)
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {', '.join(OPTIMIZERS)} (got {self.optimizer!r})")
        if self.learning_rate is not None and not 0.0 < self.learning_rate <= 10.0:
            raise ValueError(f"learning_rate must be a positive learning rate of at most 10 (got {self.learning_rate})")
        if not 0.0 <= self.momentum < 1.0:
            raise ValueError(f"momentum must be in [0, 1) (got {self.momentum})")
        if not 0.0 <= self.weight_decay <= 1.0:
            raise ValueError(f"weight_decay must be in [0, 1] (got {self.weight_decay})")
        if self.augment_preset not in AUGMENT_PRESETS:
            raise ValueError(f"augment_preset must be one of {', '.join(AUGMENT_PRESETS)} "
                             f"(got {self.augment_preset!r})")
        if self.per_class is not None:
            _check_range("per_class", self.per_class, 2, 10**7)
        _check_range("gan_images", self.gan_images, 0, MAX_GAN_IMAGES)
        _check_range("gan_epochs", self.gan_epochs, 1, MAX_EPOCHS)
        _check_range("gan_latent", self.gan_latent, 1, 512)
        _check_range("gan_filters", self.gan_filters, 4, 128)
        if self.weights is not None and arch.kind == "cnn":
            raise ValueError(f"--weights applies to the ImageNet architectures only; {arch.id} is trained from "
                             "scratch")
        if self.augment and self.augment_preset == "none":
            raise ValueError("augment_preset 'none' means no augmentation; it cannot be combined with augment=True")
        if arch.frozen and self.augment:
            raise ValueError(f"{arch.id} trains on cached features of a frozen backbone, so it cannot augment "
                             "(report 002 did not)")
        side, channels = {"fashion-mnist": (28, 1), "cifar10": (32, 3)}.get(self.dataset, (self.image_size, 3))
        if self.architecture is not None and side < arch.min_side:  # the paper's defaults keep their behaviour
            raise ValueError(f"{arch.id} needs inputs of at least {arch.min_side}x{arch.min_side} "
                             f"({self.dataset} gives {side}x{side}; use --image-size for folder datasets)")
        if self.augment_preset == "aug1" and self.use_augmentation and side * side * channels > ZCA_MAX_DIMS:
            raise ValueError(f"aug1's ZCA whitening supports images of at most {ZCA_MAX_DIMS} values "
                             f"({side}x{side}x{channels} is {side * side * channels}); use --image-size 32")
        if arch.channels is not None and channels != arch.channels:
            raise ValueError(f"{arch.id} needs colour images ({self.dataset} has {channels} channel)")
        if self.engine == "lockstep" and (arch.source != "paper" or any(
                getattr(self, name) != _DEFAULTS[name] for name in REPORT_FIELDS)):
            raise ValueError("the lockstep engine runs the paper's models and options only; use the plain engine "
                             "for the related reports' models and options")

    @property
    def use_augmentation(self) -> bool:
        """``augment`` if given; else off for a frozen backbone, on for a named preset, else the paper's choice
        (on for the photo datasets)."""
        if self.augment is not None:
            return self.augment
        if arch_info(self.model_id).frozen or self.augment_preset == "none":
            return False
        return self.augment_preset != "paper" or self.dataset in PHOTO_DATASETS

    @property
    def stage1_lr(self) -> float:
        """Stage one's learning rate as trained (see :attr:`learning_rate`)."""
        if self.learning_rate is not None:
            return self.learning_rate
        return {"adam": self.adam_lr, "sgd": self.sgd_lr}.get(self.optimizer, 1e-3)

    @property
    def model_id(self) -> str:
        if self.architecture:
            return self.architecture
        return "dogs-cats" if self.dataset == "folder" else self.dataset

    @classmethod
    def paper_v2(cls, **overrides: Any) -> Protocol:
        """Face Mask "version 2": EarlyStopping patience 5 plus learning-rate reduction."""
        return cls(**{"dataset": "face-mask", "patience": 5, "reduce_lr": True, **overrides})

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Protocol:
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        if isinstance(values.get("augmentation"), dict):
            values["augmentation"] = Augmentation(**values["augmentation"])
        return cls(**values)

    def key(self) -> str:
        """Stable hash of everything that changes the numbers.

        Fashion-MNIST has one form (the IDX files, wherever they are read from), so its path is left out, as is
        CIFAR-10's when none is given (Keras' copy of the official batches). A CIFAR-10 path may hold the
        official batches or a re-encoded image copy ("CIFAR-10, JPEG copy": other pixels), so, as for folder
        datasets, the resolved path is part of the identity: runs on different copies are never pooled. The
        records carry each copy's content fingerprint (:meth:`core.data.datasets.Dataset.identity`).

        Fields added after the first records were stored (:data:`KEYED_WHEN_SET`) are hashed only when they
        differ from their default: a record made before a field existed was made with its default behaviour and
        keeps its key.
        """
        data = self.to_dict()
        if self.dataset == "fashion-mnist" or not self.data_path:
            data["data_path"] = None
        else:
            data["data_path"] = str(Path(self.data_path).expanduser().resolve())
        data["augment"] = self.use_augmentation
        if not self.use_augmentation:  # no augmentation is one experiment however it was asked for
            data["augment_preset"] = _DEFAULTS["augment_preset"]
        data["architecture"] = self.model_id
        if self.weights not in (None, "imagenet"):
            data["weights"] = str(Path(self.weights).expanduser().resolve())
        for name in KEYED_WHEN_SET:
            if data[name] == _DEFAULTS[name]:
                del data[name]
        blob = json.dumps(data, sort_keys=True, default=str).encode()
        return hashlib.sha256(blob).hexdigest()[:16]

    def with_(self, **changes: Any) -> Protocol:
        return replace(self, **changes)

    def describe(self) -> str:
        """One line a reader can check a number against."""
        parts = [self.dataset]
        if self.architecture and self.architecture != self.dataset:
            parts.append(f"model {self.architecture}")
        parts += [f"{self.epochs} epochs max", f"batch {self.batch_size}", f"patience {self.patience}"]
        parts += self._describe_stage1_options()
        if self.reduce_lr:
            parts.append("ReduceLROnPlateau")
        parts.append("augmented" if self.use_augmentation else "no augmentation")
        parts.append(f"stage-1 {self.stage1_eval} weights, features from {self.features_from}, "
                     f"{self.head_init} head")
        if self.bn_momentum != _DEFAULTS["bn_momentum"]:
            parts.append(f"BatchNorm momentum {self.bn_momentum:g}")
        if self.resplit:
            parts.append("new split per repeat")
        if self.precision != "float32":
            parts.append(self.precision)
        if self.engine != "plain":
            parts.append(f"{self.engine} engine")
        if self.limit:
            parts.append(f"{self.limit} training images")
        if self.test_limit:
            parts.append(f"{self.test_limit} test images")
        return ", ".join(parts)

    def _describe_stage1_options(self) -> list[str]:
        parts = []
        if self.optimizer != "adam" or self.learning_rate is not None:
            text = f"stage-1 {self.optimizer} lr {self.stage1_lr:g}"
            if self.optimizer == "sgd":
                text += f" momentum {self.momentum:g}"
            parts.append(text)
        if self.weight_decay:
            parts.append(f"weight decay {self.weight_decay:g}")
        if self.augment_preset not in ("paper", "none") and self.use_augmentation:
            parts.append(f"{self.augment_preset} augmentation")
        if self.per_class:
            parts.append(f"{self.per_class} per class")
        if self.weights:
            parts.append("ImageNet weights" if self.weights == "imagenet" else f"weights {Path(self.weights).name}")
        elif arch_info(self.model_id).kind != "cnn":
            parts.append("random-init backbone")
        if self.gan_images:
            parts.append(f"GAN +{self.gan_images}/class ({self.gan_epochs} GAN epochs)")
        return parts


REPORT_FIELDS = ("optimizer", "learning_rate", "momentum", "weight_decay", "augment_preset", "per_class",
                 "weights", "gan_images", "gan_epochs", "gan_latent", "gan_filters")
"""Options added for the related reports' systems (issue 13)."""
KEYED_WHEN_SET = ("resplit", "precision", "engine", "bn_momentum") + REPORT_FIELDS
"""Protocol fields that entered the key after records existed; see :meth:`Protocol.key`."""
_DEFAULTS = {f.name: f.default for f in fields(Protocol) if f.name in KEYED_WHEN_SET}


def _check_range(name: str, value: Any, low: float, high: float) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
        raise ValueError(f"{name} must be between {low} and {high} (got {value!r})")
