"""The engine's command line end to end: two workers, SIGKILLs at random moments, reruns, then the
output read by `load_dataset(out, streaming=True)` and trained on by `examples/train.py`."""

import glob
import json
import os
import random
import runpy
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from datasets import load_dataset

from mres_engine.finalize import check_exactly_once
from mres_engine.testing_utils import write_synth_detection_set
from test_runner_fakes import GROUND_TRUTH_ENV, REJECT_EVERY_ENV, SLEEP_ENV, write_ground_truth

REPO = Path(__file__).resolve().parents[2]
NUM_IMAGES = 24
NUM_SHARDS = 12
KILLS = 5


def _command(setup):
    return [
        sys.executable, "-m", "mres_engine", "run",
        "--annotations", setup["annotations"], "--image_dir", setup["image_dir"], "--output_dir", str(setup["out"]),
        "--num_shards", str(NUM_SHARDS), "--workers", "2", "--images_per_batch", "1", "--source", "mres-synth",
        "--stages_factory", "test_runner_fakes:build", "--progress", "False",
        # The fake stages use no CUDA, so workers may fork from the driver (the default, forkserver,
        # imports everything again in each worker: seconds per attempt on a loaded test machine).
        "--start_method", "fork",
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
            # moment of its start (manifest writing), the others at a random moment after their first
            # shard task started, so that most kills land while shards are being written.
            if attempt == 0:
                delay = rng.uniform(1.0, 4.0)
            else:
                _wait_for_a_task(setup["out"], launched, process)
                delay = time.time() - launched + rng.uniform(0.1, 1.2)
            try:
                process.wait(timeout=max(0.0, launched + delay - time.time()))
                kills.append({"attempt": attempt, "delay": round(delay, 2), "killed": False})
                continue
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)  # the driver, the datatrove pool and its workers at once
                process.wait()
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

    from modeling_unires.testing_utils import tiny_config_kwargs
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
