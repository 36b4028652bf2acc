"""Every path option of every example reports a mistyped local path as a missing path (issue 28, case 6), in one
line with exit code 2, before any output folder is created; and the cheap refusals of case 8 (no --dataset, an
unfinished engine run) answer before torch is imported."""

import importlib.util
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
TYPOS = ["outputs/demo/modle", "./outputs/demo/modle"]

# (script, option) -> the command line around the mistyped value; "{typo}" marks it. The other paths exist
# (made by `workdir`), and every output goes to out/, which must not appear.
COMMANDS = {
    ("train.py", "--model_name_or_path"): ["--dataset", "data", "--model_name_or_path", "{typo}", "--output_dir", "out"],
    ("train.py", "--config_name"): ["--dataset", "data", "--config_name", "{typo}", "--output_dir", "out"],
    ("train.py", "--processor_name_or_path"): ["--dataset", "data", "--model_name_or_path", "model",
                                               "--processor_name_or_path", "{typo}", "--output_dir", "out"],
    ("train.py", "--clip_name_or_path"): ["--dataset", "data", "--clip_name_or_path", "{typo}", "--output_dir", "out"],
    ("train.py", "--dataset"): ["--dataset", "data", "{typo}", "--config_name", "model", "--output_dir", "out"],
    ("train.py", "--eval_dataset"): ["--dataset", "data", "--eval_dataset", "{typo}", "--config_name", "model",
                                     "--output_dir", "out"],
    ("evaluate_model.py", "--model"): ["--model", "{typo}", "--dataset", "data", "--output", "out/result.json"],
    ("evaluate_model.py", "--dataset"): ["--model", "model", "--dataset", "{typo}", "--output", "out/result.json"],
    ("evaluate_model.py", "--data_dir"): ["--model", "model", "--dataset", "refcoco_m", "--data_dir", "{typo}",
                                          "--output", "out/result.json"],
    ("evaluate_model.py", "--model_type"): ["--model_type", "callable:{typo}.py:segment", "--dataset", "data",
                                            "--output", "out/result.json"],
    ("evaluate_model.py", "--compare"): ["--compare", "result.json", "{typo}"],
    ("predict.py", "--model"): ["--model", "{typo}", "--image", "photo.png", "the dog", "--output_dir", "out"],
    ("predict.py", "--image"): ["--model", "model", "--image", "{typo}", "the dog", "--output_dir", "out"],
    ("app.py", "--model"): ["--model", "{typo}"],
    ("build_dataset.py", "--data_dir"): ["refcoco-m", "--data_dir", "{typo}", "--output_dir", "out"],
    ("build_dataset.py", "--image_dir"): ["refcoco", "--data_dir", "data", "--image_dir", "{typo}", "--output_dir",
                                          "out"],
    ("build_dataset.py", "--annotation_dir"): ["refcoco-m", "--data_dir", "data", "--annotation_dir", "{typo}",
                                               "--output_dir", "out"],
    ("train_captioner.py", "--base_model"): ["--coco_dir", "data", "--base_model", "{typo}", "--output_dir", "out"],
    ("train_captioner.py", "--coco_dir"): ["--coco_dir", "{typo}", "--base_model", "model", "--output_dir", "out"],
    ("train_captioner.py", "--paco_dir"): ["--paco_dir", "{typo}", "--base_model", "model", "--output_dir", "out"],
    ("caption_boxes.py", "--model"): ["--model", "{typo}", "--image", "photo.png", "--box", "0,0,1,1"],
    ("caption_boxes.py", "--base_model"): ["--model", "model", "--base_model", "{typo}", "--image", "photo.png",
                                           "--box", "0,0,1,1"],
    ("caption_boxes.py", "--image"): ["--model", "model", "--image", "{typo}", "--box", "0,0,1,1"],
    ("caption_boxes.py", "--boxes_file"): ["--model", "model", "--boxes_file", "{typo}", "--output", "out/c.jsonl"],
    ("build_dataset.py", "--mask_dir"): ["refcoco-m", "--data_dir", "data", "--mask_dir", "{typo}", "--output_dir",
                                         "out"],
}


