"""Stage 4, part masks: find each object's named parts and segment them inside the object.

Two finders behind one interface (:class:`PartFinder`):

- :class:`DetectorPartFinder`: any ``AutoModelForZeroShotObjectDetection`` (default OWLv2) is
  shown each object's crop and asked for ``"<part> of <object>"``; its boxes prompt SAM (the
  object stage's :class:`~mres_engine.backends.BoxSegmenter`) on the image encoding that the
  object stage left in the record (no second encoding);
- :class:`Sam3PartFinder`: transformers ``Sam3Model`` prompted with each part name, the image's
  vision features computed once and reused for every prompt.

:class:`PartMasks` then keeps a candidate only inside its object -- the part's mask is cut to the
object's mask, and kept if the overlap over the smaller of the two masks reaches
``min_inside`` -- and merges same-name parts of one object whose overlap over the smaller mask
reaches ``dedup_overlap`` (not IoU: a part lies inside its object, and a duplicate is often a
sub-region of the other). Each kept part records ``parent_id`` and the finder's scores
(``detector``, and ``sam_iou`` / ``sam_stability`` where SAM made the mask); every candidate
not kept is a referent reject with its reason.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field, replace
from typing import Protocol

import numpy as np
import torch

from dataset_scripts.masks import decode_mask, encode_mask, mask_bbox

from ..backends import BoxSegmenter, LazyModel, build_segmenter, sam_reject_reason
from ..options import SA1B_MIN_PREDICTED_IOU, SA1B_MIN_STABILITY, StageOptions, resolve_device
from ..records import ImageRecord, new_referent, part_referent_id
from .base import Reject, StageOutput


@dataclass
class PartCandidate:
    """A part found for one object: its name, a full-image mask and the finder's scores."""

    object_id: str
    name: str
    mask: np.ndarray
    scores: dict[str, float] = field(default_factory=dict)


class PartFinder(Protocol):
    """``find(record, objects) -> candidates``; ``objects`` are (object referent, part names) pairs.

    A finder may set ``objects_per_call``: :class:`PartMasks` then passes at most that many objects
    of an image at a time, which bounds the full-image candidate masks held in memory at once.
    """

    def find(self, record: ImageRecord, objects: list[tuple[dict, list[str]]]) -> list[PartCandidate]: ...


def part_query(part: str, object_category: str) -> str:
    """The detector's text query for a part of an object (the paper's template)."""
    return f"{part} of {object_category}"


def overlap_over_smaller(a: np.ndarray, b: np.ndarray) -> float:
    """|a ∩ b| / min(|a|, |b|): 1 when one mask lies inside the other, 0 when they are disjoint or one is empty."""
    smaller = min(int(a.sum()), int(b.sum()))
    return float(np.logical_and(a, b).sum()) / smaller if smaller else 0.0


def crop_box(bbox, width: int, height: int, margin: float) -> tuple[int, int, int, int]:
    """The integer ``(x0, y0, x1, y1)`` crop of an ``[x, y, w, h]`` box grown by ``margin`` of its size per side."""
    x, y, w, h = bbox
    x0 = max(0, int(np.floor(x - margin * w)))
    y0 = max(0, int(np.floor(y - margin * h)))
    x1 = min(width, int(np.ceil(x + w + margin * w)))
    y1 = min(height, int(np.ceil(y + h + margin * h)))
    return x0, y0, max(x1, x0 + 1), max(y1, y0 + 1)


def _filtered_kwargs(function, **kwargs):
    parameters = inspect.signature(function).parameters
    return {k: v for k, v in kwargs.items() if k in parameters}


