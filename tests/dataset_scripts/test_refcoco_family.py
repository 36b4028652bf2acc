"""RefCOCO_m (CRIS layout) and RefCOCO family (refer layout) builders on miniature copies, with bad input."""

import json
import os
import pickle

import numpy as np
import pytest
from PIL import Image

from dataset_scripts.masks import decode_mask
from dataset_scripts.refcoco import RefCOCO
from dataset_scripts.refcoco_m import RefCOCOm
from run_support.rejects import RejectLog
from dataset_scripts.safe_pickle import UnsafePickleError, safe_load

W, H = 40, 30


def _image(path, colour):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.new("RGB", (W, H), colour).save(path, quality=95)


def _mask_png(path, box, size=(W, H)):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    m = np.zeros((size[1], size[0]), np.uint8)
    x0, y0, x1, y1 = box
    m[y0:y1, x0:x1] = 255
    Image.fromarray(m).save(path)


def _sents(*texts):
    return [{"idx": i, "sent_id": 100 + i, "sent": t} for i, t in enumerate(texts)]


def _rejects(path):
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f]


# ---------------------------------------------------------------------------------------- RefCOCO_m


@pytest.fixture(scope="module")
def refcocom_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("refcocom")
    img = lambda i: f"COCO_train2014_{i:012d}.jpg"
    for i, colour in ((1, "red"), (2, "blue"), (3, "green")):
        _image(str(root / "images" / img(i)), colour)
    (root / "images" / img(4)).write_bytes(b"\xff\xd8 truncated jpeg")  # corrupt image
    _mask_png(str(root / "masks" / "10.png"), (0, 0, 20, 30))
    _mask_png(str(root / "masks" / "11.png"), (2, 2, 8, 8))
    _mask_png(str(root / "masks" / "12.png"), (5, 5, 15, 15))
    _mask_png(str(root / "masks" / "13.png"), (0, 0, 5, 5), size=(20, 20))  # wrong size
    (root / "masks" / "14.png").write_bytes(b"garbage")  # unreadable
    _mask_png(str(root / "masks" / "15.png"), (1, 1, 3, 3))
    _mask_png(str(root / "masks" / "16.png"), (1, 1, 3, 3))
    _mask_png(str(root / "masks" / "20.png"), (20, 0, 40, 30))
    _mask_png(str(root / "masks" / "21.png"), (22, 2, 30, 10))
    val_object_part = [
        # CRIS conventions: bbox [x_min, y_min, x_max, y_max], cat the 0-79 COCO index (16 dog, 2 car)
        {"img_name": img(1), "segment_id": 10, "cat": 16, "bbox": [0, 0, 20, 30], "sentences": _sents("the dog"),
         "sentences_num": 1},
        {"img_name": img(1), "segment_id": 11, "cat": "dog:ear", "bbox": [2, 2, 60, 8],  # bbox fixed (clipped)
         "sentences": _sents("the ear of the dog", "dog ear"), "parent_segment_id": 10},
        {"img_name": img(2), "segment_id": 12, "cat": 2, "sentences": _sents("the car")},
        {"img_name": img(2), "segment_id": 13, "cat": 2, "sentences": _sents("wrong size mask")},
        {"img_name": img(2), "segment_id": 14, "cat": 2, "sentences": _sents("unreadable mask")},
        {"img_name": img(2), "segment_id": 15, "cat": 2, "sentences": []},  # empty sentence list
        {"img_name": img(2), "segment_id": 99, "cat": 2, "sentences": _sents("missing mask")},
        {"img_name": img(4), "segment_id": 16, "cat": 2, "sentences": _sents("corrupt image")},
        {"img_name": img(5), "segment_id": 17, "cat": 2, "sentences": _sents("missing image")},
    ]
    val_part_only = [
        {"img_name": img(3), "segment_id": 21, "cat": "wheel of car", "sentences": _sents("the left wheel")},
        {"img_name": img(3), "segment_id": 20, "cat": "body", "sentences": _sents("the body of the car")},
    ]
    os.makedirs(root / "annotations")
    (root / "annotations" / "val_object_part.json").write_text(json.dumps(val_object_part))
    (root / "annotations" / "val_part_only.json").write_text(json.dumps(val_part_only))
    return root


@pytest.fixture(scope="module")
def refcocom_built(refcocom_dir, tmp_path_factory):
    builder = RefCOCOm(data_dir=str(refcocom_dir), cache_dir=str(tmp_path_factory.mktemp("cache")))
    builder.download_and_prepare()
    return builder, builder.as_dataset()


