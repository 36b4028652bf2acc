"""Where the shards run: datatrove executors (local, Slurm, Ray), one task per shard, each task pinned to one GPU.

:class:`EngineShards` is the datatrove step (task ``rank`` builds shard ``rank``); the same step runs
under datatrove's ``LocalPipelineExecutor`` (one machine, the default, here
:class:`PinnedLocalPipelineExecutor`), ``SlurmPipelineExecutor`` or ``RayPipelineExecutor``.
datatrove's own completion marks skip finished tasks; the exactly-once rule of
:mod:`mres_engine.layout` makes a rerun redo unfinished shards whole (:mod:`mres_engine.writers.commit`
says why both markers exist).
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import subprocess
import sys
from typing import Any, Optional

from datatrove.executor import LocalPipelineExecutor
from datatrove.pipeline.base import PipelineStep

from run_support.output_dir import OutputDirLock

from . import layout
from .errors import EngineUsageError
from .finalize import finalize_run
from .options import RunnerOptions, load_stages_factory
from .shard import process_shard
from .workers import children_die_with_this_process, die_with_parent, hold_worker_lock

logger = logging.getLogger(__name__)


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
            image_dir = (layout.read_manifest_info(self.options.output_dir) or {}).get("image_dir")
            if image_dir and not os.path.isdir(image_dir):
                # Every image would be rejected as unreadable and the shard recorded as complete: fail the task instead.
                raise FileNotFoundError(f"shard {rank}: the image folder {image_dir} (--image_dir) is not visible on "
                                        f"{socket.gethostname()}; nothing of this shard is written")
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
                    image_dir=image_dir,
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
        lock = OutputDirLock.acquire(self.output_dir)  # no rerun writes the folder while its card and stats are written
        try:
            finalize_run(self.output_dir)
        finally:
            lock.release()
        if data:
            yield from data


_WORKER_LOCAL_RANK: Optional[int] = None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class PinnedLocalPipelineExecutor(LocalPipelineExecutor):
    """``LocalPipelineExecutor`` whose worker processes each hold one local rank, hence one GPU, for life.

    datatrove hands a free local rank to every task; a process that ran a task on one GPU may
    get another rank for its next task, but CUDA cannot move once initialised. Here a worker
    takes a rank on its first task, pins ``CUDA_VISIBLE_DEVICES`` to that GPU and keeps both.

    The pool's processes end with the driver, and each worker holds ``OUT/.workers.lock`` (shared)
    until it ends, so that a rerun waits for it (see :mod:`mres_engine.workers`).
    """

    def __init__(self, *args, output_dir: str, **kwargs):
        super().__init__(*args, **kwargs)
        self.output_dir = os.path.abspath(output_dir)
        self.driver_pid = os.getpid()

    def run(self):
        self.driver_pid = os.getpid()
        with children_die_with_this_process(self.start_method):
            return super().run()

    def _launch_run_for_rank(self, rank, ranks_q, completed=None, completed_lock=None):
        global _WORKER_LOCAL_RANK
        if os.getpid() != self.driver_pid:  # a pool worker (the driver runs the tasks itself with one worker)
            # before it writes: die with the driver (spawn's workers were not forked by a guarded process) and hold
            # the workers' lock, so that a rerun waits for this process to be gone
            die_with_parent(os.getppid())
            hold_worker_lock(self.output_dir)
            if not _alive(self.driver_pid):  # it died before this worker held the lock: a rerun may be writing
                os._exit(1)
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
    """A one-CPU job, after the shard array succeeds, that checks the output and writes stats and card."""
    from datatrove.executor import SlurmPipelineExecutor

    return SlurmPipelineExecutor(
        [FinalizeRun(os.path.abspath(options.output_dir))],
        tasks=1,
        time="4:00:00",
        partition=options.slurm_partition,
        cpus_per_task=1,  # it reads the shards one column at a time: one CPU, one shard task's memory per CPU
        mem_per_cpu_gb=options.mem_per_cpu_gb,
        sbatch_args={"mem-per-cpu": f"{max(1, round(options.mem_per_cpu_gb * 1024))}M"},
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
            output_dir=options.output_dir,
        )
    if options.executor == "slurm":
        from datatrove.executor import SlurmPipelineExecutor

        if not options.slurm_partition:
            raise EngineUsageError("--slurm_partition", "--executor slurm needs a partition")
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
            # datatrove writes f"{mem_per_cpu_gb}G", which sbatch refuses for a float ("8.0G"): whole megabytes instead
            sbatch_args={"mem-per-cpu": f"{max(1, round(options.mem_per_cpu_gb * 1024))}M"},
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


# -- does one task fit the cluster? ----------------------------------------------------------------------------

TASK_OPTIONS = {"cpus": "--cpus_per_task", "gpus": "--gpus_per_task", "memory": "--mem_per_cpu_gb"}


def task_needs(options: RunnerOptions) -> dict[str, float]:
    """One shard task's request: CPUs, GPUs and memory in bytes (``--mem_per_cpu_gb`` x ``--cpus_per_task``)."""
    return {"cpus": options.cpus_per_task, "gpus": options.gpus_per_task,
            "memory": options.mem_per_cpu_gb * options.cpus_per_task * 1024**3}


