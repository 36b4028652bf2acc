"""Stage 2, object masks: Segment Anything with box prompts, every box of an image on one encoding.

Two backends behind one small interface (:class:`BoxSegmenter`): the ``segment_anything``
package, the paper's model (default; a ``.pth`` checkpoint, batched boxes through
``SamPredictor.predict_torch``), and transformers' ``SamModel`` / ``Sam2Model`` by Hub id.
Each mask keeps SAM's predicted IoU and its stability score (the IoU of the masks thresholded at
logit +offset and -offset, as SA-1B computes it) in ``scores`` (``sam_iou``, ``sam_stability``);
a mask below either threshold (SA-1B's 0.88 / 0.95 by default) is a referent reject.

The image embedding is left in the record (``"_sam_embedding"``) so that the part-mask stage
prompts the same encoding with its part boxes instead of encoding the image again.
"""

from __future__ import annotations

import inspect
import os
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import torch

from ..masks import encode_mask
from .options import SA1B_MIN_PREDICTED_IOU, SA1B_MIN_STABILITY, StageOptions, resolve_device
from .records import new_referent, object_referent_id
from .stage import Reject, StageOutput


@dataclass
class BoxMasks:
    """Masks for N boxes of one image: ``masks`` bool (N, H, W); ``iou``, ``stability`` float (N,)."""

    masks: np.ndarray
    iou: np.ndarray
    stability: np.ndarray


class BoxSegmenter(Protocol):
    """Box-prompted segmentation; ``encode`` once per image, ``segment`` any number of times."""

    def encode(self, image) -> Any: ...

    def segment(self, image, embedding: Any, boxes_xyxy: np.ndarray) -> BoxMasks: ...


def stability_score(logits: torch.Tensor, mask_threshold: float, offset: float) -> torch.Tensor:
    """SA-1B's stability score of mask logits (..., H, W), from ``segment_anything``'s implementation."""
    from segment_anything.utils.amg import calculate_stability_score

    return calculate_stability_score(logits.float(), mask_threshold, offset)


def xywh_to_xyxy(boxes) -> np.ndarray:
    boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    return np.concatenate([boxes[:, :2], boxes[:, :2] + boxes[:, 2:]], axis=1)


def _empty(height: int, width: int) -> BoxMasks:
    return BoxMasks(np.zeros((0, height, width), bool), np.zeros(0, np.float32), np.zeros(0, np.float32))


class SegmentAnythingSegmenter:
    """SAM from the ``segment_anything`` package.

    Args:
        model: a built ``segment_anything.modeling.Sam`` (tests pass a tiny one); or None to
            build ``model_type`` and load ``checkpoint`` on first use.
        model_type: ``vit_h`` (the paper's), ``vit_l`` or ``vit_b``.
        checkpoint: the ``.pth`` (loaded with ``weights_only=True``) or ``.safetensors`` state dict.
        device: where the model runs.
        box_batch_size: boxes decoded together (bounds the (N, H, W) logits in memory).
        stability_offset: logit offset of the stability score.
    """

    def __init__(self, model=None, model_type: str = "vit_h", checkpoint: str | None = None, device: str = "cpu",
                 box_batch_size: int = 64, stability_offset: float = 1.0):
        self._model = model
        self.model_type = model_type
        self.checkpoint = checkpoint
        self.device = device
        self.box_batch_size = box_batch_size
        self.stability_offset = stability_offset
        self._predictor = None

    @property
    def predictor(self):
        if self._predictor is None:
            from segment_anything import SamPredictor

            self._predictor = SamPredictor(self._load().to(self.device).eval())
        return self._predictor

    def _load(self):
        if self._model is not None:
            return self._model
        from segment_anything import sam_model_registry

        if self.checkpoint is None:
            raise ValueError(
                "The segment_anything backend needs --sam_checkpoint: a SAM .pth such as sam_vit_h_4b8939.pth from "
                "https://github.com/facebookresearch/segment-anything#model-checkpoints (or use --sam_backend transformers)."
            )
        if not os.path.isfile(self.checkpoint):
            raise FileNotFoundError(f"SAM checkpoint not found: {self.checkpoint}")
        model = sam_model_registry[self.model_type]()
        if self.checkpoint.endswith(".safetensors"):
            from safetensors.torch import load_file

            state_dict = load_file(self.checkpoint)
        else:
            state_dict = torch.load(self.checkpoint, map_location="cpu", weights_only=True)
        model.load_state_dict(state_dict)
        self._model = model
        return model

    @torch.no_grad()
    def encode(self, image) -> dict:
        predictor = self.predictor
        predictor.set_image(np.asarray(image.convert("RGB")))
        return {"features": predictor.features, "original_size": predictor.original_size, "input_size": predictor.input_size}

    @torch.no_grad()
    def segment(self, image, embedding: dict | None, boxes_xyxy: np.ndarray) -> BoxMasks:
        predictor = self.predictor
        if embedding is None:
            embedding = self.encode(image)
        predictor.features = embedding["features"]
        predictor.original_size = embedding["original_size"]
        predictor.input_size = embedding["input_size"]
        predictor.is_image_set = True
        height, width = embedding["original_size"]
        if len(boxes_xyxy) == 0:
            return _empty(height, width)
        masks, ious, stabilities = [], [], []
        threshold = predictor.model.mask_threshold
        for start in range(0, len(boxes_xyxy), self.box_batch_size):
            boxes = torch.as_tensor(boxes_xyxy[start : start + self.box_batch_size], dtype=torch.float32, device=predictor.device)
            boxes = predictor.transform.apply_boxes_torch(boxes, embedding["original_size"])
            logits, iou, _ = predictor.predict_torch(None, None, boxes=boxes, multimask_output=False, return_logits=True)
            logits = logits[:, 0]
            stabilities.append(stability_score(logits, threshold, self.stability_offset).cpu())
            masks.append((logits > threshold).cpu())
            ious.append(iou[:, 0].float().cpu())
        return BoxMasks(torch.cat(masks).numpy(), torch.cat(ious).numpy(), torch.cat(stabilities).numpy())