def test_refcocom_splits_grouping_and_granularity(refcocom_built):
    builder, ds = refcocom_built
    assert sorted(ds) == ["val_object_part", "val_part_only"]
    rows = ds["val_object_part"]
    assert rows["image_id"] == ["1", "2"] and rows[0]["source"] == "coco2014"
    dog, ear = rows[0]["referents"]
    assert (dog["granularity"], dog["category"], dog["sentences"]) == ("object", "dog", ["the dog"])
    assert (ear["granularity"], ear["category"], ear["object_category"]) == ("part", "ear", "dog")
    assert ear["parent_id"] == dog["referent_id"] == "val_object_part/10"
    assert ear["bbox"] == [2.0, 2.0, 38.0, 6.0]  # clipped to the 40-pixel-wide image
    assert decode_mask(ear["mask"])[2:8, 2:8].all() and decode_mask(ear["mask"]).sum() == 36
    assert [r["category"] for r in rows[1]["referents"]] == ["car"]
    assert rows[1]["referents"][0]["bbox"] == [5.0, 5.0, 10.0, 10.0]  # from the mask when absent
    parts = ds["val_part_only"][0]["referents"]
    assert [(p["granularity"], p["category"], p["object_category"]) for p in parts] == [
        ("part", "wheel", "car"), ("part", "body", "body")]
    assert np.asarray(ds["val_part_only"][0]["image"]).shape == (H, W, 3)


def test_refcocom_rejects_counts_and_reasons(refcocom_built):
    builder, _ = refcocom_built
    assert builder.last_summary.startswith("kept 5, fixed 1, skipped 6")
    records = _rejects(builder.rejects_path)
    reasons = {r["item_id"]: (r["action"], r["reason"]) for r in records}
    assert reasons["val_object_part/11"] == ("fixed", "bbox clipped to the image")
    assert "differs from image size" in reasons["val_object_part/13"][1]
    assert reasons["val_object_part/14"][1].startswith("unreadable mask PNG")
    assert reasons["val_object_part/15"] == ("skipped", "empty sentence list")
    assert reasons["val_object_part/99"][1].startswith("missing mask")
    assert reasons["val_object_part/16"][1].startswith("corrupt image")
    assert reasons["val_object_part/17"][1].startswith("missing image")
    assert all(r["split"] == "val_object_part" for r in records)


def test_refcocom_missing_folder_names_it(tmp_path):
    (tmp_path / "annotations").mkdir()
    (tmp_path / "images").mkdir()
    with pytest.raises(FileNotFoundError, match="mask folder 'masks'.*" + str(tmp_path / "masks")):
        RefCOCOm(data_dir=str(tmp_path), cache_dir=str(tmp_path / "c")).download_and_prepare()


# ------------------------------------------------------------------------------ refer layout


def _refer_layout(root, refs, bad_image=False):
    data = root / "refcoco"
    data.mkdir(parents=True)
    images = [{"id": i, "file_name": f"COCO_train2014_{i:012d}.jpg", "width": W, "height": H} for i in (1, 2, 3)]
    for info, colour in zip(images, ("red", "green", "blue")):
        _image(str(root / "train2014" / info["file_name"]), colour)
    if bad_image:
        (root / "train2014" / images[2]["file_name"]).write_bytes(b"not a jpeg")
    annotations = [
        {"id": 500, "image_id": 1, "category_id": 1, "bbox": [2, 2, 10, 10], "iscrowd": 0,
         "segmentation": [[2, 2, 12, 2, 12, 12, 2, 12]], "area": 100},
        {"id": 501, "image_id": 1, "category_id": 18, "bbox": [30, 20, 20, 20], "iscrowd": 0,
         "segmentation": [[30, 20, 50, 20, 50, 40, 30, 40]], "area": 400},  # partly outside: fixed
        {"id": 502, "image_id": 2, "category_id": 3, "bbox": [100, 100, 5, 5], "iscrowd": 0,
         "segmentation": [[100, 100, 105, 100, 105, 105]], "area": 12},  # entirely outside: skipped
        {"id": 503, "image_id": 2, "category_id": 3, "bbox": [0, 0, 4, 4], "iscrowd": 0,
         "segmentation": [[0, 0, 4, 0, 4, 4, 0, 4]], "area": 16},
        {"id": 504, "image_id": 3, "category_id": 3, "bbox": [0, 0, 4, 4], "iscrowd": 0,
         "segmentation": [[0, 0, 4, 0, 4, 4, 0, 4]], "area": 16},
    ]
    categories = [{"id": 1, "name": "person"}, {"id": 18, "name": "dog"}, {"id": 3, "name": "car"}]
    (data / "instances.json").write_text(json.dumps(
        {"images": images, "annotations": annotations, "categories": categories}))
    with open(data / "refs(unc).p", "wb") as f:
        pickle.dump(refs, f, protocol=2)
    return root


def _ref(ref_id, ann_id, image_id, split, *texts):
    return {"ref_id": ref_id, "ann_id": ann_id, "image_id": image_id, "split": split, "category_id": 0,
            "file_name": f"COCO_train2014_{image_id:012d}_{ann_id}.jpg", "sent_ids": list(range(len(texts))),
            "sentences": [{"tokens": t.split(), "raw": t, "sent": t, "sent_id": i} for i, t in enumerate(texts)]}


