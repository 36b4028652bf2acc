"""The engine's command line end to end: two workers, SIGKILLs at random moments, reruns, then the
output read by `load_dataset(out, streaming=True)` and trained on by `examples/train.py`."""

import contextlib
import glob
import json
import os
import random
import runpy
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from datasets import load_dataset

from mres_engine.finalize import check_exactly_once
from tiny_models.engine import write_synth_detection_set
from test_runner_fakes import GROUND_TRUTH_ENV, REJECT_EVERY_ENV, SLEEP_ENV, write_ground_truth

REPO = Path(__file__).resolve().parents[2]
NUM_IMAGES = 24
NUM_SHARDS = 12
KILLS = 5


def _command(setup, out=None, start_method="fork"):
    return [
        sys.executable, "-m", "mres_engine", "run",
        "--annotations", setup["annotations"], "--image_dir", setup["image_dir"], "--output_dir", str(out or setup["out"]),
        "--num_shards", str(NUM_SHARDS), "--workers", "2", "--images_per_batch", "1", "--source", "mres-synth",
        "--stages_factory", "test_runner_fakes:build", "--progress", "False",
        # The fake stages use no CUDA, so workers may fork from the driver (the default, forkserver,
        # imports everything again in each worker: seconds per attempt on a loaded test machine).
        "--start_method", start_method,
    ]


def _environment(setup):
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(Path(__file__).parent), str(REPO), env.get("PYTHONPATH", "")])
    env[GROUND_TRUTH_ENV] = setup["ground_truth"]
    env[REJECT_EVERY_ENV] = "5"
    env["CUDA_VISIBLE_DEVICES"] = ""  # no GPU to pin: the workers need not import torch to count them
    env[SLEEP_ENV] = "0.3"  # per image: a shard of two images spends about 0.6 s in its stages
    return env


def _wait_for_a_task(out, since, process, timeout=120.0):
    """Until a shard task of this attempt has started (datatrove opens its task log) or the run has ended."""
    deadline = time.time() + timeout
    while time.time() < deadline and process.poll() is None:
        if any(os.path.getmtime(p) >= since for p in glob.glob(str(out / "logs" / "logs" / "task_*.log"))):
            return
        time.sleep(0.05)


def _complete_shards(out) -> int:
    return len(glob.glob(str(out / "shards" / "*.json")))


def _wait_for_one_more_shard(out, before, process, timeout=180.0):
    """Until a shard beyond the `before` complete ones is recorded, or the run has ended."""
    deadline = time.time() + timeout
    while time.time() < deadline and process.poll() is None:
        if _complete_shards(out) > before:
            return
        time.sleep(0.05)


