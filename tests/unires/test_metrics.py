"""MRES metrics against hand-computed cases: IoU sums, options, grouping, confusion, inputs."""

import subprocess
import sys

import numpy as np
import pytest
import torch
from pycocotools import mask as mask_utils

from dataset_scripts.masks import encode_mask
from unires.evaluation import (
    MRES_IOU_METRIC_PATH,
    MRESMetricAccumulator,
    MRESMetricOptions,
    binarize,
    compute_mres_metrics,
    format_metrics_table,
)


def box_mask(height, width, top, left, bottom, right):
    """Bool mask with rows [top, bottom) and columns [left, right) set."""
    mask = np.zeros((height, width), dtype=bool)
    mask[top:bottom, left:right] = True
    return mask


def pixels(height, width, count):
    """Bool mask with the first `count` pixels (row-major) set."""
    mask = np.zeros(height * width, dtype=bool)
    mask[:count] = True
    return mask.reshape(height, width)


# Two expressions on 4x4 masks:
#   A: prediction rows 0-1 (8 px), reference row 0 (4 px): I = 4, U = 8, IoU = 0.5
#   B: prediction columns 0-1 (8 px), reference columns 1-2 (8 px): I = 4, U = 12, IoU = 1/3
PRED_A, REF_A = box_mask(4, 4, 0, 0, 2, 4), box_mask(4, 4, 0, 0, 1, 4)
PRED_B, REF_B = box_mask(4, 4, 0, 0, 4, 2), box_mask(4, 4, 0, 1, 4, 3)


def test_hand_computed_intersection_and_union():
    results = compute_mres_metrics(np.stack([PRED_A, PRED_B]), np.stack([REF_A, REF_B]), ["object", "object"])
    group = results["object"]
    assert group["count"] == 2
    assert group["mIoU"] == pytest.approx(100 * (0.5 + 1 / 3) / 2)
    assert group["oIoU"] == pytest.approx(100 * (4 + 4) / (8 + 12))
    assert group["Prec@0.5"] == pytest.approx(50.0)  # A's IoU is exactly 0.5, counted with ">="
    assert group["Prec@0.6"] == 0.0


def test_miou_and_oiou_differ():
    # Small object: I=1, U=2 (0.5). Large object: I=90, U=100 (0.9).
    predictions = [pixels(1, 2, 2), pixels(10, 10, 100)]
    references = [pixels(1, 2, 1), pixels(10, 10, 90)]
    group = compute_mres_metrics(predictions, references, ["object", "object"])["object"]
    assert group["mIoU"] == pytest.approx(70.0)
    assert group["oIoU"] == pytest.approx(100 * 91 / 102)


@pytest.mark.parametrize(
    "intersection, union",
    [(1, 2), (3, 5), (7, 10), (4, 5), (9, 10)],  # IoU exactly 0.5, 0.6, 0.7, 0.8, 0.9
)
def test_prec_comparison_at_exact_boundary(intersection, union):
    prediction, reference = pixels(1, union, union), pixels(1, union, intersection)
    threshold = intersection / union
    key = f"Prec@{threshold:g}"
    at_least = compute_mres_metrics([prediction], [reference], ["object"], prec_comparison=">=")
    strictly = compute_mres_metrics([prediction], [reference], ["object"], prec_comparison=">")
    assert at_least["object"][key] == 100.0
    assert strictly["object"][key] == 0.0
    assert strictly["options"]["prec_comparison"] == ">"


def test_custom_prec_thresholds_become_columns():
    results = compute_mres_metrics([PRED_A], [REF_A], ["object"], prec_thresholds=(0.25, 0.75))
    assert [key for key in results["object"] if key.startswith("Prec@")] == ["Prec@0.25", "Prec@0.75"]
    assert results["object"]["Prec@0.25"] == 100.0 and results["object"]["Prec@0.75"] == 0.0


