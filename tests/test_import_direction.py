"""The direction of imports between our packages (DESIGN.md, "Layout"), checked on the source itself.

Every module of ours is parsed, function-local and conditional imports included (an import inside a function
is still an edge: it runs as soon as that function does), and every edge to another package of ours must be
one of these:

    examples       -> unires, mres_engine, captioner, dataset_scripts, modeling_unires (the top: thin entry points)
    unires         -> modeling_unires, dataset_scripts
    mres_engine    -> captioner, dataset_scripts, modeling_unires
    captioner      -> dataset_scripts
    modeling_unires, dataset_scripts -> none of ours

and no example imports another example.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

ALLOWED = {
    "examples": {"unires", "mres_engine", "captioner", "dataset_scripts", "modeling_unires"},
    "unires": {"modeling_unires", "dataset_scripts"},
    "mres_engine": {"captioner", "dataset_scripts", "modeling_unires"},
    "captioner": {"dataset_scripts"},
    "modeling_unires": set(),
    "dataset_scripts": set(),
}
PACKAGES = set(ALLOWED)


def imported_modules(path: Path) -> list[tuple[int, str]]:
    """(line, absolute dotted name) of every import in ``path``, relative ones resolved against its package."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package_parts = list(path.relative_to(ROOT).with_suffix("").parts[:-1])
    names = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package_parts[: len(package_parts) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            names.append((node.lineno, module))
            # `from pkg import sub` may name a submodule: the edge is to pkg either way.
    return names


def our_modules() -> list[Path]:
    files = []
    for package in sorted(PACKAGES):
        files += sorted((ROOT / package).rglob("*.py"))
    return files


def edges() -> list[tuple[str, int, str, str]]:
    """(file, line, from package, to package) for every import of one of our packages."""
    found = []
    for path in our_modules():
        source = path.relative_to(ROOT).parts[0]
        for line, module in imported_modules(path):
            target = module.split(".")[0]
            if target in PACKAGES:
                found.append((str(path.relative_to(ROOT)), line, source, module))
    return found


def test_every_package_of_ours_is_parsed():
    parsed = {path.relative_to(ROOT).parts[0] for path in our_modules()}
    assert parsed == PACKAGES, f"missing packages: {PACKAGES - parsed}"


def test_imports_run_only_in_the_designed_direction():
    wrong = [
        f"{file}:{line}: {source} imports {module}"
        for file, line, source, module in edges()
        if module.split(".")[0] != source and module.split(".")[0] not in ALLOWED[source]
    ]
    assert not wrong, "imports against the direction in DESIGN.md:\n" + "\n".join(wrong)


def test_examples_do_not_import_each_other():
    examples = {path.stem for path in (ROOT / "examples").glob("*.py")}
    wrong = [
        f"{file}:{line}: imports {module}"
        for file, line, source, module in edges()
        if source == "examples" and module.split(".")[0] == "examples"
    ]
    wrong += [
        f"examples/{path.name}:{line}: imports {module}"
        for path in (ROOT / "examples").glob("*.py")
        for line, module in imported_modules(path)
        if module.split(".")[0] in examples
    ]
    assert not wrong, "examples import each other:\n" + "\n".join(wrong)


@pytest.mark.parametrize(
    "source, relative, expected",
    [
        ("dataset_scripts/x.py", "from . import masks", "dataset_scripts"),
        ("mres_engine/stages/a.py", "from ..records import f", "mres_engine.records"),
        ("captioner/b.py", "def f():\n    from unires.demo import run", "unires.demo"),
    ],
)
def test_the_parser_resolves_relative_and_local_imports(tmp_path, monkeypatch, source, relative, expected):
    # The check must see what it is meant to see: relative imports resolved, imports inside functions found.
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    path = tmp_path / source
    path.parent.mkdir(parents=True)
    path.write_text(relative + "\n")
    assert expected in [module for _, module in imported_modules(path)]
