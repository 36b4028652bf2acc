"""The processes of a distributed run: a launch whose processes do not see each other, and work that one process does
for all (claim a folder, check a Hub repo), with the outcome shared.

`on_main_process(accelerator, fn)` runs `fn()` on the main process only and hands every process its result, or
raises its exception on every process: a check that fails on rank 0 stops all ranks at once, instead of leaving the
others waiting at the next collective until the timeout. Used by both trainers (`unires.training`,
`captioner.train`).
"""

from __future__ import annotations

import logging
import os
from typing import Callable

logger = logging.getLogger(__name__)

# The one command that runs several training processes on a machine without a GPU (tested with both trainers).
CPU_LAUNCH = "ACCELERATE_USE_CPU=1 accelerate launch --multi_gpu --num_processes {n} {script} ..."


class DistributedLaunchError(RuntimeError):
    """A launcher started several processes, but they do not form one distributed run."""


def cpu_launch_command(processes, script: str) -> str:
    return CPU_LAUNCH.format(n=processes, script=script)


def on_main_process(accelerator, fn: Callable):
    """`fn()` on the main process; every process returns its (picklable) result or raises its exception."""
    outcome = [("ok", None)]
    if accelerator.is_main_process:
        try:
            outcome = [("ok", fn())]
        except Exception as error:  # re-raised on every process below
            outcome = [("error", error)]
    if accelerator.num_processes > 1:
        from accelerate.utils import broadcast_object_list

        broadcast_object_list(outcome)
    kind, value = outcome[0]
    if kind == "error":
        raise value
    return value


def check_processes_see_each_other(accelerator, script: str, environ=None) -> None:
    """Raise `DistributedLaunchError` when a launcher started this process as one of several (`WORLD_SIZE` > 1)
    but its Accelerator is not distributed: on a machine without a GPU, `accelerate launch --multi_gpu` (torchrun)
    without ACCELERATE_USE_CPU=1 starts processes that each train alone, on the same folder."""
    environ = os.environ if environ is None else environ
    try:
        world_size = int(environ.get("WORLD_SIZE", "1"))
    except ValueError:
        raise DistributedLaunchError(f"WORLD_SIZE={environ['WORLD_SIZE']!r} is not a number of processes") from None
    if world_size > 1 and accelerator.num_processes == 1:
        raise DistributedLaunchError(
            f"WORLD_SIZE={world_size}: the launcher started {world_size} processes, but this one (RANK="
            f"{environ.get('RANK', '?')}) runs alone ({accelerator.distributed_type.value} on {accelerator.device}), so "
            "the processes do not see each other. Without a GPU, launch with "
            f"`{cpu_launch_command(world_size, script)}`."
        )


def warn_if_fewer_processes_than_launched(accelerator, script: str, environ=None) -> None:
    """Warn when `accelerate launch --num_processes N` (N > 1) ran this script as a single process: without
    `--multi_gpu` and without GPUs, Accelerate's simple launcher starts one process and only sets MASTER_ADDR."""
    environ = os.environ if environ is None else environ
    launched_by_accelerate = "ACCELERATE_DYNAMO_BACKEND" in environ  # every `accelerate launch` sets it
    if launched_by_accelerate and "MASTER_ADDR" in environ and "WORLD_SIZE" not in environ \
            and accelerator.num_processes == 1:
        logger.warning(
            "accelerate launch was given several processes (--num_processes > 1) but started this one alone: the "
            "run has world size 1. Without a GPU, run several processes with `%s`.", cpu_launch_command("N", script))


__all__ = ["CPU_LAUNCH", "DistributedLaunchError", "check_processes_see_each_other", "cpu_launch_command",
           "on_main_process", "warn_if_fewer_processes_than_launched"]
