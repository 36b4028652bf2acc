"""Any transformers `promptable-concept-segmentation` pipeline (SAM 3's, or UniRES's) as a [`Segmenter`].

transformers' task for text→mask models (pull request 43612) takes a list of `{"image", "text"}` dicts and gives, per
item, a list of instances, each with `score`, `box` (`{"xmin", "ymin", "xmax", "ymax"}`) and `mask` (0/1, at the
image's original size). This adapter sends every expression as the text of one item (never several joined into one
prompt) and turns each item's instances into one mask by the rule the SAM 3 adapter states (`instance_rule`, reused
from `sam3.merge_instances`):

- `"best"` (default): the highest-scoring instance's mask, whatever its score: the pipeline is called with
  `threshold=0.0` and `top_k=1`, so that it keeps every instance before choosing. Empty only when the pipeline
  returns no instance at all.
- `"union"`: the union of the masks of every instance scoring above `score_threshold` (default 0.5; the pipeline's
  own `threshold`, `score > threshold`); empty when none.

The masks are the pipeline's own: binarised by it (`threshold` of this adapter is passed as the pipeline's
`mask_threshold`; by default the pipeline's, 0.5 for SAM 3), at the original size, and nearest-neighbour resized to
another compared size (`resolution="input"`).

The adapter is used where the installed transformers has the task ([`concept_task_available`]); elsewhere
`from_pretrained` is refused, naming the reason. A pipeline object that takes the task's input form may be wrapped
directly (UniRES's own pipeline takes it under `referring-expression-segmentation` too).
"""

from __future__ import annotations

from typing import Optional

import numpy as np
import torch

from .base import Segmenter, default_device, resize_mask, rgb
from .sam3 import DEFAULT_INSTANCE_RULE, DEFAULT_SCORE_THRESHOLD, INSTANCE_RULES, merge_instances

CONCEPT_TASK = "promptable-concept-segmentation"
REFERRING_TASK = "referring-expression-segmentation"  # UniRES's pipeline, which takes the concept form as well


def concept_task_available() -> tuple[bool, str]:
    """`(True, "")` where the installed transformers has the `promptable-concept-segmentation` task, else `(False,
    reason)`: the reason names the installed version and what to do instead."""
    import transformers
    from transformers.pipelines import SUPPORTED_TASKS

    if CONCEPT_TASK in SUPPORTED_TASKS:
        return True, ""
    return False, (f"transformers {transformers.__version__} has no {CONCEPT_TASK!r} pipeline task (it comes with "
                   "transformers pull request 43612, for SAM 3): upgrade transformers, or use --model_type sam3 for "
                   "SAM 3 and --model_type pipeline for UniRES")


def _instance_mask(instance) -> np.ndarray:
    """An instance's mask as a bool array: a 0/1 tensor (SAM 3's pipeline), a bool array or a 0/255 PIL image."""
    mask = instance["mask"]
    if isinstance(mask, torch.Tensor):
        mask = mask.detach().cpu().numpy()
    mask = np.asarray(mask)
    return mask if mask.dtype == bool else mask > 0


