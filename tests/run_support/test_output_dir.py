"""One run per output folder (run_support.output_dir), shared by UniRES's trainer and the captioner's."""
import multiprocessing
import os
import time

import pytest

from run_support.output_dir import (
    OutputDirInUseError,
    OutputDirLock,
    check_checkpoints,
    existing_checkpoints,
    find_saved_model,
    remove_checkpoints,
)


def _wait_until(condition, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {seconds:.0f} s waiting for {what}")
        time.sleep(0.05)


def test_the_output_dir_lock_is_the_process_not_its_forked_children(tmp_path):
    # A data-loader worker forked from the run must not keep the folder locked once the run itself has ended.
    context = multiprocessing.get_context("fork")
    ready, release = context.Event(), context.Event()
    child_pid = context.Value("i", 0)

    def run_that_forks(folder):
        OutputDirLock.acquire(folder)
        child = context.Process(target=lambda: (ready.set(), release.wait(60)))  # inherits every descriptor
        child.start()
        child_pid.value = child.pid
        ready.wait(60)
        os._exit(0)  # the run dies; its child lives on

    holder = context.Process(target=run_that_forks, args=(str(tmp_path),))
    holder.start()
    try:
        # Not holder.join(): the child inherited the pipe join waits on, so join would wait for the child too (the
        # test then took 30 s, and tried the lock only once the child was gone). `exitcode` is set once the run is
        # reaped, that is once all its threads have ended and its files, with their record locks, are closed.
        _wait_until(lambda: holder.exitcode is not None, 60, "the run that holds the lock to end")
        assert holder.exitcode == 0
        os.kill(child_pid.value, 0)  # its forked child still runs (raises if it is gone)
        lock = OutputDirLock.acquire(tmp_path)  # and yet the lock is free
        lock.release()
    except OutputDirInUseError as error:
        raise AssertionError(f"the lock outlived the process that held it: {error}") from None
    finally:
        release.set()


def test_checkpoints_are_the_callers_prefix_and_step_and_run_folders_go_with_them(tmp_path):
    for name in ["checkpoint-10", "checkpoint-2", "checkpoint-x", "checkpoint-best-3", "step-5", "data_trace", "logs"]:
        (tmp_path / name).mkdir()
    (tmp_path / "checkpoint-7").write_text("a file, not a checkpoint")
    assert [p.name for p in existing_checkpoints(tmp_path)] == ["checkpoint-2", "checkpoint-10"]
    assert [p.name for p in existing_checkpoints(tmp_path, "step-")] == ["step-5"]

    with pytest.raises(FileExistsError, match="checkpoint-2, checkpoint-10.*--overwrite_output_dir"):
        check_checkpoints(tmp_path, resume_from_checkpoint=None, overwrite_output_dir=False, remove=True)
    assert check_checkpoints(tmp_path, resume_from_checkpoint="latest", overwrite_output_dir=False, remove=True) == []
    removed = check_checkpoints(tmp_path, resume_from_checkpoint=None, overwrite_output_dir=True, remove=True,
                                run_folders=("data_trace",))
    assert [p.name for p in removed] == ["checkpoint-2", "checkpoint-10"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint-7", "checkpoint-best-3", "checkpoint-x",
                                                          "logs", "step-5"]


def test_a_saved_model_is_an_earlier_run_too_and_the_check_itself_deletes_nothing(tmp_path):
    # A finished `--save_steps 0` run leaves a saved model and no checkpoint: training over it is refused too.
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "model.safetensors").write_bytes(b"weights")
    with pytest.raises(FileExistsError) as refused:
        check_checkpoints(tmp_path, resume_from_checkpoint=None, overwrite_output_dir=False, remove=False)
    message = str(refused.value)
    assert str(tmp_path.resolve()) in message and "saved model of an earlier run (config.json, model.safetensors)" \
        in message and "--overwrite_output_dir" in message and "no checkpoint" in message
    # Overwriting keeps the saved model until the new run's save replaces it.
    assert check_checkpoints(tmp_path, resume_from_checkpoint=None, overwrite_output_dir=True, remove=True) == []
    assert find_saved_model(tmp_path) == [tmp_path / "config.json", tmp_path / "model.safetensors"]

    # Checkpoints and a saved model: both named; remove=False only reports what would go.
    for name in ["checkpoint-3", "data_trace"]:
        (tmp_path / name).mkdir()
    with pytest.raises(FileExistsError, match=r"checkpoints \(checkpoint-3\) and the saved model \(config.json, "
                                              r"model.safetensors\).*--resume_from_checkpoint.*--overwrite_output_dir"):
        check_checkpoints(tmp_path, resume_from_checkpoint=None, overwrite_output_dir=False, remove=False)
    found = check_checkpoints(tmp_path, resume_from_checkpoint=None, overwrite_output_dir=True, remove=False,
                              run_folders=("data_trace",))
    assert found == [tmp_path / "checkpoint-3"] and found[0].is_dir() and (tmp_path / "data_trace").is_dir()
    remove_checkpoints(tmp_path, found, run_folders=("data_trace",))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json", "model.safetensors"]


def test_a_trainer_names_what_its_saved_model_is(tmp_path):
    # The captioner's final save is a PEFT adapter: its names mark its finished runs, UniRES's do not.
    adapter = ("adapter_config.json", "adapter_model.safetensors")
    (tmp_path / "adapter_config.json").write_text("{}")
    check_checkpoints(tmp_path, resume_from_checkpoint=None, overwrite_output_dir=False, remove=False)  # not UniRES's
    with pytest.raises(FileExistsError, match=r"saved model of an earlier run \(adapter_config.json\)"):
        check_checkpoints(tmp_path, resume_from_checkpoint=None, overwrite_output_dir=False, remove=False,
                          prefix="checkpoint-", run_folders=(), saved_model_files=adapter)
    # Resuming is the resume's business (it says when there is no checkpoint), not the folder rule's.
    assert check_checkpoints(tmp_path, resume_from_checkpoint="latest", overwrite_output_dir=False, remove=False,
                             saved_model_files=adapter) == []
