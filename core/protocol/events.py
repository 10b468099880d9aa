"""Progress events, typed: what a training run reports while it works, one shape per kind of event.

Why: nine modules write events and five read them; as untyped ``{"stage": ...}`` dicts a reader could only
guess which keys an event has. The wire format stays a plain dict (events cross processes through the job
queue's JSON and Ray), so these are :class:`~typing.TypedDict` s, not classes: a writer builds the same dict,
a reader asks :func:`event_kind` which shape it has.

An event's ``stage`` alone does not say its kind: an epoch of stage one and stage one's resume after a crash
both have ``stage == "stage1"``. :func:`event_kind` decides from the keys, as every reader did by hand.
"""

from __future__ import annotations

from typing import Any, Literal, NotRequired, TypedDict

EventKind = Literal["epoch", "resumed", "restarted", "plan", "loading", "repeat", "stored", "waiting",
                    "batchnorm", "features", "sweep_point", "backbone", "gan", "other"]


class EpochLogs(TypedDict, total=False):
    accuracy: float
    val_accuracy: float
    loss: float
    val_loss: float
    seconds: float
    learning_rate: float


class EpochEvent(TypedDict):
    """One finished epoch of a training stage (``stage1``, ``stage2_adam``, ``stage2_sgd``)."""

    stage: str
    epoch: int
    """1-based."""
    epochs: int
    """The stage's epoch budget."""
    logs: EpochLogs
    repeat: NotRequired[int]


class ResumedEvent(TypedDict):
    """A stage continued from its checkpoint after ``resumed_at_epoch`` epochs (a crash, a handed-back job)."""

    stage: str
    resumed_at_epoch: int
    repeat: NotRequired[int]


class RestartedEvent(TypedDict):
    """A stage starts again from scratch (its checkpoint was torn); ``restarted`` says why."""

    stage: str
    restarted: str


class PlanEvent(TypedDict):
    """What a job will train: the repeats still to do."""

    stage: Literal["plan"]
    todo: list[int]
    repeats: int
    repeats_done: int


class LoadingEvent(TypedDict):
    stage: Literal["loading"]
    dataset: str
    repeat: NotRequired[int]


class RepeatEvent(TypedDict):
    """A repeat starts; a Ray task also names the ``node`` and ``pid`` it runs on."""

    stage: Literal["repeat"]
    repeat: int
    repeats: int
    node: NotRequired[str]
    pid: NotRequired[int]


class StoredEvent(TypedDict):
    """A repeat's record is in the store (``by`` another process when this one did not train it)."""

    stage: Literal["stored"]
    repeat: int
    by: NotRequired[str]


class WaitingEvent(TypedDict):
    """Another process holds the repeat's lease; this one waits for it."""

    stage: Literal["waiting"]
    repeat: int
    holder_pid: NotRequired[int | None]
    holder_host: NotRequired[str | None]


class BatchNormEvent(TypedDict):
    stage: Literal["batchnorm"]
    layers: int
    repeat: NotRequired[int]


class FeaturesEvent(TypedDict):
    stage: Literal["features"]
    seconds: float
    repeat: NotRequired[int]


class SweepPointEvent(TypedDict):
    stage: Literal["sweep_point"]
    sweep_index: int
    points: int
    param: str
    sweep_value: Any


class BackboneEvent(TypedDict):
    """A frozen backbone's features of one split, read from the feature cache or computed."""

    stage: Literal["backbone"]
    split: str
    cached: bool
    seconds: float
    images: NotRequired[int]


class GanEvent(TypedDict, total=False):
    """One DCGAN epoch of one class (``gan_epoch``), or GAN images reused from the cache (``reused``)."""

    stage: Literal["gan"]
    gan_class: int
    gan_epoch: int
    gan_epochs: int
    d_loss: float
    g_loss: float
    seconds: float
    reused: bool
    images: int


ProgressEvent = (EpochEvent | ResumedEvent | RestartedEvent | PlanEvent | LoadingEvent | RepeatEvent | StoredEvent
                 | WaitingEvent | BatchNormEvent | FeaturesEvent | SweepPointEvent | BackboneEvent | GanEvent)

_BY_STAGE: dict[str, EventKind] = {k: k for k in ("plan", "loading", "repeat", "stored", "waiting", "batchnorm",
                                                   "features", "sweep_point", "backbone", "gan")}


def event_kind(event: dict[str, Any]) -> EventKind:
    """Which of the shapes above ``event`` has (``"other"`` for a stage this module does not know)."""
    if "epoch" in event:
        return "epoch"
    if "resumed_at_epoch" in event:
        return "resumed"
    if "restarted" in event:
        return "restarted"
    return _BY_STAGE.get(str(event.get("stage")), "other")


class JobProgress(TypedDict, total=False):
    """A job's ``progress`` as the queue folds the events into it (:func:`core.jobs.queue.apply_event`)."""

    repeat: int
    """The repeat the live view follows (0-based)."""
    repeats: int
    repeats_done: int
    stage: str
    epoch: int
    epochs: int
    logs: EpochLogs
    history: list[dict[str, float]]
    eta_seconds: float | None
    todo: list[int]
    training: list[int]
    resumed: list[dict[str, Any]]
    epoch_seconds: dict[str, list[float]]
    clock: dict[str, float]
    """Wall-clock stamps: ``queued``, ``ahead`` (jobs ahead at submission), ``claimed``, ``active_before``,
    ``first_event``, ``loading_since``, ``repeat_since``, ``stage_since`` (:mod:`core.jobs.live`)."""
    measured: dict[str, Any]
    """What parts of this job took: ``startup``, ``loading`` (seconds), ``between`` ([total, repeats])."""
    estimate: dict[str, float]
    """The estimate's parts stored at submission (:meth:`core.app.estimate.Estimate.parts`)."""
    repeat_epoch_seconds: float
    repeat_epochs: dict[str, int]
