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

from .arch_spec import ARCH_INFO
from .arch_spec import info as arch_info
from .options import check_field, declared, option
from .vocabulary import DATASETS, PHOTO_DATASETS


WeightChoice = Literal["last", "best"]
WEIGHTS = ("last", "best")
PRECISIONS = ("float32", "tf32", "bfloat16")
ENGINES = ("plain", "lockstep")
MAX_REPEATS = 1000
"""Upper bound on repeats per experiment (the paper ran 20); it keeps a typo from queueing years of work."""
MAX_EPOCHS = 1000
PAPER_IMAGE_SIZE = 128
"""The side the paper resizes its photos to."""
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

    dataset: str = field(default="fashion-mnist", metadata=option(
        flag="--dataset", help="which dataset: the paper's four, or any folder of class sub-folders",
        choices=DATASETS, label="Dataset"))
    data_path: str | None = field(default=None, metadata=option(
        flag="--data", kind="path", metavar="PATH", help="where the dataset is (folder, IDX folder or CIFAR archive)"))
    """Where the data is; ``None`` means the loader's standard places (see :mod:`core.data.datasets`)."""
    architecture: str | None = field(default=None, metadata=option(
        flag="--architecture", optional=True, metavar="ID", group="stage one",
        help="stage-one model (default: the dataset's own from the paper); one of " + ", ".join(ARCH_INFO)))
    """Model builder id from :mod:`core.models.models`; ``None`` = the dataset's own (``folder`` uses ``dogs-cats``)."""
    image_size: int = field(default=PAPER_IMAGE_SIZE, metadata=option(
        flag="--image-size", kind="int", low=IMAGE_SIZES[0], high=IMAGE_SIZES[1],
        help="side folder images are resized to (the paper: 128)"))
    """Side that folder images are resized to (the paper: 128x128x3). Ignored for the Keras datasets."""

    epochs: int = field(default=50, metadata=option(
        flag="--epochs", kind="int", low=1, high=MAX_EPOCHS, label="Max epochs",
        help="epoch budget per stage (the paper: 50, with EarlyStopping)"))
    batch_size: int = field(default=32, metadata=option(
        flag="--batch-size", kind="int", low=1, high=65536, label="Batch size", help="batch size (the paper: 32)"))
    validation_split: float = field(default=0.2, metadata=option(
        flag="--validation-split", kind="float", low=0.0, high=1.0, low_open=True, high_open=True,
        help="share of the training pool held out for validation (the paper: 0.2)"))
    test_split: float = field(default=0.2, metadata=option(
        flag="--test-split", kind="float", low=0.0, high=1.0, low_open=True, high_open=True,
        help="test share of a flat class-folder dataset (the paper's Face Mask recipe: 0.2)"))
    """Test share for flat class-folder datasets that ship no test split (the paper's Face Mask recipe)."""
    patience: int = field(default=10, metadata=option(
        flag="--patience", kind="int", low=1, high=MAX_EPOCHS, label="Patience",
        help="EarlyStopping patience on val_accuracy (the paper: 10)"))
    reduce_lr: bool = field(default=False, metadata=option(
        flag="--reduce-lr", kind="bool", label="ReduceLROnPlateau", section="open",
        help="add ReduceLROnPlateau(factor 0.5, patience 3, min 1e-5), Face Mask version 2"))
    """Face Mask version 2: ReduceLROnPlateau(factor 0.5, patience 3, min 1e-5) on ``val_accuracy``."""
    lr_factor: float = field(default=0.5, metadata=option(
        flag="--lr-factor", kind="float", low=0.0, high=1.0, low_open=True, high_open=True,
        help="ReduceLROnPlateau's factor"))
    lr_patience: int = field(default=3, metadata=option(
        flag="--lr-patience", kind="int", low=1, high=MAX_EPOCHS, help="ReduceLROnPlateau's patience"))
    min_lr: float = field(default=1e-5, metadata=option(
        flag="--min-lr", kind="float", low=0.0, high=10.0, low_open=True, help="ReduceLROnPlateau's floor"))
    adam_lr: float = field(default=1e-3, metadata=option(
        flag="--adam-lr", kind="float", low=0.0, high=10.0, low_open=True,
        help="the Adam learning rate of stage one and of the Adam head (the paper: Keras' 1e-3)"))
    sgd_lr: float = field(default=0.01, metadata=option(
        flag="--sgd-lr", kind="float", low=0.0, high=10.0, low_open=True,
        help="the SGD head's learning rate (Keras' 0.01)"))
    sgd_momentum: float = field(default=0.9, metadata=option(
        flag="--sgd-momentum", kind="float", low=0.0, high=1.0, high_open=True, label="SGD momentum",
        section="open", step=0.05,
        help="SGD head's momentum, in [0, 1) (the paper: 'SGD with momentum', no value; 0.9)"))
    """The paper says "SGD with momentum" without a value; 0.9 is the usual choice."""

    augment: bool | None = field(default=None, metadata=option(
        flag="--augment", kind="tristate", label="Augmentation", section="open",
        help="augmentation (default: the paper's choice, on for photo datasets only)"))
    """``None``: the paper's choice (on for the photo datasets, off for Fashion-MNIST and CIFAR-10)."""
    augmentation: Augmentation = field(default_factory=Augmentation)

    stage1_eval: WeightChoice = field(default="last", metadata=option(
        flag="--stage1-eval", choices=WEIGHTS, label="Stage-one weights reported", section="open",
        help="stage-one weights reported in Table 1 (the paper: last epoch)"))
    """Which stage-one weights Table 1 reports: the last epoch's (the paper's reading of section 5) or the
    best ``val_accuracy`` checkpoint. Both are always measured and recorded."""
    features_from: WeightChoice = field(default="last", metadata=option(
        flag="--features-from", choices=WEIGHTS, label="Features from", section="open",
        help="stage-one weights that extract stage two's features"))
    """Which stage-one weights extract the features that stage two trains on."""
    head_init: Literal["fresh", "warm"] = field(default="fresh", metadata=option(
        flag="--head-init", choices=("fresh", "warm"), label="Stage-two softmax", section="open",
        help="stage-two softmax freshly initialised (the paper's brand-new model) or warm-started from stage one's"))
    """Stage two's softmax layer: freshly initialised (the paper's "brand-new model") or started from
    stage one's softmax weights."""
    stage2_eval: WeightChoice = field(default="last", metadata=option(
        flag="--stage2-eval", choices=WEIGHTS, label="Stage-two weights reported", section="open",
        help="stage-two weights reported"))
    """Which stage-two weights are reported. Both are recorded; the paper does not say."""

    bn_momentum: float = field(default=0.99, metadata=option(
        flag="--bn-momentum", kind="float", low=0.0, high=1.0, high_open=True, label="BatchNorm momentum",
        section="open", step=0.01,
        help="momentum of stage one's BatchNorm moving statistics, in [0, 1) (Keras' default 0.99)"))
    """Momentum of every BatchNormalization layer's moving mean and variance in stage one: Keras' default
    0.99 (what the paper's Keras models used; the statistics average over roughly the last 100 steps). Lower
    values make the inference-mode statistics follow the weights more closely: the intervention that tests
    whether the second stage's gain is BatchNorm statistics lagging behind the weights."""

    no_dropout: bool = field(default=False, metadata=option(
        flag="--no-dropout", kind="bool", label="Stage one without dropout", section="open",
        help="train stage one with every dropout rate set to 0 (the intervention on dropout's variance shift)"))
    """Train stage one with every Dropout layer's rate at 0 (the layers stay, so the feature layer keeps its
    name). Dropout scales its kept units by 1/(1-rate) in training only, so a BatchNorm layer after it sees a
    different variance in training than at inference (the "variance shift", Li et al. 2019); re-estimating the
    statistics with dropout off corrects exactly that. Training without dropout tests whether that, rather than
    the moving averages' lag, is what the second stage's gain was."""

    resplit: bool = field(default=False, metadata=option(
        flag="--resplit", kind="bool", label="New split per repeat", section="open",
        help="a new train/validation(/test) split per repeat (seed+i), as the paper's unseeded train_test_split "
             "did; default: one split shared by all repeats"))
    """Draw a new train/validation(/test) split for every repeat (seed ``seed + repeat``), as the paper's
    ``train_test_split(shuffle=True)`` without a fixed seed did, instead of one split shared by all repeats.
    Stage one and stage two of a repeat always share its split, so comparisons stay paired."""
    precision: str = field(default="float32", metadata=option(
        flag="--precision", choices=PRECISIONS, label="Precision", section="open",
        help="stage one's compute type: float32 (the paper's), tf32 (a GPU's TF32 tensor cores) or bfloat16 "
             "(pays off only on CPUs with AMX/AVX-512 BF16 or GPUs)"))
    """Stage one's compute type: ``float32`` (the paper's: float32 arithmetic throughout, TF32 switched off
    on GPUs), ``tf32`` (float32 weights and activations, matrix products and convolutions on a GPU's TF32
    tensor cores: 10-bit mantissa inputs, float32 accumulation; the same as float32 on a CPU) or ``bfloat16``
    (Keras ``mixed_bfloat16``: bf16 compute, float32 weights, softmax and loss). Stage two's heads always run
    in float32."""
    engine: str = field(default="plain", metadata=option(
        flag="--engine", choices=ENGINES,
        help="plain: one Keras fit per repeat (any backend); lockstep: all repeats as one compiled JAX program "
             "(KERAS_BACKEND=jax)"))
    """``plain``: one Keras ``fit`` per repeat (every backend). ``lockstep``: all repeats as one compiled
    JAX program (:mod:`core.training.lockstep`, ``KERAS_BACKEND=jax``)."""

    optimizer: str = field(default="adam", metadata=option(
        flag="--optimizer", choices=OPTIMIZERS, group="stage one", help="stage one's optimizer"))
    """Stage one's optimizer: ``adam`` (the paper's), ``sgd`` (with :attr:`momentum` and :attr:`weight_decay`,
    report 003) or ``rmsprop`` (report 004's ResNet). The stage-two heads are always the paper's Adam and SGD."""
    learning_rate: float | None = field(default=None, metadata=option(
        flag="--lr", aliases=("--learning-rate",), kind="float", optional=True, low=0.0, high=10.0, low_open=True,
        metavar="LR", group="stage one",
        help="stage one's learning rate (default: adam 1e-3, sgd 0.01, rmsprop 1e-3)"))
    """Stage one's learning rate; ``None`` = the optimizer's paper value: ``adam_lr`` (1e-3) for Adam,
    ``sgd_lr`` (0.01) for SGD, 1e-3 for RMSprop. This is what a learning-rate sweep varies."""
    momentum: float = field(default=0.9, metadata=option(
        flag="--momentum", kind="float", low=0.0, high=1.0, high_open=True, group="stage one",
        help="stage one's SGD momentum"))
    """Stage one's SGD momentum (report 003: 0.99). The SGD head keeps :attr:`sgd_momentum`."""
    weight_decay: float = field(default=0.0, metadata=option(
        flag="--weight-decay", kind="float", low=0.0, high=1.0, group="stage one",
        help="stage one's weight decay, PyTorch-style (added to the gradient)"))
    """Stage one's weight decay, added to the gradient as PyTorch's SGD does (``g + wd * w``, which momentum
    then carries; report 003: 0.05). Applies to every weight, as there; 0 = none."""
    augment_preset: str = field(default="paper", metadata=option(
        flag="--augment-preset", choices=AUGMENT_PRESETS, group="stage one",
        help="augmentation recipe: the paper's, none, report 004's aug1 (with ZCA) / aug2, report 003's"))
    """Augmentation recipe when augmentation is on (:data:`AUGMENT_PRESETS`): ``paper`` uses
    :attr:`augmentation`'s ranges; ``none`` trains without augmentation on any dataset (report 004's "basic
    version"); ``aug1``/``aug2`` are report 004's approaches (``aug1`` includes ZCA whitening fitted on the
    training split), ``cows-horses`` report 003's random transforms. Choosing a preset other than ``paper``
    and ``none`` turns augmentation on unless ``augment`` says otherwise."""
    per_class: int | None = field(default=None, metadata=option(
        flag="--per-class", kind="int", optional=True, low=2, high=10**7, metavar="N", group="stage one",
        help="keep N training images per class (report 003: 41)"))
    """Keep only this many images per class of the training pool (before the validation split; after the test
    split of a flat folder), drawn with the split seed: report 003's tiny regime is 41 per class."""
    weights: str | None = field(default=None, metadata=option(
        flag="--weights", kind="path", metavar="imagenet|PATH", group="stage one",
        help="ImageNet backbones' weights: 'imagenet' (Keras download) or a local file; default random"))
    """Backbone weights of the ImageNet architectures (reports 002 and 004): ``None`` = random initialisation,
    ``"imagenet"`` = Keras' download, or the path of a local weights file."""
    gan_images: int = field(default=0, metadata=option(
        flag="--gan-images", kind="int", low=0, high=MAX_GAN_IMAGES, metavar="N", group="stage one",
        help="add N DCGAN images per class to the training set (report 003)"))
    """Report 003's GAN augmentation: a DCGAN per class is trained on the training split and this many of its
    images per class are added to the training set (:mod:`core.models.gan`). 0 = off."""
    gan_epochs: int = field(default=50, metadata=option(
        flag="--gan-epochs", kind="int", low=1, high=MAX_EPOCHS, group="stage one",
        help="DCGAN training epochs per class"))
    """Passes of each class's DCGAN over that class's training images."""
    gan_latent: int = field(default=10, metadata=option(
        flag="--gan-latent", kind="int", low=1, high=512, group="stage one",
        help="DCGAN latent length (report 003: 10)"))
    """Length of the DCGAN's latent vector (report 003: "a random latent vector z of length 10")."""
    gan_filters: int = field(default=16, metadata=option(
        flag="--gan-filters", kind="int", low=4, high=128, group="stage one", help="DCGAN width"))
    """Width of the DCGAN (filters of its widest-resolution layer; the PyTorch tutorial's 64 is 16x the work)."""

    limit: int | None = field(default=None, metadata=option(
        flag="--limit", kind="int", optional=True, low=10, high=10**9, metavar="N", label="Training images",
        help="use only N training images (stratified), for quick looks"))
    """Use only this many training images (stratified), for quick looks. ``None`` = all."""
    test_limit: int | None = field(default=None, metadata=option(
        flag="--test-limit", kind="int", optional=True, low=10, high=10**9, metavar="N", label="Test images",
        help="use only N test images (stratified)"))
    """Use only this many test images (stratified). ``None`` = all."""
    seed: int = field(default=0, metadata=option(
        flag="--seed", kind="int", low=0, high=2**32 - 1 - MAX_REPEATS, label="Split seed", section="open",
        help="split seed; repeat i trains with seed + i"))
    """Seed of the data split; repeat ``i`` trains with seed ``seed + i``."""

    def __post_init__(self) -> None:
        for f, opt in declared(type(self)):  # every declared range and choice (core/protocol/options.py)
            check_field(f.name, getattr(self, f.name), opt)
        if self.dataset == "folder" and not self.data_path:
            raise ValueError("the 'folder' dataset needs a data path (a folder with one sub-folder per class)")
        self._check_stage1_options()

    def _check_stage1_options(self) -> None:
        """How the related reports' options combine (each one's own range is declared with the field)."""
        arch = arch_info(self.model_id)
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

    @classmethod
    def unknown_fields(cls, data: dict[str, Any]) -> list[str]:
        """Fields of ``data`` this code does not know, set to something other than off (None, False): a job
        queued by newer code. :meth:`from_dict` drops unknown fields (old records must load), so a worker
        asks first; a dropped ``no_dropout: true`` once made an old worker answer a no-dropout job with the
        paper-protocol experiment's stored repeats."""
        known = {f.name for f in fields(cls)}
        return sorted(k for k, v in data.items() if k not in known and v not in (None, False))

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
        if self.dataset in PHOTO_DATASETS and self.image_size != PAPER_IMAGE_SIZE:
            parts.append(f"{self.image_size}x{self.image_size} px")
        parts += [f"{self.epochs} epochs max", f"batch {self.batch_size}", f"patience {self.patience}"]
        parts += self._describe_stage1_options()
        if self.reduce_lr:
            parts.append("ReduceLROnPlateau")
        parts.append("augmented" if self.use_augmentation else "no augmentation")
        parts.append(f"stage-1 {self.stage1_eval} weights, features from {self.features_from}, "
                     f"{self.head_init} head")
        if self.bn_momentum != _DEFAULTS["bn_momentum"]:
            parts.append(f"BatchNorm momentum {self.bn_momentum:g}")
        if self.no_dropout:
            parts.append("no dropout")
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
KEYED_WHEN_SET = ("resplit", "precision", "engine", "bn_momentum", "no_dropout") + REPORT_FIELDS
"""Protocol fields that entered the key after records existed; see :meth:`Protocol.key`."""
_DEFAULTS = {f.name: f.default for f in fields(Protocol) if f.name in KEYED_WHEN_SET}
