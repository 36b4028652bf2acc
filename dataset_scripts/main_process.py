"""Work that one process does for all of a distributed run (claim a folder, check a Hub repo), with the outcome shared.

`on_main_process(accelerator, fn)` runs `fn()` on the main process only and hands every process its result, or
raises its exception on every process: a check that fails on rank 0 stops all ranks at once, instead of leaving the
others waiting at the next collective until the timeout. Used by both trainers (`unires.training`,
`captioner.train`).
"""

from __future__ import annotations

from typing import Callable


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


__all__ = ["on_main_process"]
