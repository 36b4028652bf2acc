"""The segmenter interface and the evaluation harness: every adapter on tiny random models, over MRES-Synth and a
RefCOCO_m-format miniature (CRIS layout); oracle and empty callables; the JSON's conventions and dataset identity."""

import hashlib
import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from dataset_scripts.masks import decode_mask
from dataset_scripts.mres_synth import build_mres_synth
from tiny_models.unires import tiny_model_and_processor, tiny_tokenizer
from unires.evaluation import NothingEvaluatedError, evaluate_segmenter, run_evaluation
from unires.evaluation.dataset_identity import open_split
from unires.evaluation.harness import compare_table, markdown_report
from unires.evaluation.segmenters import (
    CallableSegmenter,
    CLIPSegSegmenter,
    PipelineSegmenter,
    Sam3Segmenter,
    UniRESSegmenter,
    label_matches,
    load_callable,
    merge_instances,
)
from unires.evaluation.segmenters.base import resize_mask
from tiny_models.baselines import tiny_clipseg, tiny_sam3

REPO = Path(__file__).resolve().parents[2]
W, H = 44, 34  # the miniature's image size: not square, not the models' input size


# ---------------------------------------------------------------------------------------------------- data
def _refcocom_miniature(root: Path) -> Path:
    """RefCOCO_m as released (CRIS layout): annotations/{split}.json, masks/{segment_id}.png, images/train2014."""
    def image(name, colour):
        path = root / "images" / "train2014" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (W, H), colour).save(path)

    def mask(segment_id, xyxy):
        path = root / "masks" / f"{segment_id}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        m = np.zeros((H, W), np.uint8)
        x0, y0, x1, y1 = xyxy
        m[y0:y1, x0:x1] = 255
        Image.fromarray(m).save(path)

    def sentences(*texts):
        return [{"idx": i, "sent_id": 100 + i, "sent": t} for i, t in enumerate(texts)]

    names = [f"COCO_train2014_{i:012d}.jpg" for i in (1, 2)]
    image(names[0], "red")
    image(names[1], "blue")
    boxes = {1: [2, 2, 30, 30], 2: [4, 4, 12, 12], 3: [20, 5, 40, 25], 4: [22, 6, 30, 14], 5: [1, 1, 20, 20]}
    for segment_id, xyxy in boxes.items():
        mask(segment_id, xyxy)
    val = [
        {"img_name": names[0], "segment_id": 1, "cat": "dog", "bbox": boxes[1], "sentences": sentences("the dog", "a brown dog")},
        {"img_name": names[0], "segment_id": 2, "parent_segment_id": 1, "cat": "dog:ear", "bbox": boxes[2],
         "sentences": sentences("the ear of the dog")},
        {"img_name": names[1], "segment_id": 3, "cat": "car", "bbox": boxes[3], "sentences": sentences("the car")},
        {"img_name": names[1], "segment_id": 4, "parent_segment_id": 3, "cat": "car:wheel", "bbox": boxes[4],
         "sentences": sentences("the wheel of the car", "front wheel")},
    ]
    objects_only = [{"img_name": names[0], "segment_id": 5, "cat": "dog", "bbox": boxes[5], "sentences": sentences("a dog")}]
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    (root / "annotations" / "val.json").write_text(json.dumps(val))
    (root / "annotations" / "testA.json").write_text(json.dumps(objects_only))
    return root


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    base = tmp_path_factory.mktemp("segmenters")
    synth = base / "synth"
    build_mres_synth(str(synth), image_size=40, seed=11, cache_dir=str(base / "cache"),
                     num_images={"train": 1, "validation": 3, "test": 0, "test_unseen": 0})
    refcocom = _refcocom_miniature(base / "refcocom")
    synth_rows, _ = open_split(str(synth), "validation")
    refcocom_rows, _ = open_split("refcoco_m", "val", data_dir=str(refcocom), cache_dir=str(base / "cache"))
    return {"synth": synth, "refcocom": refcocom, "cache": base / "cache",
            "rows": {"mres-synth": synth_rows, "refcoco_m": refcocom_rows}}


