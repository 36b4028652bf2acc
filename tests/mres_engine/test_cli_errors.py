"""CLI errors as users expect (issue 21, case 5): one line naming the file, the item and the key (or the option);
exit code 2 for bad arguments, 1 for bad data; a traceback only with --debug."""

import gzip
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from mres_engine.errors import EngineInputError, item_name
from tiny_models.engine import write_synth_detection_set
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
    with open(annotations, "rb") as source, gzip.open(root / "gzipped.json", "wb") as target:
        target.write(source.read())
    files["gzipped"] = str(root / "gzipped.json")
    json.dump({**data, "annotations": []}, open(root / "no_boxes.json", "w"))
    files["no_boxes"] = str(root / "no_boxes.json")
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


def _main(inputs, monkeypatch, capsys, *arguments):
    """The command line in this process (seconds faster than a new interpreter): (exit code, error lines)."""
    from mres_engine.__main__ import main

    monkeypatch.setenv(GROUND_TRUTH_ENV, inputs["ground_truth"])
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    code = main(["run", "--stages_factory", "test_runner_fakes:build", "--progress", "False", "--num_shards", "2",
                 "--workers", "1", *arguments])
    stderr = capsys.readouterr().err
    return code, [line for line in stderr.splitlines() if "error:" in line or "Traceback" in line]


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


@pytest.mark.parametrize("arguments, words", [
    (["--split", "train/val"], ["--split", "'train/val'", "not a split name"]),
    (["--num_shards", "eight"], ["--num_shards", "invalid int value: 'eight'"]),
])
def test_an_argument_error_prints_one_usage_line_and_the_error(inputs, tmp_path, monkeypatch, capsys, arguments, words):
    from mres_engine.__main__ import main

    try:
        code = main(["run", "--annotations", inputs["files"]["good"], "--output_dir", str(tmp_path / "out"), *arguments])
    except SystemExit as exit:  # argparse's own errors exit
        code = exit.code
    assert code == 2
    stderr = capsys.readouterr().err.strip().splitlines()
    assert len(stderr) <= 2, stderr  # the error and, from argparse, one short usage line: not the 60 lines of --help
    assert stderr[-1].startswith("python -m mres_engine run: error: ") and all(word in stderr[-1] for word in words), stderr
    assert all(line.startswith("usage: python -m mres_engine run [options]") for line in stderr[:-1]), stderr
    assert not (tmp_path / "out").exists()


def test_help_still_lists_every_option(inputs):
    result = subprocess.run([sys.executable, "-m", "mres_engine", "run", "--help"], cwd=REPO, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0
    assert all(option in result.stdout for option in ("--annotations", "--image_dir", "--split", "--num_shards", "--sam_model"))


def test_bad_data_exits_1_naming_the_file_the_item_and_the_key(inputs):
    files, root = inputs["files"], inputs["root"]
    bbox_id = inputs["data"]["annotations"][2]["id"]
    image_id = inputs["data"]["images"][1]["id"]
    cases = {
        "no_bbox": [files["no_bbox"], f"annotations[2] (id {bbox_id})", "key 'bbox'", "missing"],
        "no_width": [files["no_width"], f"images[1] (id {image_id})", "key 'width'", "missing"],
        "truncated": [files["truncated"], "not valid JSON"],
        "not_json": [files["not_json"], "not valid JSON"],
        "gzipped": [files["gzipped"], "a compressed file, not JSON: gzip", "gunzip"],
        "no_boxes": [files["no_boxes"], "no box to segment in 3 images", "no annotation"],
    }
    for name, words in cases.items():
        result, errors = _run(inputs, "--annotations", files[name], "--image_dir", inputs["image_dir"], "--output_dir", str(root / f"out_{name}"))
        assert result.returncode == 1, (name, result.stderr[-2000:])
        line = _one_line(result, errors)
        assert all(word in line for word in words), (words, line)
        # refused before it started: the folder the run created is gone, not left as an "unfinished" run to resume
        assert not os.path.exists(root / f"out_{name}"), sorted(os.listdir(root / f"out_{name}"))


def test_a_refused_run_in_an_existing_folder_says_why_in_its_card(inputs, monkeypatch, capsys):
    out = inputs["root"] / "existing"
    out.mkdir()
    (out / "notes.txt").write_text("the user's own file")
    code, errors = _main(inputs, monkeypatch, capsys, "--annotations", inputs["files"]["truncated"], "--image_dir",
                         inputs["image_dir"], "--output_dir", str(out))
    assert code == 1 and len(errors) == 1 and "not valid JSON" in errors[0]
    card = (out / "README.md").read_text()
    assert "refused" in card and "not valid JSON" in card and "truncated.json" in card
    assert "(unfinished)" not in card and "Rerun the same command" not in card
    assert str(inputs["root"]) not in card  # the reason names the file by its name only
    assert (out / "notes.txt").read_text() == "the user's own file"
    assert not (out / "manifest" / "manifest.json").exists()
    # the input fixed, the same command runs in that folder
    code, errors = _main(inputs, monkeypatch, capsys, "--annotations", inputs["files"]["good"], "--image_dir",
                         inputs["image_dir"], "--output_dir", str(out))
    assert code == 0, errors
    assert "refused" not in (out / "README.md").read_text()


def test_a_forgotten_image_dir_stops_before_anything_is_written(inputs, tmp_path, monkeypatch, capsys):
    """Relative file names without --image_dir: every image would be "missing" and the run end with 0 rows."""
    monkeypatch.chdir(tmp_path)
    code, errors = _main(inputs, monkeypatch, capsys, "--annotations", inputs["files"]["good"], "--output_dir", "out")
    assert code == 1 and len(errors) == 1, errors
    assert "--image_dir" in errors[0] and any(image["file_name"] in errors[0] for image in inputs["data"]["images"]), errors
    assert not (tmp_path / "out").exists()
    # a wrong folder as well
    code, errors = _main(inputs, monkeypatch, capsys, "--annotations", inputs["files"]["good"], "--image_dir", str(tmp_path),
                         "--output_dir", "out")
    assert code == 1 and "--image_dir" in errors[0] and not (tmp_path / "out").exists()


def test_debug_shows_the_traceback(inputs):
    result, _ = _run(inputs, "--annotations", inputs["files"]["no_bbox"], "--image_dir", inputs["image_dir"],
                     "--output_dir", str(inputs["root"] / "debug"), debug=True)
    assert result.returncode == 1 and "Traceback" in result.stderr and "EngineInputError" in result.stderr


def test_the_error_class_the_reader_raises():
    error = EngineInputError("objects365.json", "missing", item=item_name("annotations", 17, 4242), key="bbox")
    assert str(error) == "objects365.json: annotations[17] (id 4242): key 'bbox': missing"
    assert isinstance(error, ValueError) and error.exit_code == 1
    assert (error.file, error.item, error.key, error.reason) == ("objects365.json", "annotations[17] (id 4242)", "bbox", "missing")
