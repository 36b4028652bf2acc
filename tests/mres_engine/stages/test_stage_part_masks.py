"""Stage 4: part masks found inside their objects (zero-shot detector + SAM), kept, cut and deduplicated."""

import dataclasses

import numpy as np
import pytest

from dataset_scripts.masks import decode_mask, encode_mask
from mres_engine.backends import SegmentAnythingSegmenter
from mres_engine.readers.detection import read_detection_manifest
from mres_engine.records import ImageRecord, new_referent
from mres_engine.stages.load_images import LoadImages
from mres_engine.stages.object_masks import ObjectMasks
from mres_engine.stages.part_masks import (
    DetectorPartFinder,
    PartCandidate,
    PartMasks,
    crop_box,
    overlap_over_smaller,
    part_query,
)
from tiny_models.engine import build_tiny_owlv2, build_tiny_segment_anything, write_synth_detection_set


def _mask(y0, y1, x0, x1, size=20):
    mask = np.zeros((size, size), bool)
    mask[y0:y1, x0:x1] = True
    return mask


class ListedCandidates:
    """A finder returning given candidates, to test what PartMasks does with them."""

    def __init__(self, candidates):
        self.candidates = candidates
        self.calls = []

    def find(self, record, objects):
        self.calls.append([(r["referent_id"], names) for r, names in objects])
        return self.candidates


def _record():
    car = new_referent("img/o1", "object", "car", "car", [0, 0, 10, 10], encode_mask(_mask(0, 10, 0, 10)))
    tree = new_referent("img/o2", "object", "tree", "tree", [12, 12, 5, 5], encode_mask(_mask(12, 17, 12, 17)))
    return ImageRecord("img", "img.png", 20, 20, referents=[car, tree], part_names={"car": ["wheel", "door"]}, sam_embedding=object())


def test_parts_are_kept_inside_cut_to_and_deduplicated_within_their_object():
    candidates = [
        PartCandidate("img/o1", "wheel", _mask(6, 10, 0, 4), {"detector": 0.9}),  # kept
        PartCandidate("img/o1", "wheel", _mask(7, 9, 1, 3), {"detector": 0.8}),  # inside the first: duplicate (IoU only 0.25)
        PartCandidate("img/o1", "wheel", _mask(6, 10, 6, 10), {"detector": 0.7}),  # another wheel: kept
        PartCandidate("img/o1", "door", _mask(7, 9, 1, 3), {"detector": 0.6}),  # overlaps a wheel but another name: kept
        PartCandidate("img/o1", "door", _mask(5, 15, 5, 15), {"detector": 0.5}),  # 25 of 100 pixels inside: outside
        PartCandidate("img/o1", "door", _mask(6, 12, 2, 6), {"detector": 0.4}),  # 16 of 24 inside: kept, cut to the car
        PartCandidate("img/o1", "door", _mask(0, 5, 0, 5), {"detector": 0.3, "sam_iou": 0.5, "sam_stability": 0.99}),
    ]
    finder = ListedCandidates(candidates)
    out = PartMasks(finder, min_inside=0.5, dedup_overlap=0.8, min_iou=0.88)([_record()])
    assert finder.calls == [[("img/o1", ["wheel", "door"])]]  # only objects with a vocabulary are searched
    (record,) = out.records
    assert record.sam_embedding is None  # no later stage needs it
    parts = [r for r in record.referents if r["granularity"] == "part"]
    assert [(p["referent_id"], p["category"]) for p in parts] == [
        ("img/o1/p0", "wheel"), ("img/o1/p2", "wheel"), ("img/o1/p3", "door"), ("img/o1/p5", "door")]
    assert all(p["parent_id"] == "img/o1" and p["object_category"] == "car" for p in parts)
    assert parts[0]["scores"] == {"detector": 0.9}
    cut = decode_mask(parts[3]["mask"])
    assert cut.sum() == 16 and not cut[10:].any()  # the part was cut to its object's mask
    assert parts[3]["bbox"] == [2.0, 6.0, 4.0, 4.0]
    reasons = {r.referent_id: r.reason for r in out.rejects}
    assert set(reasons) == {"img/o1/p1", "img/o1/p4", "img/o1/p6"}
    assert reasons["img/o1/p1"] == "duplicate part: overlap 1.00 with img/o1/p0"
    assert reasons["img/o1/p4"] == "part outside its object: overlap 0.25 < 0.5"
    assert reasons["img/o1/p6"].startswith("SAM predicted IoU below threshold")


def test_finders_with_objects_per_call_get_objects_in_groups():
    record = dataclasses.replace(_record(), part_names={"car": ["wheel"], "tree": ["trunk"]})
    finder = ListedCandidates([PartCandidate("img/o2", "trunk", _mask(13, 16, 13, 15), {"detector": 0.5})])
    finder.objects_per_call = 1
    out = PartMasks(finder)([record])
    assert finder.calls == [[("img/o1", ["wheel"])], [("img/o2", ["trunk"])]]
    # Each call's candidates are matched to that call's objects only (here the tree's part once, not twice).
    assert [r["referent_id"] for r in out.records[0].referents if r["granularity"] == "part"] == ["img/o2/p0"]


