"""The commit of a shard: its files renamed to their final names, then its shard record written, last.

``shards/NNNNN.json`` is the shard's completion marker for everything that reads an output: the
exactly-once check, ``publish``, ``evaluate``, the progress bar and a rerun trust only the files a
shard record lists, and a shard without one is void (:func:`start_shard` removes what it left).

datatrove writes a marker of its own, ``logs/completions/NNNNN``, after a task returns. The two are
kept on purpose, one per reader:

- datatrove's is the executor's schedule: its executors (local, Slurm, Ray; the Slurm one runs pickled
  on the cluster) read it to decide which tasks to launch (on Slurm, the array of a resubmission);
- the engine's is the data's commit point: written inside the task by the exactly-once rule, it names
  the shard's files, counts and per-stage stats, which an empty file written after the task cannot.

They cannot disagree in a harmful way: datatrove marks a task only after it returned, so after its
record was written; a record without datatrove's mark (a kill in between) makes the next run launch
the task, which finds the record and returns at once (:class:`mres_engine.executors.EngineShards`).
Making the record the only marker would mean overriding ``is_rank_completed`` in three executors for
no change in what is written.
"""

from __future__ import annotations

import os
from typing import Any, Optional

from .. import layout
from .shard_writer import ShardWriter


def completed_record(out: str, rank: int) -> Optional[dict[str, Any]]:
    """The record of shard ``rank`` if it is complete, else None."""
    path = layout.shard_record_path(out, rank)
    return layout.read_json(path) if os.path.exists(path) else None


def start_shard(out: str, rank: int, num_shards: int) -> list[str]:
    """Before an attempt at shard ``rank``: remove whatever an unfinished attempt left (final or temporary); returns it."""
    return layout.void_shard(out, rank, num_shards)


def commit_shard(out: str, rank: int, writer: ShardWriter, rejects: tuple[str, str], record: dict[str, Any]) -> dict[str, Any]:
    """Rename the shard's Parquet files and its rejects (``(temporary, final)``) to their final names, then
    write the shard record (``record`` plus the ``files`` and ``rejects`` it names); returns that record."""
    files = writer.commit()
    layout.commit(*rejects)
    record = {**record, "files": files, "rejects": os.path.relpath(rejects[1], out)}
    layout.write_json_atomic(layout.shard_record_path(out, rank), record)
    return record
