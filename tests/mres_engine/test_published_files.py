"""Nothing published names a local path (issue 27, case 4): every file `publish --push_to_hub` would upload is read
for the builder's absolute paths; reject reasons name images relative to --image_dir; the card is never written with
a local path, not even for the moment before a scrub."""

import json
import os
import tempfile

import pytest

from mres_engine import __main__ as cli
from mres_engine.options import RunnerOptions
from mres_engine.run import run_engine
from tiny_models.engine import write_synth_detection_set
from test_runner_fakes import GROUND_TRUTH_ENV, write_ground_truth


def _set_in_a_subfolder(root):
    """Five images under images/sub/ (file_name "sub/..."): one deleted, one truncated; a box of no category."""
    annotations, image_dir, rows = write_synth_detection_set(root / "set", num_images=5, split="train")
    data = json.load(open(annotations))
    os.makedirs(os.path.join(image_dir, "sub"))
    for image in data["images"]:
        os.rename(os.path.join(image_dir, image["file_name"]), os.path.join(image_dir, "sub", image["file_name"]))
        image["file_name"] = "sub/" + image["file_name"]
    # a box the reader skips: the input's reject summary, which the card quotes, names its file
    data["annotations"].append({**data["annotations"][0], "id": 999, "category_id": 999})
    json.dump(data, open(annotations, "w"))
    missing, truncated = data["images"][1]["file_name"], data["images"][2]["file_name"]
    os.remove(os.path.join(image_dir, missing))
    content = open(os.path.join(image_dir, truncated), "rb").read()
    open(os.path.join(image_dir, truncated), "wb").write(content[: len(content) // 2])
    return annotations, image_dir, rows, missing, truncated


@pytest.fixture
def built(tmp_path, monkeypatch):
    annotations, image_dir, rows, missing, truncated = _set_in_a_subfolder(tmp_path)
    monkeypatch.setenv(GROUND_TRUTH_ENV, write_ground_truth(rows, tmp_path / "gt.json"))
    cards = []  # every README.md as it is put in place, before anything could change it
    replace = os.replace

    def recording_replace(source, destination, *args, **kwargs):
        if os.path.basename(destination) == "README.md":
            cards.append(open(source, encoding="utf-8").read())
        return replace(source, destination, *args, **kwargs)

    monkeypatch.setattr(os, "replace", recording_replace)
    out = tmp_path / "out"
    run_engine(RunnerOptions(annotations=annotations, image_dir=image_dir, output_dir=str(out), num_shards=2, workers=1,
                             source="mres-synth", progress=False, stages_factory="test_runner_fakes:build"))
    monkeypatch.setattr(os, "replace", replace)
    local = {str(tmp_path), os.path.realpath(tmp_path), os.path.abspath(out), os.path.abspath(image_dir),
             os.path.abspath(annotations), tempfile.gettempdir().rstrip("/") + "/"}
    return {"out": out, "cards": cards, "local": sorted(local), "missing": missing, "truncated": truncated}


def _uploaded_files(out, monkeypatch):
    """What `python -m mres_engine publish --push_to_hub` would upload: the folder filtered by its patterns, as
    huggingface_hub's upload_folder filters it (no Hub: access is granted and the upload only listed)."""
    from huggingface_hub.hf_api import DEFAULT_IGNORE_PATTERNS
    from huggingface_hub.utils import filter_repo_objects

    import run_support.hub
    import dataset_scripts.publish

    pushed = {}

    def list_upload(folder, repo_id, *, allow_patterns=None, ignore_patterns=None, **_):
        names = [os.path.relpath(os.path.join(root, name), folder) for root, _, files in os.walk(folder) for name in files]
        pushed["files"] = sorted(filter_repo_objects(names, allow_patterns=allow_patterns,
                                                     ignore_patterns=list(ignore_patterns or []) + DEFAULT_IGNORE_PATTERNS))
        return f"https://huggingface.co/datasets/{repo_id}"

    granted = lambda repo_id, *args, **kwargs: repo_id  # noqa: E731
    monkeypatch.setattr(run_support.hub, "check_push_access", granted)
    monkeypatch.setattr(dataset_scripts.publish, "check_push_access", granted)
    monkeypatch.setattr(dataset_scripts.publish, "push_folder", list_upload)
    assert cli.main(["publish", "--output_dir", str(out), "--push_to_hub", "--hub_dataset_id", "org/mres"]) == 0
    return pushed["files"]


def test_no_uploaded_file_names_a_local_path(built, monkeypatch):
    out = built["out"]
    files = _uploaded_files(out, monkeypatch)
    assert "README.md" in files and "stats.json" in files
    assert any(f.startswith("rejects/") for f in files) and any(f.startswith("data/") for f in files)
    for name in files:
        content = open(out / name, "rb").read()
        for local in built["local"]:
            assert local.encode() not in content, (name, local)
    reasons = [json.loads(line)["reason"] for path in (out / "rejects").glob("train-*.jsonl") for line in open(path)]
    assert f"missing image: {built['missing']}" in reasons
    assert any(r.startswith(f"corrupt image: {built['truncated']}: ") for r in reasons), reasons


def test_the_card_is_never_written_with_a_local_path(built):
    """A run killed between writing its card and a scrub must not leave the output folder's path in it."""
    cards = built["cards"]
    assert len(cards) >= 2 and "(unfinished)" in cards[0] and "(unfinished)" not in cards[-1]
    for card in cards:
        for local in built["local"]:
            assert local not in card, local
