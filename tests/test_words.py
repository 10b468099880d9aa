"""Counts and repeat numbers read the same in the CLI, the worker's log and on the pages."""

from __future__ import annotations

import numpy as np

from core.protocol.words import count_text, repeat_name, repeats_named


def test_a_count_takes_its_noun_in_the_right_number():
    assert [count_text(n, "repeat") for n in (0, 1, 5)] == ["0 repeats", "1 repeat", "5 repeats"]


def test_repeats_are_shown_from_one():
    assert repeat_name(0) == "repeat 1" and repeat_name(np.int64(4)) == "repeat 5"
    assert repeats_named([2]) == "repeat 3"
    assert repeats_named(np.array([3, 0, 3])) == "repeats 1, 4"
    assert repeats_named(range(10), most=6) == "repeats 1, 2, 3, 4, 5, 6…"
