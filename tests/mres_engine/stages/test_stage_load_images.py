"""Stage 1, load images (missing, corrupt, a wrong size), and the record -> row conversion."""

import dataclasses

import numpy as np
import pytest
from datasets import Dataset

from dataset_scripts.features import MRES_FEATURES
from dataset_scripts.masks import encode_mask
from mres_engine.readers.detection import read_detection_manifest
from mres_engine.records import new_referent, to_mres_row
from mres_engine.stages.base import EngineStage
from mres_engine.stages.load_images import LoadImages
from tiny_models.engine import write_synth_detection_set


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    return write_synth_detection_set(tmp_path_factory.mktemp("synth"), num_images=3)


def test_missing_and_corrupt_images_are_rejected(synth, tmp_path):
    annotations_json, image_dir, _ = synth
    records = read_detection_manifest(annotations_json, image_dir)
    (tmp_path / "corrupt.png").write_bytes(b"not a png")
    records[1] = dataclasses.replace(records[1], file_name=str(tmp_path / "corrupt.png"))
    records[2] = dataclasses.replace(records[2], file_name=str(tmp_path / "missing.png"))
    stage = LoadImages()
    assert isinstance(stage, EngineStage)
    out = stage(records)
    assert [r.image_id for r in out.records] == [records[0].image_id]
    assert out.records[0].image.size == (records[0].width, records[0].height)
    reasons = {r.image_id: r.reason for r in out.rejects}
    assert reasons[records[1].image_id].startswith("corrupt image")
    assert reasons[records[2].image_id].startswith("missing image")
    assert all(r.referent_id is None and r.stage == "load_images" for r in out.rejects)


def test_a_wrong_size_in_the_manifest_is_corrected_and_boxes_reclipped(synth):
    annotations_json, image_dir, _ = synth
    record = read_detection_manifest(annotations_json, image_dir)[0]
    record = dataclasses.replace(record, width=500, height=500,
                                 boxes=record.boxes + [{"box_id": "x", "bbox": [100, 100, 50, 50], "category": "far"}])
    out = LoadImages()([record])
    (fixed,) = out.records
    assert (fixed.width, fixed.height) == fixed.image.size == (64, 64)
    assert [r.referent_id for r in out.rejects] == [f"{record.image_id}/ox"]


def test_to_mres_row_fits_the_schema_and_drops_transient_fields(synth):
    annotations_json, image_dir, _ = synth
    record = LoadImages()(read_detection_manifest(annotations_json, image_dir)[:1]).records[0]
    mask = np.zeros((64, 64), bool)
    mask[2:9, 3:7] = True
    part = new_referent("i/o1/p0", "part", "wheel", "car", [3, 2, 4, 7], encode_mask(mask), parent_id="i/o1",
                        scores={"detector": 0.5, "sam_iou": 0.9, "clip_score": 0.7})
    obj = new_referent("i/o1", "object", "car", "car", [0, 0, 10, 10], encode_mask(mask), scores={"clip": 0.3})
    other = new_referent("i/o0", "object", "dog", "dog", [0, 0, 10, 10], encode_mask(mask))
    record.referents = [part, obj, other]
    row = to_mres_row(record)
    assert set(row) == set(MRES_FEATURES)
    assert [r["referent_id"] for r in row["referents"]] == ["i/o0", "i/o1", "i/o1/p0"]
    assert row["referents"][2]["scores"] == {"clip": None, "clip_score": pytest.approx(0.7), "sam_iou": pytest.approx(0.9),
                                             "sam_stability": None, "detector": 0.5}
    assert row["image"]["bytes"] == open(record.file_name, "rb").read()
    dataset = Dataset.from_list([row], features=MRES_FEATURES)
    assert dataset[0]["image"].size == (64, 64)
    assert dataset[0]["referents"][2]["parent_id"] == "i/o1"
