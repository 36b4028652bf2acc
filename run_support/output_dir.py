"""One run per output folder: a lock held for the whole run, and transformers' `overwrite_output_dir` rule.

- `OutputDirLock`: `output_dir/.lock`, a POSIX record lock (`fcntl.lockf`) held by the main process from start to
  end. A second run writing the same folder (a resume started beside a run that is still alive, a copy-pasted
  command) fails at once, naming the pid and host of the run that holds it. The kernel drops the lock when that
  process ends, however it ends, so a killed run never leaves a stale lock behind. A record lock rather than
  `flock`: a `flock` belongs to the open file, which every process forked from the holder shares (a data-loader
  worker, say), so it outlived a killed run until the last of those children had noticed and exited; a record
  lock belongs to the process alone. (Its one rule to keep: this process never opens and closes `.lock` again
  while it holds the lock, since closing any descriptor of the file drops the process's record locks.)
- `check_checkpoints`: a folder that already holds an earlier run (its checkpoints, or the saved model of a run that
  wrote none, `--save_steps 0`) is that run's. Training into it again without `--resume_from_checkpoint` refuses;
  with `--overwrite_output_dir` the old checkpoints are removed, so that `--resume_from_checkpoint latest` can never
  pick up a checkpoint of another run, and the old saved model is replaced when the new run saves its own. The check
  itself is read-only (`remove=False`): a trainer runs every check that can fail (the lock, this rule, the Hub push)
  first and only then calls `remove_checkpoints`, so that a run refused for another reason has deleted nothing.

Shared by every trainer of ours (UniRES's `unires.training`, the dense captioner's `captioner.train`): the
checkpoint folders' prefix and any other folders a run leaves beside them are the caller's to name.
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import time
from pathlib import Path
from typing import Sequence

logger = logging.getLogger(__name__)

LOCK_FILE = ".lock"


class OutputDirInUseError(RuntimeError):
    """Another live run holds the output folder's lock."""