def _process_tree(pid):
    """Every process below ``pid``, read from /proc (learn them before ``pid`` dies: they are re-parented then)."""
    children = {}
    for entry in (os.listdir("/proc") if os.path.isdir("/proc/self/task") else []):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    parent = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(parent, []).append(int(entry))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _gone(pid):
    """No such process, or a zombie whose every thread has exited: only then are its files, and locks, released."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
        threads = os.listdir(f"/proc/{pid}/task")
    except (FileNotFoundError, ProcessLookupError):
        return True
    return state in ("Z", "X") and len(threads) <= 1


def _wait_until(condition, timeout, what):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"not within {timeout} s: {what}"
        time.sleep(0.05)


@pytest.fixture(scope="module")
def killed_and_rerun(tmp_path_factory):
    """Run the CLI, SIGKILL its whole process group at KILLS random moments (rerunning after each), then finish."""
    root = tmp_path_factory.mktemp("end_to_end")
    annotations, image_dir, rows = write_synth_detection_set(root / "set", num_images=NUM_IMAGES, split="train")
    setup = {"root": root, "annotations": annotations, "image_dir": image_dir, "rows": rows, "out": root / "out",
             "ground_truth": write_ground_truth(rows, root / "ground_truth.json")}
    command, env = _command(setup), _environment(setup)
    rng = random.Random(2024)
    kills = []
    for attempt in range(KILLS):
        with open(root / f"attempt{attempt}.log", "wb") as log:
            launched = time.time()
            process = subprocess.Popen(command, env=env, cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
                                       start_new_session=True)
            # Python's imports take seconds on a loaded machine: the first attempt is killed at a random
            # moment of its start (manifest writing); the odd ones at a random moment after their first shard task
            # started, so that the kill lands while shards are being written; the even ones just after one more
            # shard was recorded complete (a condition waited for, not a guessed delay: on a loaded machine a shard
            # can take longer than any fixed delay), so that a kill also lands between shards.
            if attempt == 0:
                delay = rng.uniform(1.0, 4.0)
            elif attempt % 2:
                _wait_for_a_task(setup["out"], launched, process)
                delay = time.time() - launched + rng.uniform(0.1, 1.2)
            else:
                _wait_for_one_more_shard(setup["out"], _complete_shards(setup["out"]), process)
                delay = time.time() - launched + rng.uniform(0.0, 0.3)
            try:
                process.wait(timeout=max(0.0, launched + delay - time.time()))
                kills.append({"attempt": attempt, "delay": round(delay, 2), "killed": False})
                continue
            except subprocess.TimeoutExpired:
                tree = _process_tree(process.pid)
                os.killpg(process.pid, signal.SIGKILL)  # the driver, the datatrove pool and its workers at once
                process.wait()
                # the driver is reaped, but its workers end on their own time (a killed process's files are released
                # when its last thread exits): read the folder once all of them are gone
                _wait_until(lambda: all(_gone(pid) for pid in tree), 30, f"the killed run's processes {tree} to end")
        state = {"attempt": attempt, "delay": round(delay, 2), "killed": True,
                 "temporaries": len(glob.glob(str(setup["out"] / "**" / ".tmp-*"), recursive=True))}
        if (setup["out"] / "manifest" / "manifest.json").exists():
            check = check_exactly_once(str(setup["out"]))
            # what a reader trusts after a kill never holds an image twice
            assert not check["duplicated"] and not check["unexpected"], (attempt, check)
            state["complete_shards"] = check["complete_shards"]
        kills.append(state)
    final = subprocess.run(command, env=env, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert final.returncode == 0, final.stdout[-3000:] + final.stderr[-3000:]
    setup["kills"] = kills
    setup["final_stdout"] = final.stdout
    return setup


def test_every_input_image_exactly_once_after_kills(killed_and_rerun):
    setup = killed_and_rerun
    out = setup["out"]
    killed = [k for k in setup["kills"] if k["killed"]]
    assert len(killed) >= KILLS - 1, setup["kills"]
    # the kills landed at different points of the run: before any shard finished, and between shards
    assert any(0 < k.get("complete_shards", 0) < NUM_SHARDS for k in killed), setup["kills"]
    assert any(k["temporaries"] for k in killed), setup["kills"]  # some kills left half-written files behind
    print("kills:", json.dumps(setup["kills"]))

    inputs = [str(image["id"]) for image in json.load(open(setup["annotations"]))["images"]]
    places = Counter()
    # what a reader of the published folder sees: the final names only
    for path in glob.glob(str(out / "data" / "train-*.parquet")):
        places.update(pq.read_table(path, columns=["image_id"]).column("image_id").to_pylist())
    for path in glob.glob(str(out / "rejects" / "*.jsonl")):
        for line in open(path):
            entry = json.loads(line)
            if entry.get("level") == "image" and entry["action"] == "skipped":
                places[entry["image_id"]] += 1
    assert sorted(places) == sorted(inputs)
    assert set(places.values()) == {1}
    unlucky = {i for i in inputs if int(i.rsplit("-", 1)[1]) % 5 == 0}
    written = set(pq.read_table(str(out / "annotations"), columns=["image_id"]).column("image_id").to_pylist())
    assert unlucky and not unlucky & written
    assert not glob.glob(str(out / "**" / ".tmp-*"), recursive=True)
    stats = json.load(open(out / "stats.json"))
    assert stats["images_in"] == NUM_IMAGES and stats["exactly_once"]["written"] == len(written)
    assert "reject_some" in setup["final_stdout"] and "each exactly once" in setup["final_stdout"]


def test_streaming_load_and_two_training_steps(killed_and_rerun, tmp_path, monkeypatch):
    out = killed_and_rerun["out"]
    rows = list(load_dataset(str(out), split="train", streaming=True))
    assert len(rows) == json.load(open(out / "stats.json"))["images_written"]
    assert all(row["image"].size == (row["width"], row["height"]) and row["referents"] for row in rows)

    from tiny_models.unires import tiny_config_kwargs
    from unires.training.scratch import all_sentences, prepare_from_scratch

    prepare_from_scratch(all_sentences(rows), tmp_path, config_kwargs=tiny_config_kwargs(image_size=48), vocab_size=600)
    argv = ["examples/train.py", "--dataset", str(out), "--streaming", "--config_name", str(tmp_path / "config"),
            "--processor_name_or_path", str(tmp_path / "processor"), "--max_steps", "2",
            "--per_device_train_batch_size", "2", "--referents_per_image", "2", "--logging_steps", "1",
            "--do_final_eval", "False", "--eval_split", "", "--report_to", "none", "--disable_progress_bar", "True",
            "--output_dir", str(tmp_path / "run")]
    monkeypatch.setattr(sys, "argv", argv)
    runpy.run_path(str(REPO / "examples" / "train.py"), run_name="__main__")
    log = json.load(open(tmp_path / "run" / "training_log.json"))
    assert [entry["step"] for entry in log if "loss" in entry] == [1, 2]
    assert (tmp_path / "run" / "model.safetensors").exists()


# -- the driver killed alone (issue 27, case 5) -----------------------------------------------------------------

def _written(out):
    """What a run wrote for readers: every shard file's name and rows (images included), and every reject."""
    tables = {}
    for folder in ("data", "annotations"):
        for path in sorted(glob.glob(str(out / folder / "*.parquet"))):
            tables[os.path.relpath(path, out)] = sorted(pq.read_table(path).to_pylist(), key=lambda row: row["image_id"])
    for path in sorted(glob.glob(str(out / "rejects" / "*.jsonl"))):
        tables[os.path.relpath(path, out)] = sorted(open(path).read().splitlines())
    return tables


