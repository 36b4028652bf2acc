"""
Import transformers' own common model tests (`ModelTesterMixin`, `ConfigTester`) from its source distribution.

They are not in transformers' wheel. `make transformers-tests` (a prerequisite of `make test`) unpacks the `tests/`
folder of the installed version's sdist under `<venv>/transformers-tests/<version>/tests`; `TRANSFORMERS_TESTS_DIR`
may point at another copy (e.g. a transformers checkout's `tests/`). Nothing of it is copied into this repository.

The sdist holds only the top-level `tests/*.py` files, while `test_modeling_common.py` and
`test_configuration_common.py` import three names from sub-folders it leaves out. Where those files are missing they
are stood in for, so that what they would have contributed is visibly absent rather than faked:
- `exporters/test_export.py: ExportTesterMixin` -> an empty mixin: the export tests (torch.export, ONNX, AOTI, ...)
  are not run;
- `generation/test_utils.py: GenerationTesterMixin` -> an empty class: UniRES does not generate, and
  `ModelTesterMixin` only checks that a non-generating model's tester does not inherit it;
- `utils/test_configuration_utils.py: config_common_kwargs` -> an object that raises on use: only
  `ConfigTester.check_config_arguments_init` reads it, and that returns before reading it for composite configs
  (those with `sub_configs`, as UniRESConfig).
"""

import importlib
import os
import sys
import types
from pathlib import Path

import transformers

PACKAGE = "transformers_sdist_tests"


def transformers_tests_dir() -> Path:
    override = os.environ.get("TRANSFORMERS_TESTS_DIR")
    if override:
        return Path(override)
    return Path(sys.prefix) / "transformers-tests" / transformers.__version__ / "tests"


class _MissingFromSdist:
    """Stands in for a value defined in a file that the sdist leaves out: any use of it raises."""

    def __init__(self, where: str):
        self._where = where

    def _fail(self, *args, **kwargs):
        raise RuntimeError(f"{self._where} is not in transformers' sdist; a test that reads it cannot run here")

    __deepcopy__ = __iter__ = __getitem__ = __len__ = items = keys = _fail


def _stand_in(relative: str, **names):
    """Register `PACKAGE.<relative>` with `names` unless the sdist copy holds the real file."""
    parts = relative.split(".")
    if (transformers_tests_dir().joinpath(*parts[:-1]) / f"{parts[-1]}.py").is_file():
        return
    for depth in range(1, len(parts) + 1):
        name = ".".join([PACKAGE, *parts[:depth]])
        if name not in sys.modules:
            module = types.ModuleType(name)
            if depth < len(parts):
                module.__path__ = []
            sys.modules[name] = module
    vars(sys.modules[f"{PACKAGE}.{relative}"]).update(names)


def import_common_test_module(name: str) -> types.ModuleType:
    """`import_common_test_module("test_modeling_common")`: that module of transformers' tests, or a loud error."""
    folder = transformers_tests_dir()
    if not (folder / f"{name}.py").is_file():
        raise RuntimeError(
            f"transformers' common tests ({name}.py) are not at {folder}. They come from the sdist of the installed "
            f"transformers {transformers.__version__}: run `make transformers-tests` (after an upgrade of "
            "transformers, first `rm .venv/transformers-tests/.fetched`), or by hand:\n"
            f"  python -m pip download --no-deps --no-binary :all: transformers=={transformers.__version__} -d DIR\n"
            f"  tar -xzf DIR/transformers-{transformers.__version__}.tar.gz -C DIR "
            f"&& touch DIR/transformers-{transformers.__version__}/tests/__init__.py\n"
            "and set TRANSFORMERS_TESTS_DIR to that tests/ folder."
        )
    if PACKAGE not in sys.modules:
        # Imported under a name of its own: the folder is called `tests`, like this repository's.
        package = types.ModuleType(PACKAGE)
        package.__path__ = [str(folder)]
        package.__file__ = str(folder / "__init__.py")
        sys.modules[PACKAGE] = package
        _stand_in("exporters.test_export", ExportTesterMixin=type("ExportTesterMixin", (), {}))
        _stand_in("generation.test_utils", GenerationTesterMixin=type("GenerationTesterMixin", (), {}))
        _stand_in(
            "utils.test_configuration_utils",
            config_common_kwargs=_MissingFromSdist("tests/utils/test_configuration_utils.py: config_common_kwargs"),
        )
    return importlib.import_module(f"{PACKAGE}.{name}")
