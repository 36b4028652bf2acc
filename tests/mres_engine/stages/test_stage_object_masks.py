"""Stage 2: object masks from SAM box prompts (segment_anything and transformers backends)."""

import dataclasses

import numpy as np
import pytest

from dataset_scripts.masks import decode_mask
from mres_engine.backends import SegmentAnythingSegmenter, TransformersSamSegmenter, build_segmenter, xywh_to_xyxy
from mres_engine.options import StageOptions
from mres_engine.readers.detection import read_detection_manifest
from mres_engine.stages.load_images import LoadImages
from mres_engine.stages.object_masks import ObjectMasks
from tiny_models.engine import (
    build_tiny_segment_anything,
    build_tiny_transformers_sam,
    build_tiny_transformers_sam2,
    write_synth_detection_set,
)


@pytest.fixture(scope="module")
def loaded(tmp_path_factory):
    annotations_json, image_dir, _ = write_synth_detection_set(tmp_path_factory.mktemp("synth"), num_images=3)
    return LoadImages()(read_detection_manifest(annotations_json, image_dir)).records


def _segmenters():
    return {
        "segment_anything": lambda: SegmentAnythingSegmenter(build_tiny_segment_anything()),
        "transformers": lambda: TransformersSamSegmenter(*build_tiny_transformers_sam()),
        "transformers-sam2": lambda: TransformersSamSegmenter(*build_tiny_transformers_sam2()),
    }


def _count_encodings(segmenter):
    encoder = segmenter.predictor.model.image_encoder if isinstance(segmenter, SegmentAnythingSegmenter) else segmenter.sam.get()[0].vision_encoder
    calls = []
    encoder.register_forward_hook(lambda *args: calls.append(1))
    return calls


@pytest.mark.parametrize("backend", ["segment_anything", "transformers", "transformers-sam2"])
def test_every_box_gets_a_mask_and_scores_on_one_encoding_per_image(loaded, backend):
    segmenter = _segmenters()[backend]()
    calls = _count_encodings(segmenter)
    stage = ObjectMasks(segmenter, min_iou=-1.0, min_stability=-1.0)
    out = stage(loaded)
    assert len(calls) == len(loaded)  # one image encoding per image, whatever its number of boxes
    assert [r.image_id for r in out.records] == [r.image_id for r in loaded]
    for before, after in zip(loaded, out.records):
        assert len(after.referents) == len(before.boxes)
        for box, referent in zip(before.boxes, after.referents):
            assert referent["referent_id"] == f"{before.image_id}/o{box['box_id']}"
            assert referent["granularity"] == "object" and referent["parent_id"] is None
            assert referent["category"] == referent["object_category"] == box["category"]
            assert decode_mask(referent["mask"]).shape == (before.height, before.width)
            assert set(referent["scores"]) == {"sam_iou", "sam_stability"}
            assert 0.0 <= referent["scores"]["sam_stability"] <= 1.0
        assert after.sam_embedding is not None


@pytest.mark.parametrize("backend", ["segment_anything", "transformers", "transformers-sam2"])
def test_boxes_decoded_together_match_boxes_decoded_alone(loaded, backend):
    segmenter = _segmenters()[backend]()
    record = max(loaded, key=lambda r: len(r.boxes))
    image = record.image
    boxes = xywh_to_xyxy([b["bbox"] for b in record.boxes])
    embedding = segmenter.encode(image)
    together = segmenter.segment(image, embedding, boxes)
    for i in range(len(boxes)):
        alone = segmenter.segment(image, embedding, boxes[i : i + 1])
        assert np.array_equal(alone.masks[0], together.masks[i])
        assert alone.iou[0] == pytest.approx(together.iou[i], abs=1e-5)


def test_thresholds_reject_referents_and_empty_images(loaded):
    segmenter = SegmentAnythingSegmenter(build_tiny_segment_anything())
    scored = ObjectMasks(segmenter, min_iou=-1.0, min_stability=-1.0)(loaded).records
    ious = sorted(r["scores"]["sam_iou"] for rec in scored for r in rec.referents)
    cut = (ious[len(ious) // 2 - 1] + ious[len(ious) // 2]) / 2
    out = ObjectMasks(segmenter, min_iou=cut, min_stability=-1.0)(loaded)
    kept = [r for rec in out.records for r in rec.referents]
    referent_rejects = [r for r in out.rejects if r.referent_id is not None]
    assert all(r["scores"]["sam_iou"] >= cut for r in kept)
    assert len(kept) + len(referent_rejects) == len(ious)
    assert referent_rejects and all(r.reason.startswith("SAM predicted IoU below threshold") for r in referent_rejects)
    # An image none of whose masks passes is rejected as a whole, with its reason.
    none_kept = ObjectMasks(segmenter, min_iou=2.0)(loaded)
    assert none_kept.records == []
    assert sorted(r.image_id for r in none_kept.rejects if r.referent_id is None) == sorted(r.image_id for r in loaded)
    assert {r.reason for r in none_kept.rejects if r.referent_id is None} == {"no object mask kept"}


def test_image_without_boxes_is_rejected(loaded):
    out = ObjectMasks(SegmentAnythingSegmenter(build_tiny_segment_anything()))([dataclasses.replace(loaded[0], boxes=[])])
    assert out.records == [] and [r.reason for r in out.rejects] == ["no input box"]


def test_segment_anything_checkpoint_is_required_and_loaded_safely(tmp_path, loaded):
    import torch
    from segment_anything import sam_model_registry

    with pytest.raises(ValueError, match="--sam_checkpoint"):
        build_segmenter(StageOptions(sam_backend="segment_anything")).encode(loaded[0].image)
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        build_segmenter(StageOptions(sam_checkpoint=str(tmp_path / "nope.pth"))).encode(loaded[0].image)
    # A state dict saved as SAM's releases are loads into the registry's model through weights_only=True.
    tiny = build_tiny_segment_anything()
    torch.save(tiny.state_dict(), tmp_path / "tiny.pth")
    sam_model_registry["tiny-test"] = lambda checkpoint=None: build_tiny_segment_anything(seed=1)
    try:
        segmenter = build_segmenter(StageOptions(sam_model_type="tiny-test", sam_checkpoint=str(tmp_path / "tiny.pth")))
        image = loaded[0].image
        boxes = xywh_to_xyxy([b["bbox"] for b in loaded[0].boxes])
        reference = SegmentAnythingSegmenter(tiny).segment(image, None, boxes)
        assert np.array_equal(segmenter.segment(image, None, boxes).masks, reference.masks)
    finally:
        del sam_model_registry["tiny-test"]