@pytest.fixture(scope="module")
def one_uninterrupted_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("driver_killed")
    annotations, image_dir, rows = write_synth_detection_set(root / "set", num_images=NUM_IMAGES, split="train")
    setup = {"root": root, "annotations": annotations, "image_dir": image_dir, "out": root / "reference",
             "ground_truth": write_ground_truth(rows, root / "ground_truth.json")}
    result = subprocess.run(_command(setup), env=_environment(setup), cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    setup["written"] = _written(setup["out"])
    return setup


@pytest.mark.skipif(not os.path.isdir("/proc/self/task"), reason="reads the process tree from /proc")
def test_killing_the_driver_alone_ends_its_workers_and_a_rerun_at_once_writes_what_one_run_writes(one_uninterrupted_run):
    """With the default start method, forkserver: the forkserver, the pool's workers and datatrove's manager all end."""
    setup, start_method = one_uninterrupted_run, "forkserver"
    out = setup["root"] / f"killed-{start_method}"
    command, env = _command(setup, out, start_method), _environment(setup)
    launched = time.time()
    with open(setup["root"] / f"killed-{start_method}.log", "wb") as log:
        driver = subprocess.Popen(command, env=env, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        _wait_for_a_task(out, launched, driver)
        # the pool is up: datatrove's manager and two workers (and, with forkserver, the forkserver and a resource tracker)
        _wait_until(lambda: len(_process_tree(driver.pid)) >= 3 or driver.poll() is not None, 60, "the worker pool")
        assert driver.poll() is None, "the run ended before it could be killed"
        holder = (out / ".lock").read_text() if (out / ".lock").exists() else "no lock file"
        tree = _process_tree(driver.pid)
        os.kill(driver.pid, signal.SIGKILL)  # the driver alone
        driver.wait()
        _wait_until(lambda: all(_gone(pid) for pid in tree), 30,
                    f"the driver's processes {[pid for pid in tree if not _gone(pid)]} of {tree} to end")
    finally:
        try:
            os.killpg(driver.pid, signal.SIGKILL)  # whatever is left of its session, should the test have failed
        except ProcessLookupError:
            pass
    assert f"pid {driver.pid} on " in holder  # the driver held the folder's lock
    assert not (out / "stats.json").exists()  # killed before its end
    rerun = subprocess.run(command, env=env, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert _written(out) == setup["written"]


@contextlib.contextmanager
def _lock_held_by_another_process(folder):
    """A child process that holds ``folder``'s lock until the block ends; yields its pid."""
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys; from run_support.output_dir import OutputDirLock; "
                               "OutputDirLock.acquire(sys.argv[1]); print('held', flush=True); sys.stdin.read()", str(folder)],
        cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        yield holder.pid
    finally:
        holder.stdin.close()  # the holder ends
        holder.wait(timeout=60)


def test_a_second_run_on_a_locked_folder_is_refused_naming_the_holder(tmp_path, capsys):
    from mres_engine.__main__ import main

    out = tmp_path / "out"
    annotations, image_dir, _ = write_synth_detection_set(tmp_path / "set", num_images=2, split="train")
    with _lock_held_by_another_process(out) as pid:
        code = main(["run", "--annotations", annotations, "--image_dir", image_dir, "--output_dir", str(out), "--progress", "False"])
    errors = [line for line in capsys.readouterr().err.splitlines() if "error" in line]
    assert code == 1 and len(errors) == 1, errors
    assert "in use by another run" in errors[0] and f"pid {pid} on {socket.gethostname()}" in errors[0], errors
    assert sorted(os.listdir(out)) == [".lock"]  # nothing written


def test_the_slurm_finaliser_takes_the_lock(tmp_path):
    from run_support.output_dir import OutputDirInUseError
    from mres_engine.executors import FinalizeRun

    with _lock_held_by_another_process(tmp_path / "out") as pid:
        with pytest.raises(OutputDirInUseError, match=f"pid {pid} on "):
            list(FinalizeRun(str(tmp_path / "out")).run())