def test_empty_ground_truth():
    empty = np.zeros((3, 3), dtype=bool)
    non_empty = box_mask(3, 3, 0, 0, 1, 1)
    both_empty = compute_mres_metrics([empty], [empty], ["object"])["object"]
    assert both_empty["mIoU"] == 100.0 and both_empty["Prec@0.9"] == 100.0
    assert both_empty["oIoU"] == 100.0  # the whole group's union is empty: same rule
    false_positive = compute_mres_metrics([non_empty], [empty], ["object"])["object"]
    assert false_positive["mIoU"] == 0.0 and false_positive["oIoU"] == 0.0
    zero_rule = compute_mres_metrics([empty], [empty], ["object"], empty_gt="zero")
    assert zero_rule["object"]["mIoU"] == 0.0
    assert zero_rule["options"]["empty_gt"] == "zero"
    # An empty pair adds nothing to the oIoU totals but counts in the mIoU mean.
    mixed = compute_mres_metrics([empty, PRED_A], [empty, REF_A], ["object", "object"])["object"]
    assert mixed["mIoU"] == pytest.approx(75.0) and mixed["oIoU"] == pytest.approx(50.0)


def test_groups_object_part_and_both():
    perfect = box_mask(4, 4, 1, 1, 3, 3)
    results = compute_mres_metrics(
        [PRED_A, perfect, PRED_B], [REF_A, perfect, REF_B], ["object", "part", "part"]
    )
    assert results["object"]["count"] == 1 and results["object"]["mIoU"] == pytest.approx(50.0)
    assert results["part"]["count"] == 2
    assert results["part"]["mIoU"] == pytest.approx(100 * (1 + 1 / 3) / 2)
    assert results["part"]["oIoU"] == pytest.approx(100 * (4 + 4) / (4 + 12))
    assert results["object+part"]["count"] == 3
    assert results["object+part"]["mIoU"] == pytest.approx(100 * (0.5 + 1 + 1 / 3) / 3)
    assert results["object+part"]["oIoU"] == pytest.approx(100 * (4 + 4 + 4) / (8 + 4 + 12))
    assert "part_object_confusion" not in results["object"]


def test_empty_group_is_none_not_zero():
    results = compute_mres_metrics([PRED_A], [REF_A], ["object"])
    part = results["part"]
    assert part["count"] == 0
    assert part["mIoU"] is None and part["oIoU"] is None and part["Prec@0.5"] is None
    assert part["part_object_confusion"] is None and part["part_object_confusion_count"] == 0
    empty_accumulator = MRESMetricAccumulator().compute()
    assert empty_accumulator["object+part"]["count"] == 0 and empty_accumulator["object+part"]["mIoU"] is None


def test_part_object_confusion():
    parent = box_mask(6, 6, 0, 0, 6, 6)  # the whole object
    part = box_mask(6, 6, 0, 0, 2, 2)  # its top-left corner (4 px)
    predicts_object = parent.copy()  # IoU with part 4/36, with parent 1: confused
    predicts_part = part.copy()  # IoU with part 1, with parent 4/36: not confused
    predicts_half = box_mask(6, 6, 0, 0, 3, 6)  # part 4/18, parent 18/36 = 0.5: confused
    results = compute_mres_metrics(
        [predicts_object, predicts_part, predicts_half, predicts_object, PRED_A],
        [part, part, part, part, REF_A],
        ["part", "part", "part", "part", "object"],
        parent_masks=[parent, parent, parent, None, None],  # 4th part has no parent: not counted
    )
    for group in ("part", "object+part"):
        assert results[group]["part_object_confusion_count"] == 3
        assert results[group]["part_object_confusion"] == pytest.approx(100 * 2 / 3)
    assert results["part"]["count"] == 4


