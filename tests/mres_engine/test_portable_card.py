"""A portable card (issue 21, case 3): no path of the building machine in the dataset card, models named by Hub id
or by folder name with the word "local"; an unfinished output read with load_dataset says it holds no data file
instead of failing with a CastError on the manifest's JSON lines."""

import os
import re
import shutil
import tempfile

import pytest
from datasets import load_dataset
from datasets.exceptions import DataFilesNotFoundError

from mres_engine import layout
from mres_engine.finalize import portable_name
from mres_engine.options import RunnerOptions
from mres_engine.run import run_engine
from tiny_models.engine import FakeChatServer, save_tiny_stage_models, tiny_chat_answer, write_synth_detection_set

# an absolute POSIX path: a slash not inside a URL or a relative path, followed by a name and another slash
ABSOLUTE_PATH = re.compile(r"(?<![\w.:/\]()-])/(?:[\w.+-]+/)+[\w.+-]*")


def test_the_card_names_no_local_path(tmp_path):
    annotations, image_dir, _ = write_synth_detection_set(tmp_path / "set", num_images=2, split="train")
    out = tmp_path / "out"
    with FakeChatServer(tiny_chat_answer) as server:
        stage_options = save_tiny_stage_models(tmp_path / "models", server.url)
        run_engine(RunnerOptions(annotations=annotations, image_dir=image_dir, output_dir=str(out), num_shards=1, workers=1,
                                 source="mres-synth", progress=False), stage_options)
    card = open(out / "README.md").read()
    for local in (str(tmp_path), tempfile.gettempdir() + "/", os.path.realpath(str(tmp_path)), os.getcwd() + "/", "127.0.0.1"):
        assert local not in card, local
    assert not ABSOLUTE_PATH.findall(card), ABSOLUTE_PATH.findall(card)
    for name in ("sam", "owlv2", "clip"):
        assert f'"{name} (local folder)"' in card  # the stage options
    assert "model: clip (local folder)" in card  # the CLIP filter's own definition
    assert '"part_vocabulary_cache": "part_vocabulary_cache.json (local file)"' in card
    assert '"captioner_url": "local endpoint"' in card and '"part_sam3_model": "facebook/sam3"' in card  # Hub ids as they are
    assert "Annotations: `detections.json (local file)`" in card and "SHA-256" in card


def test_portable_names(tmp_path):
    (tmp_path / "sam").mkdir()
    (tmp_path / "sam_vit_h.pth").write_bytes(b"")
    assert portable_name(str(tmp_path / "sam")) == "sam (local folder)"
    assert portable_name(str(tmp_path / "sam") + "/") == "sam (local folder)"
    assert portable_name(str(tmp_path / "sam_vit_h.pth")) == "sam_vit_h.pth (local file)"
    assert portable_name("/data/gone/checkpoint.pth") == "checkpoint.pth (local file)"  # not on this node: by its name still
    cache = "/home/me/.cache/huggingface/hub/models--facebook--sam-vit-huge/snapshots/0123abcd"
    assert portable_name(cache) == "facebook/sam-vit-huge"
    for kept in ("openai/clip-vit-base-patch32", "Qwen/Qwen2.5-1.5B-Instruct", "https://api.example.com/v1", "auto", None, 0.5):
        assert portable_name(kept) == kept
    assert portable_name("http://localhost:8000/v1") == portable_name("http://127.0.0.1:9/v1") == "local endpoint"


def test_an_unfinished_output_is_not_read_as_data(tmp_path, monkeypatch):
    """A run killed before any shard completed: load_dataset must not read the manifest and rejects as rows."""
    from test_runner_fakes import GROUND_TRUTH_ENV, write_ground_truth

    annotations, image_dir, rows = write_synth_detection_set(tmp_path / "set", num_images=4, split="train")
    monkeypatch.setenv(GROUND_TRUTH_ENV, write_ground_truth(rows, tmp_path / "gt.json"))
    out = tmp_path / "out"
    run_engine(RunnerOptions(annotations=annotations, image_dir=image_dir, output_dir=str(out), num_shards=2, workers=1,
                             progress=False, stages_factory="test_runner_fakes:build"))
    # what a SIGKILL after the manifest and before the first shard record leaves: no shard, no final card
    for name in ("data", "annotations", "shards", "figures", "logs/completions"):
        shutil.rmtree(out / name)
    for name in ("README.md", "stats.json"):
        os.remove(out / name)
    for path in (out / "rejects").glob("train-*"):
        os.remove(path)
    from mres_engine.finalize import write_unfinished_card

    assert write_unfinished_card(str(out), "train")  # what run_engine writes before the manifest
    assert layout.read_manifest_info(str(out)) is not None
    with pytest.raises(DataFilesNotFoundError):
        next(iter(load_dataset(str(out), split="train", streaming=True)))
    card = open(out / "README.md").read()
    assert "unfinished" in card and not ABSOLUTE_PATH.findall(card)
    # the run resumed to its end replaces it with the real card
    run_engine(RunnerOptions(annotations=annotations, image_dir=image_dir, output_dir=str(out), num_shards=2, workers=1,
                             progress=False, stages_factory="test_runner_fakes:build"))
    assert len(list(load_dataset(str(out), split="train", streaming=True))) > 0
    assert "(unfinished)" not in open(out / "README.md").read()


def test_a_run_refused_for_its_input_leaves_no_folder_or_a_card_that_says_why(tmp_path):
    """Issue 28, case 7: never an "(unfinished)" card telling to rerun a run that cannot resume."""
    out = tmp_path / "out"
    bad = tmp_path / "bad.json"
    bad.write_text("{")
    with pytest.raises(ValueError, match="not valid JSON"):
        run_engine(RunnerOptions(annotations=str(bad), output_dir=str(out), progress=False))
    assert not out.exists()  # the run created it: it is gone
    out.mkdir()
    with pytest.raises(ValueError, match="not valid JSON"):
        run_engine(RunnerOptions(annotations=str(bad), output_dir=str(out), progress=False))
    card = open(out / "README.md").read()
    assert "(refused)" in card and "bad.json" in card and "not valid JSON" in card
    assert "(unfinished)" not in card and "Rerun the same command" not in card and not ABSOLUTE_PATH.findall(card)
    with pytest.raises(DataFilesNotFoundError):
        next(iter(load_dataset(str(out), split="train", streaming=True)))
