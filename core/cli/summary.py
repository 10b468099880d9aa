"""``python -m core summary``: the results tables of README.md and docs/, generated from ``reference/``
(:mod:`core.app.summary`)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .main import command


def _summary_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--markdown", action="store_true",
                        help="print the tables as Markdown (the default; the flag says so in scripts)")
    parser.add_argument("--write", nargs="+", metavar="FILE",
                        help="rewrite the tables between <!-- summary:NAME --> markers in these files instead")


@command("summary", "print the results tables of README.md and docs/ from the shipped records (or --write them)",
         _summary_arguments)
def _summary(args: argparse.Namespace) -> int:
    from ..app import summary

    tables = summary.generate()
    if not args.write:
        for name, table in tables.items():
            print(f"<!-- summary:{name} -->\n{table}<!-- /summary:{name} -->\n")
        return 0
    for file in map(Path, args.write):
        text = file.read_text()
        new = summary.fill(text, tables)
        names = summary.marked(text)
        if not names:
            print(f"{file}: no <!-- summary:NAME --> markers", file=sys.stderr)
        elif new != text:
            file.write_text(new)
            print(f"{file}: rewrote {', '.join(names)}")
        else:
            print(f"{file}: {', '.join(names)} already up to date")
    return 0
