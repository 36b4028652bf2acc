"""One shard task: its records read, sent through the stages in batches, written and committed exactly once.

:func:`process_shard` is all a shard task does (:class:`mres_engine.executors.EngineShards` calls it),
one image's way, file by file: :func:`~mres_engine.readers.manifest.read_shard_input` (its
:class:`~mres_engine.records.ImageRecord`), :func:`run_stages` (the stages of ``stages/``, in order),
:func:`~mres_engine.records.to_mres_row` and the :class:`~mres_engine.writers.shard_writer.ShardWriter`
(its row), the shard's ``RejectLog`` (what the stages dropped, and the record's ``fixes``), the
per-stage accounting in :class:`~mres_engine.stats.RunStats`, and
:func:`~mres_engine.writers.commit.commit_shard` (the files renamed, the shard record written last).
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any, Iterable, Optional

from tqdm.auto import tqdm

from run_support.rejects import RejectLog

from . import layout
from .progress import PROGRESS_INTERVAL, progress_path, write_progress
from .readers.manifest import read_shard_input
from .records import ImageRecord, to_mres_row
from .stages.base import EngineStage, Reject
from .stats import RunStats
from .writers.commit import commit_shard, completed_record, start_shard
from .writers.shard_writer import ShardWriter

logger = logging.getLogger(__name__)

OUTPUT_STEP = "output"  # the runner's own last step in the stats: images left with no referent are rejected


def run_stages(stages: Iterable[EngineStage], records: list[ImageRecord], stats: RunStats) -> tuple[list[ImageRecord], list[Reject]]:
    """Send one batch through every stage; check that each stage accounts for every image it got."""
    rejects: list[Reject] = []
    for stage in stages:
        if not records:
            break
        start = time.perf_counter()
        output = stage(records)
        seconds = time.perf_counter() - start
        untyped = next((r for r in output.records if not isinstance(r, ImageRecord)), None)
        if untyped is not None:  # e.g. a stage written for the dict records of earlier engines
            raise RuntimeError(f"stage {stage.name!r} broke the record contract: it returned a {type(untyped).__name__}, not an "
                               "ImageRecord (mres_engine.records; return dataclasses.replace(record, ...) to change one)")
        given = [r.image_id for r in records]
        kept = [r.image_id for r in output.records]
        dropped = [r.image_id for r in output.rejects if r.referent_id is None]
        problems = []
        if len(set(kept)) != len(kept):
            problems.append(f"returned images twice: {sorted({i for i in kept if kept.count(i) > 1})}")
        if set(kept) & set(dropped):
            problems.append(f"kept and rejected the same images: {sorted(set(kept) & set(dropped))}")
        if set(kept) | set(dropped) != set(given):
            lost = sorted(set(given) - set(kept) - set(dropped))
            unknown = sorted((set(kept) | set(dropped)) - set(given))
            problems.append(f"lost images without a reject: {lost}" if lost else f"returned unknown images: {unknown}")
        if problems:
            raise RuntimeError(f"stage {stage.name!r} broke the record contract: " + "; ".join(problems))
        stats.stage(stage.name).add(records, output.records, output.rejects, seconds)
        rejects.extend(output.rejects)
        records = output.records
    return records, rejects


def process_shard(
    out: str,
    rank: int,
    num_shards: int,
    stages: list[EngineStage],
    *,
    split: str = "train",
    images_per_batch: int = 8,
    max_shard_size="500MB",
    image_dir: Optional[str] = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Run the stages over shard ``rank`` and write its files by the exactly-once rule; returns its shard record.

    A shard already complete is not redone. Otherwise whatever an earlier attempt left is removed
    first, so the shard is written whole or not at all.
    """
    done = completed_record(out, rank)
    if done is not None:
        return done
    removed = start_shard(out, rank, num_shards)
    if removed:
        logger.info("shard %d: removed %d file(s) of an unfinished attempt", rank, len(removed))
    if os.path.exists(progress_path(out, rank)):
        os.remove(progress_path(out, rank))  # the attempt starts from zero again
    start = time.perf_counter()
    records = read_shard_input(out, rank, num_shards)
    stats = RunStats(images_in=len(records))

    rejects_final = os.path.join(out, layout.REJECTS_DIR, layout.shard_rejects_name(split, rank, num_shards))
    rejects_tmp = layout.temporary_path(rejects_final)
    # reasons name images relative to --image_dir: the log is published, the builder's folders are not
    log = RejectLog(rejects_tmp, report_path=rejects_final, relative_to=image_dir)
    writer = ShardWriter(out, split, rank, num_shards, max_shard_size, image_dir)
    bar = tqdm(total=len(records), unit="img", desc=f"shard {rank}/{num_shards}", disable=not progress, leave=False)
    done, reported = 0, 0.0
    try:
        for begin in range(0, len(records), images_per_batch):
            batch = records[begin : begin + images_per_batch]
            kept, rejects = run_stages(stages, batch, stats)
            for reject in rejects:
                details = {"referent_id": reject.referent_id} if reject.level else {}
                log.skip(reject.item_id, reject.reason, stage=reject.stage, image_id=reject.image_id, level=reject.kind, **details)
            written, empty = [], []
            for record in kept:
                if not record.referents:  # an image row must refer to something
                    empty.append(Reject(record.image_id, OUTPUT_STEP, "no referent left after the stages"))
                    log.skip(record.image_id, empty[-1].reason, stage=OUTPUT_STEP, image_id=record.image_id, level="image")
                    continue
                for fix in record.fixes:
                    log.fix(record.image_id, fix, stage="input", image_id=record.image_id, level="image")
                writer.write(record, to_mres_row(record))
                written.append(record)
                stats.referents_written += len(record.referents)
                log.keep()
            stats.stage(OUTPUT_STEP).add(kept, written, empty, 0.0)
            bar.update(len(batch))
            done += len(batch)
            if time.monotonic() - reported >= PROGRESS_INTERVAL:
                write_progress(out, rank, done)
                reported = time.monotonic()
    finally:
        bar.close()
        log.close(log=False)
    stats.images_written = writer.rows
    stats.seconds_total = time.perf_counter() - start
    shard_record = {
        "rank": rank,
        "num_shards": num_shards,
        "split": split,
        "images_in": len(records),
        "images_written": writer.rows,
        "images_rejected": log.skipped_by_level["image"],
        "stats": stats.to_dict(),
    }
    return commit_shard(out, rank, writer, (rejects_tmp, rejects_final), shard_record)
