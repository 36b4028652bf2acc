"""The detection manifest reader (COCO/Objects365 JSON -> ImageRecords, every box accounted for) and the Hub export."""

import json
import os

import pytest
from datasets import Dataset

from run_support.rejects import RejectLog
from mres_engine.readers.detection import read_detection_manifest
from mres_engine.readers.hub_export import export_detection_dataset
from mres_engine.records import object_referent_id
from tiny_models.engine import write_synth_detection_set


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    return write_synth_detection_set(tmp_path_factory.mktemp("synth"), num_images=3)


def test_manifest_records_follow_the_json(synth):
    annotations_json, image_dir, rows = synth
    records = read_detection_manifest(annotations_json, image_dir, source="mres-synth")
    assert [r.image_id for r in records] == sorted(row["image_id"] for row in rows)
    data = json.load(open(annotations_json))
    assert sum(len(r.boxes) for r in records) == len(data["annotations"])
    by_id = {row["image_id"]: row for row in rows}
    for record in records:
        assert os.path.isfile(record.file_name)
        objects = [r for r in by_id[record.image_id]["referents"] if r["granularity"] == "object"]
        assert sorted(b["category"] for b in record.boxes) == sorted(o["category"] for o in objects)


def test_boxes_outside_the_image_are_clipped_and_empty_ones_rejected(tmp_path):
    manifest = {
        "images": [{"id": 7, "file_name": "a.png", "width": 40, "height": 30}],
        "categories": [{"id": 1, "name": "dog"}],
        "annotations": [
            {"id": 1, "image_id": 7, "bbox": [-5, 10, 20, 40], "category_id": 1},  # clipped
            {"id": 2, "image_id": 7, "bbox": [50, 5, 10, 10], "category_id": 1},  # outside: no area
            {"id": 3, "image_id": 7, "bbox": [5, 5, 0, 10], "category_id": 1},  # no width
            {"id": 4, "image_id": 8, "bbox": [5, 5, 5, 5], "category_id": 1},  # unknown image
            {"id": 5, "image_id": 7, "bbox": [5, 5, 5, 5], "category_id": 9},  # unknown category
            {"id": 6, "image_id": 7, "bbox": [1, 2, 3, 4], "category_id": 1},  # fine
        ],
    }
    log = RejectLog(stage="input")
    (record,) = read_detection_manifest(manifest, tmp_path, rejects=log)
    assert record.image_id == "7" and record.file_name == os.path.join(tmp_path, "a.png")
    assert [b["bbox"] for b in record.boxes] == [[0.0, 10.0, 15.0, 20.0], [1.0, 2.0, 3.0, 4.0]]
    assert (log.kept, log.fixed, log.skipped) == (2, 1, 4)
    assert {r["item_id"] for r in log.records if r["action"] == "skipped"} == {"2", "3", "4", "5"}


def test_duplicate_image_ids_are_an_error():
    manifest = {"images": [{"id": 1, "file_name": "a", "width": 1, "height": 1}] * 2, "categories": []}
    with pytest.raises(ValueError, match="image id 1 appears twice"):
        read_detection_manifest(manifest)


@pytest.mark.parametrize("bbox_format", ["xywh", "xyxy"])
def test_a_detection_dataset_exports_to_the_manifest_layout(synth, tmp_path, bbox_format):
    from datasets import ClassLabel, Features, Image, Sequence, Value

    annotations_json, image_dir, rows = synth
    names = sorted({r["category"] for row in rows for r in row["referents"]})
    def box(b):
        return list(b) if bbox_format == "xywh" else [b[0], b[1], b[0] + b[2], b[1] + b[3]]
    table = {
        "image_id": [row["image_id"] for row in rows],
        "image": [{"bytes": row["image"]["bytes"], "path": None} for row in rows],
        "objects": [{"bbox": [box(r["bbox"]) for r in row["referents"] if r["granularity"] == "object"],
                     "category": [names.index(r["category"]) for r in row["referents"] if r["granularity"] == "object"]}
                    for row in rows],
    }
    features = Features({"image_id": Value("string"), "image": Image(),
                         "objects": {"bbox": Sequence(Sequence(Value("float32"), length=4)), "category": Sequence(ClassLabel(names=names))}})
    exported_json, exported_dir = export_detection_dataset(Dataset.from_dict(table, features=features), tmp_path, bbox_format=bbox_format)
    exported = read_detection_manifest(exported_json, exported_dir)
    original = read_detection_manifest(annotations_json, image_dir)
    assert [r.image_id for r in exported] == [r.image_id for r in original]
    for a, b in zip(exported, original):
        assert sorted((x["category"], x["bbox"]) for x in a.boxes) == sorted((x["category"], x["bbox"]) for x in b.boxes)
        assert open(a.file_name, "rb").read() == open(b.file_name, "rb").read()
    with pytest.raises(ValueError, match="no column 'boxes'"):
        export_detection_dataset(Dataset.from_dict(table, features=features), tmp_path, objects_column="boxes")