class DetectorPartFinder:
    """Zero-shot detector on each object's crop, then SAM on the part boxes.

    Args:
        segmenter: the object stage's :class:`BoxSegmenter` (its image encoding is reused).
        model, processor: a loaded ``AutoModelForZeroShotObjectDetection`` and its processor (tests
            pass tiny ones); or None to load ``model_id``.
        min_score: detections below this confidence are not candidates.
        max_per_name: at most this many candidates per part name and object.
        margin: crop margin, as a fraction of the object box per side.
        batch_size: object crops per detector forward.
    """

    def __init__(self, segmenter: BoxSegmenter, model=None, processor=None, model_id: str = "google/owlv2-base-patch16-ensemble",
                 device: str = "cpu", min_score: float = 0.2, max_per_name: int = 4, margin: float = 0.05, batch_size: int = 8):
        self.segmenter = segmenter
        self.model_id = model_id
        self.device = device
        self.min_score = min_score
        self.max_per_name = max_per_name
        self.margin = margin
        self.batch_size = batch_size
        self.objects_per_call = batch_size  # one detector forward, then SAM, per group of objects
        self.detector = LazyModel.from_pretrained("AutoModelForZeroShotObjectDetection", "AutoProcessor", model_id,
                                                  device=device, model=model, processor=processor)

    @torch.no_grad()
    def detect(self, crops, queries: list[list[str]]) -> list[list[tuple[int, float, list[float]]]]:
        """For each crop, ``(query index, score, [x0, y0, x1, y1] in crop pixels)`` above ``min_score``."""
        model, processor = self.detector.get()
        inputs = processor(text=queries, images=crops, truncation=True, return_tensors="pt").to(self.device)
        outputs = model(**inputs)
        post = getattr(processor, "post_process_grounded_object_detection", None) or processor.post_process_object_detection
        # No text_labels: OWL pads shorter query lists with " ", whose indices a label lookup would not find.
        results = post(outputs, **_filtered_kwargs(post, threshold=self.min_score, target_sizes=[(c.height, c.width) for c in crops],
                                                    input_ids=inputs.get("input_ids")))
        detections = []
        for result, crop_queries in zip(results, queries):
            found = []
            labels = result["labels"].tolist() if torch.is_tensor(result["labels"]) else list(result["labels"])
            for label, score, box in zip(labels, result["scores"].tolist(), result["boxes"].tolist()):
                # Index-based detectors (OWL-ViT, OWLv2) give query indices; phrase-based ones (Grounding DINO) give text.
                index = crop_queries.index(label) if isinstance(label, str) and label in crop_queries else label
                if isinstance(index, int) and index < len(crop_queries):  # padding queries find nothing real
                    found.append((index, float(score), box))
            detections.append(found)
        return detections

    def find(self, record: ImageRecord, objects: list[tuple[dict, list[str]]]) -> list[PartCandidate]:
        image = record.image
        crops, queries, offsets = [], [], []
        for referent, names in objects:
            x0, y0, x1, y1 = crop_box(referent["bbox"], image.width, image.height, self.margin)
            crops.append(image.crop((x0, y0, x1, y1)))
            queries.append([part_query(n, referent["category"]) for n in names])
            offsets.append((x0, y0, x1, y1))
        picked: list[tuple[int, str, float, list[float]]] = []
        for start in range(0, len(crops), self.batch_size):
            found = self.detect(crops[start : start + self.batch_size], queries[start : start + self.batch_size])
            for i, detections in enumerate(found, start=start):
                x0, y0, x1, y1 = offsets[i]
                names = objects[i][1]
                per_name: dict[int, int] = {}
                for index, score, box in sorted(detections, key=lambda d: -d[1]):
                    bx0, by0 = min(max(box[0] + x0, x0), x1), min(max(box[1] + y0, y0), y1)
                    bx1, by1 = min(max(box[2] + x0, x0), x1), min(max(box[3] + y0, y0), y1)
                    if per_name.get(index, 0) >= self.max_per_name or bx1 <= bx0 or by1 <= by0:
                        continue  # not a candidate: beyond the per-name cap, or a box with nothing inside the crop
                    per_name[index] = per_name.get(index, 0) + 1
                    picked.append((i, names[index], score, [bx0, by0, bx1, by1]))
        if not picked:
            return []
        masks = self.segmenter.segment(image, record.sam_embedding, np.asarray([p[3] for p in picked], np.float32))
        return [
            PartCandidate(objects[i][0]["referent_id"], name, mask,
                          {"detector": score, "sam_iou": float(iou), "sam_stability": float(stability)})
            for (i, name, score, _), mask, iou, stability in zip(picked, masks.masks, masks.iou, masks.stability)
        ]


class Sam3PartFinder:
    """transformers ``Sam3Model`` with each part name as the text prompt, one vision encoding per image.

    Instances are found over the whole image once per part name, then given to every object of a
    category that has that part; :class:`PartMasks` keeps those that lie inside the object.
    """

    def __init__(self, model=None, processor=None, model_id: str = "facebook/sam3", device: str = "cpu",
                 min_score: float = 0.2, mask_threshold: float = 0.5, max_per_name: int = 4):
        self.model_id = model_id
        self.device = device
        self.min_score = min_score
        self.mask_threshold = mask_threshold
        self.max_per_name = max_per_name
        self.sam3 = LazyModel.from_pretrained("Sam3Model", "Sam3Processor", model_id, device=device, model=model, processor=processor)

    @torch.no_grad()
    def find(self, record: ImageRecord, objects: list[tuple[dict, list[str]]]) -> list[PartCandidate]:
        model, processor = self.sam3.get()
        image = record.image
        image_inputs = processor(images=image, return_tensors="pt").to(self.device)
        vision_embeds = model.get_vision_features(pixel_values=image_inputs["pixel_values"])
        instances: dict[str, list[tuple[np.ndarray, float]]] = {}
        for name in sorted({n for _, names in objects for n in names}):
            text_inputs = processor(text=name, return_tensors="pt").to(self.device)
            outputs = model(vision_embeds=vision_embeds, input_ids=text_inputs["input_ids"],
                            attention_mask=text_inputs.get("attention_mask"))
            (result,) = processor.post_process_instance_segmentation(
                outputs, threshold=self.min_score, mask_threshold=self.mask_threshold,
                target_sizes=image_inputs.get("original_sizes").tolist())
            instances[name] = [(m.cpu().numpy().astype(bool), float(s)) for m, s in zip(result["masks"], result["scores"])]
        candidates = []
        for referent, names in objects:
            object_mask = decode_mask(referent["mask"])
            for name in names:
                inside = sorted(instances.get(name, []), key=lambda ms: -ms[1])
                inside = [(m, s) for m, s in inside if np.logical_and(m, object_mask).any()][: self.max_per_name]
                candidates += [PartCandidate(referent["referent_id"], name, m, {"detector": s}) for m, s in inside]
        return candidates


