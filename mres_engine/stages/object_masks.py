"""Stage 2, object masks: Segment Anything with box prompts, every box of an image on one encoding.

The segmenter is a :class:`~mres_engine.backends.BoxSegmenter` (the ``segment_anything`` package by
default, or transformers' ``SamModel`` / ``Sam2Model``; see :mod:`mres_engine.backends`). Each mask
keeps SAM's predicted IoU and its stability score in ``scores`` (``sam_iou``, ``sam_stability``);
a mask below either threshold (SA-1B's 0.88 / 0.95 by default) is a referent reject.

The image embedding is left in the record (``sam_embedding``) so that the part-mask stage
prompts the same encoding with its part boxes instead of encoding the image again.
"""

from __future__ import annotations

from dataclasses import replace

from dataset_scripts.masks import encode_mask

from ..backends import BoxSegmenter, build_segmenter, sam_reject_reason, xywh_to_xyxy
from ..options import SA1B_MIN_PREDICTED_IOU, SA1B_MIN_STABILITY, StageOptions
from ..records import ImageRecord, new_referent, object_referent_id
from .base import Reject, StageOutput


class ObjectMasks:
    """One object referent per input box, its mask from SAM prompted with the box.

    Args:
        segmenter: a :class:`BoxSegmenter`.
        min_iou, min_stability: SAM score thresholds (SA-1B's 0.88 / 0.95 by default).
        keep_embedding: leave the image encoding in ``sam_embedding`` for the part stage.
    """

    name = "object_masks"

    def __init__(self, segmenter: BoxSegmenter, min_iou: float = SA1B_MIN_PREDICTED_IOU,
                 min_stability: float = SA1B_MIN_STABILITY, keep_embedding: bool = True):
        self.segmenter = segmenter
        self.min_iou = min_iou
        self.min_stability = min_stability
        self.keep_embedding = keep_embedding

    @classmethod
    def from_options(cls, options: StageOptions) -> "ObjectMasks":
        return cls(build_segmenter(options), options.sam_min_iou, options.sam_min_stability,
                   keep_embedding=options.part_vocabulary != "none" and options.part_masks == "detector")

    def __call__(self, records: list[ImageRecord]) -> StageOutput:
        out = StageOutput()
        for record in records:
            image_id = record.image_id
            if not record.boxes:
                out.rejects.append(Reject(image_id, self.name, "no input box"))
                continue
            image = record.image
            embedding = self.segmenter.encode(image)
            result = self.segmenter.segment(image, embedding, xywh_to_xyxy([b["bbox"] for b in record.boxes]))
            referents = []
            for box, mask, iou, stability in zip(record.boxes, result.masks, result.iou, result.stability):
                referent_id = object_referent_id(image_id, box["box_id"])
                reason = sam_reject_reason(float(iou), float(stability), self.min_iou, self.min_stability, not mask.any())
                if reason is not None:
                    out.rejects.append(Reject(image_id, self.name, reason, referent_id))
                    continue
                scores = {"sam_iou": float(iou), "sam_stability": float(stability)}
                referents.append(new_referent(referent_id, "object", box["category"], box["category"], box["bbox"],
                                              encode_mask(mask), scores=scores))
            if not referents:
                out.rejects.append(Reject(image_id, self.name, "no object mask kept"))
                continue
            out.records.append(replace(record, referents=record.referents + referents,
                                       sam_embedding=embedding if self.keep_embedding else record.sam_embedding))
        return out
