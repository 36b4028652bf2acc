"""The engine's output folder and its exactly-once file protocol.

Layout of an output folder (``OUT``)::

    manifest/manifest.json                       written last by the driver: shard count, image count
    manifest/00003-of-00008.jsonl                the input records of shard 3 (a pure function of the
                                                 sorted manifest and the shard count)
    data/train-00003-of-00008-000.parquet        MRES_FEATURES rows, images embedded (config "default")
    annotations/annotations-train-00003-of-00008-000.parquet
                                                 the same rows without image bytes, with ``file_name``
                                                 (config "annotations")
    rejects/input.jsonl                          what the manifest reader skipped or fixed
    rejects/train-00003-of-00008.jsonl           what the stages of shard 3 rejected (``RejectLog`` format)
    shards/00003.json                            shard 3 is complete: its files, counts and stage stats
    logs/                                        datatrove's logging folder (completions, task logs)
    .lock, .workers.lock                         held by the run's driver, and shared by its local workers
                                                 (see mres_engine.run and mres_engine.workers)

The rule that makes a killed run resume with nothing lost or doubled: every file is written under
a temporary name (``.tmp-`` prefix, which no reader's glob matches), flushed to disk, renamed to
its final name, and only after all files of a shard are renamed is ``shards/NNNNN.json`` written
(by the same rule). A shard without that record is void: the task that redoes it first removes
every file of the shard, final or temporary. Readers (``publish``, ``evaluate``, the exactly-once
check) trust only the files that a shard record lists. :mod:`mres_engine.writers.commit` applies the
rule to a shard, and says why datatrove's own ``logs/completions/`` marker is kept beside the record.
"""

from __future__ import annotations

import glob
import json
import os
from contextlib import contextmanager
from typing import Any, Iterator

TMP_PREFIX = ".tmp-"
MANIFEST_DIR = "manifest"
DATA_DIR = "data"
ANNOTATIONS_DIR = "annotations"
REJECTS_DIR = "rejects"
SHARD_RECORDS_DIR = "shards"
LOGS_DIR = "logs"
INPUT_REJECTS = "input.jsonl"
MANIFEST_INFO = "manifest.json"
STATS_FILE = "stats.json"


def shard_tag(rank: int, num_shards: int) -> str:
    return f"{rank:05d}-of-{num_shards:05d}"


def shard_manifest_path(out: str, rank: int, num_shards: int) -> str:
    return os.path.join(out, MANIFEST_DIR, f"{shard_tag(rank, num_shards)}.jsonl")


def data_file_name(split: str, rank: int, num_shards: int, part: int) -> str:
    return f"{split}-{shard_tag(rank, num_shards)}-{part:03d}.parquet"


def annotations_file_name(split: str, rank: int, num_shards: int, part: int) -> str:
    # Not "{split}-*": a reader that globs a folder for "{split}-*.parquet" must find the
    # image-embedded shards only (see dataset_scripts.load.load_mres_dataset).
    return f"annotations-{data_file_name(split, rank, num_shards, part)}"


def shard_rejects_name(split: str, rank: int, num_shards: int) -> str:
    return f"{split}-{shard_tag(rank, num_shards)}.jsonl"


def shard_record_path(out: str, rank: int) -> str:
    return os.path.join(out, SHARD_RECORDS_DIR, f"{rank:05d}.json")


def temporary_path(final_path: str) -> str:
    head, tail = os.path.split(final_path)
    return os.path.join(head, TMP_PREFIX + tail)


def _fsync_file(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(path: str) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # some filesystems do not open directories; the rename is still atomic
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def commit(temporary: str, final: str) -> None:
    """Flush ``temporary`` to disk and rename it to ``final`` (atomic on one filesystem)."""
    _fsync_file(temporary)
    os.replace(temporary, final)
    _fsync_dir(os.path.dirname(final) or ".")


@contextmanager
def atomic_text(final_path: str) -> Iterator[Any]:
    """Open a text file that appears under ``final_path`` only when the block ends without error."""
    os.makedirs(os.path.dirname(final_path) or ".", exist_ok=True)
    tmp = temporary_path(final_path)
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            yield f
        commit(tmp, final_path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def write_json_atomic(final_path: str, value: Any) -> None:
    with atomic_text(final_path) as f:
        json.dump(value, f, indent=1, sort_keys=True)


def read_json(path: str) -> Any:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def shard_files_glob(out: str, rank: int, num_shards: int) -> list[str]:
    """Every file (final or temporary) that shard ``rank`` may have left in the output folder."""
    tag = shard_tag(rank, num_shards)
    patterns = [
        os.path.join(out, DATA_DIR, f"*-{tag}-*.parquet"),
        os.path.join(out, ANNOTATIONS_DIR, f"*-{tag}-*.parquet"),
        os.path.join(out, REJECTS_DIR, f"*-{tag}.jsonl"),
    ]
    found = []
    for pattern in patterns:
        head, tail = os.path.split(pattern)
        found += glob.glob(pattern) + glob.glob(os.path.join(head, TMP_PREFIX + tail))
    record = shard_record_path(out, rank)
    found += [p for p in (temporary_path(record),) if os.path.exists(p)]
    return sorted(found)


def void_shard(out: str, rank: int, num_shards: int) -> list[str]:
    """Remove what an unfinished attempt at shard ``rank`` left behind; returns the removed paths."""
    removed = shard_files_glob(out, rank, num_shards)
    for path in removed:
        os.remove(path)
    return removed


def remove_stray_temporaries(out: str) -> list[str]:
    """Remove every temporary file under ``out`` (a killed run's leftovers); returns them."""
    removed = []
    for folder in (MANIFEST_DIR, DATA_DIR, ANNOTATIONS_DIR, REJECTS_DIR, SHARD_RECORDS_DIR, ".", os.path.join(LOGS_DIR, "progress")):
        for path in glob.glob(os.path.join(out, folder, TMP_PREFIX + "*")):
            os.remove(path)
            removed.append(path)
    return sorted(removed)


def completed_shards(out: str) -> dict[int, dict[str, Any]]:
    """``{rank: shard record}`` of every complete shard of the output folder."""
    records = {}
    for path in sorted(glob.glob(os.path.join(out, SHARD_RECORDS_DIR, "[0-9]*.json"))):
        record = read_json(path)
        records[int(record["rank"])] = record
    return records


def read_manifest_info(out: str) -> dict[str, Any] | None:
    path = os.path.join(out, MANIFEST_DIR, MANIFEST_INFO)
    return read_json(path) if os.path.exists(path) else None


def read_jsonl(path: str) -> list[dict[str, Any]]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]