def check_task_fits(nodes: list[dict[str, Any]], options: RunnerOptions, where: str) -> None:
    """Raise :class:`EngineUsageError` naming the options to change when no node of ``nodes`` holds one task.

    ``nodes``: ``[{"name", "cpus", "gpus", "memory" (bytes)}]``, the nodes a task may run on.
    """
    needs = task_needs(options)
    if any(all(node[key] >= needs[key] for key in needs) for node in nodes):
        return
    gib = 1024**3
    if not nodes:
        raise EngineUsageError("--executor", f"{where} has no node to run a task on")
    largest = {key: max(node[key] for node in nodes) for key in needs}
    over = [key for key in needs if needs[key] > largest[key]]
    asks = (f"{needs['cpus']:g} CPUs (--cpus_per_task), {needs['gpus']:g} GPUs (--gpus_per_task) and "
            f"{needs['memory'] / gib:g} GiB (--mem_per_cpu_gb {options.mem_per_cpu_gb:g} x {options.cpus_per_task} CPUs)")
    has = ", ".join(f"{n['name']}: {n['cpus']:g} CPUs, {n['gpus']:g} GPUs, {n['memory'] / gib:.1f} GiB" for n in nodes[:4])
    has += f" (and {len(nodes) - 4} more)" if len(nodes) > 4 else ""
    advice = {"cpus": f"--cpus_per_task {int(largest['cpus'])} or less",
              "gpus": f"--gpus_per_task {int(largest['gpus'])} or less",
              "memory": f"--mem_per_cpu_gb {largest['memory'] / gib / needs['cpus']:.2f} or less"}
    if over:
        change = " and ".join(advice[key] for key in over)
        raise EngineUsageError(TASK_OPTIONS[over[0]],
                               f"one task asks {asks}, more than any node of {where} has ({has}); it would wait forever: "
                               f"use {change}")
    raise EngineUsageError("--cpus_per_task", f"one task asks {asks}: each fits some node of {where}, but no one node holds "
                           f"all of them ({has}); lower --cpus_per_task, --gpus_per_task or --mem_per_cpu_gb")


def ray_nodes() -> list[dict[str, Any]]:
    """The alive nodes of the connected Ray cluster with their total CPUs, GPUs and memory."""
    import ray

    return [{"name": node.get("NodeManagerAddress", node.get("NodeID", "?")),
             "cpus": node["Resources"].get("CPU", 0), "gpus": node["Resources"].get("GPU", 0),
             "memory": node["Resources"].get("memory", 0)}
            for node in ray.nodes() if node.get("Alive")]


def parse_gres_gpus(gres: str) -> int:
    """GPUs in a Slurm ``Gres`` field: ``gpu:4``, ``gpu:a100:4(S:0-1)``, ``gpu:a100:2,gpu:v100:2``, ``(null)`` -> 4, 4, 4, 0."""
    total = 0
    for entry in (gres or "").split(","):
        fields = entry.split("(")[0].strip().split(":")
        if fields[0] == "gpu" and len(fields) >= 2:
            try:
                total += int(fields[-1])
            except ValueError:
                total += 1  # "gpu:a100" without a count means one
    return total


def slurm_nodes(partition: Optional[str]) -> list[dict[str, Any]]:
    """The nodes of a Slurm partition (``sinfo``): CPUs, GPUs (from ``Gres``) and memory."""
    if shutil.which("sinfo") is None or shutil.which("sbatch") is None:
        raise EngineUsageError("--executor", "slurm: sinfo/sbatch are not on PATH; submit from a node of the Slurm cluster "
                                             "(a login node)")
    command = ["sinfo", "--noheader", "--Node", "--format=%N|%c|%m|%G"] + (["--partition", partition] if partition else [])
    try:
        listing = subprocess.run(command, capture_output=True, text=True, timeout=60, check=True).stdout
    except (subprocess.SubprocessError, OSError) as error:
        detail = getattr(error, "stderr", "") or error
        raise EngineUsageError("--executor", f"slurm: {' '.join(command)} failed: {str(detail).strip()}") from None
    nodes, seen = [], set()
    for line in listing.splitlines():
        fields = line.strip().split("|")
        if len(fields) != 4 or fields[0] in seen:
            continue
        seen.add(fields[0])
        memory_mb = fields[2].rstrip("+")
        nodes.append({"name": fields[0], "cpus": float(fields[1].rstrip("+") or 0), "gpus": parse_gres_gpus(fields[3]),
                      "memory": float(memory_mb or 0) * 1024**2})
    if not nodes:
        raise EngineUsageError("--slurm_partition", f"slurm: no node in partition {partition!r} (sinfo --partition {partition} lists none)")
    return nodes


def check_cluster_resources(options: RunnerOptions) -> None:
    """Before submitting: on slurm or ray, fail at once when no node can hold one task (naming the options to change)."""
    if options.executor == "local" or not options.check_resources:
        return
    if options.executor == "slurm":
        if not options.slurm_partition:
            raise EngineUsageError("--slurm_partition", "--executor slurm needs a partition")
        check_task_fits(slurm_nodes(options.slurm_partition), options, f"Slurm partition {options.slurm_partition!r}")
        return
    import ray

    if not ray.is_initialized():
        ray.init(address=options.ray_address)
    check_task_fits(ray_nodes(), options, f"the Ray cluster at {options.ray_address}")
