"""How a protocol field is offered to a person: its command-line flag, help, allowed values and form widget.

Each field of :class:`core.protocol.config.Protocol` declares its :class:`Option` once, in its dataclass
metadata (``field(default=..., metadata=option(...))``, in the spirit of nanoGPT's one-line-per-option
configurator). Everything that offers options is derived from those declarations, so adding an option is one
edit: :func:`add_arguments` (argparse, for ``run``/``submit``/``report``/``sweep``), :func:`values_from_args`
(back from argparse to the protocol), :func:`to_flags` (a protocol as the command line that reproduces it, for
the Related reports page's commands), :func:`form_fields` (what the Train form shows, read by
:mod:`ui.protocol_form`) and :func:`check_field` (the range and choice checks of ``Protocol.__post_init__``).
Kept free of the protocol itself (functions take the dataclass), so a test can add a field and see it appear
everywhere.
"""

from __future__ import annotations

import argparse
from dataclasses import MISSING, Field, dataclass, fields
from typing import Any


@dataclass(frozen=True)
class Option:
    """One field's declaration for people.

    ``kind`` is how its value reads: ``int``, ``float``, ``str``, ``bool`` (a switch that is off by default),
    ``tristate`` (``None``/True/False: ``--x``/``--no-x``) or ``path``. ``low``/``high`` bound numbers
    (``low_open``: the low bound itself is refused); ``choices`` bound strings. ``label`` puts the field on the
    Train form (``section`` "main" or "open": the expander of the points the paper leaves open); without a
    label it is a command-line option only. ``group`` is its argparse group.
    """

    flag: str
    help: str
    kind: str = "str"
    choices: tuple[Any, ...] | None = None
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    optional: bool = False
    """None is allowed (``limit``: all images)."""
    label: str | None = None
    section: str = "main"
    step: float | None = None
    metavar: str | None = None
    aliases: tuple[str, ...] = ()
    group: str = "experiment"

    @property
    def dest(self) -> str:
        return self.flag.lstrip("-").replace("-", "_")


def option(**declaration: Any) -> dict[str, Option]:
    """The metadata of a protocol field: ``field(default=..., metadata=option(flag=..., help=...))``."""
    return {"option": Option(**declaration)}


def declared(cls: type) -> list[tuple[Field, Option]]:
    """The fields of ``cls`` that declare an option, in declaration order."""
    return [(f, f.metadata["option"]) for f in fields(cls) if "option" in f.metadata]


def default_of(f: Field) -> Any:
    return f.default_factory() if f.default is MISSING else f.default  # type: ignore[misc]


GROUPS = {"experiment": "experiment",
          "stage one": "model and stage one (the related reports' systems; `python -m core architectures`)"}


def add_arguments(parser: argparse.ArgumentParser, cls: type) -> None:
    """One argparse option per declared field of ``cls``, in its group, with its default, help and choices."""
    groups = {name: parser.add_argument_group(title) for name, title in GROUPS.items()}
    for f, opt in declared(cls):
        names = [opt.flag, *opt.aliases]
        common = {"dest": f.name, "help": opt.help, "default": default_of(f)}
        target = groups.get(opt.group, groups["experiment"])
        if opt.kind == "bool":
            target.add_argument(*names, action="store_true", **common)
        elif opt.kind == "tristate":
            target.add_argument(*names, action=argparse.BooleanOptionalAction, **common)
        else:
            target.add_argument(*names, type=_parser_for(opt), choices=opt.choices, metavar=opt.metavar, **common)


def _parser_for(opt: Option):
    """argparse's ``type`` for an option: the number's type only; its range is the protocol's check, which
    names the option in one line (``core.cli`` prints it), like every other bad value."""
    return {"int": int, "float": float}.get(opt.kind, str)


def values_from_args(args: argparse.Namespace, cls: type) -> dict[str, Any]:
    """The declared fields' values as argparse parsed them (the inverse of :func:`add_arguments`)."""
    return {f.name: getattr(args, f.name) for f, _ in declared(cls) if hasattr(args, f.name)}


def to_flags(values: dict[str, Any], cls: type, skip_defaults: bool = True) -> list[str]:
    """Command-line words that set ``values`` (field name -> value), in declaration order; values equal to the
    default are left out unless ``skip_defaults`` is false (a report's plan says what it sets)."""
    words: list[str] = []
    for f, opt in declared(cls):
        if f.name not in values or (skip_defaults and values[f.name] == default_of(f)):
            continue
        value = values[f.name]
        if opt.kind in ("bool", "tristate") and isinstance(value, bool):
            if value or opt.kind == "tristate":
                words.append(opt.flag if value else "--no-" + opt.flag.lstrip("-"))
        elif value is not None:
            words += [opt.flag, str(value)]
    unknown = set(values) - {f.name for f, _ in declared(cls)}
    if unknown:
        raise ValueError(f"not protocol options: {', '.join(sorted(unknown))}")
    return words


def form_fields(cls: type, section: str) -> list[tuple[Field, Option]]:
    """The declared fields the Train form shows in ``section``, in declaration order."""
    return [(f, opt) for f, opt in declared(cls) if opt.label and opt.section == section]


def check_field(name: str, value: Any, opt: Option) -> None:
    """Refuse a value outside the declared choices or range, in one line naming the field."""
    if value is None and (opt.optional or opt.kind in ("tristate", "path")):
        return
    if opt.kind == "bool" and not isinstance(value, bool):
        raise ValueError(f"{name} must be true or false (got {value!r})")
    if opt.choices is not None:
        if value not in opt.choices:
            raise ValueError(f"{name} must be one of {', '.join(map(str, opt.choices))} (got {value!r})")
        return
    if opt.kind in ("int", "float"):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or (opt.kind == "int" and
                                                                               not float(value).is_integer()):
            raise ValueError(f"{name} must be {'an integer' if opt.kind == 'int' else 'a number'} (got {value!r})")
        problem = _range_problem(opt, value)
        if problem:
            raise ValueError(f"{name} {problem}")


def _range_problem(opt: Option, value: float) -> str | None:
    """What is wrong with ``value`` against the declared range, or None."""
    low, high = opt.low, opt.high
    below = low is not None and (value <= low if opt.low_open else value < low)
    above = high is not None and (value >= high if opt.high_open else value > high)
    if not (below or above):
        return None
    if low is not None and high is not None and not (opt.low_open or opt.high_open):
        return f"must be between {low:g} and {high:g} (got {value:g})"
    left = "(" if opt.low_open else "["
    right = ")" if opt.high_open else "]"
    return (f"must be in {left}{'-inf' if low is None else f'{low:g}'}, {'inf' if high is None else f'{high:g}'}"
            f"{right} (got {value:g})")
