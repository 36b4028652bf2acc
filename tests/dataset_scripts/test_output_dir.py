"""One run per output folder (dataset_scripts.output_dir), shared by UniRES's trainer and the captioner's."""
import multiprocessing
import os

import pytest

from dataset_scripts.output_dir import OutputDirInUseError, OutputDirLock, check_checkpoints, existing_checkpoints


def test_the_output_dir_lock_is_the_process_not_its_forked_children(tmp_path):
    # A data-loader worker forked from the run must not keep the folder locked once the run itself has ended.
    context = multiprocessing.get_context("fork")
    ready, release = context.Event(), context.Event()

    def run_that_forks(folder):
        OutputDirLock.acquire(folder)
        child = context.Process(target=lambda: (ready.set(), release.wait(30)))  # inherits every descriptor
        child.start()
        ready.wait(30)
        os._exit(0)  # the run dies; its child lives on

    holder = context.Process(target=run_that_forks, args=(str(tmp_path),))
    holder.start()
    holder.join(30)
    try:
        assert holder.exitcode == 0
        lock = OutputDirLock.acquire(tmp_path)  # at once, although the forked child still runs
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
