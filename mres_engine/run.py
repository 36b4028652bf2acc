"""The engine's run, start to end: ``python -m mres_engine run`` calls :func:`run_engine`.

The stages are applied to shards of image ids as a datatrove pipeline: the manifest is cut into
shards (:mod:`~mres_engine.manifest`), each datatrove task builds one shard
(:mod:`~mres_engine.shard`) under the executor the options name (:mod:`~mres_engine.executors`),
and the output is checked and described (:mod:`~mres_engine.finalize`). Every shard follows the
exactly-once protocol of :mod:`mres_engine.layout`, so a killed run resumes where it stopped with
no image lost or written twice.
"""

from __future__ import annotations

import logging
import os
from typing import Any, Optional

from . import layout
from .executors import EngineShards, build_executor, build_slurm_finalizer
from .finalize import RUN_OPTIONS_FILE, finalize_run
from .manifest import prepare_manifest
from .options import RunnerOptions, load_stages_factory
from .progress import RunProgress
from .stats import RunStats

logger = logging.getLogger(__name__)


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
                    "python -m mres_engine publish --output_dir %s --repo_id ORG/NAME", options.num_shards, out)
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