def _tokenizer():
    return tiny_tokenizer(text_max_length=77)


def _segmenter(kind):
    if kind == "unires":
        return UniRESSegmenter(*tiny_model_and_processor(image_size=32))
    if kind == "clipseg":
        return CLIPSegSegmenter(*tiny_clipseg(_tokenizer(), image_size=32), batch_size=4)
    if kind == "sam3":
        return Sam3Segmenter(*tiny_sam3(_tokenizer(), image_size=56), batch_size=4)
    if kind == "pipeline":
        from transformers import pipeline

        import modeling_unires

        model, processor = tiny_model_and_processor(image_size=32)
        return PipelineSegmenter(pipeline(modeling_unires.PIPELINE_TASK, model=model, processor=processor))
    if kind == "callable":
        return CallableSegmenter(lambda image, texts: [np.full((image.height, image.width), 0.7) for _ in texts])
    raise AssertionError(kind)


def _truth_lookup(rows):
    """(sha256 of the image's pixels, sentence) -> truth mask: what an oracle callable answers."""
    lookup = {}
    for row in rows:
        key = hashlib.sha256(np.asarray(row["image"].convert("RGB")).tobytes()).hexdigest()
        for referent in row["referents"]:
            for sentence in referent["sentences"]:
                lookup[(key, sentence)] = decode_mask(referent["mask"])
    return lookup


# ---------------------------------------------------------------------------------------------------- adapters
@pytest.mark.parametrize("kind", ["unires", "clipseg", "sam3", "pipeline", "callable"])
def test_every_adapter_answers_at_each_original_size(kind, data):
    segmenter = _segmenter(kind)
    for name, rows in data["rows"].items():
        batch = [rows[i] for i in range(2)]
        texts = [[s for r in row["referents"] for s in r["sentences"]] for row in batch]
        masks = segmenter.masks([row["image"] for row in batch], texts)
        for row, row_texts, row_masks in zip(batch, texts, masks):
            assert len(row_masks) == len(row_texts) > 0, name
            for mask in row_masks:
                assert mask.dtype == bool and mask.shape == (row["height"], row["width"]), (kind, name)
        metrics = evaluate_segmenter(segmenter, rows, batch_size=2, progress=False)
        assert metrics["object"]["count"] > 0 and metrics["part"]["count"] > 0
        assert metrics["options"]["threshold"] == segmenter.threshold
    conventions = segmenter.conventions()
    assert conventions["model_type"] == kind and "image_encoded_once_per_image" in conventions


def test_refcocom_miniature_is_objects_and_parts_at_the_original_size(data):
    rows = data["rows"]["refcoco_m"]
    assert {(row["width"], row["height"]) for row in rows} == {(W, H)}
    granularities = sorted(r["granularity"] for row in rows for r in row["referents"])
    assert granularities == ["object", "object", "part", "part"]


def test_sam3_encodes_each_image_once(data, monkeypatch):
    segmenter = _segmenter("sam3")
    calls = []
    original = segmenter.model.get_vision_features

    def counted(pixel_values, **kwargs):
        calls.append(pixel_values.shape[0])
        return original(pixel_values=pixel_values, **kwargs)

    monkeypatch.setattr(segmenter.model, "get_vision_features", counted)
    rows = data["rows"]["mres-synth"]
    texts = [[s for r in rows[i]["referents"] for s in r["sentences"]] for i in range(2)]
    shared = segmenter.segment([rows[i]["image"] for i in range(2)], texts, [(40, 40)] * 2)
    assert calls == [2] and sum(len(t) for t in texts) > 2  # one vision pass for 2 images and all expressions
    # Same maps as running SAM 3 on (image, expression) pairs with the pixels repeated.
    pixel_values = segmenter.processor.image_processor(images=[rows[0]["image"]], return_tensors="pt")["pixel_values"]
    text = segmenter.processor.tokenizer([texts[0][0]], padding="max_length", max_length=32, return_tensors="pt")
    with torch.no_grad():
        outputs = segmenter.model(pixel_values=pixel_values, **text)
    scores = outputs.pred_logits.sigmoid() * outputs.presence_logits.sigmoid()
    expected = merge_instances(scores[0], outputs.pred_masks[0], (40, 40))
    torch.testing.assert_close(torch.as_tensor(shared[0][0]), expected, atol=1e-5, rtol=1e-4)


