#!/usr/bin/env python3
"""Which module of a crate uses which, and where that runs against the intended layering.

    layers.py [SRC_DIR] [--order a,b,c] [--files]

SRC_DIR (default host/src) is a crate's src/. A unit is a top-level module: a folder
(`supervisor/`) or a file (`config.rs`); with --files, every file is a unit. An edge A -> B
means a file of A names `crate::B` (in a `use` or inline, `super::` resolved too). Prints the
edges with their counts, every cycle (strongly connected set), and, given --order listed
bottom layer first, every edge that points up the order. Exit status 1 when there is a cycle
or an upward edge, so it can gate CI. Lines inside `#[cfg(test)] mod tests` count too.
"""
import os, re, sys
from collections import defaultdict

args = [a for a in sys.argv[1:]]
files_mode = "--files" in args
order = []
if "--order" in args:
    i = args.index("--order"); order = args[i + 1].split(","); del args[i:i + 2]
args = [a for a in args if a != "--files"]
src = args[0] if args else "host/src"

def unit_of(rel):
    parts = rel.split(os.sep)
    if files_mode:
        return rel[:-3]
    return parts[0][:-3] if len(parts) == 1 else parts[0]

def module_path(rel):
    p = rel[:-3].split(os.sep)
    if p[-1] in ("mod", "lib", "main"):
        p = p[:-1]
    return p

edges = defaultdict(int)
for root, _, names in os.walk(src):
    for n in names:
        if not n.endswith(".rs"):
            continue
        full = os.path.join(root, n); rel = os.path.relpath(full, src)
        text = open(full, encoding="utf-8", errors="replace").read()
        text = re.sub(r"//[^\n]*", "", text)
        me = unit_of(rel); here = module_path(rel)
        targets = [m.group(1) for m in re.finditer(r"\bcrate::(\w+)", text)]
        for m in re.finditer(r"\b((?:super::)+)(\w+)", text):
            up = m.group(1).count("super::")
            path = here[:max(len(here) - up, 0)] + [m.group(2)]
            targets.append("/".join(path) if files_mode else path[0])
        for t in targets:
            if files_mode:
                cands = [t + ".rs", os.path.join(t, "mod.rs")] + ([t.rsplit("/", 1)[0] + ".rs", os.path.join(t.rsplit("/", 1)[0], "mod.rs")] if "/" in t else [])
                tu = next((c[:-3] for c in cands if os.path.exists(os.path.join(src, c))), None)
            else:
                tu = t if (os.path.isdir(os.path.join(src, t)) or os.path.exists(os.path.join(src, t + ".rs"))) else None
            if tu and tu != me:
                edges[(me, tu)] += 1

nodes = sorted({a for a, _ in edges} | {b for _, b in edges})
graph = defaultdict(set)
for (a, b) in edges:
    graph[a].add(b)

# Tarjan's strongly connected components
index, low, stack, on, sccs, counter = {}, {}, [], set(), [], [0]
def strong(v):
    index[v] = low[v] = counter[0]; counter[0] += 1; stack.append(v); on.add(v)
    for w in graph[v]:
        if w not in index:
            strong(w); low[v] = min(low[v], low[w])
        elif w in on:
            low[v] = min(low[v], index[w])
    if low[v] == index[v]:
        comp = []
        while True:
            w = stack.pop(); on.discard(w); comp.append(w)
            if w == v: break
        if len(comp) > 1: sccs.append(sorted(comp))
sys.setrecursionlimit(10000)
for v in nodes:
    if v not in index: strong(v)

print(f"{len(nodes)} units, {len(edges)} edges")
for (a, b), c in sorted(edges.items()):
    print(f"  {a} -> {b}  ({c})")
bad = False
for comp in sccs:
    bad = True
    inner = [f"{a}->{b}" for (a, b) in edges if a in comp and b in comp]
    print(f"CYCLE of {len(comp)}: {', '.join(comp)}\n   edges: {', '.join(sorted(inner))}")
if order:
    rank = {u: i for i, u in enumerate(order)}
    for (a, b), c in sorted(edges.items()):
        if a in rank and b in rank and rank[b] > rank[a]:
            bad = True
            print(f"UPWARD: {a} (layer {rank[a]}) -> {b} (layer {rank[b]})  x{c}")
    missing = [u for u in nodes if u not in rank]
    if missing:
        # A module outside the declared order would escape the check: fail (AgentFlow's
        # copy; the shared tool only reports it).
        bad = True
        print("not in --order: " + ", ".join(missing))
print("no cycles" + ("" if not order else ", nothing upward") if not bad else "")
sys.exit(1 if bad else 0)
