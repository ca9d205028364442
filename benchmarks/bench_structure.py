#!/usr/bin/env python
"""The code's shape, as issue 25 measures it: lines, the largest modules, functions over 60 lines,
``getattr`` guesses on model/settings objects, and import cycles (imports inside functions counted).

    python benchmarks/bench_structure.py              # this checkout's src/
    python benchmarks/bench_structure.py OTHER/src    # another checkout's, e.g. an older commit's

Prints a table; needs grimp (brought by import-linter, a test dependency) for the cycles.
"""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

MODEL_OBJECTS = re.compile(r"(^|\.)(model|qa|settings|qa_or_model|net|saved)$")


def shape(src: Path) -> dict:
    """Lines, modules over 600 lines, functions over 60 (def to last line), getattr on model/settings."""
    lines, big, long_functions, getattrs = 0, [], [], 0
    for path in sorted((src / "squadkit").rglob("*.py")):
        text = path.read_text(encoding="utf-8")
        n = len(text.splitlines())
        lines += n
        if n > 600:
            big.append(f"{path.relative_to(src)} {n}")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno >= 60:
                long_functions.append(f"{path.stem}.{node.name} {node.end_lineno - node.lineno + 1}")
            if (isinstance(node, ast.Call) and getattr(node.func, "id", None) == "getattr" and node.args
                    and MODEL_OBJECTS.search(ast.unparse(node.args[0]))):
                getattrs += 1
    return {"lines": lines, "modules over 600 lines": big, "functions over 60 lines": long_functions,
            "getattr on model/settings objects": getattrs}


def cycles(src: Path) -> dict:
    """Import cycles among modules, and among the packages and top-level modules they belong to."""
    import grimp

    sys.path.insert(0, str(src))
    graph = grimp.build_graph("squadkit")
    edges = {(a, b) for a in graph.modules for b in graph.find_modules_directly_imported_by(a)}
    room = lambda m: ".".join(m.split(".")[:2])  # noqa: E731 - squadkit.retrieval, squadkit.cli, squadkit.settings
    rooms = {(room(a), room(b)) for a, b in edges if room(a) != room(b)}
    return {"module cycles": _count_cycles(edges), "package cycles": _count_cycles(rooms)}


def _count_cycles(edges: set[tuple[str, str]]) -> int:
    """How many simple cycles the directed graph has (Johnson's algorithm, via networkx when present)."""
    try:
        import networkx as nx
    except ImportError:
        return -1
    return sum(1 for _ in nx.simple_cycles(nx.DiGraph(list(edges))))


def main() -> None:
    src = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parents[1] / "src"
    figures = {**shape(src), **cycles(src)}
    print(f"| {src} | |\n|---|---|")
    for name, value in figures.items():
        shown = ", ".join(value) if isinstance(value, list) else f"{value:,}"
        print(f"| {name} | {shown or 'none'} |")


if __name__ == "__main__":
    main()
