"""The command line with the real stages (tiny models saved to disk, a fake chat server for the LLM and
the captioner), two worker processes started by datatrove's default forkserver: the output holds
every image once, loads with `load_dataset(streaming=True)`, and `evaluate` compares it with the truth."""

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

from datasets import Dataset, DatasetDict, load_dataset

from dataset_scripts.features import MRES_FEATURES
from dataset_scripts.publish import publish
from mres_engine.evaluation import evaluate_engine_output
from mres_engine.finalize import check_exactly_once
from tiny_models.engine import FakeChatServer, save_tiny_stage_models, tiny_chat_answer, write_synth_detection_set

REPO = Path(__file__).resolve().parents[2]
MODEL_STEPS = ["load_images", "object_masks", "part_vocabulary", "part_masks", "captions", "clip_filter"]


def _as_arguments(options) -> list[str]:
    """StageOptions as command-line flags (the inverse of HfArgumentParser)."""
    argv = []
    for option in dataclasses.fields(options):
        value = getattr(options, option.name)
        if value is not None:
            argv += [f"--{option.name}", str(value)]
    return argv


def test_tiny_models_through_the_command_line_with_two_workers(tmp_path):
    annotations, image_dir, truth = write_synth_detection_set(tmp_path / "set", num_images=4, split="train")
    out = tmp_path / "out"
    with FakeChatServer(tiny_chat_answer) as server:
        options = save_tiny_stage_models(tmp_path / "models", server.url)
        command = [sys.executable, "-m", "mres_engine", "run", "--annotations", annotations,
                   "--image_dir", image_dir, "--output_dir", str(out), "--num_shards", "2", "--workers", "2",
                   "--source", "mres-synth", "--progress", "False", *_as_arguments(options)]
        env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
        result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=400)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]

    check = check_exactly_once(str(out))
    assert (check["images"], check["missing"], check["duplicated"]) == (4, [], [])
    stats = json.load(open(out / "stats.json"))
    assert [s["name"] for s in stats["stages"]][: len(MODEL_STEPS)] == MODEL_STEPS
    assert all(s["seconds"] > 0 for s in stats["stages"] if s["name"] in MODEL_STEPS)

    rows = list(load_dataset(str(out), split="train", streaming=True))
    assert len(rows) == check["written"] > 0
    for row in rows:
        objects = {r["referent_id"] for r in row["referents"] if r["granularity"] == "object"}
        parts = [r for r in row["referents"] if r["granularity"] == "part"]
        assert objects and all(p["parent_id"] in objects for p in parts)
        assert all(r["sentences"] and r["scores"]["clip"] is not None for r in row["referents"])

    rows_with_truth = [row for row in truth if row["referents"]]
    truth_dir = publish(DatasetDict({"train": Dataset.from_list(rows_with_truth, features=MRES_FEATURES)}),
                        str(tmp_path / "truth"))
    report = evaluate_engine_output(str(out), truth_dir)
    objects = report["granularities"]["object"]
    assert objects["ground_truth"] == sum(r["granularity"] == "object" for row in rows_with_truth for r in row["referents"])
    assert 0.0 <= objects["matched_iou"] < 1.0  # random weights: far from the truth, yet measured
    assert set(report["keep_rate"]) >= set(MODEL_STEPS)
    card = open(out / "README.md").read()
    assert "- `clip_filter`: CLIPScore = 2.5 × max(cos, 0)" in card and "model: clip (local folder)" in card and options.clip_model not in card