def _main(script):
    """The script's `main`, loaded by path (examples are not a package)."""
    spec = importlib.util.spec_from_file_location(f"examples_{script[:-3]}_paths", REPO / "examples" / script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    """A working folder as after `make demo`: outputs/demo exists (so outputs/demo/modle can only be a path), and
    the other inputs of each command exist."""
    monkeypatch.chdir(tmp_path)
    for folder in ("outputs/demo", "model", "data"):
        (tmp_path / folder).mkdir(parents=True)
    (tmp_path / "photo.png").write_bytes(b"")
    (tmp_path / "result.json").write_text("{}")
    return tmp_path


@pytest.mark.parametrize("typo", TYPOS)
@pytest.mark.parametrize("script, option", list(COMMANDS))
def test_a_mistyped_path_is_a_missing_path_before_any_folder_is_made(script, option, typo, workdir, capsys):
    argv = [item.replace("{typo}", typo) for item in COMMANDS[(script, option)]]
    with pytest.raises(SystemExit) as exit_info:
        _main(script)(argv)
    error = capsys.readouterr().err
    assert exit_info.value.code == 2, error[-2000:]
    assert re.search(rf"error: {re.escape(option)}: No [\w ]+ at {re.escape(typo)}", error), error[-2000:]
    assert "huggingface.co" not in error and "Repo id" not in error and "Traceback" not in error
    assert len(error.strip().splitlines()) == 2, error  # one usage line and the error
    assert not (workdir / "out").exists()


CHEAP = r"""
import importlib.util, json, sys
report, runs = sys.argv[1], json.loads(sys.argv[2])
answers = []
for script, argv in runs:
    spec = importlib.util.spec_from_file_location("x", f"{REPO}/examples/{script}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    try:
        module.main(argv)
        code = "no exit"
    except SystemExit as exit:
        code = exit.code
    answers.append({"code": code, "heavy": sorted({"torch", "datasets", "accelerate"} & set(sys.modules))})
json.dump(answers, open(report, "w"))
"""


def test_no_dataset_and_an_unfinished_engine_run_are_refused_before_torch(tmp_path):
    # Issue 28, case 8: both came as tracebacks after ~15 s of imports. An engine run that has not finished has
    # its manifest and no stats.json yet (mres_engine.layout).
    live = tmp_path / "engine-run"
    (live / "manifest").mkdir(parents=True)
    (live / "manifest" / "manifest.json").write_text("{}")
    runs = [
        ("train.py", ["--config_name", str(tmp_path), "--output_dir", str(tmp_path / "out")]),
        ("train.py", ["--dataset", str(live), "--output_dir", str(tmp_path / "out")]),
        ("evaluate_model.py", ["--model", str(tmp_path), "--dataset", str(live)]),
        ("evaluate_model.py", ["--model_type", "callable:w:f", "--dataset", "mres-synth", "--data_dir", str(live)]),
        ("evaluate_model.py", ["--model", str(tmp_path)]),
    ]
    report = tmp_path / "report.json"
    result = subprocess.run([sys.executable, "-c", CHEAP.replace("{REPO}", str(REPO)), str(report), json.dumps(runs)],
                            cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    answers = json.loads(report.read_text())
    assert [answer["heavy"] for answer in answers] == [[]] * len(runs), answers
    assert answers[0]["code"] == 2 and "error: --dataset is required" in result.stderr
    for answer in answers[1:4]:
        assert "is a data-engine run that has not finished" in str(answer["code"])
        assert str(live) in answer["code"]
    assert answers[4]["code"] == 2 and "--dataset is required" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "out").exists()


def test_the_engine_layout_names_are_the_ones_checked():
    from run_support import sources
    from mres_engine import layout

    assert sources.ENGINE_MANIFEST == f"{layout.MANIFEST_DIR}/{layout.MANIFEST_INFO}"
    assert sources.ENGINE_STATS == layout.STATS_FILE


def test_evaluate_knows_every_dataset_shorthand():
    from unires.evaluation.dataset_identity import ALIASES, SHORTHANDS

    spec = importlib.util.spec_from_file_location("examples_evaluate_shorthands",
                                                  REPO / "examples" / "evaluate_model.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert set(module.DATASET_SHORTHANDS) == set(SHORTHANDS) | set(ALIASES)
