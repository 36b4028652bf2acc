"""The engine's run, start to end: ``python -m mres_engine run`` calls :func:`run_engine`.

The stages are applied to shards of image ids as a datatrove pipeline: the manifest is cut into
shards (:mod:`~mres_engine.readers.manifest`), each datatrove task builds one shard
(:mod:`~mres_engine.shard`) under the executor the options name (:mod:`~mres_engine.executors`),
and the output is checked and described (:mod:`~mres_engine.finalize`). Every shard follows the
exactly-once protocol of :mod:`mres_engine.layout`, so a killed run resumes where it stopped with
no image lost or written twice.

An output is defined by its inputs and options: ``manifest/manifest.json`` records them under
``"run"`` (:func:`run_identity`: the annotation file's size and SHA-256, the image folder, split,
source, shard count, stages factory and the stage options that shape the rows). A rerun with
other ones is refused, naming each difference (:class:`~mres_engine.errors.RunMismatchError`),
unless ``--force_new`` clears the old output first (:func:`clear_output`).

One run per output folder: the driver holds ``OUT/.lock`` (:class:`run_support.output_dir.OutputDirLock`, the
trainers' lock) from its argument checks to its end, and waits for any worker of an earlier, killed run to be gone
before it touches a file (:mod:`mres_engine.workers`). A run refused for its input before the manifest is recorded
leaves no folder it created, and in a folder that was there a card that says why (never an "unfinished" one).
"""

from __future__ import annotations

import glob
import hashlib
import json
import logging
import os
import shutil
from dataclasses import asdict, is_dataclass
from typing import Any, Optional

from run_support.output_dir import LOCK_FILE, OutputDirInUseError, OutputDirLock

from . import layout, workers
from .errors import EngineError, EngineInputError, EngineUsageError, RunMismatchError, locate_schema_problem
from .executors import EngineShards, build_executor, build_slurm_finalizer, check_cluster_resources
from .finalize import RUN_KEY, RUN_OPTIONS_FILE, finalize_run, is_placeholder_card, write_refused_card, write_unfinished_card
from .readers.manifest import prepare_manifest
from .options import RunnerOptions, load_stages_factory
from .progress import RunProgress
from .stats import RunStats
from .workers import wait_for_earlier_workers

logger = logging.getLogger(__name__)

# Stage options that change where or how fast the stages run, never the rows they make: a rerun may change them.
OPERATIONAL_STAGE_OPTIONS = frozenset({
    "device", "dtype", "image_root", "sam_box_batch_size", "clip_batch_size", "caption_token_budget",
    "part_llm_url", "captioner_url", "part_llm_api_key_env", "part_vocabulary_cache",
})
# What an output folder may hold of the engine's own, in the order --force_new removes it: shard records
# first (a cleared shard is never complete), the manifest last (until then a rerun still sees the old identity).
ENGINE_ENTRIES = (layout.SHARD_RECORDS_DIR, layout.LOGS_DIR, layout.DATA_DIR, layout.ANNOTATIONS_DIR, layout.REJECTS_DIR,
                  "figures", "README.md", layout.STATS_FILE, RUN_OPTIONS_FILE, "input", layout.MANIFEST_DIR)
TRASH_PREFIX = ".trash-"
HASH_CHUNK = 8 << 20


# -- the arguments ------------------------------------------------------------------------------------------------

