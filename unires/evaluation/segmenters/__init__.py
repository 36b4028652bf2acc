"""Model-agnostic segmenters: one interface, one adapter per kind of model.

| `--model_type` | adapter | image encoded once for its expressions |
|---|---|---|
| `unires` | [`UniRESSegmenter`]: processor → model → `post_process_masks` | yes |
| `clipseg` | [`CLIPSegSegmenter`]: `CLIPSegForImageSegmentation`, logits resized to the original size | no (the model cannot) |
| `sam3` | [`Sam3Segmenter`]: `Sam3Model`, the expression as text prompt, instances merged by a stated rule | yes |
| `pipeline` | [`PipelineSegmenter`]: our pipeline, or any `image-segmentation` one (labels matched) | yes |
| `callable:<module:fn>` | [`CallableSegmenter`]: a plain function, for models outside transformers | the callable's choice |
"""

from __future__ import annotations

from typing import Optional

from .base import Segmenter, resize_mask, resize_probabilities
from .callable import CallableSegmenter, load_callable
from .clipseg import CLIPSegSegmenter
from .pipeline import PipelineSegmenter, label_matches
from .sam3 import INSTANCE_RULES, Sam3Segmenter, merge_instances
from .unires import UniRESSegmenter

MODEL_TYPES = ("unires", "clipseg", "sam3", "pipeline", "callable:<module:fn>")
_LOADERS = {"unires": UniRESSegmenter, "clipseg": CLIPSegSegmenter, "sam3": Sam3Segmenter,
            "pipeline": PipelineSegmenter}


def load_segmenter(model_type: str, model: Optional[str] = None, **options) -> Segmenter:
    """Build the adapter of `model_type` for `model` (Hub id or folder). `options`: `device`, `threshold`,
    `batch_size`, `instance_rule`, `score_threshold` (sam3), `task` (pipeline), `trust_remote_code`."""
    options = {key: value for key, value in options.items() if value is not None}
    if model_type.startswith("callable:"):
        return CallableSegmenter.from_spec(model_type.split(":", 1)[1], **options)
    if model_type not in _LOADERS:
        raise ValueError(f"unknown model_type {model_type!r}; choose from {', '.join(MODEL_TYPES)}")
    if not model:
        raise ValueError(f"model_type {model_type!r} needs --model (a Hub id or a folder)")
    return _LOADERS[model_type].from_pretrained(model, **options)


__all__ = [
    "CLIPSegSegmenter",
    "CallableSegmenter",
    "INSTANCE_RULES",
    "MODEL_TYPES",
    "PipelineSegmenter",
    "Sam3Segmenter",
    "Segmenter",
    "UniRESSegmenter",
    "label_matches",
    "load_callable",
    "load_segmenter",
    "merge_instances",
    "resize_mask",
    "resize_probabilities",
]
