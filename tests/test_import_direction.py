"""The direction of imports between our packages (DESIGN.md, "Layout"), checked on the source itself.

Every module of ours is parsed, function-local and conditional imports included (an import inside a function
is still an edge: it runs as soon as that function does), and so is every ``"package.module:function"`` string
(the engine names its stages factory that way: it is imported at run time, an edge all the same). Every edge to
another package of ours must be one of these:

    examples       -> unires, mres_engine, captioner, dataset_scripts, modeling_unires, run_support (the top)
    unires         -> modeling_unires, dataset_scripts, run_support
    mres_engine    -> captioner, dataset_scripts, modeling_unires, run_support
    captioner      -> dataset_scripts, modeling_unires (the one image->RGB rule, which travels as remote code), run_support
    dataset_scripts -> run_support
    modeling_unires, run_support -> none of ours

and no example imports another example. The packages are the ones `pyproject.toml` ships, read from it: a new
top-level package without a rule here fails the suite instead of going unchecked.
"""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

import pytest

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]

ALLOWED = {
    "examples": {"unires", "mres_engine", "captioner", "dataset_scripts", "modeling_unires", "run_support"},
    "unires": {"modeling_unires", "dataset_scripts", "run_support"},
    "mres_engine": {"captioner", "dataset_scripts", "modeling_unires", "run_support"},
    "captioner": {"dataset_scripts", "modeling_unires", "run_support"},
    "dataset_scripts": {"run_support"},
    "modeling_unires": set(),  # its files travel with checkpoints as remote code
    "run_support": set(),  # the floor: Hub checks, output-folder lock, processes, paths, CLI helpers, reject logs
}
# "package.module:function", as entry points and the engine's --stages_factory spell an importable callable.
ENTRY_POINT_STRING = re.compile(r"^([A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*):[A-Za-z_]\w*$")


def shipped_packages(root: Path) -> set[str]:
    """The top-level packages the wheel carries, from `[tool.setuptools.packages.find] include` in pyproject.toml."""
    config = tomllib.loads((root / "pyproject.toml").read_text())
    patterns = config["tool"]["setuptools"]["packages"]["find"]["include"]
    return {
        path.name
        for path in root.iterdir()
        if path.is_dir() and (path / "__init__.py").is_file() and any(Path(path.name).match(p) for p in patterns)
    }


def checked_packages(root: Path) -> set[str]:
    """Every package whose imports are checked: the shipped ones and the examples."""
    return shipped_packages(root) | {"examples"}


def imported_modules(path: Path, root: Path = ROOT) -> list[tuple[int, str]]:
    """(line, absolute dotted name) of every import in ``path``, relative ones resolved against its package, and of
    every ``"module:function"`` string."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package_parts = list(path.relative_to(root).with_suffix("").parts[:-1])
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
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            match = ENTRY_POINT_STRING.match(node.value)
            if match:
                names.append((node.lineno, match.group(1)))
    return names


def our_modules(root: Path = ROOT) -> list[Path]:
    files = []
    for package in sorted(checked_packages(root)):
        files += sorted((root / package).rglob("*.py"))
    return files


def edges(root: Path = ROOT) -> list[tuple[str, int, str, str]]:
    """(file, line, from package, to module) for every import of one of our packages."""
    packages = checked_packages(root)
    found = []
    for path in our_modules(root):
        source = path.relative_to(root).parts[0]
        for line, module in imported_modules(path, root):
            if module.split(".")[0] in packages:
                found.append((str(path.relative_to(root)), line, source, module))
    return found


def wrong_direction(root: Path = ROOT, allowed: dict = ALLOWED) -> list[str]:
    """One line per import against the rules; a package with no rule at all is reported too."""
    wrong = [f"{package}: a package with no rule in ALLOWED (add it, with the packages it may import)"
             for package in sorted(checked_packages(root) - set(allowed))]
    wrong += [
        f"{file}:{line}: {source} imports {module}"
        for file, line, source, module in edges(root)
        if module.split(".")[0] != source and module.split(".")[0] not in allowed.get(source, set())
    ]
    return wrong


def test_the_package_list_comes_from_pyproject():
    assert checked_packages(ROOT) == set(ALLOWED), (
        f"pyproject.toml ships {sorted(shipped_packages(ROOT))}; rules exist for {sorted(ALLOWED)}"
    )


def test_imports_run_only_in_the_designed_direction():
    wrong = wrong_direction()
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


def _planted_tree(tmp_path: Path, files: dict[str, str], include=("alpha*", "beta*")) -> Path:
    quoted = ", ".join(f'"{p}"' for p in include)
    (tmp_path / "pyproject.toml").write_text(f"[tool.setuptools.packages.find]\ninclude = [{quoted}]\n")
    for name in ("alpha", "beta", "examples"):
        (tmp_path / name).mkdir()
        if name != "examples":
            (tmp_path / name / "__init__.py").write_text("")
    for relative, text in files.items():
        (tmp_path / relative).write_text(text)
    return tmp_path


PLANTED_RULES = {"alpha": {"beta"}, "beta": set(), "examples": {"alpha", "beta"}}


@pytest.mark.parametrize(
    "planted",
    [
        "from alpha import thing\n",                                     # a plain import upwards
        "def f():\n    from ..alpha.core import run\n",                  # relative and function-local
        'FACTORY = "alpha.stages.build:build_stages"\n',                 # a "module:function" string
    ],
)
def test_a_planted_bad_edge_fails_the_check(tmp_path, planted):
    root = _planted_tree(tmp_path, {"beta/mod.py": planted})
    wrong = wrong_direction(root, PLANTED_RULES)
    assert len(wrong) == 1 and wrong[0].startswith("beta/mod.py:") and "beta imports alpha" in wrong[0], wrong


def test_allowed_edges_and_other_strings_pass_the_check(tmp_path):
    root = _planted_tree(tmp_path, {
        "alpha/mod.py": 'from beta import x\nFACTORY = "beta.build:make"\nTEXT = "see: http://x"\nT2 = "12:30"\n',
        "beta/mod.py": 'import json\nURL = "alpha"\n',
    })
    assert wrong_direction(root, PLANTED_RULES) == []


def test_a_new_package_without_a_rule_fails_the_check(tmp_path):
    root = _planted_tree(tmp_path, {}, include=("alpha*", "beta*", "gamma*"))
    (root / "gamma").mkdir()
    (root / "gamma" / "__init__.py").write_text("")
    assert wrong_direction(root, PLANTED_RULES) == [
        "gamma: a package with no rule in ALLOWED (add it, with the packages it may import)"
    ]


@pytest.mark.parametrize(
    "source, relative, expected",
    [
        ("dataset_scripts/x.py", "from . import masks", "dataset_scripts"),
        ("mres_engine/stages/a.py", "from ..records import f", "mres_engine.records"),
        ("captioner/b.py", "def f():\n    from unires.demo import run", "unires.demo"),
    ],
)
def test_the_parser_resolves_relative_and_local_imports(tmp_path, source, relative, expected):
    # The check must see what it is meant to see: relative imports resolved, imports inside functions found.
    path = tmp_path / source
    path.parent.mkdir(parents=True)
    path.write_text(relative + "\n")
    assert expected in [module for _, module in imported_modules(path, tmp_path)]
