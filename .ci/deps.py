#!/usr/bin/env python3
"""Checks the module graph of src/: the rooms depend on each other one way
(util < wire < ops < gateway, client < cli), the gateway and the client
side never import each other, and no module imports from a module that
imports it, directly or around a longer loop.

A module is a file (src/a/b.rs is a::b, src/a/mod.rs is a). An edge is any
`crate::...` path in that file, in a `use` or inline, resolved to the
longest module prefix it names, and a parent's `use child::...` (its
re-exports); `mod x;` declarations are not edges.
Prints the graph's violations and exits 1 if there are any.

    python3 .ci/deps.py [--graph]
"""

import re
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parent.parent / "src"

# Rank of each room: a module may import from rooms of a lower rank, or
# from its own room. Equal ranks (gateway, client) may not meet.
RANK = {"util": 0, "wire": 1, "ops": 2, "gateway": 3, "client": 3, "cli": 4, "fuzz": 4, "": 5}


def module_name(path):
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] in ("mod", "lib"):
        parts.pop()
    if parts == ["main"]:
        return None  # the binary: a separate crate
    return "::".join(parts)


def strip_comments(text):
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
    # Line comments, and doc comments (intra-doc links are not imports).
    text = re.sub(r"//[^\n]*", "", text)
    # String literals could mention crate:: too.
    return re.sub(r'"(?:\\.|[^"\\])*"', '""', text)


def expand(tree):
    """`crate::a::{b, c::{d, self}}` -> crate::a::b, crate::a::c::d, crate::a::c"""
    tree = tree.replace(" ", "").replace("\n", "")
    if "{" not in tree:
        return [tree.split("as")[0] if "as" in tree else tree]
    head, rest = tree.split("{", 1)
    inner = rest[: rest.rfind("}")]
    items, depth, cur = [], 0, ""
    for ch in inner:
        if ch == "," and depth == 0:
            items.append(cur)
            cur = ""
            continue
        depth += ch == "{"
        depth -= ch == "}"
        cur += ch
    items.append(cur)
    out = []
    for item in filter(None, items):
        for path in expand(item):
            out.append(head.rstrip(":") if path == "self" else head + path)
    return out


def references(text, module, modules):
    text = strip_comments(text)
    paths = []
    # `use child::x;` and `pub use child::x;` in a parent: an edge to the child.
    for child in re.findall(r"\buse\s+([A-Za-z_][A-Za-z0-9_]*)::", text):
        name = f"{module}::{child}" if module else child
        if name in modules:
            paths.append("crate::" + name)
    for tree in re.findall(r"\buse\s+(crate::[^;]+);", text, flags=re.S):
        paths += expand(tree)
    text = re.sub(r"\buse\s+crate::[^;]+;", "", text, flags=re.S)
    paths += re.findall(r"\bcrate(?:::[A-Za-z_][A-Za-z0-9_]*)+", text)
    return paths


def resolve(path, modules):
    parts = path.split("::")[1:]
    for n in range(len(parts), 0, -1):
        name = "::".join(parts[:n])
        if name in modules:
            return name
    return ""  # the crate root


def main():
    files = {module_name(p): p for p in sorted(SRC.rglob("*.rs")) if module_name(p) is not None}
    modules = set(files)
    graph = {m: set() for m in modules}
    for module, path in files.items():
        for ref in references(path.read_text(), module, modules):
            target = resolve(ref, modules)
            if target != module:
                graph[module].add(target)

    problems = []
    for module, targets in sorted(graph.items()):
        room = module.split("::")[0]
        for target in sorted(targets):
            other = target.split("::")[0]
            if other != room and RANK[other] >= RANK[room]:
                problems.append(f"{module or 'crate'} -> {target or 'crate'}: {room or 'crate'} may not import {other or 'crate'}")

    # Cycles: Tarjan's strongly connected components.
    index, low, stack, on_stack, sccs, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            scc = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                scc.append(w)
                if w == v:
                    break
            if len(scc) > 1:
                sccs.append(sorted(scc))

    sys.setrecursionlimit(10_000)
    for v in sorted(graph):
        if v not in index:
            visit(v)
    for scc in sccs:
        problems.append("import cycle: " + " <-> ".join(m or "crate" for m in scc))

    if "--graph" in sys.argv:
        for module, targets in sorted(graph.items()):
            print(f"{module or 'crate'}: {', '.join(sorted(t or 'crate' for t in targets))}")
    for problem in problems:
        print(problem)
    print(f"deps: {len(modules)} modules, {sum(map(len, graph.values()))} edges, {len(problems)} problems")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
