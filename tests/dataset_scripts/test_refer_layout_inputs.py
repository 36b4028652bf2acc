"""The refer layout (a real Python-2-protocol refs pickle, instances.json, JPEGs) with the inputs that used to be lost or misreported."""

import json
import pickle

from PIL import Image

from dataset_scripts.refcoco import RefCOCO

W, H = 40, 30


def _ref(ref_id, ann_id, split, *texts):
    return {"ref_id": ref_id, "ann_id": ann_id, "image_id": 1, "split": split, "category_id": 3,
            "sent_ids": list(range(len(texts))),
            "sentences": [{"tokens": t.split(), "raw": t, "sent": t, "sent_id": i} for i, t in enumerate(texts)]}


def _square(ann_id, x, y, side, bbox=None, category_id=3):
    return {"id": ann_id, "image_id": 1, "category_id": category_id, "iscrowd": 0, "area": side * side,
            "bbox": bbox if bbox is not None else [x, y, side, side],
            "segmentation": [[x, y, x + side, y, x + side, y + side, x, y + side]]}


def _refer_layout(root, refs, annotations):
    (root / "refcoco").mkdir(parents=True)
    (root / "train2014").mkdir()
    Image.new("RGB", (W, H), "gray").save(root / "train2014" / "COCO_train2014_000000000001.jpg")
    instances = {"images": [{"id": 1, "file_name": "COCO_train2014_000000000001.jpg", "width": W, "height": H}],
                 "annotations": annotations, "categories": [{"id": 3, "name": "car"}, {"id": 1, "name": "person"}]}
    (root / "refcoco" / "instances.json").write_text(json.dumps(instances))
    (root / "refcoco" / "refs(unc).p").write_bytes(pickle.dumps(refs, protocol=2))
    return root


def _records(path):
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def test_duplicate_ref_blank_sentences_and_bad_boxes(tmp_path):
    refs = [
        _ref(1, 11, "val", "red car", "  ", "car on the left"),  # a blank sentence beside valid ones
        _ref(2, 12, "val", "blue car"),
        _ref(1, 11, "val", "red car"),  # the same ref_id again
        _ref(3, 13, "val", " ", "\t"),  # whitespace only
        _ref(4, 14, "val", "person"),  # negative-width box
        _ref(5, 15, "val", "thing"),  # category id unknown to instances.json and to COCO
        _ref(6, 11, "val", "", "car"),  # blank sentence, but the ref is a duplicate of another split's: skipped
    ]
    refs.append(dict(refs[1], split="testA"))  # ref 2 again, in another split
    annotations = [
        _square(11, 2, 2, 10), _square(12, 20, 2, 10), _square(13, 2, 15, 5),
        _square(14, 25, 15, 10, bbox=[30, 15, -5, 10], category_id=1), _square(15, 10, 20, 4, category_id=999),
    ]
    root = _refer_layout(tmp_path / "data", refs, annotations)
    builder = RefCOCO(config_name="refcoco-unc", data_dir=str(root), cache_dir=str(tmp_path / "cache"), splits=("val",))
    builder.download_and_prepare()
    referents = builder.as_dataset()["val"][0]["referents"]
    ids = [r["referent_id"] for r in referents]
    assert ids == ["refcoco-unc/1", "refcoco-unc/2", "refcoco-unc/4", "refcoco-unc/5", "refcoco-unc/6"]
    assert len(set(ids)) == len(ids)
    first = referents[0]
    assert first["sentences"] == ["red car", "car on the left"]
    assert referents[2]["bbox"] == [25.0, 15.0, 10.0, 10.0] and referents[2]["category"] == "person"
    assert referents[3]["category"] == ""
    assert referents[4]["sentences"] == ["car"]

    records = _records(builder.rejects_path)
    reasons = [(r["item_id"], r["action"], r["reason"]) for r in records]
    assert ("refcoco-unc/1", "skipped", "duplicate ref_id: 1 repeats the ref first seen in split val") in reasons
    assert ("refcoco-unc/1", "fixed", "blank sentences removed: indices [1]") in reasons
    assert ("refcoco-unc/3", "skipped", "no usable sentence: all 2 blank") in reasons
    bbox_fix = [r for i, a, r in reasons if i == "refcoco-unc/4"]
    assert len(bbox_fix) == 1 and bbox_fix[0].startswith("bbox has no positive width and height")
    assert [r for i, a, r in reasons if i == "refcoco-unc/5"][0].startswith("category id not in instances.json nor COCO")
    # the repeat in testA is not built (splits=("val",)), so it is not counted
    assert not any(r.get("split") == "testA" for r in records)
    # five referents written, four of them fixed (1, 4, 5, 6), two skipped (the repeat of 1, and 3)
    assert builder.last_summary.startswith("kept 5, fixed 4, skipped 2")


def test_duplicate_ref_across_splits_is_published_once(tmp_path):
    refs = [_ref(1, 11, "train", "red car"), _ref(2, 12, "train", "blue car"), _ref(1, 11, "val", "red car")]
    root = _refer_layout(tmp_path / "data", refs, [_square(11, 2, 2, 10), _square(12, 20, 2, 10)])
    builder = RefCOCO(config_name="refcoco-unc", data_dir=str(root), cache_dir=str(tmp_path / "cache"))
    builder.download_and_prepare()
    ds = builder.as_dataset()
    assert list(ds) == ["train"]  # val held only the repeat
    published = [r["referent_id"] for row in ds["train"] for r in row["referents"]]
    assert published == ["refcoco-unc/1", "refcoco-unc/2"]
    assert [(r["item_id"], r["split"]) for r in _records(builder.rejects_path)] == [("refcoco-unc/1", "val")]
    assert builder.last_summary.startswith("kept 2, fixed 0, skipped 1")
