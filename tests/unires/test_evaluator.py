"""The evaluator: baselines scored by hand, UniRES through the same loop, the CLI's JSON, overlays."""

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

from dataset_scripts.mres_synth import build_mres_synth
from unires.evaluation import (
    MRESMetricOptions,
    evaluate_methods,
    evaluate_predictor,
    full_image_baseline,
    largest_object_box_baseline,
)
from dataset_scripts.masks import decode_mask
from modeling_unires.image_processing_unires import NaNLogitsError
from modeling_unires.testing_utils import tiny_model_and_processor
from unires.evaluation.evaluator import resize_mask
from unires.evaluation.segmenters import UniRESSegmenter
from unires.evaluation.overlays import write_overlays

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def rows(tmp_path_factory):
    folder = tmp_path_factory.mktemp("evaluator") / "synth"
    data = build_mres_synth(folder, image_size=48, seed=5,
                            num_images={"train": 2, "validation": 5, "test": 1, "test_unseen": 1})
    return {"folder": folder, "validation": data["validation"]}


def _sentences(rows, granularity):
    for row in rows:
        for referent in row["referents"]:
            if referent["granularity"] == granularity:
                for sentence in referent["sentences"]:
                    yield row, referent, sentence


def test_full_image_baseline_matches_hand_computation(rows):
    validation = rows["validation"]
    results = evaluate_predictor(full_image_baseline, validation, progress=False).compute()
    for granularity in ("object", "part"):
        # A full-image prediction has IoU = |mask| / |image| with every expression.
        ious = [decode_mask(r["mask"]).sum() / (row["height"] * row["width"])
                for row, r, _ in _sentences(validation, granularity)]
        assert results[granularity]["count"] == len(ious) > 0
        assert results[granularity]["mIoU"] == pytest.approx(100 * np.mean(ious), abs=1e-6)
    # Every part lies inside its object, so the whole image always overlaps the parent more.
    assert results["part"]["part_object_confusion"] == pytest.approx(100.0)


def test_box_baseline_and_input_resolution(rows):
    validation = rows["validation"]
    original = evaluate_predictor(largest_object_box_baseline, validation, progress=False).compute()
    assert 0 < original["object"]["mIoU"] < 100
    options = MRESMetricOptions(resolution="input")
    at_input = evaluate_predictor(largest_object_box_baseline, validation, options=options, input_size=24,
                                  progress=False).compute()
    assert at_input["options"]["resolution"] == "input" and at_input["options"]["input_size"] == [24, 24]
    assert at_input["object"]["count"] == original["object"]["count"]

    # The predictor is asked for 24x24 masks and the truths are compared at 24x24: an oracle that answers with the
    # truth resized to the asked size scores 100 (at the original size its masks would not even match in shape).
    asked = set()

    def oracle(batch, texts, size_of):
        out = []
        for row, row_texts in zip(batch, texts):
            asked.add(size_of(row))
            by_text = {s: r for r in row["referents"] for s in r["sentences"]}
            out.append([resize_mask(decode_mask(by_text[t]["mask"]), size_of(row)) for t in row_texts])
        return out

    perfect = evaluate_predictor(oracle, validation, options=options, input_size=24, progress=False).compute()
    assert asked == {(24, 24)} and perfect["object+part"]["mIoU"] == pytest.approx(100.0)
    with pytest.raises(ValueError, match="input_size"):
        evaluate_predictor(largest_object_box_baseline, validation, options=options, progress=False)


def test_unires_and_baselines_share_the_evaluator(rows):
    model, processor = tiny_model_and_processor(image_size=48)
    results = evaluate_methods(model, processor, rows["validation"], baselines=["full_image"], batch_size=2,
                               progress=False)
    assert set(results) == {"unires", "full_image"}
    assert results["unires"]["object+part"]["count"] == results["full_image"]["object+part"]["count"] > 0
    with pytest.raises(ValueError, match="unknown baseline"):
        evaluate_methods(model, processor, rows["validation"], baselines=["oracle"])


def test_evaluate_cli_writes_the_table(rows, tmp_path, capsys):
    model, processor = tiny_model_and_processor(image_size=48)
    model.save_pretrained(tmp_path / "model")
    processor.save_pretrained(tmp_path / "model")
    # By path: the script's module name would otherwise clash with the `evaluate` library.
    spec = importlib.util.spec_from_file_location("examples_evaluate", REPO / "examples" / "evaluate.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    evaluate_main = script.main
    output = tmp_path / "metrics.json"
    evaluate_main(["--model", str(tmp_path / "model"), "--dataset", str(rows["folder"]), "--split", "validation",
                   "--baselines", "full_image", "--output", str(output), "--device", "cpu"])
    written = json.loads(output.read_text())
    entry = written["splits"]["validation"]
    assert written["model"]["type"] == "unires" and set(entry["baselines"]) == {"full_image"}
    assert entry["metrics"]["options"]["threshold"] == pytest.approx(0.35)
    assert entry["baselines"]["full_image"]["object+part"]["count"] == entry["metrics"]["object+part"]["count"] > 0
    assert "| method | setting | mIoU (gIoU)" in capsys.readouterr().out


def test_overlays_are_written(rows, tmp_path):
    model, processor = tiny_model_and_processor(image_size=48)
    paths = write_overlays(model, processor, rows["validation"], tmp_path, num=4)
    assert len(paths) == 4
    assert {p.name.split("-")[1] for p in paths} == {"object", "part"}
    from PIL import Image

    panel = Image.open(paths[0])
    assert panel.width == 3 * 48 * 3  # image | prediction | truth, each scaled 3x


def test_nan_logits_raise_naming_the_expressions(rows, monkeypatch):
    model, processor = tiny_model_and_processor(image_size=48)
    original_forward = model.forward

    def nan_forward(*args, **kwargs):
        outputs = original_forward(*args, **kwargs)
        outputs.logits[0] = float("nan")
        return outputs

    monkeypatch.setattr(model, "forward", nan_forward)
    row = rows["validation"][0]
    # Named by post_process_masks itself: the evaluator passes the texts and translates nothing.
    with pytest.raises(NaNLogitsError, match=r"NaN mask logits for the expression\(s\) \['the car'\]"):
        UniRESSegmenter(model, processor)([row], [["the car", "the window"]], lambda r: (r["height"], r["width"]))
