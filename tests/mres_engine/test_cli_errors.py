"""CLI errors as users expect (issue 21, case 5): one line naming the file, the item and the key (or the option);
exit code 2 for bad arguments, 1 for bad data; a traceback only with --debug."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from mres_engine.errors import EngineInputError, item_name
from mres_engine.testing_utils import write_synth_detection_set
from test_runner_fakes import GROUND_TRUTH_ENV, write_ground_truth

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli_errors")
    annotations, image_dir, rows = write_synth_detection_set(root / "set", num_images=3, split="train")
    data = json.load(open(annotations))
    files = {"good": annotations}
    (root / "truncated.json").write_text(open(annotations).read()[:150])
    files["truncated"] = str(root / "truncated.json")
    (root / "not_json.json").write_text('{"images": [}')
    files["not_json"] = str(root / "not_json.json")
    for name, section, index, key in (("no_bbox", "annotations", 2, "bbox"), ("no_width", "images", 1, "width")):
        broken = json.loads(json.dumps(data))
        del broken[section][index][key]
        json.dump(broken, open(root / f"{name}.json", "w"))
        files[name] = str(root / f"{name}.json")
    (root / "a_file").write_text("not a folder")
    return {"root": root, "image_dir": image_dir, "files": files, "data": data,
            "ground_truth": write_ground_truth(rows, root / "gt.json")}


def _run(inputs, *arguments, debug=False):
    command = [sys.executable, "-m", "mres_engine", "run", "--stages_factory", "test_runner_fakes:build", "--progress", "False",
               "--num_shards", "2", "--workers", "1", *arguments] + (["--debug"] if debug else [])
    env = {**os.environ, GROUND_TRUTH_ENV: inputs["ground_truth"], "CUDA_VISIBLE_DEVICES": "",
           "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent), str(REPO), os.environ.get("PYTHONPATH", "")])}
    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    errors = [line for line in result.stderr.splitlines() if "error:" in line or "Traceback" in line]
    return result, errors


def _one_line(result, errors):
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    assert len(errors) == 1, result.stderr[-3000:]
    assert errors[0].startswith("python -m mres_engine run: error: ")
    return errors[0]


def test_bad_arguments_exit_2_in_one_line_naming_the_option(inputs):
    root, good = inputs["root"], inputs["files"]["good"]
    cases = [
        (["--annotations", str(root / "missing.json"), "--output_dir", str(root / "o1")], ["--annotations", "missing.json", "no such file"]),
        (["--annotations", good, "--output_dir", str(root / "a_file")], ["--output_dir", "a_file", "is a file"]),
        (["--annotations", good, "--output_dir", str(root / "o2"), "--num_shards", "0"], ["--num_shards", "must be >= 1, got 0"]),
        (["--annotations", good, "--image_dir", str(root / "nowhere"), "--output_dir", str(root / "o3")], ["--image_dir", "nowhere", "no such folder"]),
        (["--output_dir", str(root / "o4")], ["--annotations", "required"]),
        (["--annotations", good, "--output_dir", str(root / "o5"), "--bogus_option", "1"], ["--bogus_option"]),
    ]
    for arguments, words in cases:
        result, errors = _run(inputs, "--image_dir", inputs["image_dir"], *arguments)
        assert result.returncode == 2, (arguments, result.stderr[-2000:])
        line = _one_line(result, errors)
        assert all(word in line for word in words), (words, line)


def test_bad_data_exits_1_naming_the_file_the_item_and_the_key(inputs):
    files, root = inputs["files"], inputs["root"]
    bbox_id = inputs["data"]["annotations"][2]["id"]
    image_id = inputs["data"]["images"][1]["id"]
    cases = {
        "no_bbox": [files["no_bbox"], f"annotations[2] (id {bbox_id})", "key 'bbox'", "missing"],
        "no_width": [files["no_width"], f"images[1] (id {image_id})", "key 'width'", "missing"],
        "truncated": [files["truncated"], "not valid JSON"],
        "not_json": [files["not_json"], "not valid JSON"],
    }
    for name, words in cases.items():
        result, errors = _run(inputs, "--annotations", files[name], "--image_dir", inputs["image_dir"], "--output_dir", str(root / f"out_{name}"))
        assert result.returncode == 1, (name, result.stderr[-2000:])
        line = _one_line(result, errors)
        assert all(word in line for word in words), (words, line)
        assert not os.path.exists(root / f"out_{name}" / "manifest" / "manifest.json")


def test_debug_shows_the_traceback(inputs):
    result, _ = _run(inputs, "--annotations", inputs["files"]["no_bbox"], "--image_dir", inputs["image_dir"],
                     "--output_dir", str(inputs["root"] / "debug"), debug=True)
    assert result.returncode == 1 and "Traceback" in result.stderr and "EngineInputError" in result.stderr


def test_the_error_class_the_reader_raises():
    error = EngineInputError("objects365.json", "missing", item=item_name("annotations", 17, 4242), key="bbox")
    assert str(error) == "objects365.json: annotations[17] (id 4242): key 'bbox': missing"
    assert isinstance(error, ValueError) and error.exit_code == 1
    assert (error.file, error.item, error.key, error.reason) == ("objects365.json", "annotations[17] (id 4242)", "bbox", "missing")
