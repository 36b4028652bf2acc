"""`python -m mres_engine`: every option has --help; publish checks the output before writing the card."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from mres_engine import layout
from mres_engine.__main__ import main
from mres_engine.options import RunnerOptions
from mres_engine.run import run_engine
from tiny_models.engine import write_synth_detection_set
from test_runner_fakes import GROUND_TRUTH_ENV, REJECT_EVERY_ENV, write_ground_truth

REPO = Path(__file__).resolve().parents[2]


def _help(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0
    return capsys.readouterr().out


def test_run_help_lists_runner_and_model_options(capsys):
    text = _help("run", capsys)
    for option in ("--annotations", "--image_dir", "--num_shards", "--workers", "--executor", "--max_shard_size",
                   "--slurm_partition", "--gpus_per_task", "--stages_factory",  # the runner's
                   "--sam_checkpoint", "--sam_min_iou", "--part_detector", "--clip_min_score"):  # the stages'
        assert option in text, option
    assert "{local,slurm,ray}" in text


def test_evaluate_and_publish_help(capsys):
    assert "--ground_truth" in _help("evaluate", capsys) and "--iou_threshold" in _help("evaluate", capsys)
    text = _help("publish", capsys)
    assert all(option in text for option in ("--push_to_hub", "--hub_dataset_id", "--hub_token", "--hub_private_repo"))


def test_usage_and_unknown_command(capsys):
    assert main([]) == 0 and "evaluate" in capsys.readouterr().out
    assert main(["bake"]) == 2 and "unknown command 'bake'" in capsys.readouterr().err


def test_module_entry_point_runs():
    result = subprocess.run([sys.executable, "-m", "mres_engine", "--help"], cwd=REPO,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and "publish" in result.stdout


def test_publish_refuses_an_unfinished_output_then_writes_the_card(tmp_path, monkeypatch, capsys):
    annotations, image_dir, rows = write_synth_detection_set(tmp_path / "set", num_images=4, split="train")
    monkeypatch.setenv(GROUND_TRUTH_ENV, write_ground_truth(rows, tmp_path / "gt.json"))
    monkeypatch.setenv(REJECT_EVERY_ENV, "0")
    out = str(tmp_path / "out")
    run_engine(RunnerOptions(annotations=annotations, image_dir=image_dir, output_dir=out, num_shards=2, workers=1,
                             progress=False, stages_factory="test_runner_fakes:build"))
    record = layout.shard_record_path(out, 1)
    saved = open(record).read()
    os.remove(record)
    capsys.readouterr()
    assert main(["publish", "--output_dir", out]) == 1
    assert "1 of 2 shards are not complete" in capsys.readouterr().err
    with pytest.raises(RuntimeError, match="1 of 2 shards are not complete"):
        main(["publish", "--output_dir", out, "--debug"])  # the traceback with --debug
    open(record, "w").write(saved)
    os.remove(os.path.join(out, "README.md"))
    capsys.readouterr()
    assert main(["publish", "--output_dir", out, "--pretty_name", "Tiny engine set", "--license", "cc-by-4.0"]) == 0
    check = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert check["written"] + check["rejected"] == 4
    card = open(os.path.join(out, "README.md")).read()
    assert "# Tiny engine set" in card and "license: cc-by-4.0" in card and "config_name: annotations" in card


def test_publish_push_is_checked_before_the_output_is_read(tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    assert main(["publish", "--output_dir", str(out), "--push_to_hub"]) == 2
    assert "--hub_dataset_id" in capsys.readouterr().err
    # every test runs offline: the push cannot succeed, and that is said before the shards are checked
    assert main(["publish", "--output_dir", str(out), "--push_to_hub", "--hub_dataset_id", "org/mres-32m"]) == 1
    err = capsys.readouterr().err
    assert "HF_HUB_OFFLINE" in err and "--repo-type dataset" in err and len(err.strip().splitlines()) == 1
    assert not (out / "README.md").exists()
