"""Any transformers `pipeline` as a [`Segmenter`]: ours (`referring-expression-segmentation`) or `image-segmentation`.

- `referring-expression-segmentation` (UniRES's pipeline): called with each batch of images and their expressions
  (`mask_format="numpy"`); the pipeline encodes each image once for all of its expressions and returns one mask per
  expression at the original size, thresholded with its own processor's threshold.
- `image-segmentation` (Mask2Former, DETR, OneFormer, ...): such a pipeline takes no text, so the expression is
  matched to the segments' labels: the mask of an expression is the union of the segments whose label occurs in it
  as whole words (case-insensitive; "the dog on the left" takes every "dog" segment), empty when no label occurs.
  The pipeline runs once per image for all of its expressions.

Masks are produced at the original size; another compared size (`resolution="input"`) is reached by nearest-neighbour
resizing.
"""

from __future__ import annotations

import re
from typing import Optional

import numpy as np

from .base import Segmenter, default_device, image_size, resize_mask, rgb

REFERRING_TASK = "referring-expression-segmentation"
IMAGE_SEGMENTATION_TASK = "image-segmentation"


def label_matches(label: str, expression: str) -> bool:
    """Whether `label` occurs in `expression` as whole words, case-insensitively."""
    words = re.findall(r"[a-z0-9]+", label.lower())
    return bool(words) and re.search(r"\b" + r"\s+".join(map(re.escape, words)) + r"\b", expression.lower()) is not None


class PipelineSegmenter(Segmenter):
    model_type = "pipeline"
    shares_image_encoding = True

    def __init__(self, pipe, threshold: Optional[float] = None):
        self.pipe = pipe
        self.task = getattr(pipe, "task", None) or IMAGE_SEGMENTATION_TASK
        if self.task not in (REFERRING_TASK, IMAGE_SEGMENTATION_TASK):
            raise ValueError(f"pipeline task {self.task!r} is not supported: use {REFERRING_TASK!r} or "
                             f"{IMAGE_SEGMENTATION_TASK!r}")
        if self.task == REFERRING_TASK:
            processor_threshold = getattr(getattr(pipe.processor, "image_processor", None), "mask_threshold", None)
            self.threshold = float(threshold if threshold is not None else processor_threshold)
        elif threshold is not None:  # would be dropped: the segments are final
            raise ValueError(f"threshold={threshold}: an {IMAGE_SEGMENTATION_TASK} pipeline's segments are final (its "
                             f"own score and mask thresholds apply); a threshold is an option of the {REFERRING_TASK} "
                             "pipeline only")
        else:
            self.threshold = None  # the pipeline's segments are final: its own score and mask thresholds apply
        config = getattr(getattr(pipe, "model", None), "config", None)
        size = getattr(config, "image_size", None)
        self.input_size = int(size) if isinstance(size, int) else None

    @classmethod
    def from_pretrained(cls, name_or_path: str, *, device: Optional[str] = None, threshold: Optional[float] = None,
                        task: Optional[str] = None, trust_remote_code: bool = False):
        from transformers import AutoConfig, pipeline

        import modeling_unires  # noqa: F401  (registers UniRES and its pipeline task)

        if task is None:
            config = AutoConfig.from_pretrained(name_or_path, trust_remote_code=trust_remote_code)
            task = REFERRING_TASK if config.model_type == "unires" else IMAGE_SEGMENTATION_TASK
        pipe = pipeline(task, model=name_or_path, device=device or default_device(),
                        trust_remote_code=trust_remote_code)
        return cls(pipe, threshold=threshold)

    def segment(self, images, expressions, sizes=None):
        images = [rgb(image) for image in images]
        if self.task == REFERRING_TASK:
            kwargs = {"mask_format": "numpy", "threshold": self.threshold}
            results = self.pipe(images, [list(texts) for texts in expressions], batch_size=len(images), **kwargs)
            masks = [[item["mask"] for item in per_image] for per_image in results]
        else:
            masks = []
            for image, texts in zip(images, expressions):
                segments = self.pipe(image) if texts else []
                segment_masks = [(s.get("label") or "", np.asarray(s["mask"]) > 127 if np.asarray(s["mask"]).dtype
                                  != bool else np.asarray(s["mask"])) for s in segments]
                image_masks = []
                for text in texts:
                    mask = np.zeros(image_size(image), dtype=bool)
                    for label, segment in segment_masks:
                        if label_matches(label, text):
                            mask |= segment
                    image_masks.append(mask)
                masks.append(image_masks)
        return [[resize_mask(np.asarray(mask, dtype=bool), size) for mask in image_masks]
                for image_masks, size in zip(masks, sizes)]

    def _to_mask(self, value, size, where):  # the pipeline's masks are final: no second thresholding
        array = np.asarray(value)
        if array.shape != tuple(size):
            raise ValueError(f"pipeline segmenter: {where}: mask of shape {array.shape}, expected {tuple(size)}")
        return array.astype(bool)

    def conventions(self) -> dict:
        rule = ("the pipeline's own mask per expression" if self.task == REFERRING_TASK else
                "union of the segments whose label occurs in the expression as whole words (empty when none)")
        model = getattr(self.pipe, "model", None)
        return {**super().conventions(), "task": self.task, "model_class": type(model).__name__, "mask_rule": rule,
                "threshold_rule": "the pipeline's own thresholding",
                "resizing": "masks at the original size from the pipeline; nearest-neighbour to another compared size"}
