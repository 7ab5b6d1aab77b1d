#!/usr/bin/env python3
"""Fail when any two modules of the package import each other, directly or through others.

import-linter's contracts say which layer may import which; they do not forbid a circle inside
one layer (two modules of ``api/`` importing each other). This check builds the package's import
graph with grimp (import-linter's own graph library), type-checking imports included, and
reports every strongly connected group of modules with one circle through it.

  hack/import_cycles.py              check ``infercycle``
  hack/import_cycles.py PACKAGE ...  check other packages
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Mapping, Set

import grimp


def strongly_connected(edges: Mapping[str, Set[str]]) -> list[list[str]]:
    """The groups of modules that reach each other (Tarjan's algorithm, iterative), each sorted;
    only groups of two or more, or a module importing itself."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    groups: list[list[str]] = []
    counter = 0
    for root in sorted(edges):
        if root in index:
            continue
        work: list[tuple[str, list[str]]] = [(root, sorted(edges.get(root, ())))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, pending = work[-1]
            if pending:
                target = pending.pop()
                if target not in index:
                    index[target] = low[target] = counter
                    counter += 1
                    stack.append(target)
                    on_stack.add(target)
                    work.append((target, sorted(edges.get(target, ()))))
                elif target in on_stack:
                    low[node] = min(low[node], index[target])
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                group: list[str] = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    group.append(member)
                    if member == node:
                        break
                if len(group) > 1 or node in edges.get(node, ()):
                    groups.append(sorted(group))
    return sorted(groups)


def circle_through(group: list[str], edges: Mapping[str, Set[str]]) -> list[str]:
    """One circle inside ``group`` that starts and ends at its first module (breadth first)."""
    start = group[0]
    members = set(group)
    previous: dict[str, str] = {}
    frontier = [start]
    while frontier:
        following: list[str] = []
        for node in frontier:
            for target in sorted(edges.get(node, ())):
                if target not in members:
                    continue
                if target == start:
                    path = [node]
                    while path[-1] != start:
                        path.append(previous[path[-1]])
                    return [start, *reversed(path[:-1]), start] if node != start else [start, start]
                if target not in previous:
                    previous[target] = node
                    following.append(target)
        frontier = following
    msg = f"{group} is not strongly connected"
    raise ValueError(msg)


def import_edges(packages: Iterable[str]) -> dict[str, set[str]]:
    """Module -> the modules of the same packages it imports, as grimp reads them."""
    names = list(packages)
    graph = grimp.build_graph(*names, exclude_type_checking_imports=False, cache_dir=None)
    return {
        module: set(graph.find_modules_directly_imported_by(module)) for module in graph.modules
    }


def main(argv: list[str]) -> int:
    packages = argv or ["infercycle"]
    edges = import_edges(packages)
    groups = strongly_connected(edges)
    for group in groups:
        print(f"import cycle: {' -> '.join(circle_through(group, edges))}")
    if groups:
        print(
            f"{len(groups)} import cycle(s) in {', '.join(packages)}; move the shared part "
            "into a module both can import",
            file=sys.stderr,
        )
        return 1
    print(f"no import cycle in {', '.join(packages)} ({len(edges)} modules)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
