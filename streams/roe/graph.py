"""The stage dependency graph: ancestors and cycles, for validation messages.

Written here rather than taken from ``graphlib``: its ``CycleError`` names one cycle
at a time, while a workflow file's errors list every cycle, each in dependency order.
Edges map a stage to ``(dependency, yaml node)`` pairs so callers keep positions.
"""

from __future__ import annotations

from typing import Any

Edges = dict[str, list[tuple[str, Any]]]


def ancestors(name: str, edges: Edges) -> set[str]:
    """Every stage ``name`` depends on, directly or not."""
    seen: set[str] = set()
    todo = [d for d, _ in edges[name]]
    while todo:
        dep = todo.pop()
        if dep not in seen and dep != name:
            seen.add(dep)
            todo.extend(d for d, _ in edges[dep])
    return seen


def cycles(edges: Edges) -> list[list[str]]:
    """Strongly connected components with more than one stage (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w, _ in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(component)

    for v in edges:
        if v not in index:
            visit(v)
    return out


def shortest_cycle(start: str, edges: Edges, within: set[str]) -> list[str]:
    """``[start, ..., start]`` following dependencies, shortest first (breadth-first)."""
    paths = [[start]]
    seen = {start}
    while paths:
        path = paths.pop(0)
        for dep, _ in edges[path[-1]]:
            if dep == start:
                return [*path, start]
            if dep in within and dep not in seen:
                seen.add(dep)
                paths.append([*path, dep])
    raise AssertionError("a strongly connected component always has a cycle")
