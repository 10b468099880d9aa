"""Numbers on the pages: a missing or impossible value is a dash, never "nan%" or an exception."""

from __future__ import annotations

from ui.format import duration, p_text, pct, short, signed_pct


def test_numbers_as_the_pages_write_them():
    assert pct(0.91374) == "91.37%" and signed_pct(0.001) == "+0.10 pp" and signed_pct(-0.0083) == "-0.83 pp"
    assert p_text(0.0263) == "0.0263" and p_text(4e-6) == "4.00e-06"
    assert duration(45) == "45 s" and duration(720) == "12 min" and duration(9000) == "2.5 h"


def test_missing_values_are_a_dash():
    for value in (None, "n/a", float("nan")):
        assert pct(value) == signed_pct(value) == p_text(value) == duration(value) == "–"
    assert duration(-1) == "–"


def test_a_long_message_is_one_short_line():
    assert short("a\n  b") == "a b"
    assert len(short("x" * 1000, 50)) == 50 and short("x" * 1000, 50).endswith("…")


def test_a_long_class_name_wraps_at_its_underscores_not_mid_word():
    from ui.format import breakable

    shown = breakable("mask_weared_incorrect")
    assert shown.replace("\u200b", "") == "mask_weared_incorrect" and shown.count("\u200b") == 2
    assert breakable("cats") == "cats"


def test_a_builders_docstring_reads_as_prose():
    """Related reports showed a builder's raw docstring: Sphinx roles, double backticks, lines cut at the edge."""
    from ui.format import docstring_markdown

    doc = """Report 002's frozen backbones, cached by :func:`~core.models.backbones.cached_features`.

        Stage one is the new layer (``HEADS``): a linear softmax,
        trained on the vectors.

        - VGG-16/19: ``keras.applications``
          with their classifier.
        """
    text = docstring_markdown(doc)
    assert ":func:" not in text and "``" not in text and "`cached_features`" in text
    assert "softmax, trained on the vectors." in text  # a wrapped line joins its paragraph
    assert "\n- VGG-16/19: `keras.applications` with their classifier." in text  # a list stays a list