def test_rle_input_equals_array_input():
    predictions = [PRED_A, PRED_B, np.zeros((4, 4), bool)]
    references = [REF_A, REF_B, np.zeros((4, 4), bool)]
    parents = [None, np.ones((4, 4), bool), None]
    granularities = ["object", "part", "part"]
    from_arrays = compute_mres_metrics(np.stack(predictions), np.stack(references), granularities, parents)

    def bytes_rle(mask):
        return mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))

    def uncompressed_rle(mask):
        flat = mask.flatten(order="F").astype(np.int8)
        changes = np.flatnonzero(np.diff(np.concatenate([[0], flat, [1 - flat[-1]]])))
        counts = np.diff(np.concatenate([[0], changes])).tolist()
        return {"size": list(mask.shape), "counts": counts}

    for encode in (bytes_rle, encode_mask, uncompressed_rle):
        from_rle = compute_mres_metrics(
            [encode(m) for m in predictions], [encode(m) for m in references], granularities,
            [None if p is None else encode(p) for p in parents],
        )
        assert from_rle == from_arrays, encode.__name__
    # Mixed: RLE predictions against array references.
    mixed = compute_mres_metrics([bytes_rle(m) for m in predictions], references, granularities, parents)
    assert mixed == from_arrays


def test_torch_tensors_equal_numpy():
    predictions, references = np.stack([PRED_A, PRED_B]), np.stack([REF_A, REF_B])
    from_numpy = compute_mres_metrics(predictions, references, ["object", "part"])
    from_torch = compute_mres_metrics(torch.from_numpy(predictions), torch.from_numpy(references), ["object", "part"])
    from_uint8 = compute_mres_metrics(
        torch.from_numpy(predictions).to(torch.uint8), torch.from_numpy(references), ["object", "part"]
    )
    assert from_torch == from_numpy == from_uint8


def test_masks_of_different_sizes_in_one_batch():
    predictions = [pixels(2, 3, 4), PRED_B, pixels(5, 7, 10)]
    references = [pixels(2, 3, 2), REF_B, pixels(5, 7, 20)]
    # IoUs: 2/4, 4/12, 10/20; totals I = 16, U = 36.
    group = compute_mres_metrics(predictions, references, ["object", "object", "object"])["object"]
    assert group["mIoU"] == pytest.approx(100 * (0.5 + 1 / 3 + 0.5) / 3)
    assert group["oIoU"] == pytest.approx(100 * 16 / 36)


def test_merge_and_state_dict_equal_one_accumulator():
    predictions = [PRED_A, PRED_B, pixels(4, 4, 5), pixels(4, 4, 0)]
    references = [REF_A, REF_B, pixels(4, 4, 8), pixels(4, 4, 0)]
    granularities = ["object", "part", "part", "object"]
    parents = [None, np.ones((4, 4), bool), None, None]
    single = MRESMetricAccumulator(prec_comparison=">")
    single.update(predictions, references, granularities, parents)
    first, second = MRESMetricAccumulator(prec_comparison=">"), MRESMetricAccumulator(prec_comparison=">")
    first.update(predictions[:2], references[:2], granularities[:2], parents[:2])
    second.update(predictions[2:], references[2:], granularities[2:], parents[2:])
    restored = MRESMetricAccumulator.from_state_dict(second.state_dict())
    assert first.merge(restored).compute() == single.compute()
    assert len(first) == 4
    with pytest.raises(ValueError, match="different options"):
        single.merge(MRESMetricAccumulator())


def test_accumulator_streams_batches_without_keeping_masks():
    accumulator = MRESMetricAccumulator()
    for prediction, reference in ((PRED_A, REF_A), (PRED_B, REF_B)):
        accumulator.update(prediction[None], reference[None], ["object"])
    np.testing.assert_allclose(accumulator.per_expression_iou(), [0.5, 1 / 3])
    state = accumulator.state_dict()
    assert all(np.asarray(value).ndim <= 1 for key, value in state.items() if key != "options")
    accumulator.reset()
    assert len(accumulator) == 0


@pytest.mark.parametrize(
    "options, named",
    [
        ({"resolution": "480"}, "resolution"),
        ({"threshold": 1.5}, "threshold"),
        ({"prec_comparison": "=>"}, "prec_comparison"),
        ({"empty_gt": "skip"}, "empty_gt"),
        ({"prec_thresholds": (0.5, 2.0)}, "prec_thresholds"),
        ({"input_size": (480, 480)}, "input_size"),  # needs resolution="input"
        ({"tresholds": 0.3}, "tresholds"),
    ],
)
def test_bad_option_raises_naming_it(options, named):
    with pytest.raises(ValueError, match=named):
        compute_mres_metrics([PRED_A], [REF_A], ["object"], **options)