class PromptableConceptSegmenter(Segmenter):
    model_type = "promptable_concept"
    shares_image_encoding = False  # one item per expression: the pipeline decides what it shares

    def __init__(self, pipe, threshold: Optional[float] = None, instance_rule: str = DEFAULT_INSTANCE_RULE,
                 score_threshold: float = DEFAULT_SCORE_THRESHOLD):
        if instance_rule not in INSTANCE_RULES:
            raise ValueError(f"instance_rule must be one of {INSTANCE_RULES}, got {instance_rule!r}")
        task = getattr(pipe, "task", None)
        if task not in (CONCEPT_TASK, REFERRING_TASK):
            raise ValueError(f"pipeline task {task!r} is not supported: this adapter wraps a {CONCEPT_TASK!r} pipeline "
                             f"(or UniRES's {REFERRING_TASK!r}, which takes the same input form)")
        self.pipe = pipe
        self.task = task
        self.mask_threshold = None if threshold is None else float(threshold)
        self.threshold = None  # the pipeline's masks are final: bool masks, binarised by the pipeline itself
        self.instance_rule = instance_rule
        self.score_threshold = float(score_threshold)
        self.input_size = _input_size(getattr(getattr(pipe, "model", None), "config", None))

    @classmethod
    def from_pretrained(cls, name_or_path: str, *, device: Optional[str] = None, threshold: Optional[float] = None,
                        instance_rule: str = DEFAULT_INSTANCE_RULE, score_threshold: float = DEFAULT_SCORE_THRESHOLD,
                        trust_remote_code: bool = False):
        available, reason = concept_task_available()
        if not available:
            raise ValueError(f"model_type {cls.model_type} is unavailable: {reason}")
        from transformers import pipeline

        import modeling_unires  # noqa: F401  (a UniRES checkpoint gets its own pipeline under the task)

        pipe = pipeline(CONCEPT_TASK, model=name_or_path, device=device or default_device(),
                        trust_remote_code=trust_remote_code)
        return cls(pipe, threshold=threshold, instance_rule=instance_rule, score_threshold=score_threshold)

    def _call_options(self) -> dict:
        options = ({"threshold": 0.0, "top_k": 1} if self.instance_rule == "best" else
                   {"threshold": self.score_threshold})
        if self.mask_threshold is not None:
            options["mask_threshold"] = self.mask_threshold
        return options

    def segment(self, images, expressions, sizes=None):
        images = [rgb(image) for image in images]
        items = [{"image": image, "text": text} for image, texts in zip(images, expressions) for text in texts]
        answers = list(self.pipe(items, **self._call_options())) if items else []
        if len(answers) != len(items) or not all(isinstance(answer, (list, tuple)) for answer in answers):
            raise ValueError(f"{self.model_type} segmenter: the pipeline answered {len(answers)} item(s) for "
                             f"{len(items)}: expected one list of instances per {{'image', 'text'}} item")
        answers = iter(answers)
        masks = []
        for image, texts, size in zip(images, expressions, sizes):
            original = (image.height, image.width)
            image_masks = []
            for text in texts:
                mask = self._merge(list(next(answers)), original, text)
                image_masks.append(resize_mask(mask, size))
            masks.append(image_masks)
        return masks

    def _merge(self, instances: list, size: tuple, text: str) -> np.ndarray:
        if not instances:
            return np.zeros(size, dtype=bool)
        instance_masks = [_instance_mask(instance) for instance in instances]
        for mask in instance_masks:
            if mask.shape != size:
                raise ValueError(f"{self.model_type} segmenter: expression {text!r}: instance mask of shape "
                                 f"{mask.shape}, expected the image's size {size} (height, width)")
        scores = torch.tensor([float(instance["score"]) for instance in instances])
        # The masks as ±1 logits (sigmoid > 0.5 exactly inside), so that the SAM 3 adapter's rule merges them as is.
        logits = torch.from_numpy(np.stack(instance_masks)).float() * 2 - 1
        return (merge_instances(scores, logits, size, self.instance_rule, self.score_threshold) > 0.5).numpy()

    def conventions(self) -> dict:
        rule = ("the highest-scoring instance's mask (the pipeline called with threshold=0.0, top_k=1)"
                if self.instance_rule == "best" else
                f"union of the instances scoring > {self.score_threshold:g} (empty when none)")
        model = getattr(self.pipe, "model", None)
        return {**super().conventions(), "task": self.task, "pipeline_class": type(self.pipe).__name__,
                "model_class": type(model).__name__, "instance_rule": self.instance_rule, "instance_rule_text": rule,
                "score": "the pipeline's own instance score",
                "score_threshold": self.score_threshold if self.instance_rule == "union" else None,
                "mask_threshold": self.mask_threshold if self.mask_threshold is not None else "the pipeline's default",
                "threshold_rule": "the pipeline's own mask thresholding",
                "prompt": "each expression alone, as the text of one {'image', 'text'} item",
                "resizing": "masks at the original size from the pipeline; nearest-neighbour to another compared size"}


def _input_size(config) -> Optional[int]:
    """The model's square input side where its config states one (UniRES: `image_size`; SAM 3: its backbone's)."""
    for path in (("image_size",), ("vision_config", "backbone_config", "image_size"), ("vision_config", "image_size")):
        value = config
        for name in path:
            value = getattr(value, name, None)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    return None
