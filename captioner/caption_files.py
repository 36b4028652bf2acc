"""Captioning a JSONL file of boxes into a JSONL file of captions, incrementally and resumably.

Each caption is written (and flushed) as soon as its chunk is generated, so a run that is killed
loses at most one chunk; run again with the same output and it continues after the last complete
line (a line cut off by the kill is dropped first). Each output line carries the ``index`` of its
input line, which is how a resumed run knows what is done.
"""
from __future__ import annotations

import json
import logging
import os
from typing import Iterator

from run_support.rejects import RejectLog

logger = logging.getLogger(__name__)


def _done_indices(output_path: str) -> set[int]:
    """Indices already captioned in ``output_path``; a last line cut off mid-write is removed."""
    done: set[int] = set()
    if not os.path.exists(output_path):
        return done
    with open(output_path, "rb+") as handle:
        complete_end = 0
        for line in handle:
            try:
                done.add(int(json.loads(line)["index"]))
            except (ValueError, KeyError, TypeError):
                if line.endswith(b"\n"):
                    raise ValueError(f"{output_path!r} has a line that is not a caption record: {line[:80]!r}") from None
                break  # the last line, cut off by an interrupted run
            complete_end += len(line)
        handle.truncate(complete_end)
    return done


def _rows(boxes_path: str, done: set[int], rejects: RejectLog, positions: list[int]) -> Iterator[dict]:
    with open(boxes_path, encoding="utf-8") as handle:
        for index, line in enumerate(handle):
            if index in done or not line.strip():
                continue
            try:
                row = json.loads(line)
                if not isinstance(row, dict):
                    raise ValueError(f"expected an object, got {type(row).__name__}")
            except ValueError as error:
                rejects.skip(f"line {index + 1}", f"bad item: not a JSON object ({error})")
                continue
            positions.append(index)
            yield row


def caption_jsonl(captioner, boxes_path: str, output_path: str, rejects: RejectLog | None = None, chunk_size: int = 512) -> int:
    """Caption every ``{"image", "bbox", "granularity"?, "image_id"?}`` line of ``boxes_path`` not yet in
    ``output_path``, appending ``{"index", "image_id", "bbox", "granularity", "caption", "truncated"}`` lines.

    Rows of one image should be adjacent: within a chunk, they share one image encoding.

    Returns:
        the number of captions written by this call.
    """
    rejects = rejects if rejects is not None else RejectLog(stage="caption_boxes")
    done = _done_indices(output_path)
    if done:
        logger.info("resuming: %d boxes of %s already captioned in %s", len(done), boxes_path, output_path)
    positions: list[int] = []
    written = 0
    with open(output_path, "a", encoding="utf-8") as out:
        for result in captioner.caption_dataset(_rows(boxes_path, done, rejects, positions), rejects, chunk_size=chunk_size):
            result["index"] = positions[result["index"]]  # the input line, not the position among this run's rows
            out.write(json.dumps(result) + "\n")
            out.flush()  # a kill loses nothing written so far
            written += 1
    return written
