"""A real 2-process CPU run under `accelerate launch`: killing the launcher ends its workers, and while they live
their lock on output_dir stops a second run (issue 20, case 4)."""

import fcntl
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dataset_scripts.mres_synth import build_mres_synth
from tiny_models.unires import tiny_config_kwargs
from unires.training import DataArguments, ModelArguments, UniRESTrainingArguments, run_training
from unires.training.scratch import all_sentences, prepare_from_scratch

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("launcher")
    data = build_mres_synth(root / "data", image_size=48, seed=3,
                            num_images={"train": 16, "validation": 2, "test": 2, "test_unseen": 2})
    prepare_from_scratch(all_sentences(data["train"]), root, config_kwargs=tiny_config_kwargs(image_size=48),
                         vocab_size=800)
    return root


def _train_args(root, output):
    return ["--config_name", str(root / "config"), "--processor_name_or_path", str(root / "processor"),
            "--dataset", str(root / "data"), "--referents_per_image", "2", "--per_device_train_batch_size", "2",
            "--learning_rate", "1e-3", "--output_dir", str(output), "--report_to", "none", "--disable_progress_bar",
            "--do_final_eval", "false"]


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                found.append(int(entry.name))
    return found


def _state(stat_file: Path) -> str:
    return stat_file.read_text().rsplit(")", 1)[1].split()[0]


def _alive(pid: int) -> bool:
    """Some thread of the process still runs. A zombie (Z) is not alive: an init that does not reap may leave it
    for good. But a zombie thread-group *leader* is not the end of its process: the other threads may still be
    exiting, and the process's files, with their record locks, are closed only by the last of them."""
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except OSError:
        return False
    for task in tasks:
        try:
            if _state(task / "stat") not in ("Z", "X"):
                return True
        except (OSError, IndexError):  # the thread ended while we looked
            continue
    return False


def _leader_alive(pid: int) -> bool:
    """The earlier test's notion of alive, which looks at the thread-group leader only (kept to measure against)."""
    try:
        return _state(Path(f"/proc/{pid}/stat")) not in ("Z", "X")
    except (OSError, IndexError):
        return False


def _lock_is_free(path: Path) -> bool:
    with open(path, "a+") as handle:
        try:
            fcntl.lockf(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return False
        fcntl.lockf(handle, fcntl.LOCK_UN)
        return True


def _wait_for(condition, seconds: float, what: str, interval: float = 0.2) -> float:
    """Poll `condition` until it holds; returns the time.monotonic() at which it did."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return time.monotonic()
        time.sleep(interval)
    raise AssertionError(f"timed out after {seconds:.0f} s waiting for {what}")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_killing_the_launcher_ends_the_workers_and_the_lock_stops_a_second_run(setup, tmp_path, caplog,
                                                                               record_property):
    output = tmp_path / "run"
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    # `--multi_gpu` selects Accelerate's torchrun launcher; without a GPU the two workers run MULTI_CPU over gloo.
    command = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
               "--num_machines", "1", "--main_process_port", str(port), "--mixed_precision", "no",
               "--dynamo_backend", "no", str(REPO / "examples" / "train.py"), *_train_args(setup, output),
               "--max_steps", "100000", "--save_steps", "2"]
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1", ACCELERATE_USE_CPU="1")
    log = open(tmp_path / "launcher.log", "w")
    launcher = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
    workers = []
    try:
        # Any complete checkpoint (save_total_limit removes the older ones while the run goes on).
        _wait_for(lambda: any(output.glob("checkpoint-*/trainer_state.json")) or launcher.poll() is not None,
                  240, "the 2-process run to write a checkpoint")
        assert launcher.poll() is None, (tmp_path / "launcher.log").read_text()[-3000:]
        workers = _children(launcher.pid)
        assert len(workers) == 2, workers
        holder = (output / ".lock").read_text()
        assert holder.startswith("pid ") and int(holder.split()[1]) in workers  # rank 0 holds the lock

        # A second run on the same folder (a resume started beside the live run) stops at once, naming the holder.
        second = subprocess.run([sys.executable, str(REPO / "examples" / "train.py"), *_train_args(setup, output),
                                 "--max_steps", "3", "--resume_from_checkpoint", "latest"],
                                cwd=tmp_path, env=dict(env, ACCELERATE_USE_CPU="1"), capture_output=True, text=True,
                                timeout=240)
        assert second.returncode != 0
        assert f"is in use by another run (pid {holder.split()[1]} on" in second.stderr, second.stderr[-3000:]
        assert launcher.poll() is None and all(_alive(pid) for pid in workers)  # the live run was not disturbed

        os.kill(launcher.pid, signal.SIGKILL)  # as an OOM killer or a lost session would
        launcher.wait(timeout=10)
        leaders_ended = []

        def workers_ended() -> bool:
            if not leaders_ended and not any(_leader_alive(pid) for pid in workers):
                leaders_ended.append(time.monotonic())
            return not any(_alive(pid) for pid in workers)

        ended = _wait_for(workers_ended, 30, f"workers {workers} to end", interval=0.01)
    finally:
        workers = workers or _children(launcher.pid)
        for pid in [launcher.pid, *workers]:
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
        log.close()
    assert "launcher (pid %d)" % launcher.pid in (tmp_path / "launcher.log").read_text()

    # The kernel drops the lock with its holder: nothing stale is left to block the resume. It does so when the
    # holder's last thread has closed its files, which may come after its main thread is seen a zombie: wait for it.
    free = _wait_for(lambda: _lock_is_free(output / ".lock"), 60, "the dead run's lock on output_dir to be released",
                     interval=0.01)
    release = {"after_last_thread": round(free - ended, 3), "after_leaders": round(free - leaders_ended[0], 3)}
    record_property("lock_release_seconds", release)
    print(f"lock released {release['after_last_thread']:.3f} s after the workers' last thread was seen gone, "
          f"{release['after_leaders']:.3f} s after their main threads were")

    # Resumed by one process: training goes on, with a warning that the world size and the effective batch changed.
    latest = max(int(p.name.split("-")[1]) for p in output.glob("checkpoint-*") if (p / "trainer_state.json").is_file())
    model_args = ModelArguments(config_name=str(setup / "config"), processor_name_or_path=str(setup / "processor"))
    data_args = DataArguments(dataset=[str(setup / "data")], referents_per_image=2)
    args = UniRESTrainingArguments(output_dir=str(output), per_device_train_batch_size=2, learning_rate=1e-3,
                                   max_steps=latest + 1, report_to="none", disable_progress_bar=True,
                                   do_final_eval=False, save_steps=0, resume_from_checkpoint="latest")
    with caplog.at_level(logging.INFO, logger="run_support.training_loop"):
        trainer, _ = run_training(model_args, data_args, args)
    assert trainer.state.global_step == latest + 1
    assert "written by 2 process(es) with an effective batch of 4" in caplog.text
    assert "this run has 1 process(es) and an effective batch of 2" in caplog.text
