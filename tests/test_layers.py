"""The import graph: data flows one way, no package cycles, a vocabulary without torch.

Every ``import`` in src/bildwerk counts, also those inside functions (a lazy import is still a
dependency). Layers, lowest first; a module may import its own layer's and lower ones:

    core -> images -> models -> engines | prompts -> app -> jobs -> train, evaluation, pool
         -> faces (cli, server, demo, api)

engines and prompts share a layer but never import each other: weighting syntax, which the
engines interpret, is vocabulary (core/weights.py).
"""

from __future__ import annotations

import ast
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import bildwerk

SRC = Path(bildwerk.__file__).parent
LAYER = {
    "core": 0, "images": 1, "models": 2, "engines": 3, "prompts": 3, "app": 4, "jobs": 5,
    "train": 6, "evaluation": 6, "pool": 6, "cli": 7, "server": 7, "demo": 7, "api": 7, "__main__": 7,
}
APART = {("engines", "prompts"), ("prompts", "engines")}


def _package(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if parts[0] == "bildwerk" and len(parts) > 1 else None


def _edges() -> dict[tuple[str, str], list[str]]:
    edges: dict[tuple[str, str], list[str]] = defaultdict(list)
    for path in SRC.rglob("*.py"):
        rel = path.relative_to(SRC)
        if rel.name == "__init__.py" and len(rel.parts) == 1:
            continue  # the root package only names lazy exports
        here = rel.parts[0].removesuffix(".py")
        for node in ast.walk(ast.parse(path.read_text("utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            else:
                continue
            for name in names:
                there = _package(name)
                if there and there != here:
                    edges[(here, there)].append(f"{rel}:{node.lineno} imports {name}")
    return edges


def test_every_package_has_a_layer():
    packages = {p.name.removesuffix(".py") for p in SRC.iterdir()
                if (p.is_dir() and (p / "__init__.py").exists()) or (p.suffix == ".py" and p.name != "__init__.py")}
    assert packages <= set(LAYER), f"give these a layer: {sorted(packages - set(LAYER))}"


def test_no_upward_or_sideways_imports():
    bad = []
    for (here, there), where in _edges().items():
        if LAYER[here] < LAYER[there] or (here, there) in APART:
            bad += where
    assert not bad, "imports against the layers:\n" + "\n".join(bad)


def test_no_cycles_between_packages():
    graph: dict[str, set[str]] = defaultdict(set)
    for here, there in _edges():
        graph[here].add(there)

    def reach(start: str) -> set[str]:
        seen, todo = set(), [start]
        while todo:
            for nxt in graph[todo.pop()]:
                if nxt not in seen:
                    seen.add(nxt)
                    todo.append(nxt)
        return seen

    cycles = sorted(p for p in list(graph) if p in reach(p))
    assert not cycles, f"packages on an import cycle: {cycles}"


def test_the_vocabulary_imports_no_torch():
    code = ("import sys, bildwerk.core.spec, bildwerk.core.samplers, bildwerk.core.refs;"
            "from bildwerk.core.spec import JobSpec;"
            "JobSpec.build(prompt='ein See', scheduler='euler a', steps=3);"
            "heavy = [m for m in ('torch', 'diffusers', 'transformers') if m in sys.modules];"
            "print(heavy); sys.exit(1 if heavy else 0)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
