"""What a run checks and claims before it builds a model or reads a row.

`prepare_run` is called once per run, right after the `Accelerator`, by every trainer (UniRES's `run_training`
before the model and data are built, `UniRESTrainer` when it is built without one, the captioner's `train`, the
CLIPSeg baseline). In this order:

1. every process: the launch is sound (processes a launcher started as one run do see each other), so that a
   broken launch is not reported as a folder "in use by another run" (rank 0's lock refusing rank 1);
2. the main process: the output folder's lock, then the read-only checks (the `overwrite_output_dir` rule, the
   checkpoint `--resume_from_checkpoint` names, the Hub push). The outcome, success or the error, is broadcast, so
   that every process returns or raises the same (no rank is left waiting in a collective for a main process that
   has already failed).

Nothing is deleted here: an overwritten run's old checkpoints are removed by `PreparedRun.clear_earlier_run`,
which the trainer calls when training starts, once the model and data are built too. A run that fails any check,
or fails to build, has cost the user nothing. Every process starts the launcher watchdog.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from typing import Sequence

from .checkpoints import STATE_FILE, resolve_checkpoint
from .hub import check_push_access
from .launcher import exit_with_launcher
from .main_process import check_processes_see_each_other, on_main_process, warn_if_fewer_processes_than_launched
from .output_dir import CHECKPOINT_PREFIX, SAVED_MODEL_FILES, OutputDirLock, check_checkpoints, remove_checkpoints


@dataclass(frozen=True)
class RunKind:
    """What tells one trainer's runs from another's in a folder: its checkpoints' state file, the other folders a run
    leaves beside them (removed with them on overwrite), the files of its final save, and the script a broken launch
    is told to use."""

    name: str  # how messages name the trainer, e.g. "UniRESTrainer"
    script: str  # the script a broken launch is told to use, e.g. "examples/train.py"
    state_file: str = STATE_FILE
    run_folders: Sequence[str] = ()
    saved_model_files: Sequence[str] = SAVED_MODEL_FILES

@dataclass
class PreparedRun:
    """The claimed output folder (its lock, on the main process), the checked Hub repo if pushing, and what of an
    earlier run `--overwrite_output_dir` removes when training starts."""

    output_dir: str
    lock: Optional[OutputDirLock] = None
    hub_repo_id: Optional[str] = None
    overwrite: bool = False  # --overwrite_output_dir, not resuming: what is in the folder is an earlier run's
    earlier_checkpoints: list[Path] = field(default_factory=list)
    run_folders: Sequence[str] = ()

    def clear_earlier_run(self) -> None:
        """With --overwrite_output_dir, remove the earlier run's checkpoints and data trace (main process; once).
        Its saved model stays until this run's save replaces it."""
        if self.overwrite:
            remove_checkpoints(self.output_dir, self.earlier_checkpoints, run_folders=self.run_folders)
        self.overwrite, self.earlier_checkpoints = False, []

    def release(self) -> None:
        if self.lock is not None:
            self.lock.release()
            self.lock = None


def prepare_run(accelerator, args, kind: RunKind) -> PreparedRun:
    """Check the launch, lock `args.output_dir`, apply the overwrite rule, check the resume checkpoint and the
    push; raises (on every process) if any fails. Deletes nothing (see `PreparedRun.clear_earlier_run`).

    `args` has transformers' `TrainingArguments` names: `output_dir`, `overwrite_output_dir`,
    `resume_from_checkpoint`, `push_to_hub`, `hub_model_id`, `hub_token`, `hub_private_repo`."""
    check_processes_see_each_other(accelerator, script=kind.script)
    exit_with_launcher()
    run = PreparedRun(output_dir=args.output_dir, run_folders=tuple(kind.run_folders))

    def claim():
        run.lock = OutputDirLock.acquire(args.output_dir)
        try:
            earlier = check_checkpoints(args.output_dir, resume_from_checkpoint=args.resume_from_checkpoint,
                                        overwrite_output_dir=args.overwrite_output_dir, remove=False,
                                        prefix=CHECKPOINT_PREFIX, run_folders=kind.run_folders,
                                        saved_model_files=kind.saved_model_files)
            if args.resume_from_checkpoint:
                resolve_checkpoint(args.output_dir, args.resume_from_checkpoint, kind.state_file, kind.name,
                                   kind.saved_model_files)
            repo_id = None
            if args.push_to_hub:
                repo_id = check_push_access(args.hub_model_id, args.output_dir, token=args.hub_token,
                                            private=args.hub_private_repo)
        except Exception:
            run.release()
            raise
        warn_if_fewer_processes_than_launched(accelerator, script=kind.script)
        return earlier, repo_id

    earlier, run.hub_repo_id = on_main_process(accelerator, claim)
    if accelerator.is_main_process:
        run.overwrite = bool(args.overwrite_output_dir and not args.resume_from_checkpoint)
        run.earlier_checkpoints = earlier
    return run
