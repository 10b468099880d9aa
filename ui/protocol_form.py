"""The Train form's protocol widgets, derived from the options' declarations (:mod:`core.protocol.options`).

A field with a ``label`` appears here with the widget its kind asks for: a radio or select box for choices, a
checkbox for a switch, a three-way radio for "the paper's choice / on / off", a number input bounded by the
declared range (and by the demo's caps), and for an optional count ("use only N images") a checkbox that
enables its number input. Adding an option to the protocol adds it here; the page only arranges sections.
"""

from __future__ import annotations

from dataclasses import Field
from typing import Any, Callable

import streamlit as st

from core.protocol.options import Option, default_of, form_fields

TRISTATE = {"paper's choice": None, "on": True, "off": False}


def option_inputs(cls: type, section: str, *, columns: int = 3, skip: tuple[str, ...] = (),
                  caps: dict[str, int | float] | None = None, forced: dict[str, Any] | None = None,
                  formats: dict[str, Callable[[Any], str]] | None = None, key: str = "train") -> dict[str, Any]:
    """Render ``section``'s declared fields of ``cls`` in rows of ``columns``; return field -> value.

    ``caps`` lowers a number's maximum (the demo's limits); ``forced`` fixes a value and disables its widget
    (demo mode always subsets the data); ``formats`` gives choices their titles."""
    caps, forced, formats = caps or {}, forced or {}, formats or {}
    shown = [(f, opt) for f, opt in form_fields(cls, section) if f.name not in skip]
    values: dict[str, Any] = {}
    for start in range(0, len(shown), columns):
        for column, (f, opt) in zip(st.columns(columns), shown[start:start + columns]):
            with column:
                values[f.name] = _widget(f, opt, f"{key}_{f.name}", caps.get(f.name), forced.get(f.name, ...),
                                         formats.get(f.name))
    return values


def _widget(f: Field, opt: Option, key: str, cap: float | None, forced: Any, fmt: Callable | None) -> Any:
    default = default_of(f)
    disabled = forced is not ...
    if opt.choices is not None:
        choices = list(opt.choices)
        index = choices.index(forced if disabled else default)
        show = fmt or str
        if len(choices) <= 3:
            return st.radio(opt.label, choices, index=index, key=key, help=opt.help, format_func=show,
                            disabled=disabled)
        return st.selectbox(opt.label, choices, index=index, key=key, help=opt.help, format_func=show,
                            disabled=disabled)
    if opt.kind == "bool":
        return st.checkbox(opt.label, value=bool(forced if disabled else default), key=key, help=opt.help,
                           disabled=disabled)
    if opt.kind == "tristate":
        picked = st.radio(opt.label, list(TRISTATE), key=key, help=opt.help, disabled=disabled)
        return TRISTATE[picked]
    if opt.optional:
        on = st.checkbox(f"Use only some {opt.label.lower()}", value=disabled, key=f"{key}_on", help=opt.help,
                         disabled=disabled) or disabled
        count = _number(opt, key, cap, forced if disabled else None, disabled=not on or disabled)
        return count if on else None
    return _number(opt, key, cap, forced if disabled else default, disabled=disabled)


def _number(opt: Option, key: str, cap: float | None, value: Any, disabled: bool) -> int | float:
    """A number input within the declared range (an open bound moves in by one step), capped."""
    is_int = opt.kind == "int"
    step = opt.step or (1 if is_int else 0.01)
    low = opt.low if opt.low is not None else None
    if low is not None and opt.low_open:
        low += step
    high = opt.high if opt.high is not None else None
    if high is not None and opt.high_open:
        high -= step
    if cap is not None:
        high = cap if high is None else min(high, cap)
    if value is None:
        value = min(high, 1000) if high is not None else low
    if high is not None:
        value = min(value, high)
    cast = int if is_int else float
    return cast(st.number_input(opt.label, None if low is None else cast(low), None if high is None else cast(high),
                                cast(value), cast(step), key=key, help=opt.help, disabled=disabled))
