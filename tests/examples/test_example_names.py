"""No example script shadows a library (issue 29, item 7).

Python puts a script's own folder first on `sys.path`, so `examples/evaluate.py` made `import evaluate` inside every
script run from `examples/` (and everything those scripts import: `evaluate.load` of the MRES metric) load the
example instead of the library. Each example's module name must not be a standard-library module nor importable
from anywhere else in this environment.
"""

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = sorted(path.stem for path in (REPO / "examples").glob("*.py"))

# Run from an empty folder, so that examples/ is not on sys.path and only installed modules are found.
FIND = r"""
import importlib.util, json, sys
names = json.loads(sys.argv[1])
found = {}
for name in names:
    spec = importlib.util.find_spec(name)
    if spec is not None or name in sys.stdlib_module_names:
        found[name] = getattr(spec, "origin", None) or "the standard library"
print(json.dumps(found))
"""


def test_no_example_is_named_as_an_importable_module(tmp_path):
    assert "evaluate_model" in EXAMPLES and "evaluate" not in EXAMPLES
    result = subprocess.run([sys.executable, "-c", FIND, json.dumps(EXAMPLES)], cwd=tmp_path, capture_output=True,
                            text=True, timeout=60, check=True)
    shadowed = json.loads(result.stdout)
    assert shadowed == {}, f"examples that shadow a module of this environment (rename them): {shadowed}"


def test_the_check_sees_a_shadowed_library(tmp_path):
    """The check itself: the `evaluate` library (and a standard-library name) would be caught."""
    result = subprocess.run([sys.executable, "-c", FIND, json.dumps(["evaluate", "json", "evaluate_model"])],
                            cwd=tmp_path, capture_output=True, text=True, timeout=60, check=True)
    assert set(json.loads(result.stdout)) == {"evaluate", "json"}