def test_records_without_vocabulary_pass_unchanged():
    finder = ListedCandidates([])
    record = dataclasses.replace(_record(), part_names={})
    out = PartMasks(finder)([record])
    assert finder.calls == [] and out.rejects == []
    assert out.records[0].referents == record.referents


def test_overlap_over_smaller_and_crop_box():
    assert overlap_over_smaller(_mask(0, 10, 0, 10), _mask(2, 4, 2, 4)) == 1.0
    assert overlap_over_smaller(_mask(0, 2, 0, 2), _mask(5, 7, 5, 7)) == 0.0
    assert overlap_over_smaller(_mask(0, 0, 0, 0), _mask(5, 7, 5, 7)) == 0.0
    assert crop_box([10, 10, 20, 10], 100, 100, 0.1) == (8, 9, 32, 21)
    assert crop_box([0, 0, 20, 10], 25, 100, 0.5) == (0, 0, 25, 15)
    assert part_query("wheel", "car") == "wheel of car"


@pytest.fixture(scope="module")
def objects(tmp_path_factory):
    annotations_json, image_dir, _ = write_synth_detection_set(tmp_path_factory.mktemp("synth"), num_images=2)
    records = LoadImages()(read_detection_manifest(annotations_json, image_dir)).records
    segmenter = SegmentAnythingSegmenter(build_tiny_segment_anything())
    records = ObjectMasks(segmenter, min_iou=-1, min_stability=-1)(records).records
    names = {r["category"]: ["left part", "top part"] for rec in records for r in rec.referents}
    return segmenter, [dataclasses.replace(r, part_names=names) for r in records]


def test_detector_finder_queries_each_object_crop_and_reuses_the_sam_encoding(objects):
    segmenter, records = objects
    model, processor = build_tiny_owlv2()
    encodings, queries = [], []
    segmenter.predictor.model.image_encoder.register_forward_hook(lambda *a: encodings.append(1))
    finder = DetectorPartFinder(segmenter, model, processor, min_score=0.0, max_per_name=2)
    detect = finder.detect
    finder.detect = lambda crops, q: queries.append(q) or detect(crops, q)
    found = []
    finder.find = (lambda find: lambda record, objs: found.append(find(record, objs)) or found[-1])(finder.find)
    out = PartMasks(finder, min_inside=0.5, dedup_overlap=0.8, min_iou=-1, min_stability=-1)(records)
    assert encodings == []  # the part boxes were decoded on the object stage's encoding
    assert queries[0][0] == [f"left part of {records[0].referents[0]['category']}", f"top part of {records[0].referents[0]['category']}"]
    for record, candidates in zip(out.records, found):
        objects_of = {r["referent_id"]: r for r in record.referents if r["granularity"] == "object"}
        parts = [r for r in record.referents if r["granularity"] == "part"]
        rejected = [r for r in out.rejects if r.image_id == record.image_id]
        assert len(candidates) <= 2 * 2 * len(objects_of)  # max_per_name per name and object
        assert len(parts) + len(rejected) == len(candidates)  # every candidate kept or rejected with a reason
        for part in parts:
            parent = decode_mask(objects_of[part["parent_id"]]["mask"])
            mask = decode_mask(part["mask"])
            assert mask.any() and not (mask & ~parent).any()
            assert set(part["scores"]) == {"detector", "sam_iou", "sam_stability"}
    assert sum(len(c) for c in found) > 0


def test_sam3_finder_encodes_each_image_once_and_prompts_each_part_name(objects, tmp_path):
    from mres_engine.options import StageOptions
    from mres_engine.stages.part_masks import Sam3PartFinder
    from tiny_models.engine import build_tiny_sam3

    _, records = objects
    for saved in build_tiny_sam3():
        saved.save_pretrained(tmp_path / "sam3")
    stage = PartMasks.from_options(StageOptions(part_masks="sam3", part_sam3_model=str(tmp_path / "sam3"), device="cpu",
                                                part_min_score=0.0, part_max_per_name=3, part_min_inside=0.5))
    finder = stage.finder
    assert isinstance(finder, Sam3PartFinder)
    model, _ = finder.sam3.get()
    encodings, prompts = [], []
    model.vision_encoder.register_forward_hook(lambda *a: encodings.append(1))
    model.text_encoder.register_forward_hook(lambda module, args, kwargs, output: prompts.append(1), with_kwargs=True)
    found = []
    finder.find = (lambda find: lambda record, objs: found.append(find(record, objs)) or found[-1])(finder.find)
    out = stage(records)
    assert len(encodings) == len(records)  # one vision encoding per image, whatever the number of part names
    assert len(prompts) == 2 * len(records)  # one text prompt per distinct part name ("left part", "top part")
    assert sum(len(c) for c in found) > 0
    for record, candidates in zip(out.records, found):
        objects_of = {r["referent_id"]: r for r in record.referents if r["granularity"] == "object"}
        parts = [r for r in record.referents if r["granularity"] == "part"]
        assert len(parts) + len([r for r in out.rejects if r.image_id == record.image_id]) == len(candidates)
        for candidate in candidates:  # only instances touching the object are candidates for it
            assert (candidate.mask & decode_mask(objects_of[candidate.object_id]["mask"])).any()
        for part in parts:
            assert not (decode_mask(part["mask"]) & ~decode_mask(objects_of[part["parent_id"]]["mask"])).any()
            assert set(part["scores"]) == {"detector"}
