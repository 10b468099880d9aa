"""How counts and repeat numbers are written, the same in the CLI, the worker's log and on every page.

Repeats are stored 0-based and shown 1-based; a count takes its noun in the right number ("1 repeat",
"5 repeats"), never "repeat(s)".
"""

from __future__ import annotations

import math
from typing import Any, Iterable


def count_text(n: int, noun: str) -> str:
    """"1 repeat", "5 repeats"."""
    return f"{n} {noun}{'' if n == 1 else 's'}"


def repeat_name(repeat: Any) -> str:
    """"repeat 1" for the stored repeat 0."""
    return f"repeat {int(repeat) + 1}"


def repeats_named(repeats: Iterable[Any], most: int | None = None) -> str:
    """"repeat 2", "repeats 1, 3" (1-based, sorted); with ``most``, the first ``most`` and an ellipsis."""
    shown = sorted({int(r) + 1 for r in repeats})
    cut = shown if most is None else shown[:most]
    return (("repeat " if len(shown) == 1 else "repeats ") + ", ".join(map(str, cut))
            + ("…" if len(cut) < len(shown) else ""))


def duration(seconds: Any) -> str:
    """"45 s", "12 min", "2.5 h"; a dash for a time that is unknown or cannot be."""
    try:
        s = float(seconds)
    except (TypeError, ValueError):
        return "–"
    if math.isnan(s) or s < 0:
        return "–"
    if s < 90:
        return f"{s:.0f} s"
    if s < 5400:
        return f"{s / 60:.0f} min"
    return f"{s / 3600:.1f} h"
