"""Numbers as the pages write them: percentages, differences in points, p-values, durations, and stages in words.

Kept apart from the Streamlit helpers (no Streamlit import): every page and view formats the same way, and a
test can check a number's text without a page.
"""

from __future__ import annotations

import math
from typing import Any

from core.protocol.vocabulary import stage_words  # noqa: F401 - the views format stages from here too
from core.protocol.words import duration  # noqa: F401 - likewise


def _number(value: Any) -> float | None:
    """``value`` as a float, or None for what is missing or not a number (shown as a dash)."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(v) else v


def pct(value: Any, digits: int = 2) -> str:
    """"91.37%" for 0.9137; a dash for a missing value."""
    v = _number(value)
    return "–" if v is None else f"{100 * v:.{digits}f}%"


def signed_pct(value: Any, digits: int = 2) -> str:
    """"+0.10 pp": a difference of accuracies in percentage points."""
    v = _number(value)
    return "–" if v is None else f"{100 * v:+.{digits}f} pp"


def p_text(p: Any) -> str:
    """A p-value for reading: four decimals, scientific below 0.0001, a dash when it cannot be computed."""
    v = _number(p)
    if v is None:
        return "–"
    return f"{v:.2e}" if v < 1e-4 else f"{v:.4f}"


def breakable(name: str) -> str:
    """A class name that may wrap after its underscores ("mask_weared_incorrect" broke mid-word in a narrow
    column): a zero-width space after each, invisible and not part of what a reader copies as words."""
    return str(name).replace("_", "_\u200b")


def short(text: str, limit: int = 300) -> str:
    """One line of at most ``limit`` characters (an exception's text on a page)."""
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def docstring_markdown(doc: str) -> str:
    """A Python docstring as Markdown a reader can take in: Sphinx roles (``:func:`~a.b.c` ``) become code
    spans of the last name, double backticks single ones, and lines wrapped in the source join into
    paragraphs, so the page wraps them (a code block cut them at its right edge). Lists stay lists."""
    import inspect
    import re

    text = inspect.cleandoc(doc or "")
    text = re.sub(r":[a-z]+:`~?([^`]+)`", lambda m: f"`{m.group(1).split('.')[-1]}`", text)
    text = text.replace("``", "`")
    paragraphs = []
    for block in re.split(r"\n\s*\n", text):
        lines = [line.strip() for line in block.splitlines() if line.strip()]
        items: list[str] = []
        for line in lines:
            if re.match(r"^([-*]|\d+\.)\s", line) or not items:
                items.append(line)
            else:
                items[-1] += " " + line
        paragraphs.append("\n".join(items))
    return "\n\n".join(paragraphs)
