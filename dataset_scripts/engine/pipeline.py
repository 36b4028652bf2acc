"""The engine's runner: the stages applied to shards of image ids as a datatrove pipeline.

One datatrove task is one shard: the contiguous slice ``rank`` of the sorted detection manifest
cut into ``num_shards`` slices, so a shard's images depend on nothing but the manifest and the
shard count. The same pipeline runs under datatrove's ``LocalPipelineExecutor`` (one machine,
the default), ``SlurmPipelineExecutor`` or ``RayPipelineExecutor``. Each worker process is pinned
to one GPU when GPUs exist. Every shard follows the exactly-once protocol of
:mod:`dataset_scripts.engine.shards`, so a killed run resumes where it stopped with no image lost
or written twice; datatrove's own completion marks skip finished tasks.
"""

from __future__ import annotations

import importlib
import json
import logging
import os
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Optional

from datasets.utils.py_utils import convert_file_size_to_int
from datatrove.executor import LocalPipelineExecutor
from datatrove.pipeline.base import PipelineStep
from tqdm.auto import tqdm

from ..features import MRES_FEATURES
from ..publish import annotation_features
from ..rejects import RejectLog
from . import shards as layout
from .records import to_mres_row
from .stage import EngineStage, Reject
from .stats import RunStats

logger = logging.getLogger(__name__)

EXECUTORS = ("local", "slurm", "ray")
OUTPUT_STEP = "output"  # the runner's own last step in the stats: images left with no referent are rejected
DEFAULT_STAGES_FACTORY = "dataset_scripts.engine.stages:build_stages"


def _opt(default, help: str, **kwargs):
    return field(default=default, metadata={"help": help, **kwargs})


@dataclass
class RunnerOptions:
    """Where the data comes from and goes, how it is sharded, and where the shards run."""

    annotations: Optional[str] = _opt(None, "COCO/Objects365-format detection JSON (images, annotations with bbox and category_id, categories).")
    image_dir: Optional[str] = _opt(None, "Folder the manifest's file_name entries are relative to.")
    hub_dataset: Optional[str] = _opt(None, "Instead of --annotations: a datasets detection dataset (Hub id or folder) with an image column and an objects column of bbox and category lists; exported once to OUT/input/.")
    hub_split: str = _opt("train", "Split of --hub_dataset.")
    hub_objects_column: str = _opt("objects", "Column of --hub_dataset holding the boxes and categories.")
    hub_bbox_format: str = _opt("xywh", "Box format of --hub_dataset: xywh (COCO) or xyxy.", choices=["xywh", "xyxy"])
    hub_id_column: Optional[str] = _opt("image_id", "Column of --hub_dataset with the image ids (row index when absent).")
    output_dir: str = _opt("mres-engine-output", "Output folder: Parquet shards, rejects, stats and dataset card (see dataset_scripts.engine.shards).")
    source: str = _opt("objects365", "Value of the `source` column of every row.")
    split: str = _opt("train", "Split name of the output shards.")
    num_shards: int = _opt(8, "Number of shards (= datatrove tasks). Fixed for an output folder: a rerun must use the same.")
    workers: int = _opt(-1, "Shards processed at once on this machine (local executor) or in the whole job (slurm/ray); -1: one per visible GPU, or 1 without GPUs.")
    images_per_batch: int = _opt(8, "Images sent through the stages together.")
    max_shard_size: str = _opt("500MB", "Upper bound of one Parquet file; a shard that outgrows it continues in a new part file.")
    executor: str = _opt("local", "datatrove executor: local (this machine), slurm (an sbatch array job) or ray (a running Ray cluster).", choices=list(EXECUTORS))
    stages_factory: str = _opt(DEFAULT_STAGES_FACTORY, "'module:function' called with the StageOptions that returns the stages (replace to run your own stages).")
    start_method: str = _opt("forkserver", "multiprocessing start method of the local executor's worker pool (CUDA needs forkserver or spawn).")
    progress: bool = _opt(True, "Show a progress bar (images, images/s): one for the run on this machine, one per shard task in slurm/ray logs.")
    # cluster resources (slurm / ray)
    gpus_per_task: int = _opt(1, "GPUs per shard task on slurm/ray (each task is pinned to its own GPU).")
    cpus_per_task: int = _opt(8, "CPUs per shard task on slurm/ray.")
    mem_per_cpu_gb: float = _opt(8.0, "Memory per CPU in GB on slurm/ray.")
    slurm_partition: Optional[str] = _opt(None, "Slurm partition (executor=slurm).")
    slurm_time: str = _opt("24:00:00", "Slurm time limit of one shard task.")
    slurm_job_name: str = _opt("mres-engine", "Slurm job name.")
    slurm_qos: str = _opt("normal", "Slurm QOS.")
    slurm_env_command: Optional[str] = _opt(None, "Shell command run before each slurm task (e.g. 'source /path/.venv/bin/activate'); default: this Python's venv.")
    ray_address: str = _opt("auto", "Address of the running Ray cluster (executor=ray), passed to ray.init.")

    def __post_init__(self):
        if self.executor not in EXECUTORS:
            raise ValueError(f"--executor must be one of {EXECUTORS}, got {self.executor!r}")
        if self.num_shards < 1:
            raise ValueError(f"--num_shards must be >= 1, got {self.num_shards}")
        if self.images_per_batch < 1:
            raise ValueError(f"--images_per_batch must be >= 1, got {self.images_per_batch}")
        if ":" not in self.stages_factory:
            raise ValueError(f"--stages_factory must be 'module:function', got {self.stages_factory!r}")
        convert_file_size_to_int(self.max_shard_size)  # raises on a malformed size