class PartMasks:
    """Part referents for every object whose category has part names (``part_names``).

    Args:
        finder: a :class:`PartFinder`.
        min_inside: keep a part if |part ∩ object| / min(|part|, |object|) reaches this.
        dedup_overlap: same-name parts of one object overlapping (over the smaller) at least this much are one part.
        min_iou, min_stability: SAM thresholds for candidates whose mask came from SAM.
    """

    name = "part_masks"

    def __init__(self, finder: PartFinder, min_inside: float = 0.5, dedup_overlap: float = 0.8,
                 min_iou: float = SA1B_MIN_PREDICTED_IOU, min_stability: float = SA1B_MIN_STABILITY):
        self.finder = finder
        self.min_inside = min_inside
        self.dedup_overlap = dedup_overlap
        self.min_iou = min_iou
        self.min_stability = min_stability

    @classmethod
    def from_options(cls, options: StageOptions, segmenter: BoxSegmenter | None = None) -> "PartMasks":
        device = resolve_device(options.device)
        if options.part_masks == "detector":
            finder = DetectorPartFinder(segmenter or build_segmenter(options), model_id=options.part_detector, device=device,
                                        min_score=options.part_min_score, max_per_name=options.part_max_per_name,
                                        margin=options.part_box_margin)
        elif options.part_masks == "sam3":
            finder = Sam3PartFinder(model_id=options.part_sam3_model, device=device, min_score=options.part_min_score,
                                    max_per_name=options.part_max_per_name)
        else:
            raise ValueError(f"Unknown part_masks {options.part_masks!r}: use 'detector' or 'sam3'.")
        return cls(finder, options.part_min_inside, options.part_dedup_overlap, options.sam_min_iou, options.sam_min_stability)

    def _reject_reason(self, candidate: PartCandidate, mask: np.ndarray, object_mask: np.ndarray,
                       kept: list[tuple[str, str, np.ndarray]]) -> tuple[str | None, np.ndarray]:
        scores = candidate.scores
        if "sam_iou" in scores:
            reason = sam_reject_reason(scores["sam_iou"], scores["sam_stability"], self.min_iou, self.min_stability, not mask.any())
            if reason:
                return reason, mask
        inside = overlap_over_smaller(mask, object_mask)
        if inside < self.min_inside or inside == 0.0:
            return f"part outside its object: overlap {inside:.2f} < {self.min_inside}", mask
        mask = np.logical_and(mask, object_mask)
        for other_id, other_name, other_mask in kept:
            if other_name == candidate.name:
                overlap = overlap_over_smaller(mask, other_mask)
                if overlap >= self.dedup_overlap:
                    return f"duplicate part: overlap {overlap:.2f} with {other_id}", mask
        return None, mask

    def _object_parts(self, image_id: str, referent: dict, candidates: list[PartCandidate], out: StageOutput) -> list[dict]:
        """The kept parts of one object, best detector score first; the others go to ``out.rejects``."""
        object_mask = decode_mask(referent["mask"])
        kept: list[tuple[str, str, np.ndarray]] = []
        parts = []
        for index, candidate in enumerate(sorted(candidates, key=lambda c: -c.scores.get("detector", 0.0))):
            part_id = part_referent_id(referent["referent_id"], index)
            reason, mask = self._reject_reason(candidate, candidate.mask, object_mask, kept)
            if reason is not None:
                out.rejects.append(Reject(image_id, self.name, reason, part_id))
                continue
            kept.append((part_id, candidate.name, mask))
            rle = encode_mask(mask)
            parts.append(new_referent(part_id, "part", candidate.name, referent["category"], mask_bbox(rle), rle,
                                      parent_id=referent["referent_id"], scores=candidate.scores))
        return parts

    def __call__(self, records: list[ImageRecord]) -> StageOutput:
        out = StageOutput()
        for record in records:
            vocabulary = record.part_names
            objects = [(r, vocabulary[r["category"]]) for r in record.referents
                       if r["granularity"] == "object" and vocabulary.get(r["category"])]
            per_call = getattr(self.finder, "objects_per_call", None) or max(len(objects), 1)
            parts = []
            for start in range(0, len(objects), per_call):
                group = objects[start : start + per_call]
                by_object: dict[str, list[PartCandidate]] = {}
                for candidate in self.finder.find(record, group):
                    by_object.setdefault(candidate.object_id, []).append(candidate)
                for referent, _ in group:
                    parts += self._object_parts(record.image_id, referent, by_object.get(referent["referent_id"], []), out)
            # the encoding is dropped: no later stage needs it
            out.records.append(replace(record, referents=record.referents + parts, sam_embedding=None))
        return out
