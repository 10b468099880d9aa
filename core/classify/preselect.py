"""Which model a photo is meant for: Classify's preselection among the model sets it can load.

One pass of each candidate model set over the photo gives everything the page shows before the visitor picks:
each model's out-of-distribution verdict, the model chooser's probabilities (:mod:`core.classify.router`, which
reads those passes' features), the model it preselects, and the answer of every candidate, so the preselected
model's answer is on the page without a second pass. Without a chooser fitted for these models the rank rule
preselects (:func:`core.classify.classify.best_fit`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Sequence

from ..data.imageio import DEFAULT_MAX_PIXELS
from .classify import Models, Prediction, fit_order, fit_predictions

if TYPE_CHECKING:
    from .ood import Verdict
    from .router import Router


UNSURE = 0.9
"""Below this probability for its first choice the model chooser is unsure, and Classify says so beside the
answer with the other model's answer (a dog's face close-up went to the Face Mask model at 68 %, which then
answered "without_mask" with nothing to warn of it)."""


@dataclass(frozen=True)
class Preselection:
    """One photo against every candidate (indices are the candidates')."""

    predictions: list[Prediction | None]
    """Each candidate's answer with the default inversion, or None (no candidate there, or no statistics)."""
    route: dict[int, tuple[float, float]] | None
    """Candidate -> (the chooser's probability that the photo is of its dataset, the chooser's held-out
    accuracy on that dataset); None without a chooser for these candidates."""
    pick: int | None
    """The preselected candidate: the chooser's most probable, else the one the photo is most typical of."""
    seconds: float

    @property
    def verdicts(self) -> dict[int, Verdict]:
        """Candidate -> its out-of-distribution verdict on the photo (candidates with statistics only)."""
        return {i: p.ood for i, p in enumerate(self.predictions) if p is not None and p.ood is not None}

    def unsure(self) -> bool:
        """The chooser's first choice has less than :data:`UNSURE` probability."""
        return bool(self.route) and max(p for p, _ in self.route.values()) < UNSURE

    def alternative(self, picked: int) -> int | None:
        """The model to show beside ``picked`` when the chooser is unsure or chose another: its most probable
        candidate other than ``picked`` (measured, so its answer is at hand); None when it is sure of ``picked``."""
        if not self.route or (not self.unsure() and self.pick == picked):
            return None
        others = [i for i in sorted(self.route, key=lambda i: -self.route[i][0])
                  if i != picked and self.predictions[i] is not None]
        return others[0] if others else None

    def typical_first(self) -> list[int]:
        """Candidates with statistics, the one the photo is most typical of first."""
        verdicts = self.verdicts
        indices = list(verdicts)
        return [indices[j] for j in fit_order([verdicts[i] for i in indices])]


def preselect(candidates: Sequence[Models | None], data: bytes,
              chooser: tuple[Router, list[int]] | None = None, *,
              max_pixels: int = DEFAULT_MAX_PIXELS) -> Preselection:
    """Measure the photo against every candidate (None: a model set not to measure, e.g. one without
    statistics) and preselect one.

    ``chooser`` is the model chooser with, per dataset it routes to, the index of that model set among
    ``candidates`` (:func:`core.classify.router.for_choices`); it is used only when every model set it reads
    was measured. Raises :class:`core.data.imageio.ImageError` when the bytes are not a usable image.
    """
    started = time.perf_counter()
    present = [i for i, m in enumerate(candidates) if m is not None]
    measured = fit_predictions([candidates[i] for i in present], data, max_pixels=max_pixels)
    predictions: list[Prediction | None] = [None] * len(candidates)
    for i, prediction in zip(present, measured):
        predictions[i] = prediction
    route = _route(chooser, predictions)
    pick = max(route, key=lambda i: route[i][0]) if route else None
    selection = Preselection(predictions, route, pick, 0.0)
    if pick is None:
        order = selection.typical_first()
        pick = order[0] if order else None
    return Preselection(predictions, route, pick, time.perf_counter() - started)


def _route(chooser: tuple[Router, list[int]] | None,
           predictions: list[Prediction | None]) -> dict[int, tuple[float, float]] | None:
    """The chooser's probability and held-out accuracy per candidate it routes to, when it can read them all."""
    if chooser is None:
        return None
    router, order = chooser
    if not all(0 <= i < len(predictions) and predictions[i] is not None for i in order):
        return None
    probabilities = router.route([predictions[i] for i in order])
    return {i: (float(p), float(a)) for i, p, a in zip(order, probabilities, router.accuracy)}