def test_options_are_recorded():
    options = MRESMetricOptions(resolution="input", input_size=(480, 480), threshold=0.4)
    results = MRESMetricAccumulator(options).compute()
    assert results["options"]["resolution"] == "input"
    assert results["options"]["input_size"] == [480, 480]
    assert results["options"]["threshold"] == 0.4
    assert MRESMetricOptions.from_dict(options.to_dict()) == options


def test_bad_inputs_raise_naming_the_item():
    with pytest.raises(ValueError, match=r"granularities\[1\] is 'whole'"):
        compute_mres_metrics([PRED_A, PRED_B], [REF_A, REF_B], ["object", "whole"])
    with pytest.raises(ValueError, match=r"predictions\[1\] has size \(4, 4\) but references\[1\] has size \(2, 3\)"):
        compute_mres_metrics([PRED_A, PRED_B], [REF_A, pixels(2, 3, 1)], ["object", "object"])
    with pytest.raises(ValueError, match="shape"):
        compute_mres_metrics(np.stack([PRED_A, PRED_B]), np.zeros((2, 3, 3), bool), ["object", "object"])
    with pytest.raises(ValueError, match=r"parent_masks\[0\] has size"):
        compute_mres_metrics([PRED_A], [REF_A], ["part"], [pixels(2, 2, 1)])
    with pytest.raises(ValueError, match=r"parent_masks\[0\] is given for an 'object'"):
        compute_mres_metrics([PRED_A], [REF_A], ["object"], [np.ones((4, 4), bool)])
    with pytest.raises(ValueError, match="`references` has 1 items"):
        compute_mres_metrics([PRED_A, PRED_B], [REF_A], ["object", "object"])
    with pytest.raises(ValueError, match=r"predictions\[0\] has dtype float32.*binarize"):
        compute_mres_metrics([PRED_A.astype(np.float32)], [REF_A], ["object"])
    with pytest.raises(ValueError, match=r"references\[0\] is an integer mask with values outside"):
        compute_mres_metrics([PRED_A], [REF_A.astype(np.uint8) * 255], ["object"])
    with pytest.raises(ValueError, match=r"references\[0\] is not a COCO RLE dict with 'size' and 'counts'"):
        compute_mres_metrics([PRED_A], [{"counts": "x"}], ["object"])
    with pytest.raises(ValueError, match=r"predictions\[0\] has an empty shape"):
        compute_mres_metrics([np.zeros((0, 0), bool)], [np.zeros((0, 0), bool)], ["object"])
    with pytest.raises(ValueError, match=r"predictions\[0\] has an empty RLE size"):
        compute_mres_metrics([{"size": [0, 0], "counts": ""}], [{"size": [0, 0], "counts": ""}], ["object"])


MISLABELLED_RLE_SCRIPT = """
import numpy as np
from dataset_scripts.masks import encode_mask
from unires.evaluation import MRESMetricAccumulator, MRES_IOU_METRIC_PATH, compute_mres_metrics
import evaluate

# A 96x96 prediction labelled with the original 120x160 size: pycocotools' merge loops forever on it.
counts = encode_mask(np.ones((96, 96), bool))["counts"]
bad = {"size": [120, 160], "counts": counts}
good = encode_mask(np.ones((120, 160), bool))
calls = {
    "compute_mres_metrics": lambda: compute_mres_metrics([bad], [good], ["object"]),
    "accumulator": lambda: MRESMetricAccumulator().update([bad], [good], ["object"]),
    "evaluate module": lambda: evaluate.load(MRES_IOU_METRIC_PATH).compute(
        predictions=[bad], references=[good], granularities=["object"]),
}
for name, call in calls.items():
    try:
        call()
    except ValueError as error:
        assert "predictions[0]" in str(error) and "19200" in str(error), (name, error)
        print(name, "raised")
    else:
        raise AssertionError(name + " accepted a mislabelled RLE")
"""


