"""A run recorded by what it is (issue 21, case 4): manifest/manifest.json records the inputs and options that
define the output; a rerun with other ones is refused naming each difference, unless --force_new; a run with no
row ends in a summary and a 0-row card; no shard claims completion when its image folder is missing."""

import json
import os
import shutil

import pytest

from mres_engine import layout
from mres_engine.errors import EngineUsageError, RunMismatchError
from mres_engine.executors import EngineShards
from mres_engine.options import RunnerOptions, StageOptions
from mres_engine.run import run_engine
from tiny_models.engine import write_synth_detection_set
from test_runner_fakes import GROUND_TRUTH_ENV, REJECT_EVERY_ENV, write_ground_truth


@pytest.fixture
def synth(tmp_path, monkeypatch):
    annotations, image_dir, rows = write_synth_detection_set(tmp_path / "set", num_images=4, split="train")
    monkeypatch.setenv(GROUND_TRUTH_ENV, write_ground_truth(rows, tmp_path / "gt.json"))
    monkeypatch.setenv(REJECT_EVERY_ENV, "0")
    return {"annotations": annotations, "image_dir": image_dir, "root": tmp_path}


def _options(synth, out, **overrides):
    values = dict(annotations=synth["annotations"], image_dir=synth["image_dir"], output_dir=str(out), num_shards=2, workers=1,
                  source="mres-synth", stages_factory="test_runner_fakes:build", progress=False)
    values.update(overrides)
    return RunnerOptions(**values)


def test_the_manifest_records_what_defines_the_output(synth, tmp_path):
    out = tmp_path / "out"
    run_engine(_options(synth, out), StageOptions(sam_min_iou=0.7))
    run = json.load(open(out / "manifest" / "manifest.json"))["run"]
    data = open(synth["annotations"], "rb").read()
    import hashlib

    assert run["annotations"]["sha256"] == hashlib.sha256(data).hexdigest() and run["annotations"]["size"] == len(data)
    assert run["image_dir"] == os.path.abspath(synth["image_dir"])
    assert (run["split"], run["source"], run["num_shards"]) == ("train", "mres-synth", 2)
    assert run["stage_options"]["sam_min_iou"] == 0.7 and "device" not in run["stage_options"]  # where it runs is not what it is


def test_a_rerun_with_other_inputs_is_refused_naming_each_difference(synth, tmp_path):
    out = tmp_path / "out"
    run_engine(_options(synth, out), StageOptions())
    before = sorted(os.listdir(out / "data"))
    other = tmp_path / "other.json"
    manifest = json.load(open(synth["annotations"]))
    manifest["annotations"] = manifest["annotations"][:-1]
    json.dump(manifest, open(other, "w"))
    with pytest.raises(RunMismatchError) as refused:
        run_engine(_options(synth, out, annotations=str(other), split="validation", source="coco"), StageOptions(clip_min_score=0.9))
    names = [name for name, _, _ in refused.value.differences]
    assert names == ["--annotations", "--split", "--source", "--clip_min_score"]
    message = str(refused.value)
    assert "--split: 'train' -> 'validation'" in message and "--source: 'mres-synth' -> 'coco'" in message
    assert "--clip_min_score: 0.5 -> 0.9" in message and "--force_new" in message and str(other) in message
    assert refused.value.exit_code == 2
    # each alone is refused too, and nothing was touched
    for change in ({"split": "validation"}, {"source": "coco"}, {"annotations": str(other)}):
        with pytest.raises(RunMismatchError):
            run_engine(_options(synth, out, **change), StageOptions())
    with pytest.raises(RunMismatchError, match="--sam_model"):
        run_engine(_options(synth, out), StageOptions(sam_model="org/another-sam"))
    assert sorted(os.listdir(out / "data")) == before
    # options that say where or how fast, not what: allowed
    run_engine(_options(synth, out, workers=2, images_per_batch=3), StageOptions(device="cpu", clip_batch_size=7))
    # the same file elsewhere (another mtime, same bytes) is the same input
    copy = tmp_path / "copy" / "detections.json"
    copy.parent.mkdir()
    shutil.copy(synth["annotations"], copy)
    os.utime(copy, (1, 1))
    run_engine(_options(synth, out, annotations=str(copy)), StageOptions())
    # a new output folder is a new run
    summary = run_engine(_options(synth, tmp_path / "new", annotations=str(other), split="validation"), StageOptions(clip_min_score=0.9))
    assert summary["exactly_once"]["images"] == 4


def test_force_new_clears_the_old_output_and_starts_anew(synth, tmp_path):
    out = tmp_path / "out"
    run_engine(_options(synth, out), StageOptions())
    (out / "my_notes.txt").write_text("mine")
    summary = run_engine(_options(synth, out, split="validation", force_new=True), StageOptions())
    assert summary["exactly_once"]["images"] == 4
    assert all(name.startswith("validation-") for name in os.listdir(out / "data"))
    assert json.load(open(out / "manifest" / "manifest.json"))["run"]["split"] == "validation"
    assert (out / "my_notes.txt").read_text() == "mine"  # only the engine's own files are removed
    assert not [n for n in os.listdir(out) if n.startswith(".trash-")]


def test_a_run_with_no_row_ends_in_a_summary_and_a_card_of_zero_rows(synth, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv(REJECT_EVERY_ENV, "1")  # every image rejected
    out = tmp_path / "out"
    summary = run_engine(_options(synth, out))
    assert summary["exactly_once"] == {**summary["exactly_once"], "written": 0, "rejected": 4, "images": 4}
    assert "4 images: 0 written, 4 rejected" in capsys.readouterr().out
    card = open(out / "README.md").read()
    assert "| train | 0 | 0 | 0 | 0 | 0 |" in card and "This run wrote 0 rows" in card and "unlucky image" in card
    assert json.load(open(out / "stats.json"))["images_written"] == 0


def test_a_missing_image_folder_is_refused_up_front(synth, tmp_path):
    out = tmp_path / "out"
    with pytest.raises(EngineUsageError, match=r"^--image_dir: .*nowhere: no such folder$"):
        run_engine(_options(synth, out, image_dir=str(tmp_path / "nowhere")))
    assert not os.path.exists(out / "stats.json") and not os.path.exists(out / "shards")


def test_no_shard_claims_completion_when_its_image_folder_vanished(synth, tmp_path):
    out = tmp_path / "out"
    options = _options(synth, out, num_shards=1)
    images = tmp_path / "set" / "images"
    run_engine(options)
    os.remove(layout.shard_record_path(str(out), 0))
    shutil.move(str(images), str(tmp_path / "moved"))  # e.g. not mounted on the node that runs the shard
    with pytest.raises(FileNotFoundError, match="image folder .* is not visible"):
        list(EngineShards(options).run(rank=0, world_size=1))
    assert not os.path.exists(layout.shard_record_path(str(out), 0))
