"""`examples/evaluate_model.py --dataset <name> --data_dir <release>` on fixtures shaped like InstructPart,
GroundingSuite-Eval and ReasonSeg as released, and `--dataset <folder>` on a folder of one's own data.

The trivial `full_image` model needs no checkpoint, and its IoU is |mask| / |image| for every expression, so each
figure is checked against a hand computation; one run uses a tiny UniRES. Every result JSON holds the dataset's
identity (builder, config, the files read with their sha256) and, for a benchmark, its own metric conventions beside
ours; a malformed row stops the command with one line naming the file, the line (or entry) and the key.
"""

import hashlib
import importlib.util
import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils

REPO = Path(__file__).resolve().parents[2]
W, H = 40, 30
AREA = W * H


def _box(x0, y0, x1, y1):
    m = np.zeros((H, W), np.uint8)
    m[y0:y1, x0:x1] = 1
    return m


def _rle(mask):
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode()}


def _image(path, colour="gray"):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.new("RGB", (W, H), colour).save(path)


# -- fixtures as released (the builders' own tests hold the format's details; these are the CLI's inputs) ----------


def write_instructpart(root, entries=None):
    """InstructPart/test: data_test.json, images/{sample}.jpg and masks/{sample}.png per (image, object, part)."""
    masks = {"knife_000953-knife-blade": _box(2, 2, 20, 8), "knife_000953-knife-handle": _box(20, 2, 30, 8),
             "mug_000001-coffee_mug-handle": _box(5, 10, 9, 20)}
    folder = root / "test"
    for name, mask in masks.items():
        _image(str(folder / "images" / f"{name}.jpg"))
        os.makedirs(folder / "masks", exist_ok=True)
        Image.fromarray(mask * 255).save(folder / "masks" / f"{name}.png")

    def part(obj, name, affordance):
        return {"object": obj, "part": name, "affordance": affordance, "action": affordance, "instruction": [
            f"If I want to {affordance}, which part of the {obj} should I use?",
            f"Identify the part of the {obj} used to {affordance}.", f"Where is the {name} of the {obj}?",
            f"Where is the {name} of the {obj} that can {affordance}?", f"{name} of the {obj}",
            f"{name} of the {obj} that can {affordance}"]}

    entries = entries or [
        {"image_path": "knife_000953.jpg", "part_list": [part("knife", "blade", "cut"), part("knife", "handle", "hold")]},
        {"image_path": "mug_000001.jpg", "part_list": [part("coffee mug", "handle", "hold")]},
    ]
    (folder / "data_test.json").write_text(json.dumps(entries))
    return root, [108, 60, 40]  # the part masks' areas


def write_groundingsuite(root, edit=None):
    """GroundingSuite-Eval.jsonl (idx, image_path under unlabeled2017/, class_id, label, caption, box, RLE)."""
    lines = [
        {"idx": 0, "image_path": "unlabeled2017/000000000267.jpg", "class_id": 4, "label": "a plane",
         "caption": "A white plane in the sky.", "box": [2, 2, 20, 12], "segmentation": _rle(_box(2, 2, 20, 12))},
        {"idx": 1, "image_path": "unlabeled2017/000000000615.jpg", "class_id": 1, "label": "smoke",
         "caption": "White smoke trailing behind.", "box": [0, 20, 40, 30], "segmentation": _rle(_box(0, 20, 40, 30))},
        {"idx": 2, "image_path": "unlabeled2017/000000000267.jpg", "class_id": 2, "label": "the tail",
         "caption": "The tail of the plane.", "box": [2, 2, 6, 12], "segmentation": _rle(_box(2, 2, 6, 12))},
    ]
    if edit:
        edit(lines)
    for name in ("000000000267.jpg", "000000000615.jpg"):
        _image(str(root / "unlabeled2017" / name))
    with open(root / "GroundingSuite-Eval.jsonl", "w", encoding="utf-8") as f:
        f.writelines(json.dumps(line) + "\n" for line in lines)
    return root, [180, 400, 40]


def write_reasonseg(root, edit=None):
    """ReasonSeg/val/{name}.jpg + {name}.json (labelme shapes; an ignore hole in a, a flag shape)."""
    def rect(x0, y0, x1, y1):
        return [[x0, y0], [x1, y0], [x1, y1], [x0, y1]]

    samples = {
        "a": {"text": ["Where would you sit after a long walk?", "the bench"], "is_sentence": True,
              "shapes": [{"label": "target", "points": rect(2, 2, 30, 20)},
                         {"label": "ignore", "points": rect(10, 8, 16, 14)},
                         {"label": "flag", "points": rect(32, 22, 38, 28)}]},
        "b": {"text": ["the sign"], "is_sentence": False, "shapes": [{"label": "target", "points": rect(5, 5, 12, 12)}]},
    }
    if edit:
        edit(samples)
    folder = root / "ReasonSeg" / "val"
    for name, anno in samples.items():
        _image(str(folder / f"{name}.jpg"), "green")
        (folder / f"{name}.json").write_text(json.dumps(anno))
    # LISA paints integer rectangles with their outline: both far edges in; a's ignore hole is background here
    return root, [29 * 19 - 7 * 7, 8 * 8]


