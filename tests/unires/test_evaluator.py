"""The harness's loop: the baselines (segmenters) scored by hand, UniRES through the same loop, the CLI's JSON,
overlays; the deprecated entry points still answer, through the harness."""

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

from dataset_scripts.mres_synth import build_mres_synth
from unires.evaluation import (
    FullImageSegmenter,
    LargestObjectBoxSegmenter,
    MRESMetricOptions,
    accumulate_metrics,
    evaluate_segmenter,
    load_segmenter,
    run_evaluation,
)
from dataset_scripts.masks import decode_mask
from modeling_unires.image_processing_unires import NaNLogitsError
from tiny_models.unires import tiny_model_and_processor
from unires.evaluation.segmenters import UniRESSegmenter
from unires.evaluation.segmenters.base import resize_mask
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
    results = evaluate_segmenter(load_segmenter("full_image"), validation, progress=False)
    for granularity in ("object", "part"):
        # A full-image prediction has IoU = |mask| / |image| with every expression.
        ious = [decode_mask(r["mask"]).sum() / (row["height"] * row["width"])
                for row, r, _ in _sentences(validation, granularity)]
        assert results[granularity]["count"] == len(ious) > 0
        assert results[granularity]["mIoU"] == pytest.approx(100 * np.mean(ious), abs=1e-6)
    # Every part lies inside its object, so the whole image always overlaps the parent more.
    assert results["part"]["part_object_confusion"] == pytest.approx(100.0)


def _oracle(asked):
    """A segmenter answering the truth resized to the asked size (it reads the rows, as the box baseline does)."""
    class Oracle(LargestObjectBoxSegmenter):
        model_type = "oracle"
        input_size = 24

        def masks_of_rows(self, batch, texts, sizes):
            out = []
            for row, row_texts, size in zip(batch, texts, sizes):
                asked.add(tuple(size))
                by_text = {s: r for r in row["referents"] for s in r["sentences"]}
                out.append([resize_mask(decode_mask(by_text[t]["mask"]), size) for t in row_texts])
            return out

    return Oracle()


def test_box_baseline_and_input_resolution(rows):
    validation = rows["validation"]
    box = load_segmenter("largest_object_box")
    original = evaluate_segmenter(box, validation, progress=False)
    assert 0 < original["object"]["mIoU"] < 100
    options = MRESMetricOptions(resolution="input", input_size=(24, 24))
    at_input = evaluate_segmenter(box, validation, options=options, progress=False)
    assert at_input["options"]["resolution"] == "input" and at_input["options"]["input_size"] == [24, 24]
    assert at_input["object"]["count"] == original["object"]["count"]

    # The segmenter is asked for 24x24 masks (its input size) and the truths are compared at 24x24: an oracle that
    # answers with the truth resized to the asked size scores 100 (at the original size its masks would not match).
    asked = set()
    perfect = evaluate_segmenter(_oracle(asked), validation, options=MRESMetricOptions(resolution="input"),
                                 progress=False)
    assert asked == {(24, 24)} and perfect["object+part"]["mIoU"] == pytest.approx(100.0)
    assert perfect["options"]["input_size"] == [24, 24]
    with pytest.raises(ValueError, match="input size"):  # a baseline has no input size of its own
        evaluate_segmenter(box, validation, options=MRESMetricOptions(resolution="input"), progress=False)


def test_the_box_baseline_refuses_bare_images(rows):
    row = rows["validation"][0]
    with pytest.raises(TypeError, match="masks_of_rows"):
        LargestObjectBoxSegmenter().masks([row["image"]], [["the car"]])
    full = FullImageSegmenter().masks([row["image"]], [["the car", "its wheel"]])
    assert [mask.all() and mask.shape == (row["height"], row["width"]) for mask in full[0]] == [True, True]


def test_unires_and_baselines_share_the_loop(rows):
    model, processor = tiny_model_and_processor(image_size=48)
    result = run_evaluation(None, "unires", str(rows["folder"]), ["validation"], batch_size=2, progress=False,
                            segmenter=UniRESSegmenter(model, processor), baselines=["full_image"])
    entry = result["splits"]["validation"]
    assert set(entry["baselines"]) == {"full_image"}
    assert entry["metrics"]["object+part"]["count"] == entry["baselines"]["full_image"]["object+part"]["count"] > 0
    assert entry["baselines"]["full_image"]["options"] == entry["metrics"]["options"]  # compared alike
    with pytest.raises(ValueError, match="unknown baseline"):
        run_evaluation(None, "unires", str(rows["folder"]), ["validation"], baselines=["oracle"],
                       segmenter=UniRESSegmenter(model, processor))


def test_shares_of_the_images_merge_to_the_whole(rows):
    """The trainer's form: each process scores every n-th image; the merged accumulators equal one pass."""
    segmenter = load_segmenter("largest_object_box")
    whole = accumulate_metrics(segmenter, rows["validation"], progress=False).compute()
    shares = [accumulate_metrics(segmenter, rows["validation"], process_index=i, num_processes=2, progress=False)
              for i in range(2)]
    assert 0 < shares[0].compute()["object+part"]["count"] < whole["object+part"]["count"]
    merged = shares[0].merge(shares[1]).compute()
    for group in ("object", "part", "object+part"):
        assert merged[group] == pytest.approx(whole[group], rel=1e-12)  # sums in another order


def test_evaluate_cli_writes_the_table(rows, tmp_path, capsys):
    model, processor = tiny_model_and_processor(image_size=48)
    model.save_pretrained(tmp_path / "model")
    processor.save_pretrained(tmp_path / "model")
    # By path: the script's module name would otherwise clash with the `evaluate` library.
    spec = importlib.util.spec_from_file_location("examples_evaluate",
                                                  REPO / "examples" / "evaluate_model.py")
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
        UniRESSegmenter(model, processor).masks_of_rows([row], [["the car", "the window"]],
                                                        [(row["height"], row["width"])])


def test_on_a_cpu_the_evaluator_runs_the_fast_forwards_and_gives_the_model_back_plain(rows, monkeypatch):
    from modeling_unires.fast_inference_unires import enable_fast_inference, is_fast_inference_enabled

    model, processor = tiny_model_and_processor(image_size=48)
    row = rows["validation"][0]
    texts = [[s for r in row["referents"] for s in r["sentences"]]]
    plain = UniRESSegmenter(model, processor, fast_inference=False).masks([row["image"]], texts)
    enabled = []

    def spy(model):
        enabled.append(model)
        return enable_fast_inference(model, max_expressions_per_pass=2)  # several passes for this image

    monkeypatch.setattr("unires.evaluation.segmenters.unires.enable_fast_inference", spy)
    fast = UniRESSegmenter(model, processor).masks([row["image"]], texts)
    assert enabled == [model] and len(texts[0]) > 2
    assert not is_fast_inference_enabled(model)  # a model being trained or saved is left as it was given
    assert all((a == b).all() for a, b in zip(plain[0], fast[0]))  # the fast path's masks are the plain ones
    with pytest.raises(ValueError, match="fast_inference='yes'"):
        UniRESSegmenter(model, processor, fast_inference="yes")
