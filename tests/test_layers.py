"""The house's layers, from its imports (every `import`, module-level or inside a function, read by ast):
no import cycle among the package's modules, data/ and model/ import nothing above them, the engine no stage,
and the three stages not one another.

    version, errors, files  <-  data  <-  model  <-  engine/  <-  stages (pretrain/, attend/, finetune/)
    <-  pipeline and commands;  recognizer  <-  serve, cli
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "maskmatch"
BASE = ("maskmatch.version", "maskmatch.errors", "maskmatch.files")  # what every layer may use
LOW = ("maskmatch.data", "maskmatch.model")
STAGES = ("maskmatch.pretrain", "maskmatch.attend", "maskmatch.finetune")
ABOVE_ENGINE = STAGES + ("maskmatch.pipeline", "maskmatch.stages", "maskmatch.serve", "maskmatch.cli")


def modules() -> dict[str, Path]:
    out = {}
    for f in PACKAGE.rglob("*.py"):
        parts = f.relative_to(PACKAGE.parent).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = f
    return out


def imports() -> dict[str, set[str]]:
    """module -> the package's modules it imports (a `from pkg import name` of a submodule counts as that module)."""
    found = modules()

    def resolve(name: str) -> str:
        while name not in found and "." in name:
            name = name.rsplit(".", 1)[0]
        return name

    graph: dict[str, set[str]] = {m: set() for m in found}
    for m, path in found.items():
        for node in ast.walk(ast.parse(path.read_text("utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "maskmatch":
                targets = [resolve(f"{node.module}.{a.name}") for a in node.names]
            elif isinstance(node, ast.Import):
                targets = [resolve(a.name) for a in node.names if a.name.split(".")[0] == "maskmatch"]
            else:
                continue
            graph[m] |= {t for t in targets if t != m}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_no_import_cycle():
    assert cycles(imports()) == []


def test_data_and_model_import_nothing_above_them():
    """A `commands` module in data/ is the command layer's, living beside what it runs."""
    wrong = {m: sorted(t for t in targets if not t.startswith(LOW + BASE))
             for m, targets in imports().items() if m.startswith(LOW) and not m.endswith(".commands")}
    assert {m: t for m, t in wrong.items() if t} == {}


def test_the_engine_knows_no_stage_and_the_stages_not_one_another():
    found = imports()
    engine = {m: sorted(t for t in targets if t.startswith(ABOVE_ENGINE) and t != "maskmatch.cli_args")
              for m, targets in found.items() if m.startswith("maskmatch.engine")}
    assert {m: t for m, t in engine.items() if t} == {}
    crossing = {m: sorted(t for t in targets if t.startswith(STAGES) and not t.startswith(stage))
                for stage in STAGES for m, targets in found.items() if m.startswith(stage)}
    assert {m: t for m, t in crossing.items() if t} == {}


def test_the_walker_sees_cycles():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
