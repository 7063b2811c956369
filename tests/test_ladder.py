"""The package is a ladder (STYLE.md, 'The house, as a maintainer reads it'): a module imports only from
its own rung or the rungs below it, there is no import cycle, and no module is over 450 lines.

Oracle: the source itself, parsed with ``ast`` (no import is executed). Every ``import`` statement
counts, at module level and inside functions alike: a function-level import "to avoid a cycle" is
still a cycle.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "localssl"
NAME = PACKAGE.name

# The ladder, read bottom up: each top-level module or package of localssl on one rung. A module may
# import from its own rung and the rungs below it, never from a higher rung (imports within a rung are
# checked for cycles only). A new top-level module must be placed here (the test says so). Not counted:
# the registry's discovery of the component packages by name (importlib), which is not an import statement.
RUNGS: dict[str, int] = {
    # 0: the registry, helpers that import nothing
    "registry": 0,
    "utils": 0,
    "distributed": 0,
    "memory": 0,
    "schedule": 0,
    "runlock": 0,
    "safe_files": 0,
    "partial_build": 0,
    # 1: configs, and the helpers that read them (checkpoint fingerprints, the TensorBoard writer)
    "config": 1,
    "checkpoint": 1,
    "tensorboard_log": 1,
    # 2: datasets and encoders
    "data": 2,
    "models": 2,
    # 3: view generators (a ViewBatch, a view's probe read-out)
    "views": 3,
    # 4: per-layer objectives; the linear probe (pooled features, the classifier) and the online probe fitting it
    "objectives": 4,
    "online_probe": 4,
    "linear_probe": 4,
    # 5: credit-assignment rules (and the gradient maths they need: global BP-SSL, Def. 3.4)
    "rules": 5,
    # 6-7: components built from a config, then the trainer (nothing below train imports train)
    "build": 6,
    "train": 7,
    # 8: evaluation of trained runs (probes, alignment measurement); 9: the theory simulations
    "evaluate": 8,
    "theory": 9,
    # 10: registered studies and the speed bench; 11: entry points
    "experiments": 10,
    "bench": 10,
    "bench_suites": 10,
    "cli": 11,
    "commands": 11,
    "demo": 11,
    "demo_figure": 11,
    "__main__": 11,
    # the package's public face: names re-exported lazily (module __getattr__) from every rung
    NAME: 11,
}

# Import cycles known and owned elsewhere, each with the issue that removes it. Add nothing here: a
# function-level import "to avoid a cycle" is a cycle; move the shared type down a rung instead.
KNOWN_CYCLES: dict[frozenset[str], str] = {}

LINE_LIMIT = 450
# Modules allowed over LINE_LIMIT for now, each with the issue that shrinks it.
LONG_MODULES: dict[str, str] = {}


def _modules() -> dict[str, Path]:
    """Dotted module name -> file, for every module of the package (a package is its ``__init__``)."""
    out = {}
    for f in sorted(PACKAGE.rglob("*.py")):
        parts = list(f.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = f
    return out


MODULES = _modules()


def _owner(target: str) -> str | None:
    """The longest module of the package that ``target`` (a dotted import target) names or lies in."""
    while target and target not in MODULES:
        target = target.rpartition(".")[0]
    return target or None


def _imports(module: str) -> list[tuple[str, int]]:
    """(imported module of the package, line) for every import statement in ``module``, at any depth."""
    f = MODULES[module]
    is_pkg = f.name == "__init__.py"
    out = []
    for node in ast.walk(ast.parse(f.read_text(), str(f))):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolve against the importing module's package
                here = module.split(".") if is_pkg else module.split(".")[:-1]
                here = here[: len(here) - (node.level - 1)]
                base = ".".join([*here, base] if base else here)
            # ``from a import b`` imports the submodule a.b when there is one, else a name of a
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base for a in node.names]
        else:
            continue
        for t in targets:
            owner = _owner(t) if t == NAME or t.startswith(NAME + ".") else None
            if owner is not None and owner != module:
                out.append((owner, node.lineno))
    return out


def _where(module: str, line: int) -> str:
    return f"{MODULES[module].relative_to(PACKAGE.parent)}:{line}"


def _rung(module: str) -> int | None:
    top = module.split(".")[1] if "." in module else module
    return RUNGS.get(top)


def test_every_top_level_module_is_on_a_rung() -> None:
    tops = {m.split(".")[1] if "." in m else m for m in MODULES}
    missing = sorted(tops - RUNGS.keys())
    assert not missing, f"place these in tests/test_ladder.py's RUNGS: {missing}"


def test_no_import_from_a_higher_rung() -> None:
    upward = []
    for m in MODULES:
        for target, line in _imports(m):
            rm, rt = _rung(m), _rung(target)
            if rm is not None and rt is not None and rt > rm:
                upward.append(f"{_where(m, line)}: {m} (rung {rm}) imports {target} (rung {rt})")
    assert not upward, "imports up the ladder:\n" + "\n".join(upward)


def _cycles() -> tuple[list[list[str]], dict[str, dict[str, int]]]:
    """Every import cycle (a strongly connected set of modules, sorted) and the import graph."""
    edges: dict[str, dict[str, int]] = {m: {} for m in MODULES}
    for m in MODULES:
        for target, line in _imports(m):
            edges[m].setdefault(target, line)
    # Tarjan's strongly connected components (iterative: no recursion limit)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles = []
    for root in MODULES:
        if root in index:
            continue
        work = [(root, iter(edges[root]))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            v, it = work[-1]
            w = next(it, None)
            if w is not None:
                if w not in index:
                    index[w] = low[w] = len(index)
                    stack.append(w)
                    on_stack.add(w)
                    work.append((w, iter(edges[w])))
                elif w in on_stack:
                    low[v] = min(low[v], index[w])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
            if low[v] == index[v]:
                comp = []
                while True:
                    w = stack.pop()
                    on_stack.discard(w)
                    comp.append(w)
                    if w == v:
                        break
                if len(comp) > 1:
                    cycles.append(sorted(comp))
    return cycles, edges


def test_no_import_cycle() -> None:
    cycles, edges = _cycles()
    new = [c for c in cycles if frozenset(c) not in KNOWN_CYCLES]
    lines = []
    for comp in new:
        lines.append("cycle among " + ", ".join(comp) + " (move the shared type down; see RUNGS)")
        lines += [f"  {_where(a, line)} imports {b}" for a in comp for b, line in edges[a].items() if b in comp]
    assert not new, "\n".join(lines)


def test_no_module_over_the_line_limit() -> None:
    long = []
    for f in MODULES.values():
        rel = f.relative_to(PACKAGE).as_posix()
        n = len(f.read_text().splitlines())
        if n > LINE_LIMIT and rel not in LONG_MODULES:
            long.append(f"{NAME}/{rel}: {n} lines")
    print("\n".join(long))
    assert not long, f"modules over {LINE_LIMIT} lines (split them by concern):\n" + "\n".join(long)


def test_the_allow_lists_are_current() -> None:
    """A cycle that is gone, or a module that shrank below the limit (or went away), leaves its list."""
    cycles = {frozenset(c) for c in _cycles()[0]}
    stale = [", ".join(sorted(c)) for c in KNOWN_CYCLES if c not in cycles]
    stale += [
        rel
        for rel in LONG_MODULES
        if not (PACKAGE / rel).exists() or len((PACKAGE / rel).read_text().splitlines()) <= LINE_LIMIT
    ]
    assert not stale, f"remove from KNOWN_CYCLES / LONG_MODULES in tests/test_ladder.py: {stale}"