def test_crowd_boxes_are_skipped_with_their_reason_and_counted(tmp_path):
    manifest = {
        "images": [{"id": 1, "file_name": "a.png", "width": 40, "height": 30}],
        "categories": [{"id": 1, "name": "person"}],
        "annotations": [
            {"id": 1, "image_id": 1, "bbox": [1, 1, 10, 10], "category_id": 1, "iscrowd": 0},
            {"id": 2, "image_id": 1, "bbox": [0, 0, 40, 30], "category_id": 1, "iscrowd": 1},  # a crowd of people
            {"id": 3, "image_id": 1, "bbox": [5, 5, 10, 10], "category_id": 1},  # no iscrowd: one object
        ],
    }
    log = RejectLog(stage="input")
    (record,) = read_detection_manifest(manifest, tmp_path, rejects=log)
    assert [b["box_id"] for b in record.boxes] == ["1", "3"]
    (crowd,) = log.records
    assert crowd["item_id"] == "2" and crowd["action"] == "skipped" and crowd["reason"].startswith("crowd box")
    assert log.reasons["crowd box"] == 1 and (log.kept, log.skipped) == (2, 1)


def test_a_repeated_annotation_id_on_an_image_is_a_reject_and_referent_ids_stay_unique(tmp_path):
    manifest = {
        "images": [{"id": 1, "file_name": "a.png", "width": 40, "height": 30},
                   {"id": 2, "file_name": "b.png", "width": 40, "height": 30}],
        "categories": [{"id": 1, "name": "dog"}],
        "annotations": [
            {"id": 7, "image_id": 1, "bbox": [1, 1, 10, 10], "category_id": 1},
            {"id": 7, "image_id": 1, "bbox": [20, 5, 10, 10], "category_id": 1},  # the same id again on image 1
            {"id": "7", "image_id": 1, "bbox": [2, 2, 5, 5], "category_id": 1},  # and as a string
            {"id": 7, "image_id": 2, "bbox": [1, 1, 10, 10], "category_id": 1},  # on another image: referent 2/o7
        ],
    }
    log = RejectLog(stage="input")
    records = read_detection_manifest(manifest, tmp_path, rejects=log)
    referent_ids = [object_referent_id(r.image_id, b["box_id"]) for r in records for b in r.boxes]
    assert referent_ids == ["1/o7", "2/o7"] and len(set(referent_ids)) == len(referent_ids)
    assert records[0].boxes[0]["bbox"] == [1.0, 1.0, 10.0, 10.0]  # the first box in file order stays
    assert [(r["item_id"], r["reason"].split(":")[0]) for r in log.records] == [("7", "repeated annotation id")] * 2
    assert (log.kept, log.skipped) == (2, 2)


def test_malformed_manifests_name_the_file_item_and_key(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text('{"images": [{"id": 1, "file_name": "a.png", "height": 3}], "categories": []}')
    with pytest.raises(ValueError, match=r"bad.json: images\[0\] \(id 1\): key 'width': missing"):
        read_detection_manifest(path)
    path.write_text('{"images": [], "categories": [{"id": 1, "name": "a"}], "annotations": [{"id": 4, "image_id": 1')
    with pytest.raises(ValueError, match="bad.json: not valid JSON"):
        read_detection_manifest(path)
    path.write_text('{"images": [{"id": 1, "file_name": "a", "width": 3, "height": 3}], "categories": [{"id": 1, "name": "a"}],'
                    ' "annotations": [{"id": 4, "image_id": 1, "category_id": 1}]}')
    with pytest.raises(ValueError, match=r"annotations\[0\] \(id 4\): key 'bbox': missing"):
        read_detection_manifest(path)
    path.write_text('{"categories": []}')
    with pytest.raises(ValueError, match="key 'images': missing"):
        read_detection_manifest(path)
    path.write_text('{"images": [{"id": 1, "file_name": "a", "width": 3, "height": 3}], "categories": [], "annotations": [7]}')
    with pytest.raises(ValueError, match=r"annotations\[0\]: not an object but int"):
        read_detection_manifest(path)

