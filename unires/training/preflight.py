"""What a run checks and claims before it builds a model or reads a row.

`prepare_run` is called once per run, right after the `Accelerator`, by `run_training` (before the model and
data are built) and by `UniRESTrainer` when it is built without one. On the main process it takes the output
folder's lock, applies the `overwrite_output_dir` rule and checks the Hub push; the outcome, success or the
error, is broadcast so that every process returns or raises the same (no rank is left waiting in a collective
for a main process that has already failed). Every process starts the launcher watchdog.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Optional

from dataset_scripts.main_process import on_main_process
from dataset_scripts.output_dir import OutputDirLock, check_checkpoints

from .hub import check_push_access
from .launcher import exit_with_launcher

logger = logging.getLogger(__name__)


@dataclass
class PreparedRun:
    """The claimed output folder (its lock, on the main process) and the checked Hub repo, if pushing."""

    output_dir: str
    lock: Optional[OutputDirLock] = None
    hub_repo_id: Optional[str] = None

    def release(self) -> None:
        if self.lock is not None:
            self.lock.release()
            self.lock = None


def prepare_run(accelerator, args) -> PreparedRun:
    """Lock `args.output_dir`, apply the overwrite rule, check the push; raises (on every process) if any fails."""
    exit_with_launcher()
    run = PreparedRun(output_dir=args.output_dir)

    def claim() -> None:
        run.lock = OutputDirLock.acquire(args.output_dir)
        try:
            check_checkpoints(args.output_dir, resume_from_checkpoint=args.resume_from_checkpoint,
                              overwrite_output_dir=args.overwrite_output_dir, remove=True,
                              prefix="checkpoint-", run_folders=("data_trace",))  # UniRESTrainer's folders
        except Exception:
            run.release()
            raise

    on_main_process(accelerator, claim)
    if args.push_to_hub:
        try:
            run.hub_repo_id = on_main_process(
                accelerator,
                lambda: check_push_access(args.hub_model_id, args.output_dir, token=args.hub_token,
                                          private=args.hub_private_repo),
            )
        except Exception:
            run.release()
            raise
    return run
