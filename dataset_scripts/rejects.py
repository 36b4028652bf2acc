"""Accounting for bad input: nothing is dropped silently.

Every item a builder skips, or keeps after a safe fix (e.g. a bbox clipped to the image), is
counted and written with its reason, one JSON object per line, to ``rejects.jsonl`` beside the
output. The build ends with the summary line ``kept N, fixed N, skipped N``.
"""

from __future__ import annotations

import json
import logging
import os
from collections import Counter
from typing import Any

logger = logging.getLogger(__name__)

REJECTS_FILENAME = "rejects.jsonl"


class RejectLog:
    """Counts kept, fixed and skipped items and writes each fixed or skipped one to a JSONL file.

    ``kept`` counts every item written to the dataset, including fixed ones; ``fixed`` is the
    subset of kept items that were changed by a safe fix; ``skipped`` items were not written.

    Args:
        path: the JSONL file; ``None`` keeps records in memory only (``records``).
        report_path: the path named in the summary line, when the file moves afterwards
            (builders write into a temporary folder that is renamed at the end).
    """

    def __init__(self, path: str | os.PathLike | None = None, report_path: str | os.PathLike | None = None):
        self.path = os.fspath(path) if path is not None else None
        self.report_path = os.fspath(report_path) if report_path is not None else self.path
        self.kept = 0
        self.fixed = 0
        self.skipped = 0
        self.reasons: Counter[str] = Counter()
        self.records: list[dict[str, Any]] = []
        self._file = None
        if self.path is not None:
            os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
            self._file = open(self.path, "w", encoding="utf-8")

    def _write(self, record: dict[str, Any]) -> None:
        self.records.append(record)
        self.reasons[record["reason"]] += 1
        if self._file is not None:
            self._file.write(json.dumps(record, sort_keys=True) + "\n")
            self._file.flush()

    def keep(self, n: int = 1) -> None:
        """Count ``n`` items written unchanged (or after fixes already recorded with :meth:`fix`)."""
        self.kept += n

    def fix(self, item_id: str, reason: str, **details: Any) -> None:
        """Record a safe fix applied to an item that is kept (call :meth:`keep` for it as well)."""
        self.fixed += 1
        self._write({"action": "fixed", "item_id": str(item_id), "reason": reason, **details})

    def skip(self, item_id: str, reason: str, **details: Any) -> None:
        """Record an item that is not written, with the reason why."""
        self.skipped += 1
        logger.debug("skipped %s: %s", item_id, reason)
        self._write({"action": "skipped", "item_id": str(item_id), "reason": reason, **details})

    def summary(self) -> str:
        """The closing line, e.g. ``kept 120, fixed 2, skipped 3 (rejects: /out/rejects.jsonl)``."""
        line = f"kept {self.kept}, fixed {self.fixed}, skipped {self.skipped}"
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
            print(line)
        return line

    def __enter__(self) -> "RejectLog":
        return self

    def __exit__(self, *exc) -> None:
        self.close(log=exc[0] is None)
