"""The engine's own errors: what ``python -m mres_engine`` turns into one line and an exit code.

- :class:`EngineUsageError`: a bad argument (exit code 2, as argparse's own errors): a missing
  annotation file, an output path that is a file, ``--num_shards 0``, a rerun whose inputs differ
  from the output's (:class:`RunMismatchError`), a task that no cluster node can hold.
- :class:`EngineInputError`: bad data (exit code 1): the file, the item and the key at fault, e.g.
  ``objects365.json: annotations[17] (id 4242): key 'bbox': missing``. The annotation reader
  raises it; :func:`mres_engine.run.run_engine` translates what a reader raises without it.

Both are ``ValueError`` subclasses, so callers that caught ``ValueError`` still do.
"""

from __future__ import annotations

import json
from typing import Any, Optional

EXIT_BAD_DATA = 1
EXIT_BAD_ARGUMENTS = 2


class EngineError(ValueError):
    """An error the command line reports in one line (no traceback without ``--debug``)."""

    exit_code = EXIT_BAD_DATA


class EngineUsageError(EngineError):
    """A bad command-line argument; ``option`` names it (e.g. ``"--num_shards"``)."""

    exit_code = EXIT_BAD_ARGUMENTS

    def __init__(self, option: Optional[str], message: str):
        self.option = option
        super().__init__(f"{option}: {message}" if option else message)


class RunMismatchError(EngineUsageError):
    """A rerun into an output made from other inputs or options; ``differences`` is ``[(name, old, new)]``."""

    def __init__(self, output_dir: str, differences: list[tuple[str, Any, Any]]):
        self.output_dir = output_dir
        self.differences = differences
        changes = "; ".join(f"{name}: {_short(old)} -> {_short(new)}" for name, old, new in differences)
        super().__init__(
            "--output_dir",
            f"{output_dir} was made from other inputs or options ({changes}); rerun with the recorded ones, "
            "choose a new --output_dir, or add --force_new to clear it and start anew",
        )


def item_name(section: str, index: int, item_id: Any = None) -> str:
    """How an error names an item of the annotation file: ``annotations[17] (id 4242)``."""
    return f"{section}[{index}]" + (f" (id {item_id})" if item_id is not None else "")


class EngineInputError(EngineError):
    """Bad input data: ``file``, ``item`` (e.g. :func:`item_name`'s ``"annotations[17] (id 4242)"``, or
    ``"line 3 column 9"`` for malformed JSON), ``key`` (e.g. ``"bbox"``) and ``reason`` (e.g. ``"missing"``).

    ``str(error)`` is one line: ``file: item: key 'bbox': missing``.
    """

    exit_code = EXIT_BAD_DATA

    def __init__(self, file: Optional[str], reason: str, *, item: Optional[str] = None, key: Optional[str] = None):
        self.file, self.reason, self.item, self.key = file, reason, item, key
        parts = [p for p in (file, item, f"key {key!r}" if key is not None else None, reason) if p]
        super().__init__(": ".join(parts))


def _short(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


# What the reader needs of each item of a COCO/Objects365 detection file (see
# mres_engine.readers.detection.read_detection_manifest); used to name the item behind a reader's bare KeyError.
REQUIRED_KEYS = {
    "images": {"id": None, "file_name": str, "width": (int, float), "height": (int, float)},
    "annotations": {"image_id": None, "bbox": list, "category_id": None},
    "categories": {"id": None, "name": str},
}


def locate_schema_problem(path: str) -> Optional[EngineInputError]:
    """The first item of a detection JSON file that lacks a required key or holds the wrong type, as an error; None if none.

    Streams the file with ijson when it is installed (memory does not grow with the file), else
    reads it whole. Only called after a reader failed, to say where.
    """
    def check(section: str, index: int, item: Any) -> Optional[EngineInputError]:
        if not isinstance(item, dict):
            return EngineInputError(path, f"not an object but {type(item).__name__}", item=item_name(section, index))
        for key, kind in REQUIRED_KEYS[section].items():
            where = item_name(section, index, item.get("id"))
            if key not in item:
                return EngineInputError(path, "missing", item=where, key=key)
            value = item[key]
            if kind is not None and (not isinstance(value, kind) or isinstance(value, bool)):
                return EngineInputError(path, f"{type(value).__name__} {_short(value, 40)} where "
                                        f"{'a number' if kind == (int, float) else kind.__name__} is expected", item=where, key=key)
            if key == "bbox" and (len(value) != 4 or not all(isinstance(v, (int, float)) for v in value)):
                return EngineInputError(path, f"{_short(value, 40)} is not 4 numbers [x, y, w, h]", item=where, key=key)
        return None

    try:
        import ijson
    except ImportError:
        ijson = None
    if ijson is None:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
        if not isinstance(data, dict):
            return EngineInputError(path, "the file is not a JSON object with images, annotations and categories")
        for section in REQUIRED_KEYS:
            if section != "annotations" and section not in data:
                return EngineInputError(path, "missing (a detection file needs images and categories lists)", key=section)
            for index, item in enumerate(data.get(section) or []):
                problem = check(section, index, item)
                if problem:
                    return problem
        return None
    seen = set()
    for section in REQUIRED_KEYS:
        with open(path, "rb") as f:
            for index, item in enumerate(ijson.items(f, f"{section}.item", use_float=True)):
                seen.add(section)
                problem = check(section, index, item)
                if problem:
                    return problem
    for section in ("images", "categories"):
        if section not in seen:
            with open(path, "rb") as f:
                present = any(prefix == "" and event == "map_key" and value == section for prefix, event, value in ijson.parse(f))
            if not present:
                return EngineInputError(path, "missing (a detection file needs images and categories lists)", key=section)
    return None