def check_arguments(options: RunnerOptions) -> None:
    """Refuse, before anything is written, arguments that cannot make a run (one line each, exit code 2)."""
    out = options.output_dir
    if os.path.exists(out) and not os.path.isdir(out):
        raise EngineUsageError("--output_dir", f"{out} is a file, not a folder")
    if options.annotations and options.hub_dataset:
        raise EngineUsageError("--hub_dataset", "give --annotations or --hub_dataset, not both")
    if options.annotations is not None and not os.path.isfile(options.annotations):
        what = "a folder, not a file" if os.path.isdir(options.annotations) else "no such file"
        raise EngineUsageError("--annotations", f"{options.annotations}: {what}")
    if options.image_dir is not None and not os.path.isdir(options.image_dir):
        what = "a file, not a folder" if os.path.exists(options.image_dir) else "no such folder"
        raise EngineUsageError("--image_dir", f"{options.image_dir}: {what}")
    started = layout.read_manifest_info(out) is not None if os.path.isdir(out) else False
    if not started and not options.annotations and not options.hub_dataset:
        raise EngineUsageError("--annotations", "required to start a run (a COCO/Objects365 detection JSON), or --hub_dataset")


# -- what defines an output ---------------------------------------------------------------------------------------

def file_fingerprint(path: str, recorded: Optional[dict] = None) -> dict[str, Any]:
    """Size and SHA-256 of a file's whole content, with the path and mtime it had.

    The whole file is hashed (about 3 s per GB; once per run start, next to minutes of parsing):
    a sample of its first and last megabytes would miss an edit in the middle, and size plus mtime
    would refuse the same file copied to another disk. A rerun whose file still has the recorded
    path, size and mtime reuses the recorded hash instead of reading the file again.
    """
    path = os.path.abspath(path)
    stat = os.stat(path)
    if recorded and (recorded.get("path"), recorded.get("size"), recorded.get("mtime_ns")) == (path, stat.st_size, stat.st_mtime_ns):
        return dict(recorded)
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(HASH_CHUNK), b""):
            digest.update(chunk)
    return {"path": path, "size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "sha256": digest.hexdigest()}


def defining_stage_options(stage_options: Any) -> Optional[dict[str, Any]]:
    if not is_dataclass(stage_options):
        return None
    return {k: v for k, v in sorted(asdict(stage_options).items()) if k not in OPERATIONAL_STAGE_OPTIONS}


def run_identity(options: RunnerOptions, stage_options: Any, recorded: Optional[dict] = None) -> dict[str, Any]:
    """What defines the output of these options (stored as ``manifest/manifest.json["run"]``).

    Inputs left unset (a resume given only ``--output_dir`` and the options) are None: they take the recorded ones.
    """
    identity: dict[str, Any] = {
        "annotations": None,
        "hub_dataset": None,
        "image_dir": os.path.abspath(options.image_dir) if options.image_dir else None,
        "split": options.split,
        "source": options.source,
        "num_shards": options.num_shards,
        "stages_factory": options.stages_factory,
        "stage_options": defining_stage_options(stage_options),
    }
    if options.hub_dataset:
        identity["hub_dataset"] = {"name": options.hub_dataset, "split": options.hub_split, "objects_column": options.hub_objects_column,
                                   "bbox_format": options.hub_bbox_format, "id_column": options.hub_id_column}
    elif options.annotations:
        identity["annotations"] = file_fingerprint(options.annotations, (recorded or {}).get("annotations"))
    return identity


def _flag(name: str) -> str:
    return f"--{name}"


def identity_differences(recorded: dict[str, Any], current: dict[str, Any]) -> list[tuple[str, Any, Any]]:
    """``[(option, old, new)]`` for each input or option whose value differs from the recorded one."""
    differences = []
    old_file, new_file = recorded.get("annotations"), current.get("annotations")
    if new_file is not None and old_file is not None:
        if "sha256" in old_file:
            if (old_file["size"], old_file["sha256"]) != (new_file["size"], new_file["sha256"]):
                differences.append(("--annotations", f"{old_file['path']} (sha256 {old_file['sha256'][:12]}, {old_file['size']} bytes)",
                                    f"{new_file['path']} (sha256 {new_file['sha256'][:12]}, {new_file['size']} bytes)"))
        elif old_file.get("path") != new_file["path"]:  # an output of an older engine recorded the path only
            differences.append(("--annotations", old_file.get("path"), new_file["path"]))
    if (new_file is not None or current.get("hub_dataset") is not None) and (old_file is None) != (new_file is None):
        differences.append(("--annotations/--hub_dataset", (old_file or {}).get("path") or recorded.get("hub_dataset"),
                            (new_file or {}).get("path") or current.get("hub_dataset")))
    elif current.get("hub_dataset") is not None and recorded.get("hub_dataset") not in (None, current["hub_dataset"]):
        differences.append(("--hub_dataset", recorded["hub_dataset"], current["hub_dataset"]))
    for key in ("image_dir", "split", "source", "num_shards", "stages_factory"):
        if key == "image_dir" and current.get(key) is None:
            continue  # not given again: the recorded folder
        if key in recorded and recorded[key] != current.get(key):
            differences.append((_flag(key), recorded[key], current.get(key)))
    old_stages, new_stages = recorded.get("stage_options"), current.get("stage_options")
    if old_stages is not None and new_stages is not None:
        for key in sorted(set(old_stages) | set(new_stages)):
            if key in OPERATIONAL_STAGE_OPTIONS:
                continue
            if old_stages.get(key) != new_stages.get(key):
                differences.append((_flag(key), old_stages.get(key), new_stages.get(key)))
    return differences


def recorded_identity(out: str) -> Optional[dict[str, Any]]:
    """The recorded identity of an output, or what an output of an older engine says of it (None: not started)."""
    info = layout.read_manifest_info(out)
    if info is None:
        return None
    if RUN_KEY in info:
        return info[RUN_KEY]
    identity = {"annotations": {"path": info["annotations"]} if info.get("annotations") else None,
                "image_dir": info.get("image_dir"), "split": info.get("split"), "num_shards": info.get("num_shards")}
    run_options = os.path.join(out, RUN_OPTIONS_FILE)
    if os.path.exists(run_options):
        record = layout.read_json(run_options)
        identity["stage_options"] = {k: v for k, v in (record.get("stages") or {}).items() if k not in OPERATIONAL_STAGE_OPTIONS} or None
        runner = record.get("runner") or {}
        for key in ("source", "stages_factory"):
            if key in runner:
                identity[key] = runner[key]
    return {k: v for k, v in identity.items() if v is not None}


def check_rerun(options: RunnerOptions, stage_options: Any) -> dict[str, Any]:
    """Compare the options with what the output was made from; raise :class:`RunMismatchError` naming each difference.

    Returns the identity to record (the recorded one, completed with what this run adds).
    """
    recorded = recorded_identity(options.output_dir)
    current = run_identity(options, stage_options, recorded)
    if recorded is None:
        return current
    differences = identity_differences(recorded, current)
    if differences:
        raise RunMismatchError(options.output_dir, differences)
    merged = dict(recorded)
    for key, value in current.items():
        if merged.get(key) is None or (key == "annotations" and value is not None):
            merged[key] = value  # an older output gains the full record; a moved/touched file its new path and mtime
    return merged


def _remove_trash(out: str) -> None:
    for path in glob.glob(os.path.join(out, TRASH_PREFIX + "*")):
        shutil.rmtree(path, ignore_errors=True)


def clear_output(out: str) -> list[str]:
    """Remove the engine's own files from ``out`` (``--force_new``); returns the entries removed.

    Only an engine output is touched (one with a manifest, shard records or run options), and only
    the names the engine writes: anything else in the folder stays. Each entry is first renamed
    into a hidden trash folder (atomic), shard records first and the manifest last, then the trash
    is deleted, so a run killed while clearing leaves either the old output, consistent, or a new one.
    """
    if not os.path.isdir(out):
        return []
    markers = (os.path.join(layout.MANIFEST_DIR, layout.MANIFEST_INFO), layout.SHARD_RECORDS_DIR, RUN_OPTIONS_FILE)
    if not any(os.path.exists(os.path.join(out, m)) for m in markers):
        return []
    trash = os.path.join(out, f"{TRASH_PREFIX}{os.getpid()}")
    os.makedirs(trash, exist_ok=True)
    removed = []
    for name in ENGINE_ENTRIES:
        path = os.path.join(out, name)
        if os.path.lexists(path):
            os.replace(path, os.path.join(trash, name))
            removed.append(name)
    _remove_trash(out)
    return removed


# -- the run -----------------------------------------------------------------------------------------------------

def record_run_options(options: RunnerOptions, stage_options: Any = None) -> dict[str, Any]:
    """Save the options of the run and each stage's own definition (e.g. the CLIP filter's) for the card.

    The stages are built here once (their models load on first use, so this is cheap) to ask
    them for a ``definition``. The first run's record stays: a rerun with options that define
    another output was refused before this (:func:`check_rerun`).
    """
    stages = load_stages_factory(options.stages_factory)(stage_options)
    record = {
        "runner": asdict(options),
        "stages": asdict(stage_options) if is_dataclass(stage_options) else None,
        "stage_names": [stage.name for stage in stages],
        "definitions": {stage.name: stage.definition for stage in stages if isinstance(getattr(stage, "definition", None), str)},
    }
    path = os.path.join(options.output_dir, RUN_OPTIONS_FILE)
    if os.path.exists(path):
        return layout.read_json(path)
    layout.write_json_atomic(path, record)
    return record


def _input_error(error: BaseException, annotations: Optional[str]) -> Optional[EngineInputError]:
    """A reader's exception as an :class:`EngineInputError` naming the file, the item and the key (None: not about the input)."""
    if isinstance(error, EngineInputError):
        return error
    if annotations is None:
        return None
    if isinstance(error, json.JSONDecodeError):
        return EngineInputError(annotations, f"not valid JSON: {error.msg}", item=f"line {error.lineno} column {error.colno}")
    if type(error).__module__.startswith("ijson") or type(error).__name__ in ("IncompleteJSONError", "JSONError"):
        return EngineInputError(annotations, f"not valid JSON: {str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__}")
    if isinstance(error, UnicodeDecodeError):
        return EngineInputError(annotations, f"not UTF-8 text (byte {error.start})")
    if isinstance(error, (KeyError, TypeError, ValueError, AttributeError, IndexError)):
        try:
            return locate_schema_problem(annotations)
        except Exception as second:  # the file cannot even be streamed: say why in one line
            return _input_error(second, annotations) if not isinstance(second, (KeyError, TypeError, ValueError)) else None
    return None


def _prepare_manifest(options: RunnerOptions, identity: dict[str, Any], image_root: Optional[str] = None) -> dict[str, Any]:
    """:func:`prepare_manifest`, with the reader's errors named in one line and the run's identity recorded."""
    try:
        info = prepare_manifest(options, image_root=image_root)
    except EngineUsageError:
        raise
    except Exception as error:
        translated = _input_error(error, options.annotations)
        if translated is None or translated is error:
            raise
        raise translated from error
    if info.get(RUN_KEY) != identity:
        info = {**info, RUN_KEY: identity}
        layout.write_json_atomic(os.path.join(options.output_dir, layout.MANIFEST_DIR, layout.MANIFEST_INFO), info)
    return info


def _lock_output(out: str):
    """Hold ``OUT/.lock`` (one run per output folder), then wait for any worker of an earlier, killed run to end."""
    try:
        lock = OutputDirLock.acquire(out)
    except OutputDirInUseError as error:
        raise EngineError(str(error)) from None
    try:
        wait_for_earlier_workers(out)
    except BaseException:
        lock.release()
        raise
    return lock


def _refused(out: str, split: str, created: bool, error: EngineInputError, options: RunnerOptions) -> None:
    """A run refused for its input before the manifest was recorded: remove the folder it created, or say why in the card.

    In a folder that was there before, only the card this engine put there without a manifest (unfinished or
    refused) is replaced; anything else is left as it was.
    """
    if created:
        for name in ENGINE_ENTRIES + (workers.WORKERS_LOCK_FILE,):
            path = os.path.join(out, name)
            if os.path.isdir(path) and not os.path.islink(path):
                shutil.rmtree(path, ignore_errors=True)
            elif os.path.lexists(path):
                os.remove(path)
        return  # the caller removes the lock file and the folder once the lock is released
    if layout.read_manifest_info(out) is None and is_placeholder_card(out):
        write_refused_card(out, split, str(error), values=[options.annotations, options.image_dir])


def _remove_if_empty(out: str) -> None:
    """Remove ``out`` if it holds nothing but its lock files (called after the lock is released)."""
    lock_files = {LOCK_FILE, workers.WORKERS_LOCK_FILE}
    if os.path.isdir(out) and set(os.listdir(out)) <= lock_files:
        for name in lock_files & set(os.listdir(out)):
            os.remove(os.path.join(out, name))
        os.rmdir(out)


def run_engine(options: RunnerOptions, stage_options: Any = None, card_data: Optional[dict] = None) -> Optional[dict[str, Any]]:
    """Run (or resume) the engine; with the local executor, finish with :func:`finalize_run`.

    The output folder's lock (``OUT/.lock``) is held from the argument checks to the end: a second run on the same
    folder is refused at once, naming the pid and host of this one. Returns the run summary (None for slurm,
    whose jobs are only submitted: a finalize job that depends on the shard array checks the output and writes
    the card, holding the lock while it does).
    """
    out = options.output_dir
    check_arguments(options)
    created = not os.path.exists(out)
    lock = _lock_output(out)
    failed = False
    try:
        return _run_locked(options, stage_options, card_data)
    except EngineInputError as error:
        failed = True
        if layout.read_manifest_info(out) is None:  # refused before it started: nothing of it may look resumable
            _refused(out, options.split, created, error, options)
        raise
    except BaseException:
        failed = True
        raise
    finally:
        lock.release()
        if failed and created:
            _remove_if_empty(out)  # a run that stopped before writing anything leaves no folder behind


def _run_locked(options: RunnerOptions, stage_options: Any, card_data: Optional[dict]) -> Optional[dict[str, Any]]:
    out = options.output_dir
    if options.force_new:
        removed = clear_output(out)
        if removed:
            logger.warning("--force_new: cleared %s of %s", ", ".join(removed), out)
    identity = check_rerun(options, stage_options)
    os.makedirs(out, exist_ok=True)
    _remove_trash(out)
    stray = layout.remove_stray_temporaries(out)
    if stray:
        logger.info("removed %d temporary file(s) left by an interrupted run", len(stray))
    check_cluster_resources(options)  # before minutes of manifest reading: a task no node holds would wait forever
    write_unfinished_card(out, options.split)
    info = _prepare_manifest(options, identity, image_root=getattr(stage_options, "image_root", None))
    record_run_options(options, stage_options)
    executor = build_executor(options, [EngineShards(options, stage_options)])
    if options.executor == "slurm":
        build_slurm_finalizer(options, executor).run()  # submits the shard array first, then the finalizer after it
        logger.info("submitted %d shard tasks and a finalize job to slurm; to push when they are done: "
                    "python -m mres_engine publish --output_dir %s --repo_id ORG/NAME", options.num_shards, out)
        return None
    with RunProgress(out, options.num_shards, info["num_images"], enabled=options.progress):
        executor.run()
    summary = finalize_run(out, card_data=card_data)
    stats = RunStats.from_dict(summary)
    print(stats.table())
    rate = f"{stats.images_in / stats.seconds_total:.2f} images/s per shard task" if stats.seconds_total > 0 else "no image processed"
    print(f"{info['num_images']} images: {summary['exactly_once']['written']} written, "
          f"{summary['exactly_once']['rejected']} rejected (each exactly once); {rate}; output: {out}")
    return summary
