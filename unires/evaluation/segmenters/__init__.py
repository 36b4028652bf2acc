"""Model-agnostic segmenters: one interface, one adapter per kind of model (`unires.evaluation.registry`).

| `--model_type` | adapter | options |
|---|---|---|
| `unires` | [`UniRESSegmenter`]: processor → model → post_process_masks | `device`, `threshold`, `trust_remote_code`, `fast_inference` |
| `onnx` | [`OnnxSegmenter`]: UniRES exported to ONNX (examples/export.py), run by ONNX Runtime | `device`, `threshold` |
| `clipseg` | [`CLIPSegSegmenter`]: CLIPSegForImageSegmentation, logits resized to the compared size | `device`, `threshold`, `batch_size` |
| `sam3` | [`Sam3Segmenter`]: Sam3Model, the expression as text prompt, instances merged by a stated rule | `device`, `threshold`, `batch_size`, `instance_rule`, `score_threshold` |
| `pipeline` | [`PipelineSegmenter`]: our pipeline, or any image-segmentation one (labels matched) | `device`, `threshold`, `task`, `trust_remote_code` |
| `promptable_concept` | [`PromptableConceptSegmenter`]: any promptable-concept-segmentation pipeline (SAM 3's), instances merged by a stated rule | `device`, `threshold`, `instance_rule`, `score_threshold`, `trust_remote_code` |
| `callable:<module:fn>` | [`CallableSegmenter`]: a plain function segment(image, expressions), for models outside transformers | `threshold` |
| `full_image` | [`FullImageSegmenter`]: trivial baseline: the whole image for every expression | none |
| `largest_object_box` | [`LargestObjectBoxSegmenter`]: trivial baseline: the filled box of the image's largest annotated object | none |

UniRES, SAM 3 and the pipeline encode an image once for all of its expressions; CLIPSeg cannot (its forward takes
(image, expression) pairs); a callable does as it chooses.
"""

from __future__ import annotations

from typing import Optional

from ..registry import ADAPTERS, BASELINES, CALLABLE_PREFIX, MODEL_TYPES, adapter_of, foreign_options
from .base import Segmenter, resize_mask, resize_probabilities
from .baselines import FullImageSegmenter, LargestObjectBoxSegmenter
from .callable import CallableSegmenter, load_callable
from .clipseg import CLIPSegSegmenter
from .pipeline import PipelineSegmenter, label_matches
from .sam3 import INSTANCE_RULES, Sam3Segmenter, merge_instances
from .unires import UniRESSegmenter


def load_segmenter(model_type: str, model: Optional[str] = None, **options) -> Segmenter:
    """Build the adapter of `model_type` (see `unires.evaluation.registry.ADAPTERS`) for `model` (Hub id or folder).

    `options` are the adapter's own (`device`, `threshold`, `batch_size`, `instance_rule`, `score_threshold`, `task`,
    `trust_remote_code`: each adapter takes some); `None` means "the adapter's default". An option the adapter does
    not take is refused, naming it and the adapters that take it.
    """
    adapter = adapter_of(model_type)
    options = {key: value for key, value in options.items() if value is not None}
    refusal = foreign_options(model_type, options)
    if refusal:
        raise ValueError(refusal)
    segmenter_class = adapter.segmenter_class()
    if adapter.model_type == "callable":
        spec = model_type[len(CALLABLE_PREFIX):]
        if not spec:
            raise ValueError("model_type callable needs the function: callable:<module:fn> (e.g. "
                             "callable:my_wrapper.py:segment)")
        return segmenter_class.from_spec(spec, **options)
    if not adapter.needs_model:
        if model:
            raise ValueError(f"model_type {model_type} loads no model: leave out model ({model!r})")
        return segmenter_class(**options)
    if not model:
        raise ValueError(f"model_type {model_type!r} needs --model (a Hub id or a folder)")
    return segmenter_class.from_pretrained(model, **options)


__all__ = [
    "ADAPTERS",
    "BASELINES",
    "CLIPSegSegmenter",
    "CallableSegmenter",
    "FullImageSegmenter",
    "INSTANCE_RULES",
    "LargestObjectBoxSegmenter",
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
