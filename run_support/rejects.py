"""Accounting for bad input: nothing is dropped silently.

One `RejectLog` serves every producer of data (the dataset builders, the captioner's fine-tune
data and captioning, the data engine). Every item that is skipped, or kept after a safe fix
(e.g. a bbox clipped to the image), is counted and written with its reason, one JSON object
per line, to ``rejects.jsonl``. A run ends with the summary line ``kept N, fixed N, skipped N``.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections import Counter
from typing import Any

logger = logging.getLogger(__name__)

REJECTS_FILENAME = "rejects.jsonl"


def _folder_prefixes(folder: str | os.PathLike | None) -> list[re.Pattern]:
    """``folder/`` at the start of a path (after a space, a colon or a quote), as given, absolute and with links
    resolved; longest first."""
    if folder is None:
        return []
    folder = os.fspath(folder)
    forms = {f.rstrip(os.sep) + os.sep for f in (folder, os.path.abspath(folder), os.path.realpath(folder)) if f.strip(os.sep + ".")}
    return [re.compile(r"(?<![^\s:'\"(])" + re.escape(f)) for f in sorted(forms, key=len, reverse=True)]


class RejectLog:
    """Counts kept, fixed and skipped items and writes each fixed or skipped one to a JSONL file.

    ``kept`` counts every item written to the output, including fixed ones; ``fixed`` is the
    number of distinct kept items changed by a safe fix (one item fixed twice counts once; every
    fix is still written); ``skipped`` items were not written. ``reasons`` counts records by the
    reason's head (the text before the first ``:``), so that "missing image: a.jpg" and
    "missing image: b.jpg" add up; ``skipped_by_level`` counts skipped records by their ``level``
    detail (``None`` when a record has none), e.g. how many whole images a shard skipped.

    With a ``path`` the records stream to the file and none is kept in memory, so that a producer
    of millions of rejects keeps a flat memory; without one they are kept in ``records``.

    Args:
        path: the JSONL file; ``None`` keeps records in memory only (``records``).
        stage: a label written with every record (e.g. ``"refcoco/val"``, ``"caption"``) and shown in the summary.
        report_path: the path named in the summary line, when the file moves afterwards
            (builders write into a temporary folder that is renamed at the end).
        append: append to an existing file (several producers sharing one log) instead of starting it anew.
        distinct_fixes: count distinct fixed items (a set of their ids is kept). ``False`` when the
            producer fixes each item at most once: ``fixed`` is then the number of fix records and
            no id is held (a streaming producer's memory stays flat).
        relative_to: a folder (e.g. the image folder) whose files the reasons name relative to it:
            ``missing image: /data/coco/sub/x.jpg`` is written ``missing image: sub/x.jpg``, so that a
            published log names no folder of the machine that built it.
    """

    def __init__(
        self,
        path: str | os.PathLike | None = None,
        stage: str = "",
        report_path: str | os.PathLike | None = None,
        append: bool = False,
        distinct_fixes: bool = True,
        relative_to: str | os.PathLike | None = None,
    ):
        self.path = os.fspath(path) if path is not None else None
        self.stage = stage
        self.report_path = os.fspath(report_path) if report_path is not None else self.path
        self.kept = 0
        self.skipped = 0
        self.reasons: Counter[str] = Counter()
        self.skipped_by_level: Counter[str | None] = Counter()
        self.records: list[dict[str, Any]] = []  # only when there is no file
        self.distinct_fixes = distinct_fixes
        self._fixed_items: set[str] = set()
        self._fix_records = 0
        self._file = None
        self._folder_prefixes = _folder_prefixes(relative_to)
        if self.path is not None:
            os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
            self._file = open(self.path, "a" if append else "w", encoding="utf-8")

    @property
    def fixed(self) -> int:
        return len(self._fixed_items) if self.distinct_fixes else self._fix_records

    def _write(self, record: dict[str, Any]) -> None:
        for prefix in self._folder_prefixes:
            record["reason"] = prefix.sub("", record["reason"])
        if self.stage:
            record = {"stage": self.stage, **record}
        self.reasons[record["reason"].split(":")[0]] += 1
        if self.path is None:
            self.records.append(record)
        elif self._file is not None:
            self._file.write(json.dumps(record, sort_keys=True, default=str) + "\n")
            self._file.flush()

    def keep(self, n: int = 1) -> None:
        """Count ``n`` items written unchanged (or after fixes already recorded with :meth:`fix`)."""
        self.kept += n

    def fix(self, item_id: Any, reason: str, **details: Any) -> None:
        """Record a safe fix applied to an item that is kept (call :meth:`keep` for it as well)."""
        if self.distinct_fixes:
            self._fixed_items.add(str(item_id))
        else:
            self._fix_records += 1
        self._write({"action": "fixed", "item_id": str(item_id), "reason": reason, **details})

    def skip(self, item_id: Any, reason: str, **details: Any) -> None:
        """Record an item that is not written, with the reason why."""
        self.skipped += 1
        self.skipped_by_level[details.get("level")] += 1
        logger.debug("skipped %s (%s): %s", item_id, self.stage, reason)
        self._write({"action": "skipped", "item_id": str(item_id), "reason": reason, **details})

    def summary(self) -> str:
        """The closing line, e.g. ``kept 120, fixed 2, skipped 3 -- missing image: 3 (rejects: /out/rejects.jsonl)``."""
        line = f"kept {self.kept}, fixed {self.fixed}, skipped {self.skipped}"
        if self.stage:
            line = f"[{self.stage}] {line}"
        if self.reasons:
            line += " -- " + ", ".join(f"{reason}: {count}" for reason, count in self.reasons.most_common())
        if self.report_path is not None and (self.fixed or self.skipped):
            line += f" (rejects: {self.report_path})"
        return line

    def close(self, log: bool = True) -> str:
        """Close the file and log (and return) the summary line."""
        if self._file is not None:
            self._file.close()
            self._file = None
        line = self.summary()
        if log:
            logger.warning(line) if self.skipped else logger.info(line)
        return line

    def __enter__(self) -> "RejectLog":
        return self

    def __exit__(self, *exc) -> None:
        self.close(log=exc[0] is None)