REFS = [
    _ref(0, 500, 1, "train", "man on left", "person left"),
    _ref(1, 501, 1, "train", "dog"),
    _ref(2, 502, 2, "train", "outside car"),
    _ref(3, 503, 2, "val", "car"),
    _ref(4, 504, 3, "testA", "car"),
    _ref(5, 503, 2, "testB", ""),  # blank sentence only
    _ref(6, 999, 2, "testB", "no such annotation"),
]


def test_refcoco_refer_layout_splits_rows_and_rejects(tmp_path):
    root = _refer_layout(tmp_path / "data", REFS, bad_image=True)
    builder = RefCOCO(config_name="refcoco-unc", data_dir=str(root), cache_dir=str(tmp_path / "cache"))
    builder.download_and_prepare()
    ds = builder.as_dataset()
    assert list(ds) == ["train", "val"]  # testA lost its only image (corrupt), testB every ref
    train = ds["train"]
    assert train["image_id"] == ["1"]  # image 2's only train ref lies outside the image
    person, dog = train[0]["referents"]
    assert (person["category"], person["sentences"], person["bbox"]) == ("person", ["man on left", "person left"],
                                                                         [2.0, 2.0, 10.0, 10.0])
    assert dog["bbox"] == [30.0, 20.0, 10.0, 10.0] and decode_mask(dog["mask"]).sum() == 100
    assert person["granularity"] == "object" and person["parent_id"] is None and train[0]["source"] == "coco2014"
    reasons = {r["item_id"]: (r["action"], r["reason"]) for r in _rejects(builder.rejects_path)}
    assert reasons["refcoco-unc/1"][0] == "fixed"
    assert reasons["refcoco-unc/2"] == ("skipped", "polygon outside the image (empty mask)")
    assert reasons["refcoco-unc/4"][1].startswith("corrupt image")
    assert reasons["refcoco-unc/5"] == ("skipped", "no usable sentence: all 1 blank")
    assert "999" in reasons["refcoco-unc/6"][1]
    assert builder.last_summary.startswith("kept 3, fixed 1, skipped 4")  # dog: polygon + bbox fixes, one referent


def test_refcoco_strict_counts_and_missing_files(tmp_path):
    root = _refer_layout(tmp_path / "data", REFS)
    with pytest.raises(ValueError, match="official"):
        RefCOCO(config_name="refcoco-unc", data_dir=str(root), cache_dir=str(tmp_path / "c1"),
                strict_counts=True).download_and_prepare()
    with pytest.raises(FileNotFoundError, match=r"refcocog-umd.*refcocog/refs\(umd\)\.p"):
        RefCOCO(config_name="refcocog-umd", data_dir=str(root), cache_dir=str(tmp_path / "c2")).download_and_prepare()
    os.remove(root / "refcoco" / "instances.json")
    with pytest.raises(FileNotFoundError, match="instances.json"):
        RefCOCO(config_name="refcoco-unc", data_dir=str(root), cache_dir=str(tmp_path / "c3")).download_and_prepare()


def test_refcoco_accepts_the_cris_layout(refcocom_dir, tmp_path):
    builder = RefCOCO(config_name="refcoco-unc", data_dir=str(refcocom_dir), cache_dir=str(tmp_path),
                      splits=("val_object_part",))
    builder.download_and_prepare()
    rows = builder.as_dataset()["val_object_part"]
    assert rows["image_id"] == ["1", "2"]


class CustomRecord:
    pass


class _RunsCode:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_restricted_unpickler_refuses_code_and_loads_plain_data(tmp_path):
    plain = [{"a": (1, 2.5, None, True), "b": ["x", "y"]}]
    assert safe_load(pickle.dumps(plain, protocol=2)) == plain
    assert safe_load(pickle.dumps({1, 2})) == {1, 2}
    evil = tmp_path / "refs(unc).p"
    evil.write_bytes(pickle.dumps([_RunsCode()]))
    with pytest.raises(UnsafePickleError, match=r"refs\(unc\)\.p.*(posix|os|nt)\.system"):
        safe_load(str(evil))
    with pytest.raises(UnsafePickleError, match="CustomRecord"):
        safe_load(pickle.dumps(CustomRecord()))


def test_refcoco_builder_refuses_a_malicious_refs_file(tmp_path):
    root = _refer_layout(tmp_path / "data", REFS)
    (root / "refcoco" / "refs(unc).p").write_bytes(pickle.dumps([_RunsCode()]))
    with pytest.raises(UnsafePickleError):
        RefCOCO(config_name="refcoco-unc", data_dir=str(root), cache_dir=str(tmp_path / "c")).download_and_prepare()


def test_reject_log_summary_and_file(tmp_path):
    log = RejectLog(tmp_path / "out" / "rejects.jsonl")
    log.keep(3)
    log.fix("a", "bbox clipped to the image")
    log.keep()
    log.skip("b", "empty sentence list", split="val")
    line = log.close(log=False)
    assert line.startswith("kept 4, fixed 1, skipped 1")
    assert [r["item_id"] for r in _rejects(tmp_path / "out" / "rejects.jsonl")] == ["a", "b"]
    assert log.reasons == {"bbox clipped to the image": 1, "empty sentence list": 1}