def test_sam3_instance_rule_default_and_union():
    scores = torch.tensor([0.2, 0.9, 0.6, 0.1])
    logits = torch.full((4, 4, 4), -20.0)
    logits[0, 0, 0] = logits[1, 1, 1] = logits[2, 2, 2] = logits[3, 3, 3] = 20.0
    best = merge_instances(scores, logits, (4, 4)) > 0.5  # the default rule: the top-scoring instance
    assert best.nonzero().tolist() == [[1, 1]]
    union = merge_instances(scores, logits, (4, 4), rule="union", score_threshold=0.5) > 0.5
    assert union.nonzero().tolist() == [[1, 1], [2, 2]]
    empty = merge_instances(scores, logits, (4, 4), rule="union", score_threshold=0.95)
    assert not (empty > 0.5).any()
    segmenter = Sam3Segmenter(*tiny_sam3(_tokenizer()))
    assert segmenter.instance_rule == "best" and segmenter.threshold == 0.5
    with pytest.raises(ValueError, match="instance_rule"):
        merge_instances(scores, logits, (4, 4), rule="first")


def test_clipseg_logits_are_resized_to_the_original_size_then_thresholded(data):
    segmenter = _segmenter("clipseg")
    row = data["rows"]["refcoco_m"][0]
    text = row["referents"][0]["sentences"][0]
    probability = segmenter.segment([row["image"]], [[text]], [(H, W)])[0][0]
    inputs = segmenter.processor(images=[row["image"]], text=[text], return_tensors="pt", padding=True)
    with torch.no_grad():
        logits = segmenter.model(**inputs).logits
        logits = logits.reshape(1, *logits.shape[-2:])  # patch 8, refined decoder: 16x16 logits
    expected = torch.nn.functional.interpolate(logits[:, None], size=(H, W), mode="bilinear", align_corners=False)
    torch.testing.assert_close(probability, expected[0, 0].sigmoid(), atol=1e-5, rtol=1e-4)
    assert segmenter.threshold == 0.35
    mask = segmenter.masks([row["image"]], [[text]])[0][0]
    assert np.array_equal(mask, probability.numpy() > 0.35)


