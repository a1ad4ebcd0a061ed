"""The layers, read from the source: the runtime stays at the bottom and nothing goes round in circles.

    engine/      the runtime (and the shared core/: contract, preprocess, errors, cliargs, logs, keras_io, ...)
                 imports nothing from models/, export/ or benchmarks/; inside it the sub-packages only
                 look down (ENGINE_LAYERS: core < faces, classify, sound < io < serve; api < pipeline < cli, run, batch)
    models/      training          may import engine/ and export/ (train --export); never benchmarks/
    export/      conversion        may import engine/ and models/ (calibration data); never benchmarks/
    benchmarks/  measurements      may import everything

Every .py file under those four folders is parsed with `ast`; imports at module level and inside
functions count the same (a lazy import is still a dependency). Also checked: no module imports
another module's `_private` name, and the graph of imports between the project's modules has no
cycle. `python tests/test_layers.py` prints the graph summary (edges, upward imports, cycles).
"""
from __future__ import annotations

import ast
import sys
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("engine", "export", "models", "benchmarks")
#: package -> the packages it must never import
FORBIDDEN = {
    "engine": {"models", "export", "benchmarks"},
    "export": {"benchmarks"},
    "models": {"benchmarks"},
}
#: engine's sub-packages (and top modules), bottom to top: each may import only the ones listed (and itself).
#: core is what training, export and the benchmarks share; api is the library (options -> create -> process);
#: pipeline adds threads and queues; cli, run and batch are the commands on top.
ENGINE_LAYERS = {
    "core": set(),
    "faces": {"core"},
    "classify": {"core"},
    "sound": {"core"},
    "mqtt": {"core"},  # MqttSink and its publisher: paho-mqtt behind a bounded queue (engine.io's Outputs gets it handed in)
    "io": {"core", "faces", "sound"},
    "serve": {"core", "io"},
    "api": {"core", "faces", "classify"},
    "pipeline": {"core", "api", "io"},
    "cli": {"core", "faces", "classify", "io", "sound", "api", "mqtt"},
    "run": {"core", "api", "cli", "io", "pipeline", "serve", "sound"},
    "batch": {"core", "faces", "classify", "io", "api", "cli", "pipeline"},
    "service": {"core", "mqtt", "run"},  # python -m engine.service: a systemd unit that runs engine.run
    "__init__": set(),  # the public names load lazily (importlib), nothing at import time
}
#: the size limits the redesign set (issue #36): a module or function past them has more than one concern
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 60
#: Cycles that may stay, each with the reason: frozenset of module names -> why. Empty: there are none.
ALLOWED_CYCLES: dict[frozenset[str], str] = {}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def project_modules() -> dict[str, Path]:
    mods = {}
    for pkg in PACKAGES:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            mods[module_name(path)] = path
    return mods


def _resolve(node: ast.ImportFrom, current: str, is_package: bool) -> str:
    if not node.level:
        return node.module or ""
    base = current.split(".") if is_package else current.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def imports(mods: dict[str, Path]) -> list[tuple[str, str, int, str | None]]:
    """(importer, imported project module, line, name imported from it or None) for every import."""
    found = []
    for mod, path in mods.items():
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    name = alias.name
                    while name and name not in mods:
                        name = name.rpartition(".")[0]
                    if name:
                        found.append((mod, name, node.lineno, None))
            elif isinstance(node, ast.ImportFrom):
                base = _resolve(node, mod, path.name == "__init__.py")
                if base.split(".")[0] not in PACKAGES:
                    continue
                for alias in node.names:
                    if f"{base}.{alias.name}" in mods:  # `from engine import api`: the module itself
                        found.append((mod, f"{base}.{alias.name}", node.lineno, None))
                    else:
                        target = base
                        while target and target not in mods:
                            target = target.rpartition(".")[0]
                        if target:
                            found.append((mod, target, node.lineno, alias.name))
    return found


def upward(found) -> list[str]:
    bad = []
    for src, dst, line, _ in found:
        text = f"{src}:{line} imports {dst}"
        if dst.split(".")[0] in FORBIDDEN.get(src.split(".")[0], ()) and text not in bad:
            bad.append(text)
    return bad


def private(found) -> list[str]:
    return [f"{src}:{line} imports {dst}.{name}" for src, dst, line, name in found
            if name and name.startswith("_") and not name.startswith("__") and src != dst]