class OutputDirLock:
    """An exclusive, non-blocking record lock on `folder/.lock` (Linux and macOS; a no-op where fcntl is missing)."""

    _held: dict[str, "OutputDirLock"] = {}  # per process: a run that re-claims its own folder gets its own lock back

    def __init__(self, folder):
        self.folder = Path(folder).resolve()
        self.path = self.folder / LOCK_FILE
        self._handle = None

    @classmethod
    def acquire(cls, folder) -> "OutputDirLock":
        key = str(Path(folder).resolve())
        if key in cls._held:
            return cls._held[key]
        lock = cls(folder)
        lock._acquire()
        cls._held[key] = lock
        return lock

    def _acquire(self) -> None:
        try:
            import fcntl
        except ImportError:  # Windows: no lock
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        handle = open(self.path, "a+")
        try:
            fcntl.lockf(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.seek(0)
            holder = handle.read().strip() or "unknown pid"
            handle.close()
            raise OutputDirInUseError(
                f"output_dir {self.folder} is in use by another run ({holder}; lock file {self.path}). Wait for "
                "that run to end or stop it, or choose another --output_dir."
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()} on {socket.gethostname()}, since {time.strftime('%Y-%m-%d %H:%M:%S')}\n")
        handle.flush()
        self._handle = handle

    def release(self) -> None:
        """Drop the lock (idempotent). The file stays: removing it would let two runs lock two different files."""
        if self._handle is not None:
            import fcntl

            fcntl.lockf(self._handle, fcntl.LOCK_UN)
            self._handle.close()
            self._handle = None
        OutputDirLock._held.pop(str(self.folder), None)


CHECKPOINT_PREFIX = "checkpoint-"


def existing_checkpoints(folder, prefix: str = CHECKPOINT_PREFIX) -> list[Path]:
    """The `{prefix}N` folders in `folder` (N a step number), complete or not, in step order."""
    found = [p for p in Path(folder).glob(f"{prefix}*") if p.is_dir() and p.name[len(prefix):].isdigit()]
    return sorted(found, key=lambda p: int(p.name[len(prefix):]))


# What `save_pretrained` of a transformers model leaves: the mark of a finished run's saved model. A trainer whose
# final save is something else (a PEFT adapter: adapter_config.json, adapter_model.safetensors) passes its own names.
SAVED_MODEL_FILES = ("config.json", "model.safetensors", "model.safetensors.index.json")


def find_saved_model(folder, names: Sequence[str] = SAVED_MODEL_FILES) -> list[Path]:
    """Which of `names` (a finished run's saved model) are files in `folder`."""
    return [Path(folder) / name for name in names if (Path(folder) / name).is_file()]


def check_checkpoints(folder, *, resume_from_checkpoint, overwrite_output_dir: bool, remove: bool,
                      prefix: str = CHECKPOINT_PREFIX, run_folders: Sequence[str] = (),
                      saved_model_files: Sequence[str] = SAVED_MODEL_FILES) -> list[Path]:
    """Apply the `overwrite_output_dir` rule to `folder`; returns the earlier run's checkpoints that go (already
    removed when `remove`; pass `remove=False` and call `remove_checkpoints` once every other check has passed).

    Checkpoints are the `{prefix}N` folders; `run_folders` names other folders of a run (a data trace, say) that
    are removed with them; `saved_model_files` are the files whose presence marks the saved model of a finished run
    (which is not removed: the new run's save replaces it). Raises `FileExistsError` naming the folder and the ways
    out when it holds an earlier run and neither `--resume_from_checkpoint` nor `--overwrite_output_dir` says what
    to do with it.
    """
    found = existing_checkpoints(folder, prefix)
    saved = find_saved_model(folder, saved_model_files)
    if not (found or saved) or resume_from_checkpoint:
        return []
    if not overwrite_output_dir:
        raise FileExistsError(_earlier_run_message(folder, found, saved))
    if saved:
        # Replaced, not removed now: a new run that fails before it saves must not have cost the user a finished
        # model, and nothing reads it during a run (a resume reads only checkpoints).
        logger.warning("--overwrite_output_dir: the saved model of an earlier run in %s (%s) is replaced when this "
                       "run saves its own", Path(folder).resolve(), ", ".join(p.name for p in saved))
    if remove:
        remove_checkpoints(folder, found, run_folders=run_folders)
    return found


def remove_checkpoints(folder, checkpoints: Sequence[Path], *, run_folders: Sequence[str] = ()) -> None:
    """Delete an earlier run's `checkpoints` (as found by `check_checkpoints`) and its `run_folders` in `folder`."""
    for checkpoint in checkpoints:
        shutil.rmtree(checkpoint)
    for name in run_folders:
        if (Path(folder) / name).is_dir():
            shutil.rmtree(Path(folder) / name)
    if checkpoints:
        logger.warning("--overwrite_output_dir: removed %d old checkpoint(s) from %s: %s", len(checkpoints),
                       Path(folder).resolve(), ", ".join(p.name for p in checkpoints))


def _earlier_run_message(folder, checkpoints: Sequence[Path], saved: Sequence[Path]) -> str:
    where = f"output_dir {Path(folder).resolve()}"
    checkpoint_names = ", ".join(p.name for p in checkpoints)
    saved_names = ", ".join(p.name for p in saved)
    if not checkpoints:
        return (f"{where} already holds the saved model of an earlier run ({saved_names}) and no checkpoint to "
                "resume. Pass --overwrite_output_dir to train a new model in its place, or choose another "
                "--output_dir.")
    held = f"checkpoints of an earlier run ({checkpoint_names})"
    if saved:
        held = f"checkpoints ({checkpoint_names}) and the saved model ({saved_names}) of an earlier run"
    return (f"{where} already holds {held}. Pass --resume_from_checkpoint latest to continue that run, "
            "--overwrite_output_dir to delete the checkpoints and train from the start, or choose another "
            "--output_dir.")
