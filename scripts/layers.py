#!/usr/bin/env python3
"""Checks the house: in the daemon, every room imports only rooms on lower
floors (DAEMON_FLOORS below); in every crate, no import circle among its
modules, no file over the line budget of non-test code, no function over
the function budget.

    scripts/layers.py [--graph] [--self-test] [CRATE_SRC ...]

A module is a file (or a directory's mod.rs) under src/; an edge A -> B is a
`crate::B` path in A's non-test code. Submodules of one directory count as
their top-level room (`sync::client` and `sync::server` are both `sync`)
only for the circle check between rooms; circles inside a room are checked
among its files too. Exit 1 on any finding, listing each.
"""
import os
import re
import sys
from collections import defaultdict

FILE_BUDGET = 800
FN_BUDGET = 120

# The daemon's house, floor by floor: a room may import rooms on its own
# floor's lower neighbours only (a lower number). Formats and engine at the
# bottom, then sync, then the services, then the binary's composition.
DAEMON_FLOORS = {
    # ids and errors
    "id": 0, "error": 0,
    # byte formats, chunking, the pack backend; the wire's error mapping
    "chunker": 1, "sketch": 1, "manifest": 1, "history": 2, "objects": 1, "backend": 1,
    "status": 1, "durable": 1, "tokens": 2, "tls": 2,
    "pack": 2,
    "index": 3,
    "store": 4,
    "delta": 5, "check": 5, "config": 5,
    "ingest": 6,
    "put": 7,
    "dataset": 8,
    "prune": 9, "testutil": 9,
    # peer sync
    "sync": 10,
    # services
    "watch": 11, "autosync": 11, "repair": 11,
    "service": 12, "gateway": 12,
    # composition
    "daemon": 13,
}


def strip_tests(text):
    """Non-test code: cuts `#[cfg(test)] mod ... { ... }` blocks."""
    out = []
    lines = text.split("\n")
    i = 0
    while i < len(lines):
        if lines[i].strip() == "#[cfg(test)]" and i + 1 < len(lines) and re.match(r"\s*(pub(\(\w+\))? )?mod \w+\s*\{", lines[i + 1]):
            depth = 0
            j = i + 1
            while j < len(lines):
                depth += lines[j].count("{") - lines[j].count("}")
                if depth <= 0 and "{" in "".join(lines[i + 1 : j + 1]):
                    break
                j += 1
            i = j + 1
            continue
        out.append(lines[i])
        i += 1
    return "\n".join(out)


def strip_comments_strings(text):
    text = re.sub(r'r#*"(?:.|\n)*?"#*', '""', text)
    text = re.sub(r'"(?:\\.|[^"\\])*"', '""', text)
    text = re.sub(r"//[^\n]*", "", text)
    return text


def modules(src):
    mods = {}
    for dirpath, _, files in os.walk(src):
        for f in files:
            if not f.endswith(".rs"):
                continue
            path = os.path.join(dirpath, f)
            rel = os.path.relpath(path, src)[:-3].split(os.sep)
            if rel[-1] == "mod":
                rel = rel[:-1]
            mods["::".join(rel)] = path
    return mods


def resolve(target, mods):
    parts = target.split("::")
    while parts:
        name = "::".join(parts)
        if name in mods:
            return name
        parts = parts[:-1]
    return None


def edges(mods):
    graph = defaultdict(set)
    for name, path in mods.items():
        if name in ("lib", "main"):
            continue  # the crate roots declare the rooms; they are above them all
        code = strip_comments_strings(strip_tests(open(path).read()))
        found = set()
        for m in re.finditer(r"\bcrate::([a-z_][\w:]*)", code):
            found.add(m.group(1))
        # `use crate::{a, b::c}` groups
        for m in re.finditer(r"\bcrate::\{([^;]*)\}", code):
            for item in re.split(r",\s*", m.group(1)):
                item = item.strip()
                if item:
                    found.add(re.split(r"[\s{]", item)[0])
        # `super::x` from a file in a room
        for m in re.finditer(r"\bsuper::([a-z_][\w:]*)", code):
            base = name.split("::")
            if path.endswith("mod.rs"):
                parent = base[:-1]
            else:
                parent = base[:-1]
            found.add("::".join(parent + [m.group(1)]) if parent else m.group(1))
        for t in found:
            r = resolve(t, mods)
            if r and r != name and not name.startswith(r + "::"):
                graph[name].add(r)
    return graph


