"""A run's checkpoints: which folders are complete, and which one `--resume_from_checkpoint` names.

A checkpoint is `output_dir/checkpoint-N` holding Accelerate's state and the loop's state file (`trainer_state.json`
for UniRES, `captioner_training_state.json` for the captioner); that file is written last, once every process has
written its part, so a folder without it (a run killed mid-save) is not complete. Shared by every trainer
(`run_support.training_loop`): each names its state file and how its messages call it.
"""

from __future__ import annotations

from pathlib import Path

from .output_dir import CHECKPOINT_PREFIX, existing_checkpoints, find_saved_model

STATE_FILE = "trainer_state.json"


def complete_checkpoints(output_dir, state_file: str = STATE_FILE) -> list[Path]:
    """The complete `checkpoint-N` folders of `output_dir`, in step order."""
    return [p for p in existing_checkpoints(output_dir, CHECKPOINT_PREFIX) if (p / state_file).is_file()]


def resolve_checkpoint(output_dir, which: str, state_file: str, trainer: str,
                       saved_model_files=None) -> Path:
    """The checkpoint folder `--resume_from_checkpoint which` names ('latest': the newest complete one in
    `output_dir`); raises `FileNotFoundError` saying what is wrong and which checkpoints there are."""
    if which == "latest":
        found = complete_checkpoints(output_dir, state_file)
        if not found:
            raise FileNotFoundError(f"--resume_from_checkpoint latest: no checkpoint in {Path(output_dir).resolve()}"
                                    f"{_what_is_there(output_dir, state_file, saved_model_files)}")
        return found[-1]
    folder = Path(which)
    there = (_what_is_there(output_dir, state_file, saved_model_files)
             or f"; {Path(output_dir).resolve()} holds no checkpoint.")
    if not folder.exists():
        raise FileNotFoundError(f"--resume_from_checkpoint {which}: {folder.resolve()} does not exist{there}")
    if not (folder / state_file).is_file():
        raise FileNotFoundError(f"--resume_from_checkpoint {which}: {folder.resolve()} is not a complete checkpoint "
                                f"written by {trainer} (it has no {state_file}){there}")
    return folder


def _what_is_there(output_dir, state_file: str, saved_model_files=None) -> str:
    """The tail of a resume error: the checkpoints `output_dir` does hold, or why it holds none ("" if it is empty)."""
    where = Path(output_dir).resolve()
    found = complete_checkpoints(output_dir, state_file)
    if found:
        return f"; the checkpoints in {where} are {', '.join(p.name for p in found)} (or pass latest)."
    saved = find_saved_model(output_dir, saved_model_files) if saved_model_files else find_saved_model(output_dir)
    if saved:
        return (f"; {where} holds the saved model of a finished run ({', '.join(p.name for p in saved)}) but no "
                "checkpoint (was it trained with --save_steps 0?): start a new run from it with --model_name_or_path "
                f"{where} and another --output_dir.")
    incomplete = existing_checkpoints(output_dir, CHECKPOINT_PREFIX)
    if incomplete:
        return (f"; {where} holds only incomplete checkpoints ({', '.join(p.name for p in incomplete)}: no "
                f"{state_file}, a run killed while saving).")
    return ""