def load_stages_factory(path: str) -> Callable[[Any], list[EngineStage]]:
    module_name, _, attribute = path.partition(":")
    try:
        return getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError) as error:
        raise ValueError(f"cannot load the stages factory {path!r}: {error}") from error


def shard_slice(num_items: int, rank: int, num_shards: int) -> tuple[int, int]:
    """``[start, stop)`` of shard ``rank``: contiguous, sizes differing by at most one."""
    return rank * num_items // num_shards, (rank + 1) * num_items // num_shards


def default_workers() -> int:
    return max(1, len(visible_gpus()))


def visible_gpus() -> list[str]:
    """The GPU ids this process may use (CUDA_VISIBLE_DEVICES, else every device), without initialising CUDA."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return [g for g in visible.split(",") if g.strip() and g.strip() != "-1"]
    try:
        import torch

        return [str(i) for i in range(torch.cuda.device_count())]
    except Exception:  # no torch or no driver: no GPU
        return []


def pin_process_to_gpu(local_rank: int, gpus: Optional[list[str]] = None) -> Optional[str]:
    """Make GPU ``local_rank`` (modulo the visible ones) the only one this process sees; None without GPUs."""
    gpus = visible_gpus() if gpus is None else gpus
    if not gpus:
        return None
    gpu = gpus[local_rank % len(gpus)]
    if "torch" in sys.modules and sys.modules["torch"].cuda.is_initialized():
        logger.warning("CUDA is already initialised in this process; it cannot be pinned to GPU %s", gpu)
        return None
    os.environ["CUDA_VISIBLE_DEVICES"] = gpu
    return gpu


# -- the input ----------------------------------------------------------------------------------------


def _portable(record: dict) -> dict:
    return {k: v for k, v in record.items() if not k.startswith("_")}


def export_hub_input(options: RunnerOptions) -> RunnerOptions:
    """Export ``--hub_dataset`` once to ``OUT/input/`` (images + COCO JSON); options that read it from there."""
    from dataclasses import replace

    from datasets import load_dataset

    from .input import export_detection_dataset

    folder = os.path.join(options.output_dir, "input")
    annotations = os.path.join(folder, "detections.json")
    if not os.path.exists(annotations):  # the JSON is written last: its presence means a whole export
        dataset = load_dataset(options.hub_dataset, split=options.hub_split)
        annotations, _ = export_detection_dataset(dataset, folder, objects_column=options.hub_objects_column,
                                                  bbox_format=options.hub_bbox_format, id_column=options.hub_id_column)
    return replace(options, annotations=annotations, image_dir=os.path.join(folder, "images"), hub_dataset=None)


def prepare_manifest(options: RunnerOptions) -> dict[str, Any]:
    """Read the detection manifest once and write one input file per shard (skipped when done before).

    The input's own rejects (boxes skipped or clipped by the manifest reader) go to
    ``rejects/input.jsonl``. Returns ``manifest/manifest.json``'s content.
    """
    from .input import read_detection_manifest

    out = options.output_dir
    info = layout.read_manifest_info(out)
    if info is not None:
        if info["num_shards"] != options.num_shards:
            raise ValueError(
                f"{out} was started with --num_shards {info['num_shards']}; rerun with the same shard count "
                f"(got {options.num_shards}) or choose a new --output_dir"
            )
        return info
    if options.hub_dataset:
        if options.annotations:
            raise ValueError("give --annotations or --hub_dataset, not both")
        options = export_hub_input(options)
    if not options.annotations:
        raise ValueError("--annotations (a COCO/Objects365 detection JSON) or --hub_dataset is required to start a run")
    input_rejects = os.path.join(out, layout.REJECTS_DIR, layout.INPUT_REJECTS)
    os.makedirs(os.path.dirname(input_rejects), exist_ok=True)
    tmp = layout.temporary_path(input_rejects)
    log = RejectLog(tmp, stage="input", report_path=input_rejects)
    records = read_detection_manifest(options.annotations, options.image_dir, rejects=log, source=options.source)
    summary = log.close()
    for rank in range(options.num_shards):
        start, stop = shard_slice(len(records), rank, options.num_shards)
        with layout.atomic_text(layout.shard_manifest_path(out, rank, options.num_shards)) as f:
            for record in records[start:stop]:
                f.write(json.dumps(_portable(record), sort_keys=True) + "\n")
    layout.commit(tmp, input_rejects)
    info = {
        "num_shards": options.num_shards,
        "num_images": len(records),
        "num_boxes": sum(len(r.get("boxes") or []) for r in records),
        "annotations": os.path.abspath(options.annotations),
        "image_dir": os.path.abspath(options.image_dir) if options.image_dir else None,
        "split": options.split,
        "input_summary": summary,
    }
    layout.write_json_atomic(os.path.join(out, layout.MANIFEST_DIR, layout.MANIFEST_INFO), info)
    logger.info("manifest: %d images in %d shards; %s", len(records), options.num_shards, summary)
    return info


# -- one shard ------------------------------------------------------------------------------------------


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
    if os.path.exists(_progress_path(out, rank)):
        os.remove(_progress_path(out, rank))  # the attempt starts from zero again
    start = time.perf_counter()
    records = layout.read_jsonl(layout.shard_manifest_path(out, rank, num_shards))
    stats = RunStats(images_in=len(records))

    rejects_final = os.path.join(out, layout.REJECTS_DIR, layout.shard_rejects_name(split, rank, num_shards))
    rejects_tmp = layout.temporary_path(rejects_final)
    log = RejectLog(rejects_tmp, report_path=rejects_final)
    writer = ShardWriter(out, split, rank, num_shards, max_shard_size, image_dir)
    bar = tqdm(total=len(records), unit="img", desc=f"shard {rank}/{num_shards}", disable=not progress, leave=False)
    done, reported = 0, 0.0
    try:
        for begin in range(0, len(records), images_per_batch):
            batch = records[begin : begin + images_per_batch]
            kept, rejects = run_stages(stages, batch, stats)
            for reject in rejects:
                whole = reject.referent_id is None
                log.skip(
                    reject.image_id if whole else reject.referent_id,
                    reject.reason,
                    stage=reject.stage,
                    image_id=reject.image_id,
                    level="image" if whole else "referent",
                )
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
        "images_rejected": sum(1 for r in log.records if r.get("level") == "image" and r["action"] == "skipped"),
        "stats": stats.to_dict(),
    }
    layout.write_json_atomic(record_path, shard_record)
    return shard_record


PROGRESS_INTERVAL = 1.0  # seconds between a task's progress notes


def _progress_path(out: str, rank: int) -> str:
    return os.path.join(out, layout.LOGS_DIR, "progress", f"{rank:05d}")


def write_progress(out: str, rank: int, images_done: int) -> None:
    """Note how many images of shard ``rank`` went through the stages (read by :class:`RunProgress`)."""
    path = _progress_path(out, rank)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = layout.temporary_path(path)
    with open(tmp, "w") as f:
        f.write(str(images_done))
    os.replace(tmp, path)


def images_done(out: str, num_shards: int) -> int:
    """Images through the stages so far: whole complete shards, plus the progress notes of running ones."""
    complete = layout.completed_shards(out)
    total = sum(record["images_in"] for record in complete.values())
    for rank in range(num_shards):
        if rank not in complete:
            try:
                with open(_progress_path(out, rank)) as f:
                    total += int(f.read() or 0)
            except (OSError, ValueError):
                pass
    return total


class RunProgress:
    """One progress bar (images, images/s) for the whole run, fed by the shard tasks' progress notes.

    A resumed run starts the bar at what earlier runs finished, so the rate counts this run only.
    """

    def __init__(self, out: str, num_shards: int, total_images: int, interval: float = 2.0, enabled: bool = True):
        import threading

        self.out, self.num_shards, self.interval = out, num_shards, interval
        self.enabled = enabled
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self.bar = None
        if enabled:
            start = sum(r["images_in"] for r in layout.completed_shards(out).values())
            self.bar = tqdm(total=total_images, initial=start, unit="img", desc="MRES engine", dynamic_ncols=True)

    def _refresh(self) -> None:
        done = min(images_done(self.out, self.num_shards), self.bar.total)
        if done > self.bar.n:
            self.bar.update(done - self.bar.n)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self._refresh()

    def __enter__(self) -> "RunProgress":
        if self.enabled:
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        if self.enabled:
            self._stop.set()
            self._thread.join()
            self._refresh()
            self.bar.close()


class EngineShards(PipelineStep):
    """The datatrove step: task ``rank`` of ``world_size`` builds shard ``rank`` (see :func:`process_shard`)."""

    name = "MRES engine shard"
    type = "MRES"

    def __init__(self, options: RunnerOptions, stage_options: Any = None):
        super().__init__()
        self.options = options
        self.stage_options = stage_options

    def run(self, data=None, rank: int = 0, world_size: int = 1):
        if world_size != self.options.num_shards:
            raise ValueError(f"the executor runs {world_size} tasks for {self.options.num_shards} shards")
        if not os.path.exists(layout.shard_record_path(self.options.output_dir, rank)):
            stages = load_stages_factory(self.options.stages_factory)(self.stage_options)
            with self.track_time("shard"):
                record = process_shard(
                    self.options.output_dir,
                    rank,
                    world_size,
                    stages,
                    split=self.options.split,
                    images_per_batch=self.options.images_per_batch,
                    max_shard_size=self.options.max_shard_size,
                    image_dir=(layout.read_manifest_info(self.options.output_dir) or {}).get("image_dir"),
                    progress=self.options.progress and self.options.executor != "local",
                )
            self.stat_update("images_in", value=record["images_in"], unit="shard")
            self.stat_update("images_written", value=record["images_written"], unit="shard")
        if data:
            yield from data


class FinalizeRun(PipelineStep):
    """A one-task datatrove step that runs :func:`finalize_run` (on Slurm: a job that waits for the shard array)."""

    name = "MRES engine finalize"
    type = "MRES"

    def __init__(self, output_dir: str):
        super().__init__()
        self.output_dir = output_dir

    def run(self, data=None, rank: int = 0, world_size: int = 1):
        finalize_run(self.output_dir)
        if data:
            yield from data


_WORKER_LOCAL_RANK: Optional[int] = None


class PinnedLocalPipelineExecutor(LocalPipelineExecutor):
    """``LocalPipelineExecutor`` whose worker processes each hold one local rank, hence one GPU, for life.

    datatrove hands a free local rank to every task; a process that ran a task on one GPU may
    get another rank for its next task, but CUDA cannot move once initialised. Here a worker
    takes a rank on its first task, pins ``CUDA_VISIBLE_DEVICES`` to that GPU and keeps both.
    """

    def _launch_run_for_rank(self, rank, ranks_q, completed=None, completed_lock=None):
        global _WORKER_LOCAL_RANK
        if _WORKER_LOCAL_RANK is None:
            _WORKER_LOCAL_RANK = ranks_q.get()  # never returned: one rank per worker process
            gpu = pin_process_to_gpu(_WORKER_LOCAL_RANK)
            if gpu is not None:
                logger.info("worker %d pinned to GPU %s", os.getpid(), gpu)
        try:
            return self._run_for_rank(rank, _WORKER_LOCAL_RANK)
        finally:
            if completed and completed_lock:
                with completed_lock:
                    completed.value += 1


def build_slurm_finalizer(options: RunnerOptions, shards_executor):
    """A CPU job, after the shard array succeeds, that checks the output and writes stats and card."""
    from datatrove.executor import SlurmPipelineExecutor

    return SlurmPipelineExecutor(
        [FinalizeRun(os.path.abspath(options.output_dir))],
        tasks=1,
        time="4:00:00",
        partition=options.slurm_partition,
        cpus_per_task=2,
        mem_per_cpu_gb=8,
        job_name=f"{options.slurm_job_name}-finalize",
        qos=options.slurm_qos,
        env_command=shards_executor.env_command,
        depends=shards_executor,
        logging_dir=os.path.join(os.path.abspath(options.output_dir), layout.LOGS_DIR, "finalize"),
    )


def build_executor(options: RunnerOptions, pipeline: list):
    """The datatrove executor named by ``--executor``, one task per shard, logging under ``OUT/logs``."""
    logging_dir = os.path.join(os.path.abspath(options.output_dir), layout.LOGS_DIR)
    workers = options.workers if options.workers > 0 else None
    if options.executor == "local":
        return PinnedLocalPipelineExecutor(
            pipeline,
            tasks=options.num_shards,
            workers=workers or min(default_workers(), options.num_shards),
            logging_dir=logging_dir,
            start_method=options.start_method,
        )
    if options.executor == "slurm":
        from datatrove.executor import SlurmPipelineExecutor

        if not options.slurm_partition:
            raise ValueError("--executor slurm needs --slurm_partition")
        env_command = options.slurm_env_command or f"source {os.path.join(sys.prefix, 'bin', 'activate')}"
        return SlurmPipelineExecutor(
            pipeline,
            tasks=options.num_shards,
            workers=workers or -1,
            time=options.slurm_time,
            partition=options.slurm_partition,
            cpus_per_task=options.cpus_per_task,
            mem_per_cpu_gb=options.mem_per_cpu_gb,
            gpus_per_task=options.gpus_per_task,
            job_name=options.slurm_job_name,
            qos=options.slurm_qos,
            env_command=env_command,
            logging_dir=logging_dir,
        )
    from datatrove.executor import RayPipelineExecutor

    import ray  # datatrove expects a connected cluster

    if not ray.is_initialized():
        ray.init(address=options.ray_address)
    return RayPipelineExecutor(
        pipeline,
        tasks=options.num_shards,
        workers=workers or -1,
        logging_dir=logging_dir,
        cpus_per_task=options.cpus_per_task,
        mem_per_cpu_gb=options.mem_per_cpu_gb,
        gpus_per_task=options.gpus_per_task,
    )


# -- the whole run ------------------------------------------------------------------------------------


def merged_stats(out: str) -> RunStats:
    total = RunStats()
    for record in layout.completed_shards(out).values():
        total.merge(RunStats.from_dict(record["stats"]))
    return total


def check_exactly_once(out: str) -> dict[str, Any]:
    """Every manifest image is in exactly one place: a written row or an image-level reject.

    Reads only what complete shard records list. Returns counts and the offending ids
    (``missing``: in no place; ``duplicated``: in more than one; ``unexpected``: not in the manifest).
    """
    import pyarrow.parquet as pq

    info = layout.read_manifest_info(out)
    if info is None:
        raise FileNotFoundError(f"{out} holds no prepared manifest ({layout.MANIFEST_DIR}/{layout.MANIFEST_INFO})")
    expected: list[str] = []
    for rank in range(info["num_shards"]):
        expected += [r["image_id"] for r in layout.read_jsonl(layout.shard_manifest_path(out, rank, info["num_shards"]))]
    seen: dict[str, int] = {}
    written = rejected = 0
    shard_records = layout.completed_shards(out)
    for record in shard_records.values():
        for path in record["files"]:
            if path.startswith(layout.ANNOTATIONS_DIR + os.sep):
                for image_id in pq.read_table(os.path.join(out, path), columns=["image_id"]).column("image_id").to_pylist():
                    seen[image_id] = seen.get(image_id, 0) + 1
                    written += 1
        for entry in layout.read_jsonl(os.path.join(out, record["rejects"])):
            if entry.get("level") == "image" and entry["action"] == "skipped":
                seen[entry["image_id"]] = seen.get(entry["image_id"], 0) + 1
                rejected += 1
    expected_set = set(expected)
    return {
        "images": len(expected),
        "written": written,
        "rejected": rejected,
        "complete_shards": len(shard_records),
        "num_shards": info["num_shards"],
        "missing": sorted(expected_set - set(seen)),
        "duplicated": sorted(i for i, n in seen.items() if n > 1),
        "unexpected": sorted(set(seen) - expected_set),
    }


def finalize_run(out: str, card_data: Optional[dict] = None, write_card: bool = True) -> dict[str, Any]:
    """After every shard is complete: merge the stats into ``stats.json``, check exactly-once, write the card."""
    check = check_exactly_once(out)
    if check["complete_shards"] != check["num_shards"]:
        raise RuntimeError(
            f"{out}: {check['num_shards'] - check['complete_shards']} of {check['num_shards']} shards are not complete; "
            "rerun the same command to finish them"
        )
    if check["missing"] or check["duplicated"] or check["unexpected"]:
        raise RuntimeError(
            f"{out}: exactly-once check failed: {len(check['missing'])} missing, {len(check['duplicated'])} "
            f"duplicated, {len(check['unexpected'])} unexpected image ids (first: "
            f"{(check['missing'] + check['duplicated'] + check['unexpected'])[:5]})"
        )
    stats = merged_stats(out)
    summary = {**stats.to_dict(), "exactly_once": {k: v for k, v in check.items() if not isinstance(v, list)}}
    layout.write_json_atomic(os.path.join(out, layout.STATS_FILE), summary)
    if write_card:
        from ..publish import publish_shards

        publish_shards(out, card_data=engine_card_data(out, stats, card_data))
    return summary


RUN_OPTIONS_FILE = "run_options.json"


def record_run_options(options: RunnerOptions, stage_options: Any = None) -> dict[str, Any]:
    """Save the options of the run and each stage's own definition (e.g. the CLIP filter's) for the card.

    The stages are built here once (their models load on first use, so this is cheap) to ask
    them for a ``definition``. A resumed run with other stage options is allowed but warned
    about: its shards would mix two settings.
    """
    from dataclasses import asdict, is_dataclass

    stages = load_stages_factory(options.stages_factory)(stage_options)
    record = {
        "runner": asdict(options),
        "stages": asdict(stage_options) if is_dataclass(stage_options) else None,
        "stage_names": [stage.name for stage in stages],
        "definitions": {stage.name: stage.definition for stage in stages if isinstance(getattr(stage, "definition", None), str)},
    }
    path = os.path.join(options.output_dir, RUN_OPTIONS_FILE)
    if os.path.exists(path):
        previous = layout.read_json(path)
        if previous.get("stages") != record["stages"]:
            logger.warning("%s: the stage options differ from the first run's (%s); finished shards keep the old ones",
                           options.output_dir, path)
            return previous
    layout.write_json_atomic(path, record)
    return record


def engine_card_data(out: str, stats: RunStats, card_data: Optional[dict] = None) -> dict[str, Any]:
    """Card fields for an engine output: a description, and the per-stage table as notes."""
    info = layout.read_manifest_info(out) or {}
    data = {
        "pretty_name": "MRES engine output",
        "description": (
            "Multi-granularity referring expression segmentation data made by the UniRES data engine "
            "(`python -m dataset_scripts.engine run`): object masks from Segment Anything prompted with detection "
            "boxes, part masks from an LLM part vocabulary and an open-vocabulary detector, captions from the "
            "dense captioner, filtered by CLIPScore. Every model score is kept in `scores`. "
            "Config `default` embeds the images; config `annotations` holds the same rows without image bytes "
            "(`file_name` instead)."
        ),
        "notes": "Per-stage accounting of the run (`stats.json`; rejected items with reasons in `rejects/`):\n\n```\n"
        + stats.table()
        + "\n```\n\n"
        + (f"Input: {info.get('num_images', '?')} images, {info.get('num_boxes', '?')} boxes; {info.get('input_summary', '')}\n" if info else "")
        + _options_notes(out),
    }
    data.update(card_data or {})
    return data


def _options_notes(out: str) -> str:
    path = os.path.join(out, RUN_OPTIONS_FILE)
    if not os.path.exists(path):
        return ""
    record = layout.read_json(path)
    lines = ["", "Stages, in order: " + ", ".join(f"`{name}`" for name in record["stage_names"]) + "."]
    lines += [f"- `{name}`: {text}" for name, text in record["definitions"].items()]
    if record.get("stages"):
        lines += ["", "Stage options of the run (`run_options.json`):", "", "```json",
                  json.dumps(record["stages"], indent=1, sort_keys=True), "```"]
    return "\n".join(lines) + "\n"


def run_engine(options: RunnerOptions, stage_options: Any = None, card_data: Optional[dict] = None) -> Optional[dict[str, Any]]:
    """Run (or resume) the engine; with the local executor, finish with :func:`finalize_run`.

    Returns the run summary (None for slurm, whose jobs are only submitted: a finalize job
    that depends on the shard array checks the output and writes the card).
    """
    out = options.output_dir
    os.makedirs(out, exist_ok=True)
    stray = layout.remove_stray_temporaries(out)
    if stray:
        logger.info("removed %d temporary file(s) left by an interrupted run", len(stray))
    info = prepare_manifest(options)
    record_run_options(options, stage_options)
    executor = build_executor(options, [EngineShards(options, stage_options)])
    if options.executor == "slurm":
        build_slurm_finalizer(options, executor).run()  # submits the shard array first, then the finalizer after it
        logger.info("submitted %d shard tasks and a finalize job to slurm; to push when they are done: "
                    "python -m dataset_scripts.engine publish --output_dir %s --repo_id ORG/NAME", options.num_shards, out)
        return None
    with RunProgress(out, options.num_shards, info["num_images"], enabled=options.progress):
        executor.run()
    summary = finalize_run(out, card_data=card_data)
    stats = RunStats.from_dict(summary)
    print(stats.table())
    print(f"{info['num_images']} images: {summary['exactly_once']['written']} written, "
          f"{summary['exactly_once']['rejected']} rejected (each exactly once); "
          f"{stats.images_in / max(stats.seconds_total, 1e-9):.2f} images/s per shard task; output: {out}")
    return summary
