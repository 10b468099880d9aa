"""The layout holds: core's groups import only downwards (core.GROUPS), no import chain is a cycle, core never
imports the app's layers, the pages never import the CLI, and no module grows past a size a reader can hold.

Every import counts, those inside functions too: a lazy import is still a dependency.
"""

from __future__ import annotations

import ast
import sys
from collections import defaultdict
from pathlib import Path

import core

ROOT = Path(__file__).resolve().parent.parent
MAX_LINES = 600
OVER_MAX_LINES: set[str] = set()
"""Modules known to be too long, each to be split (issue 24); an entry that is no longer needed fails the test."""


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported(path: Path) -> set[str]:
    """Every module name ``path`` imports (absolute; relative imports resolved; ``from x import y`` gives both
    ``x`` and ``x.y``, since ``y`` may be a module)."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([node.module] if node.module else []))
            out.add(base)
            out.update(f"{base}.{a.name}" for a in node.names)
    return out


def python_files(folder: str) -> list[Path]:
    return sorted((ROOT / folder).rglob("*.py"))


def core_graph() -> dict[str, set[str]]:
    """Module -> the core modules it imports."""
    modules = {module_name(p): p for p in python_files("core")}
    graph: dict[str, set[str]] = defaultdict(set)
    for name, path in modules.items():
        for target in imported(path):
            while target and target not in modules:  # core.x.y.NAME -> core.x.y
                target = target.rpartition(".")[0]
            if target and target not in (name, "core"):
                graph[name].add(target)
    return graph


def group(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 2 else None


def test_every_module_sits_in_a_group_and_the_groups_are_the_folders():
    folders = {p.name for p in (ROOT / "core").iterdir() if p.is_dir() and not p.name.startswith("__")}
    assert folders == set(core.GROUPS)
    loose = [p.name for p in (ROOT / "core").glob("*.py") if p.name not in ("__init__.py", "__main__.py")]
    assert not loose, f"modules outside any group: {loose}"


def test_groups_import_only_downwards():
    rank = {g: i for i, g in enumerate(core.GROUPS)}
    upward = [f"{m} -> {t}" for m, targets in core_graph().items() for t in targets
              if group(m) and group(t) and rank[group(t)] > rank[group(m)]]
    assert not upward, "imports from a later group (core.GROUPS):\n" + "\n".join(sorted(upward))


def test_no_import_cycle():
    graph = core_graph()
    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))
    state: dict[str, int] = {}
    cycles: list[list[str]] = []

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                cycles.append(path[path.index(nxt):] + [nxt] if nxt in path else [node, nxt])
            elif nxt not in state:
                visit(nxt, path + [nxt])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


def test_core_never_imports_the_app_and_the_pages_never_import_the_cli():
    for path in python_files("core"):
        bad = {m for m in imported(path) if m.split(".")[0] in ("streamlit", "ui", "app_pages", "app")}
        assert not bad, f"{path.relative_to(ROOT)} imports {bad}"
    for path in [*python_files("app_pages"), *python_files("ui"), ROOT / "app.py"]:
        bad = {m for m in imported(path) if m.startswith("core.cli") or m.split(".")[0] == "app_pages"}
        assert not bad, f"{path.relative_to(ROOT)} imports {bad}"


def test_modules_stay_short():
    lengths = {str(p.relative_to(ROOT)): len(p.read_text().splitlines())
               for folder in ("core", "ui", "app_pages") for p in python_files(folder)}
    too_long = {name for name, n in lengths.items() if n > MAX_LINES}
    assert too_long <= OVER_MAX_LINES, f"over {MAX_LINES} lines: {sorted(too_long - OVER_MAX_LINES)}"
    assert OVER_MAX_LINES <= too_long, f"no longer too long, drop from OVER_MAX_LINES: {OVER_MAX_LINES - too_long}"


def test_the_checker_sees_an_upward_import_and_a_cycle(tmp_path, monkeypatch):
    """The walk itself: a lazy import inside a function counts."""
    fake = tmp_path / "core"
    (fake / "protocol").mkdir(parents=True)
    (fake / "cli").mkdir()
    for init in (fake / "__init__.py", fake / "protocol" / "__init__.py", fake / "cli" / "__init__.py"):
        init.write_text("")
    (fake / "protocol" / "a.py").write_text("def f():\n    from ..cli import b\n")
    (fake / "cli" / "b.py").write_text("from ..protocol import a\n")
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    graph = core_graph()
    assert "core.cli.b" in graph["core.protocol.a"] and "core.protocol.a" in graph["core.cli.b"]
    for check, seen in ((test_groups_import_only_downwards, "core.protocol.a -> core.cli.b"),
                        (test_no_import_cycle, "core.cli.b -> core.protocol.a")):
        try:
            check()
        except AssertionError as exc:
            assert seen in str(exc), str(exc)
        else:
            raise AssertionError(f"{check.__name__} did not see it")


def test_every_command_module_registers_whichever_cli_module_is_imported_first():
    """The sub-commands come from plain imports (core/cli/__init__.py), not a list of module names."""
    import subprocess

    for first in ("core.cli.main", "core.cli.jobs", "core.cli.reports"):
        code = f"import {first}; from core.cli.main import COMMANDS; print(' '.join(COMMANDS))"
        out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
        assert set(out.stdout.split()) >= {"run", "bundle", "router", "submit", "jobs", "watch", "cancel", "worker",
                                           "architectures", "sweep", "reports", "report", "summary"}, (first, out.stderr[-500:])