def test_image_segmentation_pipeline_matches_labels():
    assert label_matches("dog", "the dog on the left") and not label_matches("dog", "the hotdog")
    assert label_matches("traffic light", "the red traffic  light")

    class FakeSegmentationPipeline:
        task = "image-segmentation"

        def __call__(self, image):
            left = np.zeros((image.height, image.width), np.uint8)
            left[:, : image.width // 2] = 255
            return [{"label": "dog", "score": 0.9, "mask": Image.fromarray(left)},
                    {"label": "cat", "score": 0.8, "mask": Image.fromarray(255 - left)}]

    segmenter = PipelineSegmenter(FakeSegmentationPipeline())
    image = Image.new("RGB", (10, 6))
    dog, cat, none = segmenter.masks([image], [["the dog", "a cat", "the car"]])[0]
    assert dog[:, :5].all() and not dog[:, 5:].any() and cat[:, 5:].all() and not none.any()
    assert segmenter.conventions()["task"] == "image-segmentation"
    with pytest.raises(ValueError, match="threshold=0.5: an image-segmentation pipeline's segments are final"):
        PipelineSegmenter(FakeSegmentationPipeline(), threshold=0.5)  # was dropped without a word


# ---------------------------------------------------------------------------------------------------- oracle
def test_oracle_callable_scores_100_and_empty_scores_0(data):
    for name, rows in data["rows"].items():
        lookup = _truth_lookup(rows)

        def oracle(image, texts):
            key = hashlib.sha256(np.asarray(image).tobytes()).hexdigest()
            return [lookup[(key, text)] for text in texts]

        perfect = evaluate_segmenter(CallableSegmenter(oracle), rows, progress=False)
        empty = evaluate_segmenter(CallableSegmenter(lambda image, texts: [np.zeros((image.height, image.width),
                                                                                    bool) for _ in texts]),
                                   rows, progress=False)
        for group in ("object", "part", "object+part"):
            assert perfect[group]["mIoU"] == pytest.approx(100.0) and perfect[group]["oIoU"] == pytest.approx(100.0)
            assert perfect[group]["Prec@0.9"] == pytest.approx(100.0), name
            assert empty[group]["mIoU"] == 0.0 and empty[group]["oIoU"] == 0.0 and empty[group]["Prec@0.5"] == 0.0
        assert perfect["part"]["part_object_confusion"] == 0.0


def test_callable_masks_of_another_size_are_refused(data):
    segmenter = CallableSegmenter(lambda image, texts: [np.zeros((3, 3), bool) for _ in texts], name="small")
    row = data["rows"]["refcoco_m"][0]
    with pytest.raises(ValueError, match=r"small: image 0, expression 'the dog'.*original size \(34, 44\)"):
        segmenter.masks([row["image"]], [["the dog"]])
    with pytest.raises(ValueError, match="module:function"):
        load_callable("no_colon")


def _batched(fn):
    fn.batched = True
    return fn


def _two_images():
    return [Image.new("RGB", (5, 4)), Image.new("RGB", (3, 2))], [["the dog", "its ear"], ["the car"]]


@pytest.mark.parametrize("answer, message", [
    # A batched callable: more or fewer lists than images, None for the batch or for one image.
    (_batched(lambda images, texts: [[np.ones((4, 5))] * 2, [np.ones((2, 3))], [np.ones((2, 3))]]),
     r"returned 3 lists of masks for 2 images \(expressions \[\['the dog', 'its ear'\], \['the car'\]\]\)"),
    (_batched(lambda images, texts: [[np.ones((4, 5))] * 2]), r"returned 1 lists of masks for 2 images"),
    (_batched(lambda images, texts: None), r"images 0-1, expressions .*'the car'.*: returned None"),
    (_batched(lambda images, texts: [[np.ones((4, 5))] * 2, None]),
     r"image 1, expressions \['the car'\]: returned None, expected one mask per expression"),
    # One image at a time: None, too few or too many masks, None as a mask.
    (lambda image, texts: None, r"image 0, expressions \['the dog', 'its ear'\]: returned None"),
    (lambda image, texts: [np.ones((image.height, image.width))],
     r"image 0: returned 1 masks for its 2 expressions \['the dog', 'its ear'\]"),
    (lambda image, texts: [np.ones((image.height, image.width))] * 3,
     r"image 0: returned 3 masks for its 2 expressions"),
    (lambda image, texts: [np.ones((image.height, image.width)), None][: len(texts)],
     r"image 0, expression 'its ear': returned None instead of a mask"),
    (lambda image, texts: [np.full((image.height, image.width), 1.5)] * len(texts),
     r"image 0, expression 'the dog': values outside \[0, 1\]"),
])
def test_callable_refuses_missing_extra_and_none_answers_naming_image_and_expressions(answer, message):
    # Issue 28, case 5: zip dropped a third list for two images; None was a TypeError traceback.
    images, texts = _two_images()
    with pytest.raises(ValueError, match=message):
        CallableSegmenter(answer, name="wrapper").masks(images, texts)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16, torch.bool, torch.uint8])