def write_own_folder(root, edit=None):
    """my_folder/{train,validation}/: images and metadata.jsonl (a PNG mask, an RLE part with its parent)."""
    rows = [{"file_name": "a.png", "referents": [
        {"id": "car", "granularity": "object", "category": "car", "sentences": ["the car", "the blue car"],
         "mask": "masks/car.png"},
        {"id": "wheel", "granularity": "part", "category": "wheel", "parent": "car", "sentences": ["its wheel"],
         "mask": _rle(_box(6, 16, 12, 22))}]}]
    if edit:
        edit(rows)
    for split in ("train", "validation"):
        _image(str(root / split / "a.png"), "blue")
        os.makedirs(root / split / "masks", exist_ok=True)
        Image.fromarray(_box(4, 6, 24, 22) * 255).save(root / split / "masks" / "car.png")
        with open(root / split / "metadata.jsonl", "w", encoding="utf-8") as f:
            f.writelines(json.dumps(row) + "\n" for row in rows)
    return root, {"object": [320, 320], "part": [36]}


# -- the command ----------------------------------------------------------------------------------------------------


def evaluate_main():
    spec = importlib.util.spec_from_file_location("examples_evaluate_benchmarks", REPO / "examples" / "evaluate_model.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


def _sha256(path):
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _run(tmp_path, *args):
    output = tmp_path / "out" / "result.json"
    evaluate_main()([*args, "--model_type", "full_image", "--no_progress", "--cache_dir", str(tmp_path / "cache"),
                     "--output", str(output)])
    return json.loads(output.read_text()), output.with_suffix(".md").read_text()


@pytest.mark.parametrize("name, write, split, builder, config, files", [
    ("instructpart", write_instructpart, "test", "InstructPart", "task", ["test/data_test.json"]),
    ("groundingsuite", write_groundingsuite, "test", "GroundingSuiteEval", "default", ["GroundingSuite-Eval.jsonl"]),
    ("reasonseg", write_reasonseg, "val", "ReasonSeg", "default", ["ReasonSeg/val/a.json", "ReasonSeg/val/b.json"]),
])
def test_each_benchmark_is_scored_with_its_identity_and_conventions(tmp_path, name, write, split, builder, config,
                                                                    files):
    root, areas = write(tmp_path / name)
    result, report = _run(tmp_path, "--dataset", name, "--data_dir", str(root))  # --split: the benchmark's own
    entry = result["splits"][split]
    identity = entry["dataset"]
    assert (identity["name"], identity["builder"], identity["config"]) == (name, builder, config)
    assert [(f["path"], f["sha256"]) for f in identity["files"]] == [(f, _sha256(root / f)) for f in files]
    assert identity["counts"]["expressions"] == len(areas) and identity["build"]["summary"].startswith("kept ")
    # full_image: every expression's IoU is its mask's share of the image
    assert entry["metrics"]["object+part"]["mIoU"] == pytest.approx(100 * np.mean(areas) / AREA, abs=1e-6)
    assert entry["metrics"]["object+part"]["oIoU"] == pytest.approx(100 * sum(areas) / (len(areas) * AREA), abs=1e-6)
    conventions = entry["benchmark_conventions"]
    assert conventions["key"] == name and "our mIoU" in conventions["metrics"]["gIoU"]
    for key in ("source", "empty_target", "target", "text", "fields", "splits", "threshold"):
        assert conventions[key], key
    assert conventions["options_as_theirs"]["resolution"] == {"theirs": "original", "this_run": "original", "same": True}
    assert f"Benchmark conventions ({conventions['benchmark']}), beside ours:" in report
    assert f"- empty_target: {conventions['empty_target']}" in report


def test_groundingsuite_options_are_compared_with_their_evaluators(tmp_path):
    root, _ = write_groundingsuite(tmp_path / "gs")
    default, report = _run(tmp_path, "--dataset", "gseval", "--data_dir", str(root))
    compared = default["splits"]["test"]["benchmark_conventions"]["options_as_theirs"]
    assert compared["empty_gt"] == {"theirs": "zero", "this_run": "one_if_both_empty", "same": False}
    assert "- options unlike their evaluator's: empty_gt (theirs zero, this run one_if_both_empty)" in report
    theirs, report = _run(tmp_path, "--dataset", "groundingsuite", "--data_dir", str(root), "--empty_gt", "zero")
    assert all(v["same"] for v in theirs["splits"]["test"]["benchmark_conventions"]["options_as_theirs"].values())
    assert "- options as their evaluator's: resolution=original, empty_gt=zero" in report
    labels, _ = _run(tmp_path, "--dataset", "groundingsuite", "--data_dir", str(root), "--dataset_config", "label")
    assert labels["splits"]["test"]["dataset"]["config"] == "label"
    # the same masks, other sentences: the annotations' fingerprint tells the two apart
    assert labels["splits"]["test"]["dataset"]["annotations_sha256"] != theirs["splits"]["test"]["dataset"][
        "annotations_sha256"]


def test_an_own_data_folder_is_built_on_the_fly_and_scored(tmp_path):
    root, areas = write_own_folder(tmp_path / "my_folder")
    result, report = _run(tmp_path, "--dataset", str(root), "--split", "validation")
    entry = result["splits"]["validation"]
    identity = entry["dataset"]
    assert (identity["name"], identity["builder"], identity["path"]) == ("own_data", "OwnData", str(root))
    assert identity["files"] == [{"path": "validation/metadata.jsonl", "bytes": os.path.getsize(
        root / "validation" / "metadata.jsonl"), "sha256": _sha256(root / "validation" / "metadata.jsonl")}]
    assert identity["counts"] == {"images": 1, "referents": 2, "objects": 1, "parts": 1, "expressions": 3,
                                  "object_expressions": 2, "part_expressions": 1}
    for granularity in ("object", "part"):
        assert entry["metrics"][granularity]["mIoU"] == pytest.approx(100 * np.mean(areas[granularity]) / AREA)
    assert entry["benchmark_conventions"] is None and "Benchmark conventions" not in report
    # the shorthand with --data_dir reads the same rows
    again, _ = _run(tmp_path, "--dataset", "own-data", "--data_dir", str(root), "--split", "validation")
    assert again["splits"]["validation"]["dataset"]["annotations_sha256"] == identity["annotations_sha256"]


def test_a_tiny_unires_is_evaluated_on_an_own_data_folder(tmp_path):
    from tiny_models.unires import tiny_model_and_processor

    model, processor = tiny_model_and_processor(image_size=48)
    model.save_pretrained(tmp_path / "model")
    processor.save_pretrained(tmp_path / "model")
    root, _ = write_own_folder(tmp_path / "my_folder")
    output = tmp_path / "unires.json"
    evaluate_main()(["--model", str(tmp_path / "model"), "--dataset", str(root), "--split", "train", "validation",
                     "--device", "cpu", "--no_progress", "--cache_dir", str(tmp_path / "cache"), "--output", str(output)])
    result = json.loads(output.read_text())
    assert set(result["splits"]) == {"train", "validation"}
    for entry in result["splits"].values():
        assert entry["metrics"]["object+part"]["count"] == 3 and 0 <= entry["metrics"]["object+part"]["mIoU"] <= 100
        assert entry["dataset"]["builder"] == "OwnData"


def _refusal(tmp_path, *args):
    with pytest.raises(SystemExit) as info:
        _run(tmp_path, *args)
    message = str(info.value.code)
    assert message.startswith("error: ") and "\n" not in message and "Traceback" not in message
    assert not (tmp_path / "out" / "result.json").exists()
    return message[len("error: "):]


def test_malformed_rows_stop_the_command_naming_file_line_and_key(tmp_path):
    root, _ = write_own_folder(tmp_path / "mine", edit=lambda rows: rows[0]["referents"][1].pop("sentences"))
    # the folder is built whole (every split checked), train first
    assert _refusal(tmp_path, "--dataset", str(root), "--split", "validation") == (
        f"{root / 'train' / 'metadata.jsonl'}, line 1, key 'referents[1].sentences': missing")

    root, _ = write_groundingsuite(tmp_path / "gs", edit=lambda lines: lines[1].pop("segmentation"))
    assert _refusal(tmp_path, "--dataset", "groundingsuite", "--data_dir", str(root)) == (
        f"{root / 'GroundingSuite-Eval.jsonl'}, line 2, key 'segmentation': missing")

    root, _ = write_reasonseg(tmp_path / "rs", edit=lambda samples: samples["b"].pop("is_sentence"))
    assert _refusal(tmp_path, "--dataset", "reasonseg", "--data_dir", str(root)) == (
        f"{root / 'ReasonSeg' / 'val' / 'b.json'}, the sample, key 'is_sentence': missing")

    root, _ = write_instructpart(tmp_path / "ip", entries=[{"image_path": "knife_000953.jpg", "part_list": [
        {"object": "knife", "instruction": ["x"] * 6}]}])
    assert _refusal(tmp_path, "--dataset", "instructpart", "--data_dir", str(root)) == (
        f"{root / 'test' / 'data_test.json'}, entry [0] (knife_000953.jpg), key 'part_list[0].part': missing")


def test_a_split_the_benchmark_does_not_have_is_named(tmp_path):
    root, _ = write_reasonseg(tmp_path / "rs")
    assert _refusal(tmp_path, "--dataset", "reasonseg", "--data_dir", str(root), "--split", "test") == (
        f"reasonseg at {root} has no split 'test'; its splits: ['val']")