def sccs(nodes, graph):
    index, low, on, stack, out = {}, {}, set(), [], []
    counter = [0]

    def strong(v):
        work = [(v, iter(sorted(graph.get(v, ()))))]
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        while work:
            node, it = work[-1]
            advanced = False
            for w in it:
                if w not in nodes:
                    continue
                if w not in index:
                    index[w] = low[w] = counter[0]
                    counter[0] += 1
                    stack.append(w)
                    on.add(w)
                    work.append((w, iter(sorted(graph.get(w, ())))))
                    advanced = True
                    break
                elif w in on:
                    low[node] = min(low[node], index[w])
            if advanced:
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                comp = []
                while True:
                    w = stack.pop()
                    on.discard(w)
                    comp.append(w)
                    if w == node:
                        break
                if len(comp) > 1:
                    out.append(sorted(comp))

    for v in sorted(nodes):
        if v not in index:
            strong(v)
    return out


def long_functions(path):
    code = strip_tests(open(path).read()).split("\n")
    found = []
    i = 0
    while i < len(code):
        m = re.match(r"\s*(pub(\([\w:]+\))?\s+)?(async\s+)?(unsafe\s+)?fn\s+(\w+)", code[i])
        if m:
            depth, start, j, opened = 0, i, i, False
            while j < len(code):
                line = strip_comments_strings(code[j])
                depth += line.count("{") - line.count("}")
                if "{" in line:
                    opened = True
                if opened and depth <= 0:
                    break
                if not opened and line.rstrip().endswith(";"):
                    break
                j += 1
            n = j - start + 1
            if n > FN_BUDGET:
                found.append((m.group(5), start + 1, n))
            i = j + 1 if opened else i + 1
            continue
        i += 1
    return found


def check(src, show, floors=None):
    mods = modules(src)
    graph = edges(mods)
    problems = []
    rooms = defaultdict(set)
    for a, bs in graph.items():
        for b in bs:
            ra, rb = a.split("::")[0], b.split("::")[0]
            if ra != rb:
                rooms[ra].add(rb)
    if floors:
        for a, bs in sorted(rooms.items()):
            if a not in floors:
                problems.append(f"{src}: room {a} has no floor in layers.py")
                continue
            for b in sorted(bs):
                if b in floors and floors[b] >= floors[a] and a != b:
                    problems.append(
                        f"{src}: {a} (floor {floors[a]}) imports {b} (floor {floors[b]}): arrows point down"
                    )
    for comp in sccs(set(m.split("::")[0] for m in mods) - {"lib", "main"}, rooms):
        problems.append(f"{src}: import circle among rooms: {' -> '.join(comp)}")
    for comp in sccs(set(mods), graph):
        if len({c.split('::')[0] for c in comp}) == 1:
            problems.append(f"{src}: import circle inside a room: {' -> '.join(comp)}")
    for name, path in sorted(mods.items()):
        n = len([l for l in strip_tests(open(path).read()).split("\n")])
        if n > FILE_BUDGET:
            problems.append(f"{path}: {n} lines of non-test code (budget {FILE_BUDGET})")
        for fn, line, n in long_functions(path):
            problems.append(f"{path}:{line}: fn {fn} is {n} lines (budget {FN_BUDGET})")
    if show:
        for a in sorted(rooms):
            print(f"{a} -> {', '.join(sorted(rooms[a]))}")
    return problems


def self_test():
    """The checker finds what it is meant to find, on a made-up crate."""
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        src = os.path.join(d, "daemon", "src")
        os.makedirs(os.path.join(src, "sync"))
        files = {
            "lib.rs": "pub mod id;\npub mod store;\npub mod sync;\n",
            "id.rs": "pub struct Id;\n",
            # store -> sync (up a floor) and sync -> store: a circle
            "store.rs": "use crate::sync::pull;\nuse crate::id::Id;\n",
            "sync/mod.rs": "mod pull;\n",
            "sync/pull.rs": "use crate::store::Store;\nfn long() {\n" + "    x();\n" * 130 + "}\n",
        }
        for name, text in files.items():
            with open(os.path.join(src, name), "w") as f:
                f.write(text)
        found = check(src, False, DAEMON_FLOORS)
        want = ["import circle among rooms: store -> sync", "store (floor 4) imports sync", "fn long is"]
        for w in want:
            if not any(w in p for p in found):
                sys.exit(f"layers self-test: expected a finding containing {w!r}, got {found}")
    print("layers self-test: circles, floors and budgets are found")


def main():
    if "--self-test" in sys.argv:
        self_test()
        return
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    show = "--graph" in sys.argv
    top = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    srcs = args or [os.path.join(top, c, "src") for c in ("daemon", "client", "proto")]
    problems = []
    for s in srcs:
        floors = DAEMON_FLOORS if os.path.basename(os.path.dirname(os.path.abspath(s))) == "daemon" else None
        problems += check(s, show, floors)
    for p in problems:
        print(p)
    if problems:
        sys.exit(1)
    print("layers: no import circle; files and functions within budget")


if __name__ == "__main__":
    main()