def cycles(found) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan), each as one cycle path."""
    graph: dict[str, set[str]] = {}
    for src, dst, _, _ in found:
        if src != dst:
            graph.setdefault(src, set()).add(dst)
            graph.setdefault(dst, set())
    index, low, stack, on, comps, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                comps.append(comp)

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10000))
    for v in sorted(graph):
        if v not in index:
            visit(v)
    out = []
    for comp in comps:
        members = set(comp)
        start = min(comp)
        # shortest way back to `start` inside the component: one readable cycle to report
        prev, frontier = {start: None}, [start]
        while frontier and start not in [w for v in frontier for w in graph[v]]:
            nxt = []
            for v in frontier:
                for w in sorted(graph[v] & members):
                    if w not in prev:
                        prev[w] = v
                        nxt.append(w)
            frontier = nxt
        last = next(v for v in frontier if start in graph[v])
        path = [last]
        while prev[path[-1]] is not None:
            path.append(prev[path[-1]])
        out.append(list(reversed(path)) + [start])
    return out


def _found():
    return imports(project_modules())


def test_the_checker_sees_every_kind_of_import(tmp_path):
    """Guard against a checker that silently sees nothing: it finds the imports of known modules."""
    found = _found()
    edges = {(s, d) for s, d, _, _ in found}
    assert ("engine.run", "engine.pipeline") in edges  # module level
    assert ("engine.faces.detect", "engine.faces.blazeface") in edges  # inside a function
    assert ("export.__main__", "export.run") in edges
    assert len(project_modules()) > 40


def test_engine_imports_nothing_above_it_and_nothing_imports_benchmarks():
    bad = upward(_found())
    assert not bad, "upward imports (engine/ is the bottom layer; benchmarks/ the top):\n" + "\n".join(bad)


def test_no_module_imports_another_modules_private_name():
    bad = private(_found())
    assert not bad, "private names imported across modules (make them public where they live):\n" + "\n".join(bad)


def engine_part(module: str) -> str | None:
    parts = module.split(".")
    return (parts[1] if len(parts) > 1 else "__init__") if parts[0] == "engine" else None


def sideways(found) -> list[str]:
    """Imports between engine's sub-packages that ENGINE_LAYERS does not allow."""
    bad = []
    for src, dst, line, _ in found:
        a, b = engine_part(src), engine_part(dst)
        if a and b and a != b and b not in ENGINE_LAYERS.get(a, set()):
            bad.append(f"{src}:{line} imports {dst} ({a} may import only {', '.join(sorted(ENGINE_LAYERS.get(a, ()))) or 'nothing'})")
    return bad


def test_engine_sub_packages_only_look_down():
    parts = {engine_part(m) for m in project_modules() if m.startswith("engine")}
    assert parts <= set(ENGINE_LAYERS), f"engine parts without a layer rule: {sorted(parts - set(ENGINE_LAYERS))}"
    bad = sideways(_found())
    assert not bad, "engine sub-package imports against the layering:\n" + "\n".join(bad)


def oversized() -> list[str]:
    """Modules over MAX_MODULE_LINES and functions over MAX_FUNCTION_LINES lines, in the four packages."""
    bad = []
    for mod, path in project_modules().items():
        text = path.read_text()
        if text.count("\n") > MAX_MODULE_LINES:
            bad.append(f"{mod}: {text.count(chr(10))} lines")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES:
                bad.append(f"{mod}:{node.name}: {node.end_lineno - node.lineno + 1} lines")
    return bad


def test_no_module_over_400_lines_and_no_function_over_60():
    bad = oversized()
    assert not bad, "split these by concern:\n" + "\n".join(bad)


def test_no_import_cycles():
    found = [c for c in cycles(_found()) if frozenset(c) not in ALLOWED_CYCLES]
    assert not found, "import cycles:\n" + "\n".join(" -> ".join(c) for c in found)


def summary() -> str:
    found = _found()
    edges = {(s, d) for s, d, _, _ in found if s != d}
    between = Counter((s.split(".")[0], d.split(".")[0]) for s, d in edges)
    lines = [f"{len(project_modules())} modules, {len(edges)} import edges between them"]
    lines += [f"  {a} -> {b}: {n}" for (a, b), n in sorted(between.items())]
    up = upward(found)
    engine_up = {(s, d) for s, d, _, _ in found if s.startswith("engine") and d.split(".")[0] in FORBIDDEN["engine"]}
    lines.append(f"upward imports: {len(up)} statements; engine/ -> models/export/benchmarks: {len(engine_up)} edges "
                 f"from {len({s for s, _ in engine_up})} engine modules")
    lines += [f"  {b}" for b in up]
    lines.append(f"private names imported across modules: {len(private(found))}")
    lines += [f"  {b}" for b in private(found)]
    side = sideways(found)
    lines.append(f"engine sub-package imports against the layering: {len(side)}")
    lines += [f"  {b}" for b in side]
    lines.append(f"modules/functions over the size limits: {len(oversized())}")
    cyc = cycles(found)
    lines.append(f"cycles: {len(cyc)}")
    lines += ["  " + " -> ".join(c) for c in cyc]
    return "\n".join(lines)


if __name__ == "__main__":
    print(summary())
