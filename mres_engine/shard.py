"""One shard: its input records sent through the stages in batches, its rows and rejects written by the exactly-once rule.

:func:`process_shard` is all a shard task does (:class:`mres_engine.executors.EngineShards` calls it):
the rows go to Parquet part files of bounded size (:class:`ShardWriter`, images embedded in
``data/`` and the same rows without image bytes in ``annotations/``), every reject to the shard's
``RejectLog``, and the per-stage accounting to its :class:`~mres_engine.stats.RunStats`; the shard
record ``shards/NNNNN.json`` is written last (see :mod:`mres_engine.layout`).
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any, Iterable, Optional

from datasets.utils.py_utils import convert_file_size_to_int
from tqdm.auto import tqdm

from dataset_scripts.features import MRES_FEATURES
from dataset_scripts.publish import annotation_features
from dataset_scripts.rejects import RejectLog

from . import layout
from .progress import PROGRESS_INTERVAL, progress_path, write_progress
from .records import to_mres_row
from .stages.base import EngineStage, Reject
from .stats import RunStats

logger = logging.getLogger(__name__)

OUTPUT_STEP = "output"  # the runner's own last step in the stats: images left with no referent are rejected


def run_stages(stages: Iterable[EngineStage], records: list[dict], stats: RunStats) -> tuple[list[dict], list[Reject]]:
    """Send one batch through every stage; check that each stage accounts for every image it got."""
    rejects: list[Reject] = []
    for stage in stages:
        if not records:
            break
        start = time.perf_counter()
        output = stage(records)
        seconds = time.perf_counter() - start
        given = [r["image_id"] for r in records]
        kept = [r["image_id"] for r in output.records]
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


# What a Parquet file costs beyond its rows: footer, page indexes, the Hugging Face features in the
# schema metadata (measured: about 10 KB for MRES_FEATURES); counted so that small bounds hold too.
PARQUET_FILE_OVERHEAD = 16_000


class ShardWriter:
    """Rows of one shard into Parquet part files of bounded size, under temporary names until :meth:`commit`.

    Two files per part: the rows with images embedded (``data/``) and the same rows without image
    bytes but with ``file_name`` (``annotations/``). Row groups have datasets' default size (its
    ``ParquetWriter`` picks it from the features).
    """

    def __init__(self, out: str, split: str, rank: int, num_shards: int, max_shard_size, image_dir: Optional[str]):
        self.out, self.split, self.rank, self.num_shards = out, split, rank, num_shards
        self.max_bytes = convert_file_size_to_int(max_shard_size)
        self.image_dir = os.path.abspath(image_dir) if image_dir else None
        self.annotation_features = annotation_features(MRES_FEATURES)
        self.parts: list[tuple[str, str]] = []  # (temporary, final) of every finished file
        self._writers = None
        self._part_bytes = 0
        self.rows_in_part = 0
        self.rows = 0

    def _file_name(self, record: dict) -> str:
        name = record["file_name"]
        if self.image_dir and os.path.isabs(name) and os.path.commonpath([self.image_dir, os.path.abspath(name)]) == self.image_dir:
            return os.path.relpath(name, self.image_dir)
        return name

    def _open_part(self) -> None:
        from datasets.arrow_writer import ParquetWriter

        part = len(self.parts) // 2
        self._writers = []
        for folder, name, features in (
            (layout.DATA_DIR, layout.data_file_name(self.split, self.rank, self.num_shards, part), MRES_FEATURES),
            (layout.ANNOTATIONS_DIR, layout.annotations_file_name(self.split, self.rank, self.num_shards, part), self.annotation_features),
        ):
            final = os.path.join(self.out, folder, name)
            os.makedirs(os.path.dirname(final), exist_ok=True)
            tmp = layout.temporary_path(final)
            self._writers.append((ParquetWriter(features=features, path=tmp), tmp, final, features))
        self._part_bytes = PARQUET_FILE_OVERHEAD
        self.rows_in_part = 0

    def _close_part(self) -> None:
        for writer, tmp, final, _ in self._writers:
            writer.finalize()
            writer.close()
            self.parts.append((tmp, final))
        self._writers = None

    @staticmethod
    def _row_bytes(row: dict) -> int:
        # What the row adds to the file: the image bytes dominate; masks and text follow.
        size = len(row["image"]["bytes"] or b"") + 64
        for ref in row["referents"]:
            size += len(ref["mask"]["counts"]) + sum(len(s) for s in ref["sentences"]) + 128
        return size

    def write(self, record: dict, row: dict) -> None:
        size = self._row_bytes(row)
        if self._writers is not None and self.rows_in_part and self._part_bytes + size > self.max_bytes:
            self._close_part()
        if self._writers is None:
            self._open_part()
        annotation_row = {k: v for k, v in row.items() if k != "image"}
        annotation_row["file_name"] = self._file_name(record)
        encoded = [features.encode_example(value) for (_, _, _, features), value in zip(self._writers, (row, annotation_row))]
        # Image.encode_example keeps a path instead of the bytes whenever that path exists locally;
        # a published shard must carry the bytes (and no local path).
        encoded[0]["image"] = {"bytes": row["image"]["bytes"], "path": os.path.basename(annotation_row["file_name"])}
        for (writer, *_), value in zip(self._writers, encoded):
            writer.write(value)
        self._part_bytes += size
        self.rows_in_part += 1
        self.rows += 1

    def commit(self) -> list[str]:
        """Finish the last part, rename every file to its final name; returns the final paths (relative to out)."""
        if self._writers is not None:
            self._close_part()
        for tmp, final in self.parts:
            layout.commit(tmp, final)
        return [os.path.relpath(final, self.out) for _, final in self.parts]


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
    record_path = layout.shard_record_path(out, rank)
    if os.path.exists(record_path):
        return layout.read_json(record_path)
    removed = layout.void_shard(out, rank, num_shards)
    if removed:
        logger.info("shard %d: removed %d file(s) of an unfinished attempt", rank, len(removed))
    if os.path.exists(progress_path(out, rank)):
        os.remove(progress_path(out, rank))  # the attempt starts from zero again
    start = time.perf_counter()
    records = layout.read_jsonl(layout.shard_manifest_path(out, rank, num_shards))
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
                if not record.get("referents"):  # an image row must refer to something
                    empty.append(Reject(record["image_id"], OUTPUT_STEP, "no referent left after the stages"))
                    log.skip(record["image_id"], empty[-1].reason, stage=OUTPUT_STEP, image_id=record["image_id"], level="image")
                    continue
                for fix in record.get("_fixes") or []:
                    log.fix(record["image_id"], fix, stage="input", image_id=record["image_id"], level="image")
                writer.write(record, to_mres_row(record))
                written.append(record)
                stats.referents_written += len(record["referents"])
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
    files = writer.commit()
    layout.commit(rejects_tmp, rejects_final)
    stats.images_written = writer.rows
    stats.seconds_total = time.perf_counter() - start
    shard_record = {
        "rank": rank,
        "num_shards": num_shards,
        "split": split,
        "files": files,
        "rejects": os.path.relpath(rejects_final, out),
        "images_in": len(records),
        "images_written": writer.rows,
        "images_rejected": log.skipped_by_level["image"],
        "stats": stats.to_dict(),
    }
    layout.write_json_atomic(record_path, shard_record)
    return shard_record