def test_mislabelled_compressed_rle_raises_instead_of_hanging():
    # In a subprocess with a time limit: the failure this guards against is a hang inside pycocotools.
    done = subprocess.run([sys.executable, "-c", MISLABELLED_RLE_SCRIPT], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split("\n")[:3] == ["compute_mres_metrics raised", "accumulator raised", "evaluate module raised"]


def test_binarize_is_strict_and_handles_logits():
    probabilities = np.array([[0.2, 0.35, 0.36, 0.9]])
    np.testing.assert_array_equal(binarize(probabilities, 0.35), [[False, False, True, True]])
    logits = np.log(probabilities / (1 - probabilities))
    np.testing.assert_array_equal(binarize(logits, 0.5, from_logits=True), probabilities > 0.5)
    tensor_mask = binarize(torch.tensor(logits), 0.35, from_logits=True)
    assert tensor_mask.dtype == torch.bool
    np.testing.assert_array_equal(tensor_mask.numpy(), binarize(logits, 0.35, from_logits=True))


@pytest.mark.parametrize("kind, threshold, above", [("numpy float16", 0.35, 0.35009765625),
                                                     ("torch float16", 0.35, 0.35009765625),
                                                     ("torch bfloat16", 0.4, 0.400390625)])
def test_binarize_thresholds_half_precision_maps_in_float32(kind, threshold, above):
    # Issue 28, case 5: compared in float16, the threshold 0.35 rounds up to 0.35009766, so a probability of exactly
    # 0.35009766 (above 0.35) counted as background; bfloat16 rounds 0.4 up to 0.400390625 likewise.
    values = np.array([[0.3, above]], dtype=np.float32)
    if kind == "numpy float16":
        half = values.astype(np.float16)
    else:
        half = torch.tensor(values, dtype=torch.float16 if kind == "torch float16" else torch.bfloat16)
    assert float(half[0, 1]) == above > threshold
    mask = binarize(half, threshold)
    mask = mask.numpy() if isinstance(mask, torch.Tensor) else mask
    np.testing.assert_array_equal(mask, [[False, True]])


@pytest.mark.parametrize("as_tensor", [False, True])
@pytest.mark.parametrize("from_logits, threshold", [(True, 0.35), (True, 0.0), (False, 0.5)])
def test_binarize_refuses_nan_instead_of_calling_it_background(as_tensor, from_logits, threshold):
    values = np.array([[0.1, 0.9], [np.nan, 0.2]], dtype=np.float32)
    values = torch.tensor(values) if as_tensor else values
    with pytest.raises(ValueError, match=r"1 NaN value\(s\) in the (logits|probabilities) \(first at index \(1, 0\)\)"):
        binarize(values, threshold, from_logits=from_logits)


def test_encode_mask_round_trip():
    rle = encode_mask(PRED_B)
    assert isinstance(rle["counts"], str) and rle["size"] == [4, 4]
    np.testing.assert_array_equal(mask_utils.decode(rle).astype(bool), PRED_B)


def test_format_metrics_table_single_and_splits():
    results = compute_mres_metrics([PRED_A, PRED_B], [REF_A, REF_B], ["object", "part"])
    table = format_metrics_table(results)
    lines = table.splitlines()
    assert lines[0].startswith("| setting | mIoU | oIoU | Prec@0.5")
    assert lines[2].startswith("| object | 50.00 | 50.00 | 100.00 |") and lines[2].endswith("| - | 1 |")
    assert lines[3].startswith("| part | 33.33 |")
    assert "prec_comparison=>=" in table
    by_split = format_metrics_table({"validation": results, "test_unseen": results})
    assert "| test_unseen | object+part |" in by_split
    assert len([line for line in by_split.splitlines() if line.startswith("| validation")]) == 3
    with pytest.raises(ValueError, match="latex"):
        format_metrics_table(results, fmt="latex")
    with pytest.raises(ValueError, match="validation"):
        format_metrics_table({"validation": {"mIoU": 1.0}})


def test_evaluate_module_loads_offline_and_matches_function(monkeypatch):
    monkeypatch.setenv("HF_EVALUATE_OFFLINE", "1")
    import evaluate

    metric = evaluate.load(MRES_IOU_METRIC_PATH, keep_in_memory=True)
    predictions = [PRED_A, PRED_B, pixels(3, 5, 6), np.zeros((4, 4), bool)]
    references = [REF_A, REF_B, pixels(3, 5, 3), np.zeros((4, 4), bool)]
    granularities = ["object", "part", "part", "object"]
    parents = [None, np.ones((4, 4), bool), None, None]
    expected = compute_mres_metrics(predictions, references, granularities, parents, prec_comparison=">")

    rle_predictions = [encode_mask(mask) for mask in predictions]
    rle_references = [mask_utils.encode(np.asfortranarray(mask.astype(np.uint8))) for mask in references]
    computed = metric.compute(
        predictions=rle_predictions, references=rle_references, granularities=granularities,
        parent_references=parents, prec_comparison=">",
    )
    assert computed == expected

    # Streaming through add_batch, with no parent column: the confusion figure has no parts to count.
    for start in (0, 2):
        metric.add_batch(
            predictions=rle_predictions[start:start + 2], references=rle_references[start:start + 2],
            granularities=granularities[start:start + 2],
        )
    streamed = metric.compute()
    assert streamed["part"]["part_object_confusion_count"] == 0
    assert streamed["object+part"]["mIoU"] == expected["object+part"]["mIoU"]
    assert streamed["options"]["prec_comparison"] == ">="


@pytest.mark.parametrize("bitwise_count", [True, False])
def test_all_input_paths_agree_on_random_masks(monkeypatch, bitwise_count):
    from unires.evaluation import metrics as metrics_module

    monkeypatch.setattr(metrics_module, "_HAS_BITWISE_COUNT", bitwise_count and hasattr(np, "bitwise_count"))
    generator = np.random.default_rng(0)
    predictions = generator.random((12, 9, 13)) < 0.4
    references = generator.random((12, 9, 13)) < 0.3
    references[3] = False  # an empty ground truth among them
    granularities = ["object", "part"] * 6
    # Plain formulas, one expression at a time.
    intersections = (predictions & references).sum(axis=(1, 2))
    unions = (predictions | references).sum(axis=(1, 2))
    ious = np.where(unions > 0, intersections / np.maximum(unions, 1), 1.0)
    expected_object = 100 * ious[0::2].mean()
    expected_overall = 100 * intersections.sum() / unions.sum()

    from_numpy = compute_mres_metrics(predictions, references, granularities)
    assert from_numpy["object"]["mIoU"] == pytest.approx(expected_object)
    assert from_numpy["object+part"]["oIoU"] == pytest.approx(expected_overall)
    assert from_numpy["object+part"]["Prec@0.5"] == pytest.approx(100 * (ious >= 0.5).mean())
    from_torch = compute_mres_metrics(torch.from_numpy(predictions), torch.from_numpy(references), granularities)
    from_list = compute_mres_metrics(list(predictions), list(references), granularities)
    from_rle = compute_mres_metrics(
        [encode_mask(m) for m in predictions], [encode_mask(m) for m in references], granularities
    )
    assert from_numpy == from_torch == from_list == from_rle


def test_evaluate_module_add_single_examples(monkeypatch):
    monkeypatch.setenv("HF_EVALUATE_OFFLINE", "1")
    import evaluate

    metric = evaluate.load(MRES_IOU_METRIC_PATH, keep_in_memory=True)
    reference = {"size": [2, 2], "counts": [1, 3]}  # uncompressed RLE: pixel (0, 0) off, the rest on
    # Part: prediction covers the whole parent (IoU 3/4 with the part, 1 with the parent): confused.
    metric.add(prediction=np.ones((2, 2), bool), reference=reference, granularity="part",
               parent_reference=np.ones((2, 2), bool))
    metric.add(prediction=[[0, 1], [1, 1]], reference=reference, granularity="object")  # IoU 1
    results = metric.compute()
    assert results["object+part"]["mIoU"] == pytest.approx(87.5)
    assert results["object+part"]["oIoU"] == pytest.approx(100 * 6 / 7)
    assert results["part"]["part_object_confusion"] == 100.0