@pytest.mark.parametrize("requires_grad", [False, True])
@pytest.mark.parametrize("resolution", ["original", "input"])
def test_callable_accepts_tensors_of_any_dtype_and_grad_state(dtype, requires_grad, resolution):
    # Issue 28, case 5: a tensor requiring grad and a bfloat16 tensor failed in numpy(), naming nothing.
    if requires_grad and not dtype.is_floating_point:
        pytest.skip("only floating tensors require grad")
    images, texts = _two_images()

    def segment(image, expressions):
        left = torch.zeros((image.height, image.width))
        left[:, : image.width // 2] = 0.9 if dtype.is_floating_point else 1
        return [left.to(dtype).requires_grad_(requires_grad) for _ in expressions]

    sizes = None if resolution == "original" else [(8, 10), (4, 6)]
    masks = CallableSegmenter(segment).masks(images, texts, sizes)
    expected = [np.zeros((4, 5), bool), np.zeros((2, 3), bool)]
    expected[0][:, :2] = expected[1][:, :1] = True  # the left half, thresholded at the original size
    if sizes:  # then nearest-neighbour to the compared size
        expected = [resize_mask(mask, size) for mask, size in zip(expected, sizes)]
    assert [[m.dtype for m in image] for image in masks] == [[bool, bool], [bool]]
    np.testing.assert_array_equal(masks[0][0], expected[0])
    np.testing.assert_array_equal(masks[1][0], expected[1])


def test_callable_errors_of_the_users_code_name_the_image_and_expressions():
    images, texts = _two_images()

    def broken(image, expressions):
        raise RuntimeError("CUDA out of memory")

    with pytest.raises(RuntimeError, match="CUDA out of memory") as error:
        CallableSegmenter(broken, name="wrapper").masks(images, texts)
    assert "in callable wrapper, called on image 0 with expressions ['the dog', 'its ear']" in error.value.__notes__


# ---------------------------------------------------------------------------------------------------- CLI and JSON
def _script():
    spec = importlib.util.spec_from_file_location("examples_evaluate_segmenters",
                                                  REPO / "examples" / "evaluate_model.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _oracle_module(tmp_path, dataset_args, dataset_kwargs=None):
    """A wrapper file as a user writes one: `segment(image, expressions)` answering the truth."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    path = tmp_path / "oracle_wrapper.py"
    path.write_text(
        "import hashlib\nimport numpy as np\nfrom dataset_scripts.masks import decode_mask\n"
        "from unires.evaluation.dataset_identity import open_split\n"
        f"ROWS, _ = open_split(*{dataset_args!r}, **{dataset_kwargs or {}!r})\n"
        "TRUTH = {}\nfor row in ROWS:\n"
        "    key = hashlib.sha256(np.asarray(row['image'].convert('RGB')).tobytes()).hexdigest()\n"
        "    for r in row['referents']:\n"
        "        for s in r['sentences']:\n            TRUTH[(key, s)] = decode_mask(r['mask'])\n"
        "def segment(image, expressions):\n"
        "    key = hashlib.sha256(np.asarray(image).tobytes()).hexdigest()\n"
        "    return [TRUTH[(key, text)] for text in expressions]\n"
    )
    return path


def test_cli_json_carries_conventions_and_dataset_identity(data, tmp_path, capsys):
    script = _script()
    wrapper = _oracle_module(tmp_path, (str(data["synth"]), "validation"))
    output = tmp_path / "oracle.json"
    script.main(["--model_type", f"callable:{wrapper}:segment", "--dataset", str(data["synth"]), "--split",
                 "validation", "--output", str(output), "--no_progress", "--baselines", "full_image"])
    result = json.loads(output.read_text())
    entry = result["splits"]["validation"]
    assert entry["metrics"]["object+part"]["mIoU"] == pytest.approx(100.0)
    identity = entry["dataset"]
    rows = data["rows"]["mres-synth"]
    assert identity["builder"] == "MRES-Synth" and identity["config"] == "default" and identity["split"] == "validation"
    assert identity["counts"]["images"] == len(rows)
    assert identity["counts"]["referents"] == sum(len(row["referents"]) for row in rows)
    assert identity["counts"]["expressions"] == entry["metrics"]["object+part"]["count"]
    parquet = sorted(data["synth"].glob("**/validation-*.parquet"))
    assert [f["sha256"] for f in identity["files"]] == [hashlib.sha256(p.read_bytes()).hexdigest() for p in parquet]
    assert len(identity["annotations_sha256"]) == 64
    conventions = entry["conventions"]
    assert conventions["resolution"] == "original image size" and conventions["threshold"] == 0.35
    assert "one sentence per expression" in conventions["expressions"]
    assert "IoU 1" in conventions["empty_gt"] and conventions["mIoU"].endswith("(= gIoU)")
    assert result["model"]["segmenter"]["model_type"] == "callable"
    assert "full_image" in entry["baselines"]
    report = output.with_suffix(".md").read_text()
    assert "mIoU (gIoU)" in report and "oIoU (cIoU)" in report and "MRES-Synth" in report
    assert "| object+part |" in report

    # The RefCOCO_m miniature, read from its raw release: the builder, the split file's sha256.
    wrapper = _oracle_module(tmp_path / "m", ("refcoco_m", "val"),
                             {"data_dir": str(data["refcocom"]), "cache_dir": str(data["cache"])})
    output_m = tmp_path / "oracle_m.json"
    script.main(["--model_type", f"callable:{wrapper}:segment", "--dataset", "refcoco_m", "--data_dir",
                 str(data["refcocom"]), "--cache_dir", str(data["cache"]), "--split", "val", "--output",
                 str(output_m), "--no_progress", "--name", "oracle-m"])
    entry_m = json.loads(output_m.read_text())["splits"]["val"]
    assert entry_m["dataset"]["builder"] == "RefCOCOm"
    assert entry_m["dataset"]["files"][0]["path"] == os.path.join("annotations", "val.json")
    assert entry_m["dataset"]["counts"] == {"images": 2, "referents": 4, "objects": 2, "parts": 2, "expressions": 6,
                                            "object_expressions": 3, "part_expressions": 3}
    assert entry_m["metrics"]["part"]["mIoU"] == pytest.approx(100.0)

    capsys.readouterr()
    script.main(["--compare", str(output), str(output_m)])
    table = capsys.readouterr().out
    assert "| oracle-m | val | part |" in table and f"callable:{tmp_path / 'oracle_wrapper.py'}:segment" in table
    assert "evaluated on different data" not in table  # different splits are not compared with each other


def test_compare_flags_different_data_and_thresholds(data):
    rows = data["rows"]["mres-synth"]
    first = run_evaluation(None, "callable", str(data["synth"]), ["validation"], label="a", progress=False,
                           segmenter=CallableSegmenter(lambda i, t: [np.ones((i.height, i.width), bool) for _ in t]))
    second = run_evaluation(None, "callable", str(data["synth"]), ["validation"], label="b", progress=False,
                            max_images=1, segmenter=CallableSegmenter(
                                lambda i, t: [np.ones((i.height, i.width), bool) for _ in t], threshold=0.5))
    table = compare_table([first, second])
    assert "| a | validation | object |" in table and "| b | validation | object |" in table
    assert "evaluated on different data" in table and "thresholds differ" in table
    assert len(rows) > 1
    assert "## validation" in markdown_report(first)


def test_nothing_evaluated_fails_clearly(data, tmp_path, capsys):
    script = _script()
    with pytest.raises(SystemExit) as exit_info:
        script.main(["--model_type", "callable:x:y", "--dataset", str(data["synth"]), "--max_images", "0"])
    assert exit_info.value.code == 2 and "0 would evaluate nothing" in capsys.readouterr().err
    wrapper = tmp_path / "ones.py"
    wrapper.write_text("import numpy as np\ndef segment(image, texts):\n"
                       "    return [np.ones((image.height, image.width), bool) for _ in texts]\n")
    with pytest.raises(SystemExit) as exit_info:  # testA of the miniature has objects only
        script.main(["--model_type", f"callable:{wrapper}:segment", "--dataset", "refcoco_m", "--data_dir",
                     str(data["refcocom"]), "--cache_dir", str(data["cache"]), "--split", "testA",
                     "--granularity", "part", "--no_progress"])
    assert "nothing was evaluated" in str(exit_info.value.code) and "'part'" in str(exit_info.value.code)
    with pytest.raises(NothingEvaluatedError):
        evaluate_segmenter(CallableSegmenter(lambda i, t: []), [], progress=False)
    with pytest.raises(SystemExit) as exit_info:
        script.main(["--model_type", "callable:x:y", "--dataset", "refcoco_m", "--split", "val"])
    assert "--data_dir" in str(exit_info.value.code)


def test_help_imports_nothing_heavy(tmp_path):
    code = ("import importlib.util, sys\n"
            f"spec = importlib.util.spec_from_file_location('e', {str(REPO / 'examples' / 'evaluate_model.py')!r})\n"
            "m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m)\n"
            f"m.parse_args(['--model', {str(tmp_path)!r}, '--dataset', {str(tmp_path)!r}])\n"
            "print(sorted(k for k in ('torch', 'transformers', 'datasets', 'numpy') if k in sys.modules))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"  # the registry (its --model_type choices) is read without torch
    help_text = subprocess.run([sys.executable, str(REPO / "examples" / "evaluate_model.py"), "--help"],
                               capture_output=True, text=True, check=True).stdout
    assert "(default: unires)" in help_text and "--compare" in help_text


# ---------------------------------------------------------------------------------------------------- one registry
def test_the_registry_is_what_the_adapters_take_and_the_docs_and_cli_list():
    import inspect

    from unires.evaluation import segmenters
    from unires.evaluation.registry import ADAPTERS, BASELINES, MODEL_TYPES, markdown_table

    for name, adapter in ADAPTERS.items():
        cls = adapter.segmenter_class()
        assert cls.model_type == name
        loader = cls.from_spec if name == "callable" else cls.from_pretrained if adapter.needs_model else cls
        parameters = inspect.signature(loader).parameters
        assert not any(p.kind is p.VAR_KEYWORD for p in parameters.values()), f"{name} would swallow any option"
        keywords = {p.name for p in parameters.values() if p.default is not p.empty}
        assert keywords == set(adapter.options), name
    assert markdown_table() in segmenters.__doc__  # the docs' table is the registry's
    parser_actions = {a.dest: a for a in _parser()._actions}
    assert tuple(parser_actions["baselines"].choices) == BASELINES == ("full_image", "largest_object_box")
    assert ", ".join(MODEL_TYPES) in parser_actions["model_type"].help


def _parser():
    """The CLI's parser, caught as it parses a valid command line."""
    import argparse

    script, caught = _script(), []
    real = argparse.ArgumentParser.parse_args

    def spy(self, *args, **kwargs):
        caught.append(self)
        return real(self, *args, **kwargs)

    argparse.ArgumentParser.parse_args = spy
    try:
        script.parse_args(["--model_type", "full_image", "--dataset", "refcoco_m"])
    finally:
        argparse.ArgumentParser.parse_args = real
    return caught[0]


@pytest.mark.parametrize("argv, message", [
    (["--model_type", "clipseg", "--model", "m", "--instance_rule", "union"],
     "--instance_rule is an option of --model_type sam3, promptable_concept, not of clipseg"),
    (["--model_type", "unires", "--model", "m", "--score_threshold", "0.3"],
     "--score_threshold is an option of --model_type sam3, promptable_concept, not of unires"),
    (["--model_type", "sam3", "--model", "m", "--pipeline_task", "image-segmentation"],
     "--pipeline_task is an option of --model_type pipeline, not of sam3"),
    (["--model_type", "clipseg", "--model", "m", "--trust_remote_code"],
     "--trust_remote_code is an option of --model_type unires, pipeline, promptable_concept, not of clipseg"),
    (["--model_type", "callable:w.py:f", "--device", "cpu"],
     "--device is an option of --model_type unires, onnx, clipseg, sam3, pipeline, promptable_concept, not of callable"),
    (["--model_type", "full_image", "--threshold", "0.5"],
     "--threshold is an option of --model_type unires, onnx, clipseg, sam3, pipeline, promptable_concept, callable, not of full_image"),
    (["--model_type", "clip", "--model", "m"], "unknown model_type 'clip'; choose from unires, onnx, clipseg, sam3"),
    (["--model_type", "full_image", "--model", "m"], "--model: --model_type full_image is a baseline"),
])
def test_an_option_the_adapter_does_not_take_is_refused_while_parsing(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        _script().parse_args([*argv, "--dataset", "refcoco_m"])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and message in err
    assert len(err.strip().splitlines()) == 2  # the one-line usage, then the error


def test_the_library_refuses_a_foreign_option_naming_it(data):
    from unires.evaluation import load_segmenter

    with pytest.raises(ValueError, match="instance_rule is an option of model_type sam3, promptable_concept, not of clipseg"):
        load_segmenter("clipseg", "CIDAS/clipseg-rd64-refined", instance_rule="union")
    with pytest.raises(ValueError, match="task is an option of model_type pipeline, not of callable"):
        load_segmenter("callable:x:y", task="image-segmentation")
    # run_evaluation refuses before it reads the data or loads a model.
    with pytest.raises(ValueError, match="score_threshold is an option of model_type sam3, promptable_concept, not of unires"):
        run_evaluation("no/such-model", "unires", "no/such-dataset", ["validation"], score_threshold=0.3)
    with pytest.raises(TypeError):  # the adapters' own loaders no longer swallow options (**_)
        CLIPSegSegmenter.from_pretrained("CIDAS/clipseg-rd64-refined", instance_rule="union")
    assert isinstance(load_segmenter("full_image"), segmenters_module().FullImageSegmenter)


def segmenters_module():
    from unires.evaluation import segmenters

    return segmenters


def test_a_missing_dataset_is_one_line_not_the_full_usage(capsys):
    with pytest.raises(SystemExit) as exit_info:
        _script().main(["--model", "m"])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2
    usage, error = err.splitlines()  # argparse's own usage is some forty lines
    assert re.fullmatch(r"usage: (\S+) \[options\] \(every option: \1 --help\)", usage), usage
    assert error.endswith(": error: --dataset is required (or --compare RESULT_JSON ...)")


def test_a_baseline_is_a_model_type_of_the_cli(data, tmp_path, capsys):
    output = tmp_path / "full.json"
    _script().main(["--model_type", "full_image", "--dataset", str(data["synth"]), "--split", "validation",
                    "--no_progress", "--output", str(output)])
    result = json.loads(output.read_text())
    expected = run_evaluation(None, "unires", str(data["synth"]), ["validation"], progress=False,
                              segmenter=_segmenter("callable"), baselines=["full_image"])
    metrics = result["splits"]["validation"]["metrics"]
    assert result["model"]["segmenter"]["model_type"] == "full_image" and metrics["object+part"]["count"] > 0
    assert metrics["object+part"] == expected["splits"]["validation"]["baselines"]["full_image"]["object+part"]
