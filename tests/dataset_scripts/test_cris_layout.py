"""The CRIS layout as CRIS.pytorch's converter writes it and as RefCOCO_m is released, on miniature real files.

The converter (tools/data_process.py) writes ``anns/{dataset}/{split}.json`` with ``bbox`` as
``[x_min, y_min, x_max, y_max]`` integers and ``cat`` as the 0-79 COCO index, and 0/255 masks
``masks/{dataset}/{ref_id}.png``; the images stay in ``images/train2014``.
"""

import json
import os

import numpy as np
import pytest
from PIL import Image

from dataset_scripts.coco_common import checked_bbox
from dataset_scripts.masks import decode_mask, mask_from_png
from dataset_scripts.refcoco import RefCOCO
from dataset_scripts.refcoco_m import RefCOCOm

W, H = 40, 30


def _img_name(i):
    return f"COCO_train2014_{i:012d}.jpg"


def _image(path, colour="red"):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.new("RGB", (W, H), colour).save(path, quality=95)


def _mask(path, xyxy, on=255, mode="L"):
    """A rectangle mask as CRIS writes it (0/255 grayscale; ``on=1`` for a 0/1 one)."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    m = np.zeros((H, W), np.uint16 if mode == "I;16" else np.uint8)
    x0, y0, x1, y1 = xyxy
    m[y0:y1, x0:x1] = on
    Image.fromarray(m).save(path)
    return m > 0


def _sents(*texts):
    return [{"idx": i, "sent_id": 100 + i, "sent": t} for i, t in enumerate(texts)]


def _write_json(path, items):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(items, f)


def _records(path):
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def _build(builder):
    builder.download_and_prepare()
    return builder.as_dataset()


# COCO boxes [x, y, w, h] of three referents and what the converter makes of them.
# person: COCO id 1 -> index 0; car: id 3 -> index 2; toothbrush: id 90 -> index 79 (the last).
CONVERTED = [
    {"ref_id": 7, "coco_xywh": [4, 3, 10, 12], "cat": 0, "name": "person"},
    {"ref_id": 8, "coco_xywh": [20, 10, 20, 20], "cat": 2, "name": "car"},  # reaches the right and bottom edges
    {"ref_id": 9, "coco_xywh": [1, 20, 5, 4], "cat": 79, "name": "toothbrush"},
]


def _converter_layout(root, dataset="refcoco", split="val"):
    _image(str(root / "images" / "train2014" / _img_name(1)))
    items = []
    for ref in CONVERTED:
        x, y, w, h = ref["coco_xywh"]
        xyxy = [x, y, x + w, y + h]
        _mask(str(root / "masks" / dataset / f"{ref['ref_id']}.png"), xyxy)
        items.append({"bbox": xyxy, "cat": ref["cat"], "segment_id": ref["ref_id"], "img_name": _img_name(1),
                      "sentences": _sents(f"the {ref['name']}"), "sentences_num": 1})
    _write_json(str(root / "anns" / dataset / f"{split}.json"), items)
    return root


def test_refcoco_reads_the_converter_layout_boxes_and_categories(tmp_path):
    root = _converter_layout(tmp_path / "data")
    builder = RefCOCO(config_name="refcoco-unc", data_dir=str(root), cache_dir=str(tmp_path / "cache"))
    rows = _build(builder)["val"]
    referents = rows[0]["referents"]
    assert [r["referent_id"] for r in referents] == ["refcoco-unc/7", "refcoco-unc/8", "refcoco-unc/9"]
    assert [r["category"] for r in referents] == ["person", "car", "toothbrush"]
    assert [r["bbox"] for r in referents] == [[float(v) for v in ref["coco_xywh"]] for ref in CONVERTED]
    assert all(r["granularity"] == "object" for r in referents)
    # clean data: nothing fixed, nothing skipped
    assert builder.last_summary.startswith("kept 3, fixed 0, skipped 0")


def test_refcocom_converter_layout_single_dataset_and_01_masks(tmp_path):
    root = tmp_path / "data"
    _image(str(root / "images" / _img_name(2)))
    expected = {
        31: _mask(str(root / "masks" / "refcocom" / "31.png"), (3, 4, 12, 20), on=1),  # 0/1 grayscale
        32: _mask(str(root / "masks" / "refcocom" / "32.png"), (15, 5, 35, 25), on=1, mode="I;16"),  # 16-bit 0/1
        33: _mask(str(root / "masks" / "refcocom" / "33.png"), (0, 0, 40, 30), on=65535, mode="I;16"),
    }
    items = [{"img_name": _img_name(2), "segment_id": sid, "cat": "person:hand", "sentences": _sents(f"part {sid}")}
             for sid in expected]
    _write_json(str(root / "anns" / "refcocom" / "val_part_only.json"), items)
    builder = RefCOCOm(data_dir=str(root), cache_dir=str(tmp_path / "cache"))
    referents = _build(builder)["val_part_only"][0]["referents"]
    assert builder.last_summary.startswith("kept 3, fixed 0, skipped 0")
    for referent, (sid, mask) in zip(referents, expected.items()):
        assert referent["referent_id"] == f"val_part_only/{sid}"
        np.testing.assert_array_equal(decode_mask(referent["mask"]), mask)
        assert (referent["granularity"], referent["category"], referent["object_category"]) == ("part", "hand", "person")


def test_mask_png_holding_0_and_1_is_the_mask(tmp_path):
    mask = _mask(str(tmp_path / "m.png"), (2, 3, 9, 7), on=1)
    np.testing.assert_array_equal(mask_from_png(str(tmp_path / "m.png")), mask)
    assert mask_from_png(str(tmp_path / "m.png")).sum() == 7 * 4
    Image.fromarray(np.zeros((H, W), np.uint8)).save(tmp_path / "empty.png")
    assert not mask_from_png(str(tmp_path / "empty.png")).any()


def test_refcoco_cris_option_honours_the_folder_options(tmp_path):
    root = tmp_path / "data"
    _image(str(root / "pics" / _img_name(1)))
    _mask(str(root / "my_masks" / "5.png"), (0, 0, 10, 10))
    _write_json(str(root / "my_anns" / "testA.json"),
                [{"img_name": _img_name(1), "segment_id": 5, "cat": 2, "bbox": [0, 0, 10, 10], "sentences": _sents("car")}])
    builder = RefCOCO(config_name="refcoco-unc", data_dir=str(root), cache_dir=str(tmp_path / "cache"),
                      annotation_dir="my_anns", mask_dir="my_masks", image_dir="pics")
    rows = _build(builder)["testA"]
    assert rows["image_id"] == ["1"] and rows[0]["referents"][0]["category"] == "car"
    with pytest.raises(FileNotFoundError, match="mask folder 'nowhere'"):
        RefCOCO(config_name="refcoco-unc", data_dir=str(root), cache_dir=str(tmp_path / "c2"),
                annotation_dir="my_anns", mask_dir="nowhere", image_dir="pics").download_and_prepare()


def test_converter_layout_with_several_datasets_needs_a_choice(tmp_path):
    root = _converter_layout(tmp_path / "data", dataset="refcoco")
    _converter_layout(root, dataset="refcoco+", split="testB")
    with pytest.raises(ValueError, match=r"several datasets \['refcoco', 'refcoco\+'\].*dataset="):
        RefCOCOm(data_dir=str(root), cache_dir=str(tmp_path / "c1")).download_and_prepare()
    # RefCOCO's config names its dataset: refcoco+ reads anns/refcoco+/ and masks/refcoco+/
    ds = _build(RefCOCO(config_name="refcoco+-unc", data_dir=str(root), cache_dir=str(tmp_path / "c2")))
    assert list(ds) == ["testB"] and len(ds["testB"][0]["referents"]) == 3


def test_cris_fixes_skips_and_their_reasons(tmp_path):
    root = tmp_path / "data"
    _image(str(root / "images" / _img_name(3)))
    for sid, box in ((1, (2, 2, 8, 8)), (2, (1, 1, 4, 4)), (3, (10, 2, 20, 12)), (4, (0, 20, 6, 30)), (5, (30, 0, 40, 5))):
        _mask(str(root / "masks" / f"{sid}.png"), box)
    items = [
        # kept, fixed twice (a blank sentence beside valid ones, a box clipped): one fixed referent
        {"segment_id": 1, "cat": 16, "bbox": [2, 2, 60, 8], "sentences": _sents("the dog", "   ", "brown dog")},
        {"segment_id": 2, "cat": 16, "sentences": _sents("  ", "")},  # whitespace only: skipped
        {"segment_id": 3, "cat": 2, "bbox": [20, 2, 10, 12], "sentences": _sents("car")},  # negative width: fixed
        {"segment_id": 4, "cat": 2, "bbox": [50, 40, 60, 50], "sentences": _sents("car")},  # outside: fixed
        {"segment_id": 5, "cat": 80, "sentences": _sents("thing")},  # no such category index: fixed
        {"segment_id": 6, "cat": 2, "bbox": [0, 0, 90, 90], "sentences": _sents("car", " ")},  # no mask: skipped
        {"segment_id": 1, "cat": 16, "sentences": _sents("repeat")},  # duplicate: skipped
    ]
    _write_json(str(root / "annotations" / "val.json"), [{"img_name": _img_name(3), **item} for item in items])
    builder = RefCOCOm(data_dir=str(root), cache_dir=str(tmp_path / "cache"))
    referents = {r["referent_id"]: r for r in _build(builder)["val"][0]["referents"]}
    assert builder.last_summary.startswith("kept 4, fixed 4, skipped 3")

    assert referents["val/1"]["sentences"] == ["the dog", "brown dog"]
    assert referents["val/1"]["bbox"] == [2.0, 2.0, 38.0, 6.0]
    assert referents["val/3"]["bbox"] == [10.0, 2.0, 10.0, 10.0]  # the mask's box
    assert referents["val/4"]["bbox"] == [0.0, 20.0, 6.0, 10.0]
    assert referents["val/5"]["category"] == ""
    records = _records(builder.rejects_path)
    by_item = {}
    for r in records:
        by_item.setdefault(r["item_id"], []).append((r["action"], r["reason"]))
    assert by_item["val/1"] == [("skipped", "duplicate segment_id in the split: item 6"),  # found while grouping
                                ("fixed", "blank sentences removed: indices [1]"),
                                ("fixed", "bbox clipped to the image")]
    assert by_item["val/2"] == [("skipped", "no usable sentence: all 2 blank")]
    assert by_item["val/3"][0][1].startswith("bbox has no positive width and height")
    assert by_item["val/4"][0][1].startswith("bbox outside the image")
    assert by_item["val/5"][0][1].startswith("cat is not a COCO category index (0-79)")
    # the blank sentence of a referent that is skipped anyway is not recorded as a fix
    assert [action for action, _ in by_item["val/6"]] == ["skipped"] and by_item["val/6"][0][1].startswith("missing mask")


@pytest.mark.parametrize("bbox, xyxy, expected, reason", [
    (None, True, [1.0, 1.0, 2.0, 2.0], None),  # absent: the mask's box, not a fix
    ([4, 3, 14, 15], True, [4.0, 3.0, 10.0, 12.0], None),
    ([4, 3, 14, 15], False, [4.0, 3.0, 14.0, 15.0], None),
    ([30, 20, 50, 40], True, [30.0, 20.0, 10.0, 10.0], "bbox clipped to the image"),
    ([14, 3, 4, 15], True, [1.0, 1.0, 2.0, 2.0], "bbox has no positive width and height"),
    ([50, 40, 60, 50], True, [1.0, 1.0, 2.0, 2.0], "bbox outside the image"),
    ("1234", True, [1.0, 1.0, 2.0, 2.0], "bbox is not 4 numbers"),
    ([1, 2, float("nan"), 4], False, [1.0, 1.0, 2.0, 2.0], "bbox is not 4 numbers"),
])
def test_checked_bbox_names_what_it_fixed(bbox, xyxy, expected, reason):
    box, problem = checked_bbox(bbox, W, H, [1.0, 1.0, 2.0, 2.0], xyxy=xyxy)
    assert box == expected
    assert problem is None if reason is None else problem.startswith(reason)


def test_cris_part_links_are_checked_and_every_broken_one_recorded(tmp_path):
    root = tmp_path / "data"
    _image(str(root / "images" / _img_name(4)))
    _image(str(root / "images" / _img_name(5)))
    boxes = {1: (0, 0, 20, 20), 2: (2, 2, 8, 8), 3: (25, 20, 35, 28), 4: (4, 4, 6, 6), 5: (4, 4, 6, 6),
             6: (0, 0, 10, 10), 7: (5, 5, 9, 9), 8: (1, 1, 3, 3)}
    for sid, box in boxes.items():
        _mask(str(root / "masks" / f"{sid}.png"), box)
    part = {"cat": "dog:ear", "granularity": "part", "sentences": _sents("an ear")}
    items = [
        {"img_name": _img_name(4), "segment_id": 1, "cat": 16, "sentences": _sents("the dog")},
        {"img_name": _img_name(4), "segment_id": 2, "parent_segment_id": 1, **part},  # inside its object: linked
        {"img_name": _img_name(4), "segment_id": 3, "parent_segment_id": 1, **part},  # wholly outside it
        {"img_name": _img_name(4), "segment_id": 4, "parent_segment_id": 99, **part},  # parent never annotated
        {"img_name": _img_name(4), "segment_id": 5, "parent_segment_id": 6, **part},  # parent in another image
        {"img_name": _img_name(4), "segment_id": 7, "parent_segment_id": 2, **part},  # parent is a part
        {"img_name": _img_name(5), "segment_id": 6, "cat": 2, "sentences": _sents("the car")},
        {"img_name": _img_name(5), "segment_id": 8, "parent_segment_id": 9, **part},  # parent skipped (no mask)
        {"img_name": _img_name(5), "segment_id": 9, "cat": 2, "sentences": _sents("a car")},
    ]
    _write_json(str(root / "annotations" / "val.json"), items)
    builder = RefCOCOm(data_dir=str(root), cache_dir=str(tmp_path / "cache"))
    rows = _build(builder)["val"]
    referents = {r["referent_id"]: r for row in rows for r in row["referents"]}
    assert referents["val/2"]["parent_id"] == "val/1"
    for sid in (3, 4, 5, 7, 8):
        assert referents[f"val/{sid}"]["parent_id"] is None, sid
    # every parent_id left points at an object of the same row
    for row in rows:
        in_row = {r["referent_id"]: r for r in row["referents"]}
        for r in row["referents"]:
            assert r["parent_id"] is None or in_row[r["parent_id"]]["granularity"] == "object"
    reasons = {r["item_id"]: r["reason"] for r in _records(builder.rejects_path) if r["action"] == "fixed"}
    assert reasons["val/3"] == "parent link removed: part lies wholly outside its parent val/1"
    assert reasons["val/4"] == "parent link removed: parent val/99 is not annotated in the split"
    assert reasons["val/5"].startswith("parent link removed: parent val/6 belongs to another image")
    assert reasons["val/7"] == "parent link removed: parent val/2 is a part, not an object"
    assert reasons["val/8"] == "parent link removed: parent val/9 was skipped"
    assert "val/2" not in reasons