class TransformersSamSegmenter:
    """transformers ``SamModel`` or ``Sam2Model`` (with its processor) behind :class:`BoxSegmenter`.

    Args:
        model, processor: loaded objects (tests pass tiny ones); or None to load ``model_id``.
        model_id: Hub id or path (``facebook/sam-vit-huge``, ``facebook/sam2.1-hiera-large``, ...).
    """

    def __init__(self, model=None, processor=None, model_id: str = "facebook/sam-vit-huge", device: str = "cpu",
                 box_batch_size: int = 64, stability_offset: float = 1.0, mask_threshold: float = 0.0):
        self._model, self._processor = model, processor
        self.model_id = model_id
        self.device = device
        self.box_batch_size = box_batch_size
        self.stability_offset = stability_offset
        self.mask_threshold = mask_threshold

    def _load(self):
        if self._model is None:
            from transformers import AutoModel, AutoProcessor

            self._model = AutoModel.from_pretrained(self.model_id)
            self._processor = self._processor or AutoProcessor.from_pretrained(self.model_id)
        self._model.to(self.device).eval()
        return self._model, self._processor

    def _inputs(self, image, boxes_xyxy=None):
        _, processor = self._load()
        kwargs = {"input_boxes": [boxes_xyxy.tolist()]} if boxes_xyxy is not None else {}
        return processor(images=image.convert("RGB"), return_tensors="pt", **kwargs)

    @torch.no_grad()
    def encode(self, image):
        model, _ = self._load()
        pixel_values = self._inputs(image)["pixel_values"].to(self.device, model.dtype)
        return model.get_image_embeddings(pixel_values)

    def _post_process(self, pred_masks, inputs):
        _, processor = self._load()
        kwargs = {"binarize": False}
        # SamImageProcessor needs the resized size to undo padding; Sam2's does not take it.
        if "reshaped_input_sizes" in inspect.signature(processor.image_processor.post_process_masks).parameters:
            kwargs["reshaped_input_sizes"] = inputs["reshaped_input_sizes"]
        return processor.post_process_masks(pred_masks.float().cpu(), inputs["original_sizes"], **kwargs)[0]

    @torch.no_grad()
    def segment(self, image, embedding, boxes_xyxy: np.ndarray) -> BoxMasks:
        model, _ = self._load()
        if len(boxes_xyxy) == 0:
            return _empty(image.height, image.width)
        if embedding is None:
            embedding = self.encode(image)
        masks, ious, stabilities = [], [], []
        for start in range(0, len(boxes_xyxy), self.box_batch_size):
            inputs = self._inputs(image, boxes_xyxy[start : start + self.box_batch_size])
            outputs = model(image_embeddings=embedding, input_boxes=inputs["input_boxes"].to(self.device, model.dtype),
                            multimask_output=False)
            logits = self._post_process(outputs.pred_masks, inputs)[:, 0]  # (boxes, H, W)
            stabilities.append(stability_score(logits, self.mask_threshold, self.stability_offset))
            masks.append(logits > self.mask_threshold)
            ious.append(outputs.iou_scores[0, :, 0].float().cpu())
        return BoxMasks(torch.cat(masks).numpy(), torch.cat(ious).numpy(), torch.cat(stabilities).numpy())


def build_segmenter(options: StageOptions) -> BoxSegmenter:
    device = resolve_device(options.device)
    common = {"device": device, "box_batch_size": options.sam_box_batch_size, "stability_offset": options.sam_stability_offset}
    if options.sam_backend == "segment_anything":
        return SegmentAnythingSegmenter(model_type=options.sam_model_type, checkpoint=options.sam_checkpoint, **common)
    if options.sam_backend == "transformers":
        return TransformersSamSegmenter(model_id=options.sam_model, **common)
    raise ValueError(f"Unknown sam_backend {options.sam_backend!r}: use 'segment_anything' or 'transformers'.")


def sam_reject_reason(iou: float, stability: float, min_iou: float, min_stability: float, empty: bool) -> str | None:
    """Why a SAM mask is not kept, or None when it is."""
    if empty:
        return "empty mask"
    if iou < min_iou:
        return f"SAM predicted IoU below threshold: {iou:.3f} < {min_iou}"
    if stability < min_stability:
        return f"SAM stability score below threshold: {stability:.3f} < {min_stability}"
    return None


class ObjectMasks:
    """One object referent per input box, its mask from SAM prompted with the box.

    Args:
        segmenter: a :class:`BoxSegmenter`.
        min_iou, min_stability: SAM score thresholds (SA-1B's 0.88 / 0.95 by default).
        keep_embedding: leave the image encoding in ``"_sam_embedding"`` for the part stage.
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

    def __call__(self, records: list[dict]) -> StageOutput:
        out = StageOutput()
        for record in records:
            image_id = record["image_id"]
            if not record["boxes"]:
                out.rejects.append(Reject(image_id, self.name, "no input box"))
                continue
            image = record["_image"]
            embedding = self.segmenter.encode(image)
            result = self.segmenter.segment(image, embedding, xywh_to_xyxy([b["bbox"] for b in record["boxes"]]))
            referents = []
            for box, mask, iou, stability in zip(record["boxes"], result.masks, result.iou, result.stability):
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
            record = {**record, "referents": list(record.get("referents") or []) + referents}
            if self.keep_embedding:
                record["_sam_embedding"] = embedding
            out.records.append(record)
        return out
