"""The engine's modules stay small and import one way (issue 29 item 5).

- No module is over :data:`MAX_LINES` lines (the detection reader, ``LoadImages`` and the Hub export once
  shared one 643-line file).
- The engine's own modules import each other at module level, without a cycle; a function-local import of
  an engine module (the way a cycle is dodged: ``manifest.py`` once imported ``stages.input`` inside its
  functions) is only allowed in ``__main__.py``, which defers each command's heavy modules.
"""

import ast
from pathlib import Path

import mres_engine

PACKAGE = Path(mres_engine.__file__).parent
MAX_LINES = 400
DEFERRING_ENTRY_POINTS = {"mres_engine.__main__"}


def _modules() -> dict[str, Path]:
    modules = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return modules


def _engine_imports(name: str, path: Path, modules) -> list[tuple[str, bool]]:
    """``(imported engine module, at module level)`` for every import of an engine module in ``name``."""
    tree = ast.parse(path.read_text())
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    type_checking = {id(node) for block in ast.walk(tree) if isinstance(block, ast.If)
                     and ast.unparse(block.test) in ("TYPE_CHECKING", "typing.TYPE_CHECKING")
                     for node in ast.walk(block)}
    module_level = {id(node) for node in tree.body if isinstance(node, (ast.Import, ast.ImportFrom))}
    found = []
    for node in ast.walk(tree):
        if id(node) in type_checking:
            continue
        targets = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([node.module] if node.module else []))
            targets = [base] + [f"{base}.{alias.name}" for alias in node.names]
        for target in targets:
            if target in modules and target != "mres_engine":
                found.append((target, id(node) in module_level))
    return found


def test_no_module_is_over_the_line_limit():
    sizes = {name: len(path.read_text().splitlines()) for name, path in _modules().items()}
    assert {name: lines for name, lines in sizes.items() if lines > MAX_LINES} == {}


def test_engine_modules_import_each_other_at_module_level_without_a_cycle():
    modules = _modules()
    graph, local = {}, []
    for name, path in modules.items():
        imports = _engine_imports(name, path, modules)
        graph[name] = {target for target, top in imports if top}
        local += [f"{name} -> {target}" for target, top in imports if not top and name not in DEFERRING_ENTRY_POINTS]
    assert local == []
    state: dict[str, int] = {}

    def visit(node, trail):
        state[node] = 1
        for target in sorted(graph[node]):
            assert state.get(target) != 1, "import cycle: " + " -> ".join(trail + [node, target])
            if target not in state:
                visit(target, trail + [node])
        state[node] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name, [])
