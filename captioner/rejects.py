"""Skipped items are counted and logged with their reason, never dropped silently."""
from __future__ import annotations

import json
import logging
import os
from collections import Counter

logger = logging.getLogger(__name__)


class RejectLog:
    """Counts rejected items by reason and appends each one to a JSONL file (when given).

    Args:
        path: JSONL file to append to (one ``{"item": ..., "reason": ..., "stage": ...}`` per line), or None.
        stage: a label written with every record, e.g. ``"coco_captions"`` or ``"caption"``.
    """

    def __init__(self, path: str | os.PathLike | None = None, stage: str = ""):
        self.path = os.fspath(path) if path is not None else None
        self.stage = stage
        self.counts: Counter = Counter()
        if self.path:
            os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)

    def reject(self, item, reason: str) -> None:
        """Record one skipped item and why."""
        self.counts[reason.split(":")[0]] += 1
        logger.debug("rejected %r (%s): %s", item, self.stage, reason)
        if self.path:
            with open(self.path, "a", encoding="utf-8") as handle:
                handle.write(json.dumps({"stage": self.stage, "item": str(item), "reason": reason}) + "\n")

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def summary(self) -> str:
        """One line: how many items were rejected and why."""
        if not self.total:
            return f"[{self.stage}] rejected 0 items"
        reasons = ", ".join(f"{reason}: {count}" for reason, count in self.counts.most_common())
        where = f" (details in {self.path})" if self.path else ""
        return f"[{self.stage}] rejected {self.total} items -- {reasons}{where}"

    def log_summary(self) -> None:
        (logger.warning if self.total else logger.info)(self.summary())
